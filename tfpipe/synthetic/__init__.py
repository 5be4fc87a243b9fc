"""Synthetic data that the project makes itself: the demo, the tests and the benchmarks run on it.

* :mod:`.datasets` — :func:`make_demo_data` (HuBMAP-layout kidney slides with
  RLE truth) and :func:`make_demo_classification` (multi-label images).
* :mod:`.slides` — how a synthetic slide is planned and rendered window by window.
* :mod:`.textures` — the tissue and nuclei textures and stain colours.
* :mod:`.xray` — the patterns of the multi-label images.

Nothing here is needed to train on real data; ``tfpipe make-demo-data`` and
``tfpipe demo`` use it.

Example:
    >>> from tfpipe.synthetic import make_demo_data
    >>> root = make_demo_data("data/hubmap", n=2, size=2048)  # doctest: +SKIP
"""

from tfpipe.synthetic.datasets import make_demo_classification, make_demo_data

__all__ = ["make_demo_classification", "make_demo_data"]
