"""Freed heap memory handed back to the operating system at the start of every epoch.

Why: glibc gives each thread that allocates its own heap arena and keeps
what is freed there for reuse. tf.data starts new threads for every iterator
(every Keras epoch), so the freed space of the arenas drifts upwards for
many epochs: the input pipeline's RSS grew 2-10 % over 10 epochs on the
2-core reference machine while what it actually held stayed flat.
``malloc_trim(0)`` returns the free pages of every arena; called once per
epoch it costs a few milliseconds and keeps RSS flat
(``benchmarks/bench_input.py`` measures it). It changes no allocator setting:
the process allocates as before. Where there is no glibc (macOS, musl), this
does nothing.

Example:
    >>> batches = release_heap_each_epoch(tf.data.Dataset.range(3))
    >>> [int(b) for b in batches]  # the same elements; the heap was trimmed first
    [0, 1, 2]
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf


def release_free_heap() -> bool:
    """Return the free pages of every glibc heap arena to the OS; False where unsupported."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_heap_each_epoch(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds``, with :func:`release_free_heap` run each time an iteration starts.

    The release is a prefix that yields no elements, so the elements, their
    spec and their order are those of ``ds``. It runs in this process: put it
    after a tf.data service ``distribute``, not before.
    """

    def release_then_nothing(_: tf.Tensor) -> tf.data.Dataset:
        released = tf.numpy_function(_release, [], tf.int64, stateful=True)
        # Zero elements of ds's structure (a leading axis of length 0), after the release.
        with tf.control_dependencies([released]):
            empty = tf.nest.map_structure(
                lambda s: tf.zeros([0, *(0 if d is None else d for d in s.shape)], s.dtype),
                ds.element_spec,
            )
        return tf.data.Dataset.from_tensor_slices(empty)

    # One traced function, not a map and a flat_map: each costs time to first batch.
    once = tf.data.Dataset.range(1).flat_map(
        tf.autograph.experimental.do_not_convert(release_then_nothing)
    )
    return once.concatenate(ds)


def _release() -> np.int64:
    return np.int64(release_free_heap())
