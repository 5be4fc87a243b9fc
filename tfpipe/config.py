"""Experiment schema: one YAML file drives every stage.

An experiment file has the sections ``data`` (sources and ETL), ``input``
(tf.data settings and augmentation), ``model``, ``train`` and ``predict``.
Each section is a small pydantic model with defaults, so a file only states
what differs. Unknown keys, wrong types and bad values are errors that name
the key, the file and what was expected.

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment("experiments/kidney.yaml", overrides=["train.epochs=2"])
    >>> exp.train.epochs
    2

Relative paths inside the file are resolved against the current working
directory (the project root), like every other path given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tfpipe.errors import ConfigError

FORMAT_VERSION = 1


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


class DataConfig(Section):
    """Sources and the offline ETL (``tfpipe build-records``)."""

    source: Literal["rle_csv", "mask_images", "unlabelled", "classification"] = "rle_csv"
    images: Path = Path("data/hubmap/train")
    """Folder of slides (``<id>.tiff``); for ``classification``, the root of the CSV's paths."""
    labels: Path | None = Path("data/hubmap/train.csv")
    """RLE CSV (``id,encoding``); for ``classification``, a CSV ``path,labels`` (``|``-joined)."""
    masks: Path | None = None
    """Folder of mask images named like the slides (``source: mask_images``)."""
    class_names: list[str] | None = None
    """Classification label names in output order; default: sorted names found in the CSV."""
    image_glob: str = "*.tif*"
    output: Path = Path("records/kidney")
    level: int = Field(0, ge=0)
    """Pyramid level to read (0 = full resolution)."""
    tile_size: int = Field(1024, gt=0)
    """Tile side at source resolution, in pixels."""
    downscale: int = Field(4, ge=1)
    """Factor the tile is reduced by before writing (1024 / 4 = 256 px tiles)."""
    stride: int | None = Field(None, gt=0)
    """Step between tiles at source resolution; default tile_size (no overlap)."""
    filter: TissueFilter = TissueFilter()
    keep_empty_fraction: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of tissue tiles with no mask pixel that are kept (hash of seed, id, y, x)."""
    encoding: Literal["png", "jpeg", "raw"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    compression: Literal["none", "gzip"] = "none"
    shard_records: int | None = Field(None, gt=0)
    """Target records per shard; alternatively set ``shard_mb``."""
    shard_mb: float = Field(64.0, gt=0)
    folds: int = Field(4, ge=1)
    seed: int = 42
    workers: int | None = Field(None, ge=1)
    """Worker processes for the per-slide map; default: CPU count."""
    shuffle_memory_mb: float = Field(512.0, gt=0)
    """Record bytes the global shuffle holds at once while reading spilled records back."""

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError("tile_size must be a multiple of 32")
        return v


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
    engine: Literal["auto", "opencv", "tensorflow"] = "auto"
    """Who applies the ops: OpenCV on whole batches (~3x cheaper per tile on CPU) or
    TensorFlow ops per tile (graph-only). auto: OpenCV, TensorFlow with input.service."""

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
    cache: Literal["none", "memory"] | Path = "none"
    """Cache decoded tiles: "memory" or a file path prefix."""
    ram_budget_mb: int | None = Field(None, gt=0)
    private_threadpool_size: int | None = Field(None, ge=1)
    augment: AugmentConfig = AugmentConfig()
    balance: float | None = Field(None, ge=0.0, le=1.0)
    """Training fraction of positive tiles (mask > 0); None keeps the natural distribution."""
    val_balance: float | None = Field(None, ge=0.0, le=1.0)
    skip_corrupt: bool = False
    """Skip (and count) corrupt records instead of failing."""
    service: str | None = None
    """tf.data service dispatcher address, e.g. grpc://localhost:5050."""
    service_job_name: str | None = None
    """Share one tf.data service job between trainers (multi-worker); None: one job per trainer."""
    seed: int = 0


# -------------------------------------------------------------------------- model


class ModelConfig(Section):
    """Network built by ``tfpipe.models.build_model``."""

    task: Literal["segmentation", "classification"] = "segmentation"
    arch: Literal["unet", "linknet", "fpn", "densenet121"] = "unet"
    backbone: str = "efficientnetb0"
    encoder_weights: str | None = None
    """None, "imagenet" (read from weights_dir) or a local .h5/.keras file."""
    weights_dir: Path = Path("~/.keras/models")
    classes: int = Field(1, ge=1)
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    decoder_filters: list[int] | None = None
    """Unet decoder widths; default segmentation-models' (256, 128, 64, 32, 16)."""
    init_checkpoint: Path | None = None
    """Start from this .keras checkpoint; layers whose shapes differ (a new head) are skipped."""
    bn_momentum: float | None = Field(None, gt=0.0, lt=1.0)
    """Momentum of every BatchNormalization layer; None keeps the library's (0.99). Short runs
    (CPU, a few hundred steps) want ~0.9 so the moving statistics used at validation catch up."""


# -------------------------------------------------------------------------- train


class LookaheadConfig(Section):
    enabled: bool = False
    k: int = Field(5, ge=1)
    alpha: float = Field(0.5, gt=0.0, le=1.0)


class TrainConfig(Section):
    """Training loop, cross-validation and the run folder."""

    loss: Literal["bce_jaccard", "bce_dice", "dice", "focal", "jaccard", "lovasz", "bce"] = (
        "bce_jaccard"
    )
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0)
    """Peak learning rate (after warm-up for warmup_cosine)."""
    weight_decay: float = Field(1e-4, ge=0.0)
    """Decoupled weight decay; used by adamw only."""
    lookahead: LookaheadConfig = LookaheadConfig()
    schedule: Literal["constant", "cosine", "warmup_cosine", "plateau"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    """Linear warm-up from learning_rate / 100 (warmup_cosine only)."""
    min_learning_rate: float = Field(0.0, ge=0.0)
    """Where cosine / warmup_cosine end, and the floor of plateau."""
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    """plateau: multiply the rate by this when the validation metric stalls."""
    plateau_patience: int = Field(2, ge=1)
    """plateau: epochs without improvement before the rate is reduced."""
    epochs: int = Field(20, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    """Training steps per epoch; default one pass over the training folds."""
    validation_steps: int | None = Field(None, ge=1)
    """Validation batches per epoch; default the whole validation fold."""
    batch_size: int | None = Field(None, ge=1)
    """Overrides input.batch_size when set."""
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    """auto: mixed_float16 when a GPU is present, float32 on CPU."""
    seed: int = 42
    folds: list[int] | Literal["all"] = "all"
    early_stopping: int | None = Field(None, ge=1)
    """Patience in epochs on the validation metric; None disables."""
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    """tf.distribute strategy; batch_size is per replica (global = per replica x replicas)."""
    runs_dir: Path = Path("runs")
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Threshold for the validation dice/IoU metrics."""
    backup_freq: Literal["epoch"] | int = "epoch"
    """BackupAndRestore state for --resume: saved every epoch, or every N training steps."""
    deterministic: bool = False
    """Op determinism + deterministic input order: same seed, same metrics (slower on GPU)."""

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: object) -> object:
        # YAML reads unquoted on/off as booleans.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("backup_freq", mode="before")
    @classmethod
    def _backup_steps(cls, v: object) -> object:
        # One clear message instead of one per member of the union.
        if v != "epoch" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError("backup_freq must be 'epoch' or a number of steps >= 1")
        return v


# ------------------------------------------------------------------------ predict


class PredictConfig(Section):
    """Whole-slide inference (``tfpipe predict``)."""

    images: Path = Path("data/hubmap/test")
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    """Fraction of the window shared with its neighbour."""
    blend: Literal["hann", "pyramid", "uniform"] = "hann"
    """Weight of a window's pixels where windows overlap (smooth: borders count least)."""
    tta: list[Literal["hflip", "vflip", "rot90"]] = ["hflip", "vflip"]
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: int = Field(8, ge=1)
    skip_background: bool = True
    """Skip windows that the data.filter tissue rule calls background."""
    out: Path = Path("submission.csv")
    save_masks: Path | None = None
    """Also write full-resolution masks (PNG for small slides, tiled TIFF otherwise)."""
    save_probabilities: Path | None = None
    """Also write low-resolution probability maps (<id>.npy + .json) for evaluate's sweep."""


# -------------------------------------------------------------------------- bench


class BenchConfig(Section):
    """Defaults of ``tfpipe bench-input`` (``--batches`` / ``--repeats`` override them)."""

    batches: int = Field(5, ge=1)
    """Batches per timed window."""
    repeats: int = Field(3, ge=1)
    """Timed windows per figure (min / median / max are reported)."""
    warmup: int = Field(2, ge=0)
    """Batches pulled and discarded before timing."""
    ablation: bool = True
    model_steps: int = Field(2, ge=0)
    """Timed compute-only training steps; 0 skips the model."""
    model_warmup: int = Field(2, ge=0)
    """Untimed steps first: the first traces the step, a second may retrace (optimizer state)."""
    fit_steps: int = Field(2, ge=0)
    """Timed training steps fed by the pipeline (end-to-end); 0 skips them."""
    sweep_records: int = Field(256, ge=1)
    """Records re-encoded for a data.encoding / data.compression sweep."""


class Experiment(Section):
    """A whole experiment file."""

    name: str = "experiment"
    description: str = ""
    data: DataConfig = DataConfig()
    input: InputConfig = InputConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    bench: BenchConfig = BenchConfig()

    # Where the experiment came from; not part of the YAML schema.
    source_path: Path | None = Field(None, exclude=True)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able values (paths as strings)."""
        return self.model_dump(mode="json", exclude={"source_path"})

    def dump_yaml(self, path: Path) -> None:
        """Write the resolved config (what the run actually used)."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------ loading


def load_experiment(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Experiment:
    """Read an experiment YAML file, apply ``key=value`` overrides and validate.

    Args:
        path: The YAML file; None gives the defaults (the HuBMAP layout).
        overrides: ``--set`` strings such as ``"train.epochs=3"`` or
            ``"model.arch=linknet"``. Values are parsed as YAML scalars/lists.

    Returns:
        The validated :class:`Experiment`.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a
            value has the wrong type; the message names key, file and rule.

    Example:
        >>> exp = load_experiment(None, ["data.tile_size=512"])
        >>> exp.data.tile_size
        512
    """
    where = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"experiment file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections; got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None
    exp.source_path = Path(path) if path is not None else None
    return exp


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` inside the nested dict ``raw`` (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=3); got {item!r}")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set key must be dotted names like train.epochs; got {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: ``key: rule; got value in file``."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "lax-")))
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            section = key.rsplit(".", 1)[0] if "." in key else "top level"
            lines.append(f"unknown key {key!r} in {where} (not a setting of {section})")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{msg}; got {key}={got!r} in {where}")
    return "invalid experiment:\n  " + "\n  ".join(lines)
