"""The measurement core: time a ``tf.data.Dataset`` the way a training loop consumes it.

One iterator is opened per measurement; ``warmup`` elements are pulled and
thrown away (they pay for thread start-up, file opening, autotune ramp-up and
tracing), then ``repeats`` back-to-back windows of ``batches`` elements are
timed. Every window gives one images/s figure, so the spread (min / median /
max) shows how noisy the machine is. Images are counted from the element
itself (the leading dimension of a batched element, 1 otherwise), so the rate
is exact whatever the batch size or a short final batch.

MB/s is images/s times the bytes one image occupies when it *leaves* the stage
(serialized record, encoded bytes, or decoded pixels): the caller states it,
because measuring the byte size of every element in Python would cost more
than some stages themselves.

Example:
    >>> import tensorflow as tf
    >>> from tfpipe.bench.measure import time_dataset
    >>> ds = tf.data.Dataset.range(10_000).batch(100).repeat()
    >>> m = time_dataset(ds, "range", batches=20, repeats=3, batched=True, bytes_per_image=8)
    >>> m.images_per_window
    2000
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # stages imports this module
    from tfpipe.bench.stages import Stage

MB = 1e6


@dataclass
class Measurement:
    """Throughput of one pipeline variant: one figure per timed window."""

    name: str
    seconds: list[float]
    """Wall time of each timed window."""
    images: list[int]
    """Images delivered in each timed window."""
    bytes_per_image: float = 0.0
    warmup_seconds: float = 0.0
    """Time to pull the warm-up elements (includes time to first element)."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_window(self) -> int:
        return self.images[0] if self.images else 0

    @property
    def rates(self) -> list[float]:
        """Images/s of every window."""
        return [
            n / s if s > 0 else float("inf") for n, s in zip(self.images, self.seconds, strict=True)
        ]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def min(self) -> float:
        return min(self.rates, default=0.0)

    @property
    def max(self) -> float:
        return max(self.rates, default=0.0)

    @property
    def mb_per_s(self) -> float:
        """Median MB/s leaving the stage (10**6 bytes)."""
        return self.median * self.bytes_per_image / MB

    @property
    def ms_per_image(self) -> float:
        return 1000.0 / self.median if self.median > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            images_per_s={"min": self.min, "median": self.median, "max": self.max},
            mb_per_s=self.mb_per_s,
        )
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Measurement:
        keys = {"name", "seconds", "images", "bytes_per_image", "warmup_seconds", "note", "extra"}
        return cls(**{k: v for k, v in d.items() if k in keys})


def count_images(element: Any, batched: bool) -> int:
    """Images in one dataset element: the leading dimension of its first tensor when batched."""
    if not batched:
        return 1
    first = element
    while isinstance(first, tuple | list):
        first = first[0]
    if isinstance(first, dict):
        first = next(iter(first.values()))
    shape = first.shape
    return int(shape[0]) if len(shape) else 1


def time_iterator(
    iterator: Iterator[Any],
    name: str,
    *,
    batches: int,
    repeats: int,
    warmup: int = 1,
    batched: bool = True,
    bytes_per_image: float = 0.0,
    on_window: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time ``repeats`` windows of ``batches`` elements pulled from ``iterator``.

    Args:
        iterator: An iterator over dataset elements (it must not run out).
        name: Label of the measurement.
        batches: Elements per timed window.
        repeats: Number of timed windows.
        warmup: Elements pulled and discarded before timing.
        batched: Whether elements are batches (images counted from the leading dim).
        bytes_per_image: Bytes one image occupies leaving this stage (for MB/s).
        on_window: Called after each timed window (progress display).
        clock: Seconds now; tests pass a scripted clock.

    Returns:
        The :class:`Measurement`.
    """
    if batches < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"batches and repeats must be >= 1 and warmup >= 0; got {batches=}, "
            f"{repeats=}, {warmup=}"
        )
    start = clock()
    for _ in range(warmup):
        next(iterator)
    warm = clock() - start
    seconds, images = [], []
    for _ in range(repeats):
        n = 0
        t0 = clock()
        for _ in range(batches):
            n += count_images(next(iterator), batched)
        seconds.append(clock() - t0)
        images.append(n)
        if on_window is not None:
            on_window()
    return Measurement(name, seconds, images, bytes_per_image, warmup_seconds=warm)


def time_dataset(ds: Any, name: str, **kwargs: Any) -> Measurement:
    """Repeat ``ds`` forever and time it with :func:`time_iterator` (same keyword arguments).

    The dataset is repeated so that short datasets (a few hundred demo tiles)
    still fill every window; epochs then follow each other as in training.
    """
    return time_iterator(iter(ds.repeat()), name, **kwargs)


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when ``b`` is zero (a variant that failed to run)."""
    return a / b if b else float("nan")


def measure_stage(
    stage: Stage,
    *,
    batches: int,
    repeats: int,
    warmup: int,
    tick: Callable[[], None] | None = None,
) -> Measurement:
    """Time one stage (or ablation or sweep variant); the measurement keeps its labels."""
    m = time_dataset(
        stage.build(),
        stage.name,
        batches=batches,
        repeats=repeats,
        warmup=warmup if stage.warmup is None else max(warmup, stage.warmup),
        batched=stage.batched,
        bytes_per_image=stage.bytes_per_image,
        on_window=tick,
    )
    m.note, m.extra = stage.note, dict(stage.extra)
    return m
