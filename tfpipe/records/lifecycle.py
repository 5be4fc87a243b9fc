"""A build's life around its output folder: the lock, SIGTERM, and temp folders of dead builds.

* **Lock.** A build holds ``<output>.lock`` (``fcntl.flock``) from before it
  checks the output until it has published it, so two builds into one output
  never both run: the second fails with :class:`OutputLockedError` naming the
  holder's pid (written into the lock file), or waits (``wait=True``,
  ``--wait-lock``). The kernel drops the lock when its holder dies, also by
  ``kill -9``; the lock file is removed on release.
* **SIGTERM** is turned into :class:`Terminated` (a ``KeyboardInterrupt``) so
  the build unwinds exactly as on Ctrl-C: queued units are cancelled, running
  ones finish, the temporary folder is removed. The CLI exits with 143
  (128 + SIGTERM) after SIGTERM, 130 after SIGINT.
* **Stale temp folders.** A build that died by ``kill -9`` leaves
  ``<output>.tmp-<pid>`` (and, if it died inside the final swap,
  ``<output>.old-<pid>``). The next build into the same output removes those
  whose pid is no longer alive (:func:`remove_stale_temps`); a live build's
  folders are kept.

Example:
    >>> with terminate_as_interrupt(), output_lock(Path("records/kidney")):  # doctest: +SKIP
    ...     ...  # build into records/kidney.tmp-<pid>, then rename it into place
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from tfpipe.errors import RecordsError


class OutputLockedError(RecordsError):
    """Another build holds the output's lock."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C (the CLI then exits with 128 + ``signum``)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it.

    Example:
        >>> lock_path(Path("records/kidney")).as_posix()
        'records/kidney.lock'
    """
    return output.with_name(f"{output.name}.lock")


def temp_path(output: Path, kind: str = "tmp", pid: int | None = None) -> Path:
    """``<output>.<kind>-<pid>``: where a build writes (``tmp``) or parks the old output (``old``).

    Example:
        >>> temp_path(Path("records/kidney"), pid=12).as_posix()
        'records/kidney.tmp-12'
    """
    return output.with_name(f"{output.name}.{kind}-{os.getpid() if pid is None else pid}")


@contextlib.contextmanager
def output_lock(output: Path, wait: bool = False, progress: bool = True) -> Iterator[None]:
    """Hold ``<output>.lock`` for the duration of the block.

    Args:
        output: The records folder being built (its parent is created).
        wait: Block until the holder is done instead of raising.
        progress: Say on stderr that the build is waiting.

    Raises:
        OutputLockedError: another process holds the lock and ``wait`` is False.
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, output, wait, progress)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Unlink while still holding the lock: a waiter that opened the old
        # inode notices (see _acquire) and retries on a fresh file.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _acquire(path: Path, output: Path, wait: bool, progress: bool) -> int:
    """Open and flock ``path``; retry when the file was replaced while we waited."""
    said = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = _holder(path)
                if not wait:
                    raise OutputLockedError(
                        f"output {output} is being built by another process ({holder}, lock "
                        f"file {path}); only one build may write an output at a time: wait for "
                        f"it to finish, or pass --wait-lock to wait for it"
                    )
                if progress and not said:
                    print(f"waiting for {holder} to finish building {output} ...", file=sys.stderr)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; Ctrl-C / SIGTERM still interrupt it
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed this file; lock the new one


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(path: Path) -> str:
    """``pid N`` from the lock file, or a vaguer phrase when it is not written yet."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "a process that has not written its pid yet"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM inside the block (main thread, default handler only).

    A second SIGTERM while the first one unwinds is ignored, so clean-up is
    not cut short. An application's own SIGTERM handler is left alone.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def remove_stale_temps(output: Path, progress: bool = True) -> list[Path]:
    """Remove ``<output>.tmp-<pid>`` / ``.old-<pid>`` left by builds whose pid is not alive.

    Call it while holding :func:`output_lock`. An ``.old-<pid>`` folder is
    the previous output parked during the final swap: it is put back when the
    output is missing, else removed.

    Returns:
        The paths removed or restored.

    Example:
        >>> remove_stale_temps(Path("records/kidney"))  # doctest: +SKIP
        [PosixPath('records/kidney.tmp-4242')]
    """
    done = []
    for kind in ("old", "tmp"):
        for path in sorted(output.parent.glob(f"{output.name}.{kind}-*")):
            pid = path.name.rsplit("-", 1)[1]
            if not pid.isdigit() or psutil.pid_exists(int(pid)):
                continue
            if kind == "old" and not output.exists():
                path.rename(output)
                what = f"restored the previous output {output} from {path.name}"
            else:
                _remove(path)
                what = f"removed {path}"
            if progress:
                print(f"{what} (left by build pid {pid}, which has ended)", file=sys.stderr)
            done.append(path)
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
