"""How close to decode-only any batch augmentation can get: two floors of ``bench_input.py``.

``full ÷ decode_only >= 0.9`` leaves the augmentation stage a tenth of the
pipeline's time. These variants run the full pipeline (same draws, same
``tf.numpy_function`` call per batch) with the OpenCV kernel swapped for one
that does no augmentation op:

* ``floor_null_kernel``: the kernel returns the decoded batch it was given
  (nothing written): the cost of the random draws and of the call itself.
* ``floor_copy_kernel``: the kernel copies the tiles and masks into new output
  batches, as every augmentation that writes its tiles must at least do.

Their throughput against ``decode_only`` is the best ``full ÷ decode_only``
a per-batch augmentation stage can reach on the machine, before any op.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def floor_variants(records: Any, cfg: Any) -> dict[str, Callable[[], Iterator[Any]]]:
    """``name -> start`` of fresh, endless iterators, as ``bench_input.make_variants``."""
    import tfpipe.data as td

    def start(kernel: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Callable[[], Iterator]:
        def fresh() -> Iterator[Any]:
            with swapped_kernel(kernel):  # tf.data traces the map functions inside load()
                ds = td.load(records, config=cfg)
            return iter(ds.repeat())

        return fresh

    return {"floor_null_kernel": start(null_kernel), "floor_copy_kernel": start(copy_kernel)}


@contextmanager
def swapped_kernel(kernel: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Iterator[None]:
    """``augment_cv.augment_tiles`` replaced by ``kernel`` while pipelines are built."""
    from tfpipe.data import augment_cv

    real = augment_cv.augment_tiles
    augment_cv.augment_tiles = kernel
    try:
        yield
    finally:
        augment_cv.augment_tiles = real


def null_kernel(images: np.ndarray, masks: np.ndarray, *_: Any, **__: Any) -> tuple:
    """No op and nothing written: the decoded batch goes back as it came."""
    return images, masks


def copy_kernel(images: np.ndarray, masks: np.ndarray, *_: Any, **__: Any) -> tuple:
    """No op, but new output batches, written once: the least an augmentation writes."""
    from tfpipe.data.buffers import OUTPUTS

    out, out_masks = OUTPUTS.take(images.shape), OUTPUTS.take(masks.shape)
    np.copyto(out, images)
    np.copyto(out_masks, masks)
    return out, out_masks


def floor_summary(throughput: dict) -> dict:
    """Each floor and ``full`` against ``decode_only``: wall (median of rounds) and CPU."""
    base = throughput["decode_only"]
    out = {}
    for name in ("floor_null_kernel", "floor_copy_kernel", "full"):
        if name not in throughput:
            continue
        v = throughput[name]
        per_round = [x / b for x, b in zip(v["rounds"], base["rounds"], strict=True)]
        out[name] = {
            "vs_decode_only": statistics.median(per_round),
            "cpu_vs_decode_only": base["cpu_ms_per_image"] / v["cpu_ms_per_image"],
            "cpu_us_over_decode_only": 1000 * (v["cpu_ms_per_image"] - base["cpu_ms_per_image"]),
        }
    budget = 1000 * base["cpu_ms_per_image"] * (1 / 0.9 - 1)
    return {"variants": out, "cpu_us_budget_for_0.9": budget}


def floor_markdown(summary: dict | None) -> list[str]:
    """The report's paragraph on the floors (nothing when they were not measured)."""
    if not summary or "floor_copy_kernel" not in summary["variants"]:
        return []
    v = summary["variants"]
    lines = [
        "",
        "Floors of the augmentation stage (`_input_floors.py`): the full pipeline with "
        "the OpenCV kernel swapped for one that does no op. `floor_null_kernel` returns "
        "the batch it gets (the draws and the call); `floor_copy_kernel` copies it into "
        "new batches (the least any augmentation that writes its tiles does). "
        f"`full ÷ decode_only >= 0.9` leaves the augmentation "
        f"{summary['cpu_us_budget_for_0.9']:.0f} µs of CPU per image.",
        "",
        "| variant | ÷ decode_only (wall) | ÷ decode_only (CPU) | CPU µs/image over decode_only |",
        "|---|---:|---:|---:|",
    ]
    for name, f in v.items():
        lines.append(
            f"| {name} | {f['vs_decode_only']:.2f} | {f['cpu_vs_decode_only']:.2f} "
            f"| {round(f['cpu_us_over_decode_only'])} |"
        )
    return lines
