"""Whole-slide prediction and evaluation (``tfpipe predict`` / ``tfpipe evaluate``).

Modules, in the order data flows through them:

* :mod:`.windows` — the sliding-window grid at the training scale, blending weights.
* :mod:`.infer` — one slide: band reads, tissue filter, batches, stitching.
* :mod:`.ensemble` — checkpoints (a file, a fold, a run's folds) and TTA.
* :mod:`.tta` — test-time augmentation: transforms, their inverses, averaging.
* :mod:`.stitch` — the low-resolution accumulator; exact strip/tile upscaling.
* :mod:`.intervals` — column-major run intervals: streaming RLE, dice without decoding.
* :mod:`.outputs` — RLE, mask PNG/TIFF, written atomically.
* :mod:`.slides` — :func:`predict_slides`, the command.
* :mod:`.sources`, :mod:`.evaluate`, :mod:`.overlay` — :func:`evaluate`, the
  threshold sweep and the overlay picture.

Example:
    >>> from tfpipe.predict import evaluate, predict_slides
    >>> summary = predict_slides(exp, "latest", images="data/hubmap/test")  # doctest: +SKIP
    >>> evaluate(summary.out, "data/hubmap/test.csv", images="data/hubmap/test")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate", "predict_slides"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import tfpipe.predict` stays cheap.
    if name == "predict_slides":
        from tfpipe.predict.slides import predict_slides

        return predict_slides
    if name == "evaluate":
        from tfpipe.predict.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'tfpipe.predict' has no attribute {name!r}")
