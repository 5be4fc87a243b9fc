"""tf.distribute strategies: MirroredStrategy on two logical CPUs, worker roles, input sharding.

Also the multi-worker pieces that run without a cluster: TF_CONFIG checks,
sharding policies, the weights digest, the Keras workarounds' set-up and
undoing, scratch folders, and the bounded wait for a tf.data dispatcher. The
real two-process run is tests/test_multiworker.py (slow).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests._train_helpers import CHILD_PRELUDE, experiment, write_records
from tfpipe.cli import main
from tfpipe.data import service
from tfpipe.errors import ConfigError
from tfpipe.train.distribute import (
    batch_norms,
    check_tf_config,
    is_chief,
    make_strategy,
    multi_worker_fit,
    num_workers,
    shard_input,
    weights_digest,
)
from tfpipe.train.fold import FoldJob, served_job
from tfpipe.train.rundir import RunDir
from tfpipe.train.trainer import is_scratch, remove_scratch, train_experiment

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


# One sigmoid conv trained one SGD step on the same batch, on one device and on two
# mirrored replicas: the same reported loss and the same step (the replicas' gradients
# are summed, so each replica's loss must be divided by the replicas in sync).
LOSS_CHILD = textwrap.dedent(
    """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from tfpipe.models.losses import get_loss
    rng = np.random.default_rng(0)
    x = rng.random((8, 8, 8, 3)).astype("float32")
    y = (rng.random((8, 8, 8, 1)) > 0.7).astype("uint8")

    def step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            inputs = keras.Input((8, 8, 3))
            outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
            model = keras.Model(inputs, outputs)
            model.compile(keras.optimizers.SGD(0.1), get_loss("bce"))
        before = model.get_weights()[0]
        loss = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False).history["loss"]
        return loss[0], float(np.abs(model.get_weights()[0] - before).sum())

    one = step(tf.distribute.get_strategy())
    two = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT", json.dumps({"one": one, "two": two}))
    """
)


def test_a_mirrored_step_reports_and_applies_the_loss_once() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LOSS_CHILD], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line.removeprefix("RESULT "))
    (loss1, moved1), (loss2, moved2) = result["one"], result["two"]
    # bce is a mean over pixels: the replicas' halves average to the whole batch's mean.
    assert loss2 == pytest.approx(loss1, rel=1e-4)
    assert moved2 == pytest.approx(moved1, rel=1e-3)


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


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}, "task.index must be 0..1"),
        ({"cluster": WORKERS, "task": {"type": "worker", "index": -1}}, "got task.index=-1"),
        ({"cluster": WORKERS, "task": {"type": "chief", "index": 0}}, "task.type must be one of"),
        ({"cluster": WORKERS}, "jobs ['worker']; got task=None"),
        ({"task": {"type": "worker", "index": 0}}, "needs a cluster with a worker list"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_bad_tf_config_is_named(
    monkeypatch: pytest.MonkeyPatch, config: object, message: str
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_tf_config()


def test_tf_config_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", "{worker: 1}")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        check_tf_config()


def test_a_valid_tf_config_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 1}})
    )
    check_tf_config()


def test_train_with_an_out_of_range_task_is_one_line_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 5}})
    )
    runs = tmp_path / "runs"
    code = main(
        [
            "train",
            str(Path(__file__).parents[1] / "experiments" / "kidney-cpu.yaml"),
            "--set",
            "train.strategy=multi_worker",
            "--set",
            f"train.runs_dir={runs}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tfpipe train: error: TF_CONFIG task.index must be 0..1")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not runs.exists()


def test_service_input_is_not_sharded_local_input_is_sharded_by_data() -> None:
    ds = tf.data.Dataset.range(8).batch(4)
    policy = tf.data.experimental.AutoShardPolicy
    served = shard_input(ds, served=True).options().experimental_distribute.auto_shard_policy
    local = shard_input(ds, served=False).options().experimental_distribute.auto_shard_policy
    assert (served, local) == (policy.OFF, policy.DATA)


def small_model(batch_norm: bool = True) -> keras.Model:
    inner_in = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(2, 1, name="conv")(inner_in)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn_inner")(x)
    inner = keras.Model(inner_in, x, name="inner")
    inputs = keras.Input((4, 4, 2))
    y = keras.layers.BatchNormalization(name="bn_outer")(inner(inputs))
    return keras.Model(inputs, y)


def test_weights_digest_sees_every_bit() -> None:
    a, b = small_model(), small_model()
    b.set_weights(a.get_weights())
    assert weights_digest(a) == weights_digest(b)
    weights = b.get_weights()
    moving_var = weights[-1]  # a non-trainable array counts as much as a trainable one
    moving_var[0] = np.nextafter(moving_var[0], np.float32(2.0))
    b.set_weights(weights)
    assert weights_digest(a) != weights_digest(b)


def test_batch_norms_are_found_in_nested_models() -> None:
    assert sorted(layer.name for layer in batch_norms(small_model())) == ["bn_inner", "bn_outer"]


def test_multi_worker_fit_changes_nothing_outside_a_multi_worker_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    model = small_model()
    with multi_worker_fit(model, tf.distribute.get_strategy()):
        assert "train_step" not in vars(model)
        assert not any(layer.synchronized for layer in batch_norms(model))


def test_served_job_names_one_job_per_fold_and_start_step() -> None:
    job = FoldJob(None, None, None, fold=2, strategy=None, service_job="kidney-0a1b2c3d")
    assert served_job(job, 30) == {"service_job_name": "kidney-0a1b2c3d-fold2-step30"}
    job.service_job = None
    assert served_job(job, 30) == {}


def test_only_multi_worker_non_chiefs_write_scratch_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 1}})
    )
    records = tmp_path / "rec"
    exp = experiment(records, tmp_path / "runs", "train.strategy=multi_worker")
    assert is_scratch(exp)
    # TF_CONFIG left over in a shell does not turn a one-machine run into a scratch copy.
    assert not is_scratch(experiment(records, tmp_path / "runs"))
    first, second = (tmp_path / "runs" / ".worker1" / name for name in ("a", "b"))
    for folder in (first, second):
        (folder / "fold0").mkdir(parents=True)
    remove_scratch(RunDir(first))
    assert not first.exists() and second.is_dir()  # another run of this worker stays
    remove_scratch(RunDir(second))
    assert not (tmp_path / "runs" / ".worker1").exists()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (held bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_wait_for_dispatcher_gives_up_naming_the_address() -> None:
    with closed_port() as port:
        address = f"grpc://127.0.0.1:{port}"
        with pytest.raises(
            ConfigError, match=re.escape(f"no tf.data dispatcher answers at {address}")
        ):
            service.wait_for_dispatcher(address, timeout_s=0.5)
    with pytest.raises(ConfigError, match=re.escape("input.service must be [grpc://]HOST:PORT")):
        service.wait_for_dispatcher("grpc://localhost", timeout_s=0.5)


def test_wait_for_dispatcher_returns_once_the_port_listens() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        service.wait_for_dispatcher(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=5)


def test_train_with_an_unreachable_service_fails_fast_and_leaves_no_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(service, "CONNECT_TIMEOUT_S", 0.5)
    records = write_records(tmp_path / "rec", folds=2, per_fold=8)
    with closed_port() as port:
        exp = experiment(records, tmp_path / "runs", f"input.service=grpc://127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=re.escape("no tf.data dispatcher answers")):
            train_experiment(exp, folds=[0])
    assert list((tmp_path / "runs").iterdir()) == []
