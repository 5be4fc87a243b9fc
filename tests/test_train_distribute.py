"""tf.distribute strategies: MirroredStrategy on two logical CPUs, worker roles, input sharding."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._train_helpers import CHILD_PRELUDE, write_records
from tfpipe.errors import ConfigError
from tfpipe.train.distribute import is_chief, make_strategy, num_workers

# Logical devices must be configured before TensorFlow initialises: a fresh process.
CHILD = (
    "import tensorflow as tf\n"
    "cpu = tf.config.list_physical_devices('CPU')[0]\n"
    "two = [tf.config.LogicalDeviceConfiguration()] * 2\n"
    "tf.config.set_logical_device_configuration(cpu, two)\n"
    + CHILD_PRELUDE
    + textwrap.dedent(
        """
        import json
        from pathlib import Path
        import keras
        from tfpipe.train.trainer import train_experiment

        class Batches(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.replicas = self.model.distribute_strategy.num_replicas_in_sync

        records, runs = sys.argv[1:3]
        exp = _train_helpers.experiment(Path(records), Path(runs), "train.strategy=mirrored",
                                        "train.epochs=1", "train.steps_per_epoch=2")
        probe = Batches()
        summary = train_experiment(exp, folds=[0], callbacks=[probe])
        print("RESULT", json.dumps({"replicas": probe.replicas, "steps": summary.folds[0].steps,
                                    "score": summary.folds[0].score}))
        """
    )
)


@pytest.mark.slow
@pytest.mark.timeout(660)  # above the subprocess's own limit
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path: Path) -> None:
    records = write_records(tmp_path / "rec", folds=2, per_fold=12)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(records), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["replicas"] == 2 and result["steps"] == 2
    assert 0.0 <= result["score"] <= 1.0
    assert "2 steps of 8 images (2 replica(s)" in " ".join(proc.stdout.split())  # 4 per replica


def test_default_strategy_and_multi_worker_needs_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_strategy("default").num_replicas_in_sync == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="multi_worker needs the TF_CONFIG"):
        make_strategy("multi_worker")


def cluster(task_type: str, index: int, chief: bool) -> str:
    spec = {"worker": ["h1:1", "h2:1"], **({"chief": ["h0:1"]} if chief else {})}
    return json.dumps({"cluster": spec, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize(
    ("task_type", "index", "chief", "expected"),
    [
        ("chief", 0, True, True),
        ("worker", 0, True, False),
        ("worker", 0, False, True),
        ("worker", 1, False, False),
    ],
)
def test_only_the_chief_writes(
    monkeypatch: pytest.MonkeyPatch, task_type: str, index: int, chief: bool, expected: bool
) -> None:
    monkeypatch.setenv("TF_CONFIG", cluster(task_type, index, chief))
    assert is_chief() is expected
    assert num_workers() == (3 if chief else 2)


def test_no_tf_config_is_one_chief(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and num_workers() == 1
