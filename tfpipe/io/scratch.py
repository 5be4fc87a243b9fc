"""Per-thread scratch buffers for one tile between two steps of a hot loop.

tf.data runs several batches at once, one per thread, so each thread needs
its own buffer; a fresh array per tile instead costs ~20 µs of page faults
and, freed on another thread than the next one is taken on, spreads glibc's
heap arenas. Used by the PNG decoder (:mod:`tfpipe.io.png`) and the OpenCV
augmentation (:mod:`tfpipe.data.augment_cv`).

Example:
    >>> a = thread_buffer("rows", (4, 13))
    >>> a is thread_buffer("rows", (4, 13)), a.dtype
    (True, dtype('uint8'))
"""

from __future__ import annotations

import threading

import numpy as np

_BUFFERS = threading.local()


def thread_buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """This thread's ``uint8`` buffer ``name`` of ``shape``; its contents are left over.

    One buffer per ``(name, shape)``: a thread that alternates shapes (tiles and
    their masks) keeps one of each instead of reallocating.
    """
    buffers = _BUFFERS.__dict__
    key = (name, shape)
    buffer = buffers.get(key)
    if buffer is None:
        buffer = buffers[key] = np.empty(shape, np.uint8)
    return buffer
