"""A process tree sampled every 20 ms: peak RSS and CPU seconds per process, by role.

The ETL benchmarks run each build in a child process whose workers are forked
by a fork server (or started by Beam) and are not waited for by the child, so
``getrusage(RUSAGE_CHILDREN)`` misses them: psutil reads every process of the
tree instead, keeping each one's last CPU time and peak RSS. psutil only, so
the scripts can import this where TensorFlow must not be loaded.

Example:
    >>> sampler = TreeSampler(child.pid, lambda p, root: "worker")  # doctest: +SKIP
    >>> sampler.start(); child.wait(); sampler.stop()                # doctest: +SKIP
    >>> sampler.tree_peak_mb, sampler.by_role()["worker"]["cpu_s"]   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import psutil

RoleOf = Callable[[psutil.Process, int], str]
"""``role_of(process, root_pid)``: a name for the process (asked once per process)."""


class TreeSampler(threading.Thread):
    """Samples the tree under ``pid`` until :meth:`stop`.

    Attributes:
        tree_peak_mb: Peak of the tree's summed RSS.
        peak_mb, cpu, role: Per pid: peak RSS (MiB), CPU seconds (user + system), role.
    """

    def __init__(self, pid: int, role_of: RoleOf) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.role_of = role_of
        self.tree_peak_mb = 0.0
        self.peak_mb: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.role: dict[int, str] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0.0
            for p in procs:
                # A worker may exit between listing and reading it.
                with contextlib.suppress(psutil.NoSuchProcess), p.oneshot():
                    rss = p.memory_info().rss / 2**20
                    total += rss
                    self.peak_mb[p.pid] = max(self.peak_mb.get(p.pid, 0.0), rss)
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                    if p.pid not in self.role:
                        self.role[p.pid] = self.role_of(p, self.root.pid)
            self.tree_peak_mb = max(self.tree_peak_mb, total)
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop sampling and wait for the last sample."""
        self.done.set()
        self.join()

    def by_role(self) -> dict[str, dict[str, list[float]]]:
        """``{role: {"peak_rss_mb": [...], "cpu_s": [...]}}``, one entry per process."""
        out: dict[str, dict[str, list[float]]] = {}
        for pid, role in self.role.items():
            entry = out.setdefault(role, {"peak_rss_mb": [], "cpu_s": []})
            entry["peak_rss_mb"].append(round(self.peak_mb.get(pid, 0.0), 1))
            entry["cpu_s"].append(round(self.cpu.get(pid, 0.0), 2))
        return out
