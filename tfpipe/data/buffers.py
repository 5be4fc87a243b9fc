"""Output arrays for ``tf.numpy_function`` kernels that TensorFlow takes without a copy.

TensorFlow wraps a returned array as the output tensor without copying only
when its data is 64-byte aligned (NumPy's own allocations are 16-byte aligned:
one more pass over every pixel). :data:`OUTPUTS` hands out aligned arrays and
takes them back once TensorFlow has let go, for the batch decoder
(:mod:`tfpipe.data.decode`) and the OpenCV augmentation (:mod:`tfpipe.data.augment_cv`).

Example:
    >>> batch = OUTPUTS.take((16, 256, 256, 3))
    >>> batch.ctypes.data % 64, batch.dtype
    (0, dtype('uint8'))
"""

from __future__ import annotations

import sys
import threading

import numpy as np

_ALIGN = 64  # bytes: TensorFlow's alignment for tensor buffers (EIGEN_MAX_ALIGN_BYTES)


class BufferPool:
    """Output batches reused once TensorFlow has let go of them.

    TensorFlow wraps a returned 64-byte-aligned array as the output tensor
    without copying (NumPy's own 16-byte-aligned allocations it copies: one
    more pass over every pixel). A fresh array per batch costs page faults
    instead (~40 per tile, ~4% of the pipeline's CPU time on the reference
    machine), so arrays are kept and handed out again when nothing but the
    pool refers to them, neither the array nor its base: a tensor that still
    wraps one holds a reference.
    """

    def __init__(self, per_shape: int = 16) -> None:
        self.per_shape = per_shape
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """An aligned ``uint8`` array of ``shape`` that nobody else holds."""
        with self._lock:
            arrays = self._free.setdefault(shape, [])
            for array in arrays:
                # References: the pool's list, `array`, getrefcount's argument;
                # the base: `array`'s view of it and getrefcount's argument.
                if sys.getrefcount(array) == 3 and sys.getrefcount(array.base) == 2:
                    return array
            array = aligned_empty(shape)
            if len(arrays) < self.per_shape:
                arrays.append(array)
            return array


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """A ``uint8`` array whose data starts on a 64-byte boundary (a view of a larger one)."""
    size = int(np.prod(shape))
    raw = np.empty(size + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + size].reshape(shape)


OUTPUTS = BufferPool()
