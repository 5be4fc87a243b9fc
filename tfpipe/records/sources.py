"""Label sources: find the source images, pair them with labels, and validate up front.

``data.source`` picks one of these layouts:

* ``rle_csv`` — slides ``<images>/<id>.tif*`` and a HuBMAP ``train.csv``
  (``id,encoding``). Every slide needs a row and every row a slide; RLE runs
  are validated against the slide size here, before any work starts.
* ``mask_images`` — a mask image per slide, found in ``data.masks`` (default:
  beside the slides) as ``<id>.*``, ``<id>_mask.*`` or ``<id>.mask.*``. Masks
  must have the slide's size. Without ``data.mask_classes`` they are binary
  (values > 0 become 1); with it, a pixel value k in 1..K is class k, 0 is
  background and 255 is ignore, and any other value is an error naming the
  file and the value (found when the worker reads that band).
* ``polygons`` — a GeoJSON file ``<id>.json`` per slide (the HuBMAP layout),
  in ``data.masks`` (default: beside the slides); every feature is class 1, or
  its class comes from ``data.polygon_classes``. The files are read and checked
  here; workers rasterize each window (:mod:`tfpipe.records.polygons`).
* ``unlabelled`` — slides only (for prediction); records get no mask key.
* ``pseudo_labels`` — slides and the probability maps ``tfpipe predict
  --probabilities`` wrote for them (``data.probabilities``), labelled by the
  confidence band ``data.pseudo_band`` (uncertain pixels 255 = ignored; see
  :mod:`tfpipe.records.pseudo`). Every slide needs a map of its own size.
* ``classification`` — a CSV ``path,labels`` (labels joined by ``|``), paths
  relative to ``data.images``. Records carry a multi-hot ``image/class/label``
  in the order of ``data.class_names`` (default: sorted names in the CSV).

``data.sampling`` is decided here too, for every slide layout: the grids,
the object-centred tiles and the anatomy regions (:mod:`tfpipe.records.sampling`).

Slides with float pixels get their value range here, once per slide
(``data.float_range``, or found from the slide's largest value: see
:func:`tfpipe.io.tiff.float_range`), so all its tiles share one scale.

Every problem is an :class:`~tfpipe.errors.InputDataError` naming the file,
the key or id, and the rule; nothing is discovered half-way through a build.

Example:
    >>> from tfpipe.config import DataConfig
    >>> plan = discover_sources(DataConfig(images="data/hubmap/train"))  # doctest: +SKIP
    >>> plan.task, len(plan.items)  # doctest: +SKIP
    ('segmentation', 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.masks import open_mask_image, read_label_csv, read_rle_csv
from tfpipe.io.rle import parse_rle
from tfpipe.io.tiff import open_slide
from tfpipe.records.bandmask import LabelSpec, RowSegments
from tfpipe.records.polygons import PolygonMask, attach_polygons
from tfpipe.records.pseudo import attach_pseudo_labels
from tfpipe.records.sampling import apply_sampling

MASK_PATTERNS = ("{id}_mask.*", "{id}.mask.*", "{id}.*")


@dataclass
class SourceItem:
    """One source image: where it is, its size, and how to get its labels."""

    image_id: str
    path: Path
    height: int = 0
    width: int = 0
    labels: LabelSpec = field(default_factory=LabelSpec)
    classes: tuple[int, ...] | None = None  # multi-hot (classification)
    value_range: tuple[float, float] | None = None  # float slides: scaled from lo..hi to 0..255
    windows: list[tuple[int, int]] = field(default_factory=list)  # object tiles (y, x), sorted
    regions: PolygonMask | None = None  # anatomy regions (data.sampling.anatomy)


@dataclass
class SourcePlan:
    """All validated sources of a build, sorted by image id."""

    task: str  # "segmentation", "unlabelled" or "classification"
    items: list[SourceItem]
    class_names: list[str] = field(default_factory=list)
    mask_classes: list[str] | None = None  # segmentation class names (None: binary)
    grid_offsets: tuple[int, ...] = (0,)  # the grids cut: 0 = grid, tile_size // 2 = shifted


def discover_sources(cfg: DataConfig) -> SourcePlan:
    """Find and validate the sources of ``cfg`` (see the module notes for each layout).

    Args:
        cfg: The ``data`` section of an experiment.

    Returns:
        A :class:`SourcePlan`; slide sizes are read from the TIFF headers.

    Raises:
        InputDataError: missing/unreadable files, ids without slides or slides
            without labels, malformed RLE, masks of the wrong size.
        ConfigError: ``data.labels`` missing where the source needs it.

    Example:
        >>> discover_sources(DataConfig(source="unlabelled", images="x"))  # doctest: +SKIP
        Traceback (most recent call last):
        tfpipe.errors.InputDataError: data.images folder not found: x
    """
    if not Path(cfg.images).is_dir():
        raise InputDataError(f"data.images folder not found: {cfg.images}")
    if cfg.source == "classification":
        if "sampling" in cfg.model_fields_set:
            raise ConfigError(
                "data.sampling cuts tiles from slides; data.source=classification resizes whole "
                "images: remove data.sampling"
            )
        return _classification(cfg)
    if cfg.source == "rle_csv" and len(cfg.mask_classes or []) > 1:
        raise ConfigError(
            f"data.source=rle_csv holds one class per slide (an RLE CSV is binary); got "
            f"{len(cfg.mask_classes)} data.mask_classes {cfg.mask_classes}: use mask images "
            "with class values (data.source=mask_images) for several classes"
        )
    slides = _slides(cfg)
    if cfg.source == "rle_csv":
        _attach_rle(slides, _need_labels(cfg), cfg)
    elif cfg.source == "mask_images":
        _attach_masks(slides, Path(cfg.masks or cfg.images), len(cfg.mask_classes or []))
    elif cfg.source == "pseudo_labels":
        attach_pseudo_labels(slides, cfg)
    elif cfg.source == "polygons":
        attach_polygons(slides, cfg)
    task = "unlabelled" if cfg.source == "unlabelled" else "segmentation"
    classes = list(cfg.mask_classes) if cfg.mask_classes and task == "segmentation" else None
    plan = SourcePlan(task, slides, mask_classes=classes)
    apply_sampling(plan, cfg)
    return plan


def _need_labels(cfg: DataConfig) -> Path:
    if cfg.labels is None:
        raise ConfigError(f"data.labels is required for data.source={cfg.source}; got null")
    return Path(cfg.labels)


def slide_id(path: Path) -> str:
    """The image id of a slide file: its name without the extension(s) ``.ome.tiff`` etc.

    Example:
        >>> slide_id(Path("train/aaa6a05cc.ome.tiff"))
        'aaa6a05cc'
    """
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _slides(cfg: DataConfig) -> list[SourceItem]:
    """Slides matching ``image_glob``, with their size read from the header."""
    folder = Path(cfg.images)
    paths = sorted(p for p in folder.glob(cfg.image_glob) if p.is_file())
    if cfg.source == "mask_images" and cfg.masks is None:
        paths = [p for p in paths if not _is_mask_name(p)]
    if not paths:
        raise InputDataError(f"no slides match data.image_glob={cfg.image_glob!r} in {folder}")
    fixed = None if cfg.float_range == "auto" else tuple(cfg.float_range)
    items: dict[str, SourceItem] = {}
    for path in paths:
        sid = slide_id(path)
        if sid in items:
            raise InputDataError(
                f"image ids must be unique; {items[sid].path.name} and {path.name} in "
                f"{folder} both give id {sid!r}"
            )
        with open_slide(path, level=cfg.level, value_range=fixed) as slide:
            # Float slides: the range is found here, once, and every work unit uses it.
            items[sid] = SourceItem(
                sid, path, slide.height, slide.width, value_range=slide.value_range
            )
    return [items[k] for k in sorted(items)]


def _is_mask_name(path: Path) -> bool:
    stem = slide_id(path)
    return stem.endswith("_mask") or stem.endswith(".mask")


def _attach_rle(items: list[SourceItem], csv_path: Path, cfg: DataConfig) -> None:
    """Pair slides with validated RLE masks; ids must match both ways."""
    rles = read_rle_csv(csv_path)
    by_id = {item.image_id: item for item in items}
    orphans = sorted(set(rles) - set(by_id))
    if orphans:
        raise InputDataError(
            f"{csv_path} lists id {orphans[0]!r} but there is no slide {orphans[0]}.tif[f] in "
            f"data.images={cfg.images} ({len(orphans)} id(s) without a slide)"
        )
    for item in items:
        if item.image_id not in rles:
            raise InputDataError(
                f"slide {item.path} has no row in {csv_path} (data.source=rle_csv needs a mask "
                f"for every slide; use data.source=unlabelled for slides without labels)"
            )
        shape = (item.height, item.width)
        runs = parse_rle(rles.pop(item.image_id), shape, f"{csv_path} id={item.image_id}")
        item.labels = LabelSpec(segments=RowSegments.from_runs(runs, shape))


def _attach_masks(items: list[SourceItem], folder: Path, classes: int = 0) -> None:
    """Find each slide's mask image and check its size (``classes``: see ``LabelSpec``)."""
    if not folder.is_dir():
        raise InputDataError(f"data.masks folder not found: {folder}")
    for item in items:
        path = _find_mask(folder, item)
        with open_mask_image(path) as mask:
            if (mask.height, mask.width) != (item.height, item.width):
                raise InputDataError(
                    f"mask {path} is {mask.height}x{mask.width} (HxW) but its slide "
                    f"{item.path} is {item.height}x{item.width}; they must match"
                )
        item.labels = LabelSpec(mask_path=path, classes=classes)


def _find_mask(folder: Path, item: SourceItem) -> Path:
    for pattern in MASK_PATTERNS:
        found = sorted(p for p in folder.glob(pattern.format(id=item.image_id)) if p != item.path)
        found = [p for p in found if slide_id(p) in _mask_stems(item.image_id)]
        if found:
            return found[0]
    raise InputDataError(
        f"no mask image for slide {item.path} in {folder} (looked for "
        f"{', '.join(p.format(id=item.image_id) for p in MASK_PATTERNS)})"
    )


def _mask_stems(image_id: str) -> set[str]:
    return {image_id, f"{image_id}_mask", f"{image_id}.mask"}


def _classification(cfg: DataConfig) -> SourcePlan:
    """Images and multi-hot labels from a ``path,labels`` CSV."""
    csv_path = _need_labels(cfg)
    rows, found = read_label_csv(csv_path, cfg.images)
    names = list(cfg.class_names) if cfg.class_names else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise InputDataError(
            f"{csv_path} uses label {unknown[0]!r}, which is not in data.class_names={names}"
        )
    root = Path(cfg.images).resolve()
    index = {name: i for i, name in enumerate(names)}
    items: dict[str, SourceItem] = {}
    for path, labels in rows:
        image_id = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        if image_id in items:
            raise InputDataError(f"{csv_path} lists image {image_id!r} more than once")
        hot = [0] * len(names)
        for label in labels:
            hot[index[label]] = 1
        items[image_id] = SourceItem(image_id, path, classes=tuple(hot))
    if not items:
        raise InputDataError(f"{csv_path} lists no images")
    return SourcePlan("classification", [items[k] for k in sorted(items)], names)
