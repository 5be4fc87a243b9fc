"""The ``data`` and ``input`` sections: the ETL (build-records) and the tf.data pipeline.

Every section is a :class:`Section`: unknown keys are errors and values are
validated when set. See :mod:`tfpipe.config` for the whole file.

Example:
    >>> InputConfig(batch_size=8).augment.flip
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Mask values 1..K are classes and 255 is ignore: at most 254 classes fit a uint8 mask.
MAX_MASK_CLASSES = 254
# The augmentation ops that touch the image only, and so can run inside the model.
COLOUR_FIELDS = ("brightness", "contrast", "hue", "saturation", "noise_std")


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------- data


class TissueFilter(Section):
    """Background filter for tiles (HSV thresholds, as in the HuBMAP kernels).

    A pixel counts as tissue when its saturation is above ``saturation_min``
    and its brightness (max of R, G, B) is below ``brightness_max``.
    A tile is kept when its tissue fraction is at least ``min_tissue_fraction``;
    tiles with any mask pixel are always kept.
    """

    saturation_min: int = Field(40, ge=0, le=255)
    brightness_max: int = Field(220, ge=0, le=255)
    min_tissue_fraction: float = Field(0.25, ge=0.0, le=1.0)


class SamplingConfig(Section):
    """Which tiles the ETL cuts, and their sampling weights (see tfpipe.records.sampling).

    ``tiles`` is a union of tile sets: ``grid`` (the fixed grid), ``shifted_grid``
    (a second grid shifted by half a tile in x and y) and ``objects`` (one tile
    centred on each labelled object, moved by a seeded jitter). ``anatomy`` gives
    every tile the weight ``sum(fraction of the tile in region r * weight of r)``,
    written as ``tile/weight`` for ``input.weighted``.
    """

    tiles: list[Literal["grid", "shifted_grid", "objects"]] = ["grid"]
    jitter: float = Field(0.25, ge=0.0, le=0.5)
    """``objects``: the tile centre moves up to this fraction of ``tile_size`` along each
    axis, drawn from a hash of (seed, image id, object position)."""
    anatomy: dict[str, float] | None = None
    """Region name (``polygon_property`` of the anatomy file's features) -> weight, plus
    ``outside`` for pixels in no region (default 0); e.g. {Cortex: 0.46, Medulla: 0.17,
    outside: 0.02}. None: no weights (records without ``tile/weight``)."""
    anatomy_file: str = "{id}-anatomical-structure.json"
    """Name of a slide's anatomy file in ``data.masks`` (default: beside the slides)."""

    @field_validator("tiles")
    @classmethod
    def _tile_sets(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("tiles must list grid, shifted_grid and/or objects, each once")
        return v

    @field_validator("anatomy")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError(f"anatomy weights must be >= 0 with at least one > 0; got {v}")
        return v

    @field_validator("anatomy_file")
    @classmethod
    def _names_the_slide(cls, v: str) -> str:
        if "{id}" not in v:
            raise ValueError(f"anatomy_file must contain {{id}} (the slide id); got {v!r}")
        return v


class DataConfig(Section):
    """Sources and the offline ETL (``tfpipe build-records``)."""

    source: Literal[
        "rle_csv", "mask_images", "polygons", "unlabelled", "classification", "pseudo_labels"
    ] = "rle_csv"
    images: Path = Path("data/hubmap/train")
    """Folder of slides (``<id>.tiff``); for ``classification``, the root of the CSV's paths."""
    labels: Path | None = Path("data/hubmap/train.csv")
    """RLE CSV (``id,encoding``); for ``classification``, a CSV ``path,labels`` (``|``-joined)."""
    masks: Path | None = None
    """Folder of per-slide labels named like the slides: mask images (``source: mask_images``)
    or GeoJSON ``<id>.json`` (``source: polygons``) and anatomy files; default beside them."""
    polygon_classes: dict[str, str | None] | None = None
    """``source: polygons``: feature property value -> class name of ``mask_classes`` (any
    name when that is unset), or null to drop such features. None: every feature is class 1."""
    polygon_property: str = "classification.name"
    """Dotted path, inside a GeoJSON feature's ``properties``, of the value mapped by
    ``polygon_classes`` (and of the region names of ``sampling.anatomy``)."""
    probabilities: Path | None = None
    """Folder of probability maps ``<id>.tiff`` from ``tfpipe predict --probabilities``
    (``source: pseudo_labels``)."""
    pseudo_band: tuple[float, float] = (0.3, 0.7)
    """Pseudo-label confidence band [lo, hi]: p >= hi -> 1, p <= lo -> 0, between -> 255
    (ignored by the loss and metrics)."""
    class_names: list[str] | None = None
    """Classification label names in output order; default: sorted names found in the CSV."""
    mask_classes: list[str] | None = None
    """Segmentation class names: mask value k (1..K) is class ``mask_classes[k-1]``, 0 is
    background and 255 is ignored in the loss and metrics. None: one class (binary masks,
    every value > 0 of a mask image is the class). ``model.classes`` must equal its length."""
    image_glob: str = "*.tif*"
    output: Path = Path("records/kidney")
    level: int = Field(0, ge=0)
    """Pyramid level to read (0 = full resolution)."""
    float_range: Literal["auto"] | tuple[float, float] = "auto"
    """Value range of float-pixel slides, mapped linearly to 0-255 (clipped; NaN -> 0).
    ``auto`` decides per slide from its largest value: <= 1.0 -> ``[0, 1]``;
    <= 255 -> 0-255 levels; larger -> an error asking for ``[lo, hi]`` here.
    Integer pixels ignore it (uint16 is always scaled over its full range)."""
    tile_size: int = Field(1024, gt=0)
    """Tile side at source resolution, in pixels."""
    downscale: int = Field(4, ge=1)
    """Factor the tile is reduced by before writing (1024 / 4 = 256 px tiles)."""
    stride: int | None = Field(None, gt=0)
    """Step between tiles at source resolution; default tile_size (no overlap)."""
    filter: TissueFilter = TissueFilter()
    keep_empty_fraction: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of tissue tiles with no mask pixel that are kept (hash of seed, id, y, x)."""
    sampling: SamplingConfig = SamplingConfig()
    """Tile sets (grid, shifted grid, object-centred) and anatomy weights."""
    encoding: Literal["png", "jpeg", "raw"] = "raw"
    """Tile encoding: raw pixels decode ~10x cheaper than PNG in TensorFlow (no Python
    decoder in the input graph) for ~1.2-2x the disk; png is the compact choice."""
    jpeg_quality: int = Field(95, ge=1, le=100)
    compression: Literal["none", "gzip"] = "none"
    shard_records: int | None = Field(None, gt=0)
    """Target records per shard; alternatively set ``shard_mb``."""
    shard_mb: float = Field(64.0, gt=0)
    folds: int = Field(4, ge=1)
    seed: int = 42
    workers: int | None = Field(None, ge=1)
    """Worker processes for the per-slide map; default: CPU count."""
    runner: Literal["local", "beam"] = "local"
    """Where build-records runs: ``local`` (a process pool on this host) or ``beam`` (an
    Apache Beam pipeline: the DirectRunner by default, any runner through ``--beam-option``;
    needs the ``[beam]`` extra). Both write the same shards."""
    shuffle_memory_mb: float = Field(512.0, gt=0)
    """Record bytes the global shuffle holds at once while reading spilled records back."""

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError("tile_size must be a multiple of 32")
        return v

    @field_validator("mask_classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v or len(v) > MAX_MASK_CLASSES:
            raise ValueError(
                f"mask_classes must list 1 to {MAX_MASK_CLASSES} class names (mask values 1..K; "
                "255 is ignore)"
            )
        names = [name.strip() for name in v]
        if not all(names) or len(set(names)) != len(names):
            raise ValueError("mask_classes must be distinct, non-empty class names")
        return names

    @field_validator("float_range")
    @classmethod
    def _increasing(cls, v: str | tuple[float, float]) -> str | tuple[float, float]:
        if isinstance(v, tuple) and not v[0] < v[1]:
            raise ValueError("float_range must be auto or [lo, hi] with lo < hi")
        return v

    @field_validator("pseudo_band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError("pseudo_band must be [lo, hi] with 0 <= lo < hi <= 1")
        return v

    @model_validator(mode="after")
    def _polygon_targets(self) -> DataConfig:
        targets = sorted({t for t in (self.polygon_classes or {}).values() if t is not None})
        if self.mask_classes is None and len(targets) > 1:
            raise ValueError(
                f"polygon_classes maps to {len(targets)} classes {targets} but mask_classes is "
                "unset (one class): list the classes in data.mask_classes"
            )
        unknown = [t for t in targets if self.mask_classes and t not in self.mask_classes]
        if unknown:
            raise ValueError(
                f"polygon_classes maps to class {unknown[0]!r}, which is not in "
                f"mask_classes={self.mask_classes}"
            )
        return self


# -------------------------------------------------------------------------- input


class AugmentConfig(Section):
    """Training-time augmentation; every op is seeded, no random state (see tfpipe.data.augment)."""

    flip: bool = True
    rot90: bool = True
    crop_scale: tuple[float, float] | None = None
    """Random resized crop area range, e.g. [0.5, 1.0]; None disables it."""
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    """Aspect-ratio range (width / height) of the random resized crop box."""
    brightness: float = Field(0.0, ge=0.0)
    contrast: float = Field(0.0, ge=0.0)
    hue: float = Field(0.0, ge=0.0, le=0.5)
    saturation: float = Field(0.0, ge=0.0)
    noise_std: float = Field(0.0, ge=0.0)
    """Gaussian noise std in uint8 units (0 disables)."""
    mixup_p: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of a batch's tiles blended with another tile of the batch (MixUp; 0 disables).
    Targets become float32 (soft masks); see tfpipe.data.mix."""
    mixup_alpha: float = Field(0.4, gt=0.0)
    """MixUp weight lam ~ Beta(alpha, alpha): small alpha keeps lam near 0 or 1."""
    cutmix_p: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of a batch's tiles with a box pasted from another tile (CutMix; 0 disables)."""
    cutmix_alpha: float = Field(1.0, gt=0.0)
    """CutMix box area 1 - lam, lam ~ Beta(alpha, alpha) (1.0: uniform)."""
    colour_in_model: bool = False
    """Run the image-only ops (brightness, contrast, saturation, hue, noise) inside the
    model, on the accelerator (tfpipe.data.Augment before Normalize), not in tf.data:
    frees ~1 ms of host CPU per 256-px tile on GPU hosts with few cores."""

    def host_ops(self) -> AugmentConfig:
        """What tf.data applies: everything, or everything but colour with ``colour_in_model``.

        Example:
            >>> AugmentConfig(hue=0.02, colour_in_model=True).host_ops().hue
            0.0
        """
        if not self.colour_in_model:
            return self
        return self.model_copy(update=dict.fromkeys(COLOUR_FIELDS, 0.0))

    def model_ops(self) -> AugmentConfig | None:
        """What the model applies (colour only) with ``colour_in_model``; else None.

        Example:
            >>> AugmentConfig(hue=0.02, colour_in_model=True).model_ops().flip
            False
            >>> AugmentConfig(hue=0.02).model_ops() is None
            True
        """
        if not self.colour_in_model or not any(getattr(self, f) for f in COLOUR_FIELDS):
            return None
        off = {"flip": False, "rot90": False, "crop_scale": None, "mixup_p": 0.0, "cutmix_p": 0.0}
        return self.model_copy(update=off | {"colour_in_model": False})

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 < v[0] <= v[1]:
            raise ValueError("must be a range [low, high] with 0 < low <= high")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _area_at_most_one(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[1] > 1.0:
            raise ValueError("crop_scale is a fraction of the tile area, at most 1.0")
        return v

    @model_validator(mode="after")
    def _one_mix_per_tile(self) -> AugmentConfig:
        # Each tile draws MixUp, CutMix or neither: the two chances share one draw.
        if self.mixup_p + self.cutmix_p > 1.0:
            raise ValueError(
                "input.augment.mixup_p + cutmix_p must be <= 1 (each tile gets MixUp, CutMix "
                f"or neither); got mixup_p={self.mixup_p}, cutmix_p={self.cutmix_p}"
            )
        return self


class InputConfig(Section):
    """tf.data settings for ``tfpipe.data.load``."""

    batch_size: int = Field(16, ge=1)
    image_size: int | None = Field(None, gt=0)
    """Output side; default the tile size in the records. Validation center-crops to it."""
    shuffle_buffer: int = Field(512, ge=0)
    """Records in the read-time shuffle buffer (records are pre-shuffled at build time)."""
    shuffle_files: bool = True
    cycle_length: int | None = Field(None, ge=1)
    """Shards read side by side by interleave; default min(shards, 16)."""
    parallel_calls: int | None = Field(None, ge=1)
    """Parallelism of parse/decode/augment; default AUTOTUNE."""
    prefetch: int | None = Field(None, ge=0)
    """Batches to prefetch; default AUTOTUNE; 0 turns prefetching off (tf.data injects none)."""
    deterministic: bool = False
    """Same seed, same batches, in the same order (see tfpipe.data.pipeline); False lets
    parallel stages hand out elements as they finish (faster, order may vary)."""
    cache: Literal["none", "memory"] | Path = "none"
    """Cache decoded tiles: "memory" or a file path prefix."""
    ram_budget_mb: int | None = Field(None, gt=0)
    private_threadpool_size: int | None = Field(None, ge=1)
    augment: AugmentConfig = AugmentConfig()
    balance: float | None = Field(None, ge=0.0, le=1.0)
    """Training fraction of positive tiles (mask > 0); None keeps the natural distribution."""
    val_balance: float | None = Field(None, ge=0.0, le=1.0)
    weighted: bool = False
    """Training draws each tile in proportion to its ``tile/weight`` (records built with
    ``data.sampling.anatomy``); an epoch keeps about as many tiles. Not with ``balance``."""
    skip_corrupt: bool = False
    """Skip (and count) corrupt records instead of failing."""
    service: str | None = None
    """tf.data service dispatcher address, e.g. grpc://localhost:5050."""
    service_job_name: str | None = None
    """Share one tf.data service job between readers of this name; None: one job per reader.
    Under train.strategy multi_worker the trainers always share one job per fold, named
    <service_job_name or experiment name>-<token drawn per run>-fold<k>-step<s>."""
    extra_records: list[Path] = Field(default_factory=list)
    """More records folders (e.g. pseudo-labels) mixed into every training fold, all their
    folds; never validated on. Folds and validation come from data.output alone."""
    seed: int = 0
