"""The timing core of ``tfpipe bench-input`` and of the scripts in ``benchmarks/``.

* :func:`time_iterator` (:func:`time_dataset` for a ``tf.data.Dataset``):
  ``warmup`` elements are pulled and thrown away (they pay for thread
  start-up, file opening, autotune ramp-up and tracing), then ``repeats``
  back-to-back windows of ``batches`` elements are timed: wall time and,
  given a ``cpu_clock`` (:func:`cpu_seconds`), process CPU time. Every window
  gives one images/s figure, so the spread (min / median / max) shows how
  noisy the machine is. Images are counted from the element itself (the
  leading dimension of a batched element, 1 otherwise), so the rate is exact
  whatever the batch size or a short final batch.
* :func:`time_call`: wall and CPU seconds of one call (a time to first batch).
* :func:`interleave`: variants in rounds (A B C A B C ...), so that a slow
  spell on a shared machine hits all of them alike; :func:`merge` makes one
  variant's rounds one :class:`Measurement` (a window per round) and
  :func:`round_ratios` sets two variants against each other round by round.

MB/s is images/s times the bytes one image occupies when it *leaves* the stage
(serialized record, encoded bytes, or decoded pixels): the caller states it,
because measuring the byte size of every element in Python would cost more
than some stages themselves.

Example:
    >>> import tensorflow as tf
    >>> from tfpipe.bench.measure import time_dataset
    >>> ds = tf.data.Dataset.range(10_000).batch(100).repeat()
    >>> m = time_dataset(ds, "range", batches=20, repeats=3, batched=True, bytes_per_image=8)
    >>> m.images
    [2000, 2000, 2000]
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import psutil

MB = 1e6
T = TypeVar("T")


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
    cpu_seconds: list[float] = field(default_factory=list)
    """Process CPU time of each timed window (empty when it was not measured)."""

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

    @property
    def cpu_ms_per_image(self) -> float:
        """Median over the windows of CPU milliseconds per image; NaN when CPU was not timed."""
        if not self.cpu_seconds:
            return float("nan")
        pairs = zip(self.cpu_seconds, self.images, strict=True)
        return statistics.median(1000.0 * c / n for c, n in pairs)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.cpu_seconds:
            del d["cpu_seconds"]  # bench-input times wall only; its bench.json stays as it was
        d.update(
            images_per_s={"min": self.min, "median": self.median, "max": self.max},
            mb_per_s=self.mb_per_s,
        )
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Measurement:
        keys = {f.name for f in dataclasses.fields(cls)}
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


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU seconds of this process, and of its child processes with ``children``.

    The children (e.g. PyTorch DataLoader workers) are read while they run:
    ``getrusage`` counts only children that have exited and been waited for.
    """
    total = time.process_time()
    procs = psutil.Process().children(recursive=True) if children else []
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:  # exited between listing and reading
            continue
        total += t.user + t.system
    return total


def time_iterator(
    iterator: Iterator[Any],
    name: str,
    *,
    batches: int,
    repeats: int = 1,
    warmup: int = 1,
    batched: bool = True,
    bytes_per_image: float = 0.0,
    cpu_clock: Callable[[], float] | None = None,
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
        cpu_clock: CPU seconds now (:func:`cpu_seconds`); None to time wall only.
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
    m = Measurement(name, [], [], bytes_per_image, warmup_seconds=clock() - start)
    for _ in range(repeats):
        n = 0
        cpu0 = cpu_clock() if cpu_clock else 0.0
        t0 = clock()
        for _ in range(batches):
            n += count_images(next(iterator), batched)
        m.seconds.append(clock() - t0)
        m.images.append(n)
        if cpu_clock:
            m.cpu_seconds.append(cpu_clock() - cpu0)
        if on_window is not None:
            on_window()
    return m


def time_dataset(ds: Any, name: str, **kwargs: Any) -> Measurement:
    """Repeat ``ds`` forever and time it with :func:`time_iterator` (same keyword arguments).

    The dataset is repeated so that short datasets (a few hundred demo tiles)
    still fill every window; epochs then follow each other as in training.
    """
    return time_iterator(iter(ds.repeat()), name, **kwargs)


def time_call(
    fn: Callable[[], T],
    *,
    cpu_clock: Callable[[], float] = cpu_seconds,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[T, float, float]:
    """``fn()``'s result, and the wall and CPU seconds the call took."""
    cpu0, t0 = cpu_clock(), clock()
    result = fn()
    return result, clock() - t0, cpu_clock() - cpu0


def interleave(
    calls: Mapping[str, Callable[[], T]],
    rounds: int,
    *,
    limit: Mapping[str, int] | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, list[T]]:
    """Call every variant once a round, in order, for ``rounds`` rounds.

    Args:
        calls: Name → one measurement of that variant.
        rounds: Rounds to run.
        limit: Fewer rounds for some variants (slow ones): they sit out the later rounds.
        tick: Called after each call (progress display).

    Returns:
        Name → the results of its calls, round by round.
    """
    limit = limit or {}
    out: dict[str, list[T]] = {name: [] for name in calls}
    for r in range(rounds):
        for name, call in calls.items():
            if r < limit.get(name, rounds):
                out[name].append(call())
                if tick is not None:
                    tick()
    return out


def merge(rounds: Sequence[Measurement]) -> Measurement:
    """One variant's interleaved rounds as one measurement: every round's windows, in order."""
    return dataclasses.replace(
        rounds[0],
        seconds=[s for m in rounds for s in m.seconds],
        images=[n for m in rounds for n in m.images],
        cpu_seconds=[c for m in rounds for c in m.cpu_seconds],
        warmup_seconds=sum(m.warmup_seconds for m in rounds),
    )


def round_ratios(a: Sequence[float], b: Sequence[float]) -> tuple[float, list[float]]:
    """``a / b`` round by round (figures of the same rounds), and the median of those ratios.

    A round times every variant back to back, so a slow spell on a shared
    machine moves both sides of its ratio: the per-round ratios are steadier
    than a ratio of medians.
    """
    per_round = [ratio(x, y) for x, y in zip(a, b, strict=True)]
    return statistics.median(per_round), per_round


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when ``b`` is zero (a variant that failed to run)."""
    return a / b if b else float("nan")
