"""Multi-worker training on one machine: a tf.data service and two `tfpipe train` workers.

Starts, over 127.0.0.1 with free ports: one tf.data dispatcher and two data
workers (`tfpipe serve-data`), then two `tfpipe train` processes under
`train.strategy: multi_worker` (one TF_CONFIG each) that read their batches
from the service. Then checks that

* both trainers ended with bit-identical weights (the SHA-256 of every
  weight array that each prints as `fold K: weights sha256 ...`), and
* the runs folder holds exactly one run (the chief's), which is the one row
  of `tfpipe runs`; the other worker's scratch copy is gone.

Everything runs small (a resnet18 Unet with a narrow decoder, 32-px tiles,
2 epochs x 3 steps of 2 tiles per worker) so that it fits a 2-core CPU.
Each process writes its log to WORKDIR/logs/; on a failure the tail of the
failing process's log is printed. Every process started here runs in its
own process group and is stopped on the way out, whatever the way out
(success, failure, Ctrl-C, SIGTERM); `--pid-file` lists the groups while
they run, so that scripts/multiworker-localhost.sh can stop them even if
this interpreter is killed outright.

Usage:
    python scripts/multiworker_localhost.py [--workdir DIR] [--timeout S]

Exit status: 0 when every check passed, 1 when one failed, 130 on Ctrl-C.
The last line of output is `RESULT {json}` with what was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "kidney-cpu.yaml"
DIGEST = re.compile(r"fold (\d+): weights sha256 ([0-9a-f]{64}) on (\S+ \d+)")
READY = {"dispatcher": "tf.data dispatcher at", "worker": "tf.data worker at"}
MARKER = "TFPIPE_MULTIWORKER_WORKDIR"
"""Set in every process started here (to the workdir): tests find leftovers by it."""
STOP_GRACE_S = 5.0


def tfpipe(*args: str) -> list[str]:
    """The `tfpipe` command of this interpreter's install."""
    return [sys.executable, "-m", "tfpipe.cli", *args]


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Processes:
    """The processes started here, each in its own process group, each logging to a file."""

    def __init__(self, work: Path, pid_file: Path | None) -> None:
        self.work = work
        self.logs = work / "logs"
        self.pid_file = pid_file
        self.running: dict[str, subprocess.Popen] = {}
        self.started: list[int] = []
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.running[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), MARKER: str(self.work)},
                cwd=REPO,
                start_new_session=True,  # its own group: Ctrl-C here reaches us, not it
            )
        self.started.append(self.running[name].pid)
        self._write_pids()

    def finish(self, name: str) -> int:
        """Wait for ``name`` to exit; its exit status."""
        code = self.running[name].wait()  # still listed while it runs: Ctrl-C stops it
        del self.running[name]
        self._write_pids()
        return code

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def wait_for_line(self, name: str, text: str, timeout_s: float) -> None:
        """Until ``text`` shows in the log of ``name``; fail if it exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log(name):
            if self.running[name].poll() is not None:
                raise Failure(name, f"exited with {self.running[name].returncode} while starting")
            if time.monotonic() > deadline:
                raise Failure(name, f"not ready after {timeout_s:.0f} s (no {text!r} in its log)")
            time.sleep(0.2)

    def stop_all(self) -> None:
        """SIGINT to every group, SIGKILL to what is left after a grace period; reap all."""
        for proc in self.running.values():
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.running.values():
            # Also after a clean exit: whatever the leader left in its group goes too.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.running.clear()
        self._write_pids()

    def _write_pids(self) -> None:
        if self.pid_file is not None:
            groups = "".join(f"{p.pid}\n" for p in self.running.values())
            self.pid_file.write_text(groups)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid


class Failure(Exception):
    """A process failed or a check did not hold; names the process whose log tells why."""

    def __init__(self, name: str | None, message: str) -> None:
        super().__init__(message)
        self.name = name


def build_records(work: Path, procs: Processes) -> Path:
    """Tiny records (3 synthetic slides -> 32-px tiles, 2 folds, 4 records a shard), once."""
    records = work / "records"
    if (records / "manifest.json").is_file():
        return records
    steps = {
        "make-demo-data": tfpipe(
            "make-demo-data", str(work / "data"), "--slides", "3", "--size", "1024", "--overwrite"
        ),
        "build-records": tfpipe(
            "build-records",
            str(EXPERIMENT),
            *sets(
                f"data.images={work / 'data' / 'train'}",
                f"data.labels={work / 'data' / 'train.csv'}",
                f"data.output={records}",
                "data.tile_size=256",
                "data.downscale=8",
                "data.stride=null",
                "data.folds=2",
                "data.shard_records=4",  # several shards a fold: both data workers get some
                "data.workers=1",
            ),
            "--overwrite",
        ),
    }
    for name, command in steps.items():
        procs.start(name, command)
        if procs.finish(name) != 0:
            raise Failure(name, "failed")
    return records


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def train_command(records: Path, runs: Path, dispatcher: int, epochs: int, steps: int) -> list:
    return tfpipe(
        "train",
        str(EXPERIMENT),
        "--name",
        "multiworker",
        *sets(
            f"data.output={records}",
            f"train.runs_dir={runs}",
            "train.strategy=multi_worker",
            "train.folds=[0]",
            f"train.epochs={epochs}",
            f"train.steps_per_epoch={steps}",
            "train.batch_size=2",  # per replica: global batch 4 over the two workers
            "input.shuffle_buffer=16",
            f"input.service=grpc://127.0.0.1:{dispatcher}",
            "model.backbone=resnet18",  # few layers: the graph traces fast on a CPU
            "model.decoder_filters=[16, 16, 8, 8, 8]",
        ),
    )


def run(work: Path, timeout_s: float, epochs: int, steps: int, procs: Processes) -> dict:
    """Start everything, wait for the trainers, check the results; return what was measured."""
    t0 = time.monotonic()
    records = build_records(work, procs)
    runs = work / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # this script's own folder: one run is what is checked
    dispatcher, *trainer_ports = free_ports(3)
    procs.start("dispatcher", tfpipe("serve-data", "--dispatcher", str(dispatcher)))
    procs.wait_for_line("dispatcher", READY["dispatcher"], 120)
    for i in range(2):
        address = f"127.0.0.1:{dispatcher}"
        procs.start(
            f"dataworker{i}", tfpipe("serve-data", "--worker", address, "--host", "127.0.0.1")
        )
    for i in range(2):
        procs.wait_for_line(f"dataworker{i}", READY["worker"], 120)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in trainer_ports]}
    command = train_command(records, runs, dispatcher, epochs, steps)
    started = time.monotonic()
    for i in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        procs.start(f"trainer{i}", command, env={"TF_CONFIG": json.dumps(tf_config)})
    wait_trainers(procs, started + timeout_s)
    train_s = time.monotonic() - started
    digests = check_weights(procs)
    run_name = check_one_run(runs)
    return {
        "ok": True,
        "weights_sha256": digests,
        "identical_weights": True,
        "run": run_name,
        "runs_listed": 1,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.monotonic() - t0, 1),
        "steps": epochs * steps,
        "workdir": str(work),
    }


def wait_trainers(procs: Processes, deadline: float) -> None:
    """Until both trainers exit; fail at once when any process fails or time runs out."""
    trainers = ["trainer0", "trainer1"]
    while True:
        codes = {n: procs.running[n].poll() for n in trainers}
        for name, code in codes.items():
            if code not in (None, 0):
                raise Failure(name, f"exited with {code}")
        if all(code == 0 for code in codes.values()):
            return
        for name in ("dispatcher", "dataworker0", "dataworker1"):
            if procs.running[name].poll() is not None:
                raise Failure(name, "stopped while the trainers were running")
        if time.monotonic() > deadline:
            raise Failure("trainer0", "trainers still running at the time limit (--timeout)")
        time.sleep(0.5)


def check_weights(procs: Processes) -> dict[str, str]:
    """Both trainers printed the same weights digest (bit-identical weights)."""
    digests = {}
    for name in ("trainer0", "trainer1"):
        found = DIGEST.findall(procs.log(name))
        if not found:
            raise Failure(name, "printed no 'weights sha256' line")
        digests[found[-1][2]] = found[-1][1]
    if len(set(digests.values())) != 1:
        raise Failure(None, f"the workers' weights differ: {digests}")
    return digests


def check_one_run(runs: Path) -> str:
    """The runs folder holds the chief's run and nothing else; `tfpipe runs` lists one row."""
    entries = sorted(p.name for p in runs.iterdir())
    if len(entries) != 1 or not (runs / entries[0] / "summary.json").is_file():
        raise Failure(None, f"expected one finished run in {runs}; found {entries}")
    table = subprocess.run(
        tfpipe("runs", "--runs-dir", str(runs)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # Piped, `tfpipe runs` prints a Markdown table: a header, a rule, one line per run.
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| run |")]
    if len(rows) != 1 or not rows[0].startswith(f"| {entries[0]} |"):
        raise Failure(None, f"`tfpipe runs` should list one run, {entries[0]}; got:\n{table}")
    return entries[0]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # through the finally below, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for training")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    parser.add_argument("--pid-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="tfpipe-multiworker-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    procs = Processes(work, args.pid_file)
    t0 = time.monotonic()
    result: dict[str, Any] = {"ok": False, "workdir": str(work)}
    try:
        result = run(work, args.timeout, args.epochs, args.steps, procs)
    except Failure as failure:
        print(f"multiworker-localhost: FAILED: {failure.name or 'check'}: {failure}")
        if failure.name is not None:
            print(f"--- last lines of {procs.logs / (failure.name + '.log')} ---")
            print(procs.tail(failure.name))
    except KeyboardInterrupt:
        print("multiworker-localhost: interrupted; stopping every process")
        result["interrupted"] = True
    finally:
        procs.stop_all()
    result["pids"] = procs.started
    result["wall_seconds"] = round(time.monotonic() - t0, 1)
    if result["ok"]:
        print_summary(result)
    print("RESULT " + json.dumps(result))
    if result.get("interrupted"):
        return 130
    return 0 if result["ok"] else 1


def print_summary(result: dict[str, Any]) -> None:
    digest = next(iter(result["weights_sha256"].values()))
    print(
        f"multiworker-localhost: OK in {result['wall_seconds']:.0f} s "
        f"(training {result['train_seconds']:.0f} s)\n"
        f"  2 trainers x MultiWorkerMirroredStrategy over 127.0.0.1, fed by a tf.data service "
        f"(1 dispatcher, 2 workers); {result['steps']} steps of 4 images\n"
        f"  weights: identical on both workers, sha256 {digest[:16]}… (every array, bitwise)\n"
        f"  runs: one run, {result['run']}, in {result['workdir']}/runs "
        f"(the other worker's copy removed)\n"
        f"  logs: {result['workdir']}/logs/; every process stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
