"""build-records under faults: SIGTERM, kill -9, a full disk, two builds into one output.

Signals and kills hit a real ``build-records`` process. To kill it at a known
point, it runs through a small wrapper (HOLD below) that holds the map stage,
with its worker processes started, until the test creates a gate file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from tests._records_helpers import data_config, make_dataset
from tfpipe.cli import main
from tfpipe.errors import DiskFullError
from tfpipe.records import build as build_module
from tfpipe.records import diskspace, units, writer
from tfpipe.records.build import build_records
from tfpipe.records.lifecycle import OutputLockedError, output_lock, remove_stale_temps

HOLD = """
import sys, time
from pathlib import Path

if __name__ == "__main__":  # workers import this file as __mp_main__: nothing to run there
    from tfpipe.cli import main
    from tfpipe.records import workers

    gate, ready = Path(sys.argv[1]), Path(sys.argv[2])
    real_map = workers.WorkerPool.map

    def held_map(self, *args, **kwargs):
        self._wait_started()  # the worker processes exist
        ready.write_text("mapping")
        while not gate.exists():
            time.sleep(0.05)
        return real_map(self, *args, **kwargs)

    workers.WorkerPool.map = held_map
    sys.exit(main(sys.argv[3:]))
"""
TIMEOUT = 60  # generous: only a hang should ever reach it
# Each test waits on at most a few TIMEOUTs; a hang anywhere else fails here.
pytestmark = pytest.mark.timeout(300)


class Held:
    """A ``build-records`` subprocess held in its map stage (see HOLD)."""

    def __init__(self, folder: Path, args: list[str]) -> None:
        self.gate, self.ready = folder / "gate", folder / "ready"
        self.stderr_path = folder / "held.stderr"
        script = folder / "hold.py"
        script.write_text(HOLD)
        with self.stderr_path.open("w") as err:  # a file: leaked children cannot block a pipe
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(self.gate), str(self.ready), *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(lambda: self.ready.exists() or self.proc.poll() is not None, "map stage")
        assert self.proc.poll() is None, self.stderr()
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def release(self) -> int:
        self.gate.write_text("go")
        return self.proc.wait(timeout=TIMEOUT)

    def cleanup(self) -> None:
        """Kill whatever a failed test left running (by pid, only this build's processes)."""
        for p in [self.proc, *self.children]:
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(timeout=TIMEOUT)


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still alive (a zombie that nobody reaps has ended too)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.name))


@pytest.fixture
def dataset(tmp_path):
    """Two small slides; an experiment with 2 workers; returns (experiment, output)."""
    root = tmp_path / "data"
    make_dataset(root, [(256, 256), (192, 256)])
    output = tmp_path / "records"
    experiment = tmp_path / "experiment.yaml"
    cfg = data_config(root, workers=2, output=output)
    experiment.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}))
    return experiment, output


@pytest.fixture
def held(tmp_path):
    started: list[Held] = []

    def start(*args: str) -> Held:
        started.append(Held(tmp_path, ["build-records", *args]))
        return started[-1]

    yield start
    for h in started:
        h.cleanup()


# -------------------------------------------------------------------- signals


def test_sigterm_cleans_up_like_ctrl_c(dataset, held):
    experiment, output = dataset
    build = held(str(experiment))
    # The resource tracker, the fork server and its worker(s).
    assert len(build.children) >= 3, build.children
    assert leftovers(output) == ["records.lock", f"records.tmp-{build.proc.pid}"]
    build.proc.send_signal(signal.SIGTERM)
    assert build.proc.wait(timeout=TIMEOUT) == 143
    err = build.stderr()
    assert err.strip().splitlines() == [
        "tfpipe build-records: terminated (SIGTERM); nothing was written"
    ]
    assert leftovers(output) == []
    wait_for(lambda: not running(build.children), "the build's child processes to exit")


def test_kill_9_workers_exit_and_the_next_build_removes_the_stale_temp(dataset, held, capsys):
    experiment, output = dataset
    build = held(str(experiment))
    build.proc.kill()
    assert build.proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    # Workers watch the main process; the fork server and resource tracker follow them.
    wait_for(lambda: not running(build.children), "orphaned workers to exit", timeout=30)
    stale = f"records.tmp-{build.proc.pid}"
    assert stale in leftovers(output)
    assert main(["build-records", str(experiment), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert f"removed {output.parent / stale} (left by build pid {build.proc.pid}" in err
    assert leftovers(output) == ["records"]
    assert (output / "manifest.json").exists()


def test_only_temp_folders_of_dead_builds_are_removed(tmp_path):
    output = tmp_path / "records"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=TIMEOUT)
    for name in (f"tmp-{dead.pid}", f"tmp-{os.getpid()}", "tmp-notapid", f"old-{dead.pid}"):
        (tmp_path / f"records.{name}").mkdir()
    (tmp_path / f"records.old-{dead.pid}" / "old.txt").write_text("previous output")
    removed = remove_stale_temps(output, progress=False)
    assert sorted(p.name for p in removed) == [f"records.old-{dead.pid}", f"records.tmp-{dead.pid}"]
    # The parked previous output of a build killed mid-swap is put back; live builds are kept.
    assert (output / "old.txt").read_text() == "previous output"
    assert leftovers(output) == ["records", f"records.tmp-{os.getpid()}", "records.tmp-notapid"]


# ---------------------------------------------------------------------- locks


def test_a_locked_output_is_refused_with_the_holder_pid(dataset, capsys):
    experiment, output = dataset
    with output_lock(output):
        assert (output.parent / "records.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            build_records(data_config(Path(), output=output), progress=False)
        assert main(["build-records", str(experiment), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tfpipe build-records: error: output {output} is being built by another process "
        f"(pid {os.getpid()}, lock file {output}.lock); only one build may write an output at "
        "a time: wait for it to finish, or pass --wait-lock to wait for it"
    ]
    assert leftovers(output) == []  # the lock file goes with its holder


def test_two_builds_racing_one_fails_while_the_other_holds_the_output(dataset, held, capsys):
    experiment, output = dataset
    first = held(str(experiment), "--overwrite")
    assert main(["build-records", str(experiment), "--overwrite", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"output {output} is being built by another process (pid {first.proc.pid}" in err
    assert first.release() == 0, first.stderr()
    assert leftovers(output) == ["records"]


def test_wait_lock_waits_for_the_other_build(dataset, held, tmp_path):
    experiment, output = dataset
    first = held(str(experiment), "--overwrite")
    args = [str(experiment), "--overwrite", "--workers", "1", "--wait-lock"]
    with (tmp_path / "second.stderr").open("w") as err:
        second = subprocess.Popen(
            [sys.executable, "-m", "tfpipe.cli", "build-records", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        waiting = f"waiting for pid {first.proc.pid} to finish building {output}"
        wait_for(lambda: waiting in (tmp_path / "second.stderr").read_text(), "--wait-lock")
        assert second.poll() is None
        assert first.release() == 0, first.stderr()
        assert second.wait(timeout=TIMEOUT) == 0, (tmp_path / "second.stderr").read_text()
    finally:
        second.kill()
        second.wait(timeout=TIMEOUT)
    assert leftovers(output) == ["records"]


# ------------------------------------------------------------------ full disk


class _FullDisk:
    """A file whose writes fail like a full disk."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fill_disk(stage: str, monkeypatch) -> None:
    """Make the writes of ``stage`` fail with ENOSPC."""
    if stage == "spill":
        real_init = units._Sink.__init__

        def full_spill(self, spill, *args):
            real_init(self, _FullDisk(spill), *args)

        monkeypatch.setattr(units._Sink, "__init__", full_spill)
    elif stage == "shard":
        monkeypatch.setattr(writer._HashingFile, "write", _FullDisk.write)
    else:

        def full_manifest(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(build_module, "write_manifest", full_manifest)


@pytest.mark.parametrize("stage", ["spill", "shard", "manifest"])
def test_full_disk_is_one_line_and_exit_2_and_the_old_output_stays(
    dataset, stage, monkeypatch, capsys
):
    experiment, output = dataset
    output.mkdir()
    (output / "old.txt").write_text("previous dataset")
    _fill_disk(stage, monkeypatch)
    # The message quotes the free space; a fixed figure makes the two builds' messages equal
    # while other processes write to the same disk.
    fixed = SimpleNamespace(total=10**12, used=10**11, free=9 * 10**11)
    monkeypatch.setattr(diskspace, "disk_usage", lambda path: fixed)
    cfg = data_config(experiment.parent / "data", output=output)
    with pytest.raises(DiskFullError) as caught:
        build_records(cfg, overwrite=True, progress=False)
    message = str(caught.value)
    assert message.startswith(
        f"disk full while building {output}: No space left on device in {output.parent}; "
        "the build needs about "
    )
    assert "was free when it started" in message and f"{output} is unchanged" in message
    assert "\n" not in message
    assert main(["build-records", str(experiment), "--overwrite", "--workers", "1"]) == 2
    err = capsys.readouterr().err  # progress bars, then the error as the last line
    assert "Traceback" not in err
    assert err.endswith(f"tfpipe build-records: error: {message}\n")
    assert (output / "old.txt").read_text() == "previous dataset"
    assert leftovers(output) == ["records"]


def test_too_little_space_warns_up_front_and_fails_before_the_shards(dataset, monkeypatch):
    experiment, output = dataset
    free = 20_000  # bytes: less than the estimate (~240 kB), and less than the spill files

    def usage(path):
        return SimpleNamespace(total=10**9, used=10**9 - free, free=free)

    def write_folds(*args, **kwargs):
        pytest.fail("shards were written although they cannot fit")

    monkeypatch.setattr(diskspace, "disk_usage", usage)
    monkeypatch.setattr(build_module, "write_folds", write_folds)
    cfg = data_config(experiment.parent / "data", output=output)
    with (
        pytest.warns(UserWarning, match=rf"{output.parent} has 20 kB free; building .* may "),
        pytest.raises(DiskFullError, match=r"not enough free space in .* to write the shards"),
    ):
        build_records(cfg, progress=False)
    assert leftovers(output) == []
