"""Reading source data without TensorFlow: windowed TIFF slides, RLE masks, CSVs.

* :mod:`tfpipe.io.tiff` — :func:`open_slide` / :class:`Slide` windowed readers:
  TIFF axes and pixel types to ``(h, w, C)`` uint8.
* :mod:`tfpipe.io.rle` — competition RLE codec, the text read and checked, and
  :class:`RleMask` windows.
* :mod:`tfpipe.io.masks` — RLE CSVs, mask images, classification label CSVs.

Example:
    >>> from tfpipe.io import open_slide, RleMask, read_rle_csv
    >>> rles = read_rle_csv("data/hubmap/train.csv")  # doctest: +SKIP
    >>> with open_slide("data/hubmap/train/aaa.tiff") as slide:  # doctest: +SKIP
    ...     mask = RleMask(rles["aaa"], (slide.height, slide.width), source="aaa")
    ...     tile = slide.read_window(0, 0, 1024, 1024)
    ...     tile_mask = mask.read_window(0, 0, 1024, 1024)
"""

from tfpipe.io.masks import MaskImage, open_mask_image, read_label_csv, read_rle_csv, write_rle_csv
from tfpipe.io.rle import RleMask, decode_rle, encode_rle
from tfpipe.io.tiff import BACKENDS, Slide, open_slide

__all__ = [
    "BACKENDS",
    "MaskImage",
    "RleMask",
    "Slide",
    "decode_rle",
    "encode_rle",
    "open_mask_image",
    "open_slide",
    "read_label_csv",
    "read_rle_csv",
    "write_rle_csv",
]
