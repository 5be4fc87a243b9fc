"""Two `tfpipe train` workers under MultiWorkerMirroredStrategy, fed by a tf.data service.

Runs scripts/multiworker_localhost.py (one dispatcher, two data workers, two
trainers, all over 127.0.0.1) and checks what it promises: exit 0,
bit-identical weights on both trainers, one run in `tfpipe runs`, and no
process left behind, also when it is interrupted with Ctrl-C. Slow: five
TensorFlow processes and a resnet18 Unet traced twice, 3-6 minutes on a
shared 2-core CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tfpipe.train.runlog import collect_rows

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "multiworker_localhost.py"
WRAPPER = REPO / "scripts" / "multiworker-localhost.sh"
MARKER = "TFPIPE_MULTIWORKER_WORKDIR"  # set by the script in every process it starts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]


def leftovers(work: Path, pids: list[int] = ()) -> list[psutil.Process]:
    """Live processes the script started for ``work`` (zombies are gone for good)."""
    found = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            marked = proc.environ().get(MARKER) == str(work)
            if (marked or proc.pid in pids) and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return list(found.values())


def no_leftovers(work: Path, pids: list[int] = ()) -> list[psutil.Process]:
    """:func:`leftovers` after a few seconds' grace (killed processes take a moment to go)."""
    deadline = time.monotonic() + 10
    while (left := leftovers(work, pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def result_of(stdout: str) -> dict:
    line = next(x for x in reversed(stdout.splitlines()) if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_two_workers_train_identical_weights_into_one_run(tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(work), "--timeout", "1800"],
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = result_of(proc.stdout)
    digests = result["weights_sha256"]
    assert sorted(digests) == ["worker 0", "worker 1"]
    assert digests["worker 0"] == digests["worker 1"]
    rows = collect_rows(work / "runs")
    assert [r.run for r in rows] == [result["run"]] and rows[0].complete
    assert rows[0].folds_done == 1
    assert sorted(p.name for p in (work / "runs").iterdir()) == [result["run"]]
    assert (work / "runs" / result["run"] / "fold0" / "best.keras").is_file()
    for name in ("dispatcher", "dataworker0", "dataworker1", "trainer0", "trainer1"):
        assert (work / "logs" / f"{name}.log").is_file()
    assert len(result["pids"]) == 7  # make-demo-data, build-records, 1 + 2 servers, 2 trainers
    assert no_leftovers(work, result["pids"]) == []


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    work = tmp_path / "work"
    wrapper = subprocess.Popen(
        [str(WRAPPER), "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 900
        trainer_log = work / "logs" / "trainer1.log"
        while not trainer_log.is_file() and wrapper.poll() is None:
            assert time.monotonic() < deadline, "the trainers never started"
            time.sleep(1)
        time.sleep(5)  # the trainers are importing TensorFlow or waiting for each other
        assert len(leftovers(work)) >= 5  # dispatcher, 2 data workers, 2 trainers
        os.killpg(wrapper.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, _ = wrapper.communicate(timeout=120)
    finally:
        if wrapper.poll() is None:
            os.killpg(wrapper.pid, signal.SIGKILL)
            wrapper.wait()
    assert wrapper.returncode == 130, out[-3000:]
    assert "interrupted; stopping every process" in out
    assert no_leftovers(work, result_of(out)["pids"]) == []
