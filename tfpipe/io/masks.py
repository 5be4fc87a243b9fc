"""Label sources other than the slides: RLE CSVs, mask images, classification CSVs.

* :func:`read_rle_csv` / :func:`write_rle_csv` — the HuBMAP ``train.csv``
  (``id,encoding``) and submission (``id,predicted``) files;
  :func:`read_class_rle_csv` / :func:`write_class_rle_csv` — their multi-class
  form, one row per slide and class (``id,class,predicted``).
* :func:`open_mask_image` — a mask image beside a slide. TIFF masks are read
  window by window through :mod:`tfpipe.io.tiff`; PNG (and other OpenCV
  formats) have no windows, so they are decoded whole once and then sliced.
  Values > 0 become 1 (``binary=True``, the default) or are kept as class ids
  (``binary=False``; with ``classes=K`` each window is checked to hold only
  0, 1..K and 255 = ignore, the mask value convention of docs/design.md).
* :func:`read_label_csv` — multi-label classification CSV ``path,labels``
  with labels joined by ``|``.

Example:
    >>> from tfpipe.io.masks import read_rle_csv, write_rle_csv
    >>> write_rle_csv("/tmp/sub.csv", {"aaa": "1 3"})        # doctest: +SKIP
    >>> read_rle_csv("/tmp/sub.csv")                         # doctest: +SKIP
    {'aaa': '1 3'}
"""

from __future__ import annotations

import csv
import os
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tfpipe.errors import InputDataError
from tfpipe.io.tiff import open_slide

RLE_COLUMNS = ("encoding", "predicted")
IGNORE_VALUE = 255
"""Mask value of pixels left out of the loss and the metrics (docs/design.md)."""
TIFF_SUFFIXES = (".tif", ".tiff")
LABEL_SEPARATOR = "|"

# A full-size HuBMAP mask is one CSV field of several MB; the csv module's
# default limit (128 KiB) would reject it.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_rle_csv(
    path: str | Path, id_column: str = "id", rle_column: str | None = None
) -> dict[str, str]:
    """Read an RLE CSV into ``{image id: rle string}`` (``""`` for an empty mask).

    Args:
        path: CSV with an id column and an RLE column.
        id_column: Name of the id column.
        rle_column: Name of the RLE column; None accepts ``encoding`` (train.csv)
            or ``predicted`` (submission).

    Raises:
        InputDataError: the file is missing, a column is missing, or an id is
            empty or repeated.

    Example:
        >>> rles = read_rle_csv("data/hubmap/train.csv")  # doctest: +SKIP
        >>> sorted(rles)[:2]  # doctest: +SKIP
        ['0486052bb', '095bf7a1f']
    """
    path = Path(path)
    rles: dict[str, str] = {}
    first_line: dict[str, int] = {}
    columns, rows = _read_csv(path)
    column = rle_column or _pick_rle_column(columns, path)
    _require_columns(columns, (id_column, column), path)
    for line, row in rows:
        image_id = (row[id_column] or "").strip()
        if not image_id:
            raise InputDataError(f"{path} line {line}: column {id_column!r} is empty")
        if image_id in rles:
            raise InputDataError(
                f"ids must be unique in {path}; id {image_id!r} is on lines "
                f"{first_line[image_id]} and {line}"
            )
        rles[image_id] = (row[column] or "").strip()
        first_line[image_id] = line
    return rles


def write_rle_csv(path: str | Path, rles: dict[str, str], rle_column: str = "predicted") -> None:
    """Write ``{id: rle}`` as a CSV ``id,<rle_column>``, atomically (temp file + rename).

    Example:
        >>> write_rle_csv("submission.csv", {"aaa": "1 3", "bbb": ""})  # doctest: +SKIP
    """
    _write_rows(Path(path), ["id", rle_column], ([i, rle] for i, rle in rles.items()))


def write_class_rle_csv(
    path: str | Path, rles: dict[str, dict[str, str]], rle_column: str = "predicted"
) -> None:
    """Write ``{id: {class: rle}}`` as a CSV ``id,class,<rle_column>`` (one row per id and
    class, in the given order), atomically: the multi-class form of :func:`write_rle_csv`.

    Example:
        >>> write_class_rle_csv("sub.csv", {"aaa": {"healthy": "1 3", "sclerotic": ""}})
        ... # doctest: +SKIP
    """
    rows = ([i, name, rle] for i, per_class in rles.items() for name, rle in per_class.items())
    _write_rows(Path(path), ["id", "class", rle_column], rows)


def read_class_rle_csv(
    path: str | Path, rle_column: str | None = None
) -> dict[str, dict[str, str]]:
    """Read a CSV ``id,class,<encoding|predicted>`` into ``{id: {class: rle}}``.

    Raises:
        InputDataError: the file or a column is missing, a field is empty, or an
            ``(id, class)`` pair is repeated.

    Example:
        >>> read_class_rle_csv("sub.csv")["aaa"]  # doctest: +SKIP
        {'healthy': '1 3', 'sclerotic': ''}
    """
    path = Path(path)
    columns, rows = _read_csv(path)
    column = rle_column or _pick_rle_column(columns, path)
    _require_columns(columns, ("id", "class", column), path)
    out: dict[str, dict[str, str]] = {}
    for line, row in rows:
        image_id, name = (row["id"] or "").strip(), (row["class"] or "").strip()
        if not image_id or not name:
            raise InputDataError(f"{path} line {line}: columns 'id' and 'class' must not be empty")
        per_class = out.setdefault(image_id, {})
        if name in per_class:
            raise InputDataError(
                f"(id, class) pairs must be unique in {path}; ({image_id!r}, {name!r}) repeats "
                f"on line {line}"
            )
        per_class[name] = (row[column] or "").strip()
    return out


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (e.g. to tell a multi-class RLE CSV by its ``class`` column);
    only the first line is read."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"CSV file not found: {path}")
    with path.open(newline="") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def _write_rows(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    """A CSV written under a temporary name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened with "x" (not mkstemp) so the file gets the usual umask mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class MaskImage:
    """A mask image read window by window; ``read_window`` returns ``(h, w)`` uint8.

    Attributes:
        path: The mask file.
        height, width: Mask size in pixels.
        binary: True maps every value > 0 to 1; False keeps class ids (must fit uint8).
        classes: With ``binary=False``: the class count K; a value other than 0, 1..K or
            255 (ignore) is an error. None keeps any value.
    """

    def __init__(self, path: Path, binary: bool = True, classes: int | None = None) -> None:
        self.path, self.binary, self.classes = path, binary, classes
        self._slide = None
        self._pixels: np.ndarray | None = None
        if path.suffix.lower() in TIFF_SUFFIXES:
            self._slide = open_slide(path)
            self.height, self.width = self._slide.height, self._slide.width
        else:
            self._pixels = _read_whole_image(path)
            self.height, self.width = self._pixels.shape[:2]

    def __enter__(self) -> MaskImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``(h, w)`` uint8 window at ``(y, x)``; 0 past the edges.

        Example:
            >>> with open_mask_image("masks/aaa.png") as m:  # doctest: +SKIP
            ...     m.read_window(0, 0, 512, 512).max()
            1
        """
        if self._slide is not None:
            values = self._slide.read_raw(y, x, h, w)
        else:
            values = _pad_window(self._pixels, y, x, h, w)
        labels = self._to_labels(values)
        if not self.binary and self.classes is not None:
            self._check_classes(labels, y, x)
        return labels

    def close(self) -> None:
        """Release the file (TIFF) or the decoded pixels (PNG)."""
        if self._slide is not None:
            self._slide.close()
        self._pixels = None

    def _to_labels(self, values: np.ndarray) -> np.ndarray:
        if self.binary:
            return (values > 0).any(axis=-1).astype(np.uint8)
        first = values[..., 0]
        if first.size and first.max() > 255:
            raise InputDataError(
                f"class ids must fit uint8 (<= 255); got {int(first.max())} in {self.path}"
            )
        return first.astype(np.uint8)

    def _check_classes(self, labels: np.ndarray, y: int, x: int) -> None:
        k = int(self.classes or 0)
        bad = (labels > k) & (labels != IGNORE_VALUE)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            raise InputDataError(
                f"mask {self.path} has value {int(labels[row, col])} at pixel (y={y + row}, "
                f"x={x + col}); with {k} data.mask_classes a mask pixel must be 0 (background), "
                f"1..{k} (a class) or {IGNORE_VALUE} (ignore)"
            )


def open_mask_image(path: str | Path, binary: bool = True, classes: int | None = None) -> MaskImage:
    """Open a mask image (TIFF windowed; PNG/others decoded whole since they have no windows).

    Args:
        path: The mask file.
        binary: True maps values > 0 (in any channel) to 1; False keeps the
            values of the first channel as class ids.
        classes: With ``binary=False``, the class count K: windows holding a value
            other than 0, 1..K or 255 raise ``InputDataError``.

    Raises:
        InputDataError: the file is missing or cannot be decoded.

    Example:
        >>> with open_mask_image("data/masks/aaa.tiff") as m:  # doctest: +SKIP
        ...     tile = m.read_window(1024, 2048, 1024, 1024)
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"mask image not found: {path}")
    return MaskImage(path, binary=binary, classes=classes)


def read_label_csv(
    path: str | Path, root: str | Path
) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """Read a classification CSV ``path,labels`` (labels joined by ``|``; empty = none).

    Args:
        path: The CSV file.
        root: Folder that relative image paths are resolved against.

    Returns:
        ``(items, class_names)``: items are ``(absolute image path, [label, ...])``
        in file order; class names are all labels found, sorted.

    Raises:
        InputDataError: the CSV or a listed image is missing (naming the
            line), or a column is missing.

    Example:
        >>> items, classes = read_label_csv("data/cxr/labels.csv", "data/cxr")  # doctest: +SKIP
        >>> items[0]  # doctest: +SKIP
        (PosixPath('/abs/data/cxr/images/00000.png'), ['dots', 'ring'])
    """
    path, root = Path(path), Path(root).resolve()
    items: list[tuple[Path, list[str]]] = []
    classes: set[str] = set()
    columns, rows = _read_csv(path)
    _require_columns(columns, ("path", "labels"), path)
    for line, row in rows:
        name = (row["path"] or "").strip()
        image = (root / name).resolve()
        if not name or not image.is_file():
            raise InputDataError(
                f"{path} line {line}: image {name!r} not found (looked for {image})"
            )
        labels = [s.strip() for s in (row["labels"] or "").split(LABEL_SEPARATOR) if s.strip()]
        classes.update(labels)
        items.append((image, labels))
    return items, sorted(classes)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, row)`` pairs; missing or header-less files are errors."""
    if not path.is_file():
        raise InputDataError(f"CSV file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not columns:
            raise InputDataError(f"{path} is empty; expected a header line")
        reader.fieldnames = columns
        rows = [(reader.line_num, row) for row in reader]
    return columns, rows


def _pick_rle_column(columns: list[str], path: Path) -> str:
    found = [c for c in RLE_COLUMNS if c in columns]
    if not found:
        raise InputDataError(
            f"an RLE CSV needs a column 'encoding' (train.csv) or 'predicted' (submission); "
            f"got columns {columns} in {path}"
        )
    return found[0]


def _require_columns(columns: list[str], needed: tuple[str, ...], path: Path) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputDataError(f"{path} is missing column(s) {missing}; got columns {columns}")


def _read_whole_image(path: Path) -> np.ndarray:
    """Decode a non-TIFF mask image with OpenCV as ``(H, W, C)`` in its own dtype."""
    import cv2

    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputDataError(f"cannot decode mask image {path} (OpenCV could not read it)")
    if pixels.ndim == 2:
        return pixels[..., None]
    # OpenCV gives BGR(A); reorder so that channel 0 is red, as in TIFF masks.
    return pixels[..., [2, 1, 0, *range(3, pixels.shape[2])]] if pixels.shape[2] >= 3 else pixels


def _pad_window(pixels: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Slice ``(h, w)`` out of an in-memory image, zero-padded past the edges."""
    height, width = pixels.shape[:2]
    out = np.zeros((h, w, pixels.shape[2]), pixels.dtype)
    y0, y1 = max(y, 0), min(y + h, height)
    x0, x1 = max(x, 0), min(x + w, width)
    if y0 < y1 and x0 < x1:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0:y1, x0:x1]
    return out
