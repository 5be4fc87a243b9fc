"""Free live tf.data iterators before Python shuts down, so that exit cannot hang.

Why: the PNG decoder and the OpenCV augmentation run as ``tf.numpy_function``
calls inside parallel maps. A script that stops reading a dataset early
(``next(iter(load(...)))``, then exit) leaves calls in flight; Python then
destroys the iterator while it finalizes, and TensorFlow's ``~Iterator``
waits for those calls, whose threads can no longer take the GIL (Python ends
any thread that tries once finalization has begun): the process hangs for
ever. An ``atexit`` hook runs before finalization, while those threads still
run, so dropping the iterators' resources there lets every call finish and
every iterator close normally. Iterators are not used after exit, so this
changes nothing else.

Example:
    >>> release_iterators_at_exit()   # idempotent: once per process
"""

from __future__ import annotations

import atexit
import gc
import threading

from tensorflow.python.data.ops import iterator_ops

_REGISTERED = threading.Event()


def release_iterators_at_exit() -> None:
    """Register :func:`release_iterators` to run at interpreter exit (once)."""
    if not _REGISTERED.is_set():
        _REGISTERED.set()
        atexit.register(release_iterators)


def release_iterators() -> int:
    """Drop the resource of every live eager tf.data iterator; returns how many.

    Each resource is freed when its last reference goes (``EagerTensor``'s
    destructor releases the GIL while TensorFlow waits for in-flight calls).
    """
    released = 0
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance on a dead weakref.proxy (numba keeps
        # some) raises ReferenceError, which would end the hook before its work.
        owned = issubclass(type(obj), iterator_ops.OwnedIterator)
        if owned and "_iterator_resource" in vars(obj):
            del obj._iterator_resource
            vars(obj).pop("_components", None)
            released += 1
    return released
