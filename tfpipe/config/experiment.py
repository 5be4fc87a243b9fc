"""The ``model``, ``train``, ``predict`` and ``bench`` sections, and the whole experiment.

Example:
    >>> Experiment().model.arch
    'unet'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from tfpipe.config.pipeline import DataConfig, InputConfig, Section

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
    """Output classes; segmentation: ``len(data.mask_classes)`` (1 for binary masks)."""
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    """Segmentation head: sigmoid = ``classes`` channels (one per class, multi-label);
    softmax = ``classes + 1`` channels (background first, then the classes)."""
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
    """Linear warm-up from learning_rate / 100 (warmup_cosine only; must be < epochs)."""
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

    @model_validator(mode="after")
    def _warmup_leaves_a_decay(self) -> TrainConfig:
        # Checked here, not when the optimizer is built, so that it fails before a run starts.
        if self.schedule == "warmup_cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(
                "train.warmup_epochs must be smaller than train.epochs for schedule "
                f"warmup_cosine (or the run is all warm-up); got warmup_epochs="
                f"{self.warmup_epochs}, epochs={self.epochs}"
            )
        return self


# ------------------------------------------------------------------------ predict


class PredictConfig(Section):
    """Whole-slide inference (``tfpipe predict``)."""

    images: Path = Path("data/hubmap/test")
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    """Fraction of the window shared with its neighbour."""
    blend: Literal["hann", "pyramid", "uniform"] = "hann"
    """Weight of a window's pixels where windows overlap (smooth: borders count least)."""
    tta: list[Literal["hflip", "vflip", "rot90"]] = Field(
        default_factory=lambda: ["hflip", "vflip"]
    )
    threshold: float | dict[str, float] = 0.5
    """A pixel is class k when its probability is above this (a pixel above several classes'
    thresholds takes the most probable); a mapping ``{class name: threshold}`` sets it per
    class (names of data.mask_classes; classes not named keep 0.5)."""
    batch_size: int = Field(8, ge=1)
    skip_background: bool = True
    """Skip windows that the data.filter tissue rule calls background."""
    out: Path = Path("submission.csv")
    save_masks: Path | None = None
    """Also write full-resolution masks (PNG for small slides, tiled TIFF otherwise)."""
    save_probabilities: Path | None = None
    """Also write low-resolution probability maps (<id>.npy + .json) for evaluate's sweep."""
    probabilities: Path | None = None
    """Also write each slide's probability map as <id>.tiff (uint8, tiled, read window by
    window) for data.source: pseudo_labels."""

    @field_validator("threshold")
    @classmethod
    def _probability(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        values = v.values() if isinstance(v, dict) else [v]
        if not all(0.0 < t < 1.0 for t in values):
            raise ValueError(
                "threshold must be between 0 and 1 (exclusive), or a mapping of "
                "class names to such thresholds"
            )
        return v


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

    @model_validator(mode="after")
    def _classes_match(self) -> Experiment:
        # Checked at load time so every command fails before it reads or trains anything.
        names = self.data.mask_classes
        if names is None or self.model.task != "segmentation":
            if isinstance(self.predict.threshold, dict) and names is None:
                raise ValueError(
                    "predict.threshold can be a per-class mapping only with data.mask_classes; "
                    f"got predict.threshold={self.predict.threshold} and no data.mask_classes"
                )
            return self
        if self.model.classes != len(names):
            raise ValueError(
                f"model.classes must equal the {len(names)} data.mask_classes "
                f"({', '.join(names)}); got model.classes={self.model.classes}"
            )
        if isinstance(self.predict.threshold, dict):
            unknown = sorted(set(self.predict.threshold) - set(names))
            if unknown:
                raise ValueError(
                    f"predict.threshold names class {unknown[0]!r}, which is not in "
                    f"data.mask_classes={names}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able values (paths as strings)."""
        return self.model_dump(mode="json", exclude={"source_path"})

    def dump_yaml(self, path: Path) -> None:
        """Write the resolved config (what the run actually used)."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
