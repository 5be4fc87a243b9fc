"""``train.strategy``: one device, all local devices, or several machines, via tf.distribute.

| strategy         | tf.distribute                   | devices                                  |
|------------------|---------------------------------|------------------------------------------|
| ``default``      | the default strategy            | one device                               |
| ``mirrored``     | ``MirroredStrategy``            | every local GPU (or every logical CPU)   |
| ``multi_worker`` | ``MultiWorkerMirroredStrategy`` | every GPU of every host in ``TF_CONFIG`` |

The model and optimizer are created inside ``strategy.scope()``.
``train.batch_size`` is per replica; the input pipeline produces the global
batch (per replica × replicas) and Keras splits it across replicas.

Input across workers (multi_worker only, :func:`shard_input`):

* Local input: every worker builds the same keyed stream of global batches
  and keeps its 1/N share of each (``AutoShardPolicy.DATA``). Sharding by
  file would be wrong here: an epoch is a pure function of (seed, epoch)
  over all shard files, and an endless ``repeat`` stream has no per-worker
  file list.
* tf.data service (``input.service``): sharding is OFF and every trainer
  reads the same named job (:func:`shared_token` names it), so the
  dispatcher hands each global batch to one trainer and each trainer feeds
  its replicas from the batches it received: together they read every record
  once per epoch, as one trainer would. (A job per trainer would read the
  data once per trainer; DATA sharding would then also drop half of what was
  served.)

Only the chief (``task.type == "chief"``, or worker 0 when there is no
chief) writes the run folder; the other workers write into a scratch folder
that the trainer deletes when the run ends.

Keras 3 cannot ``fit`` under a ``MultiWorkerMirroredStrategy`` of several
workers as it comes (keras-team/keras#20585, tensorflow/tensorflow#72388):
:func:`multi_worker_fit` works around both bugs.

Example:
    >>> strategy = make_strategy("mirrored")                   # doctest: +SKIP
    >>> strategy.num_replicas_in_sync                          # doctest: +SKIP
    2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfpipe.errors import ConfigError

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` for ``train.strategy``.

    Raises:
        ConfigError: ``multi_worker`` without a valid ``TF_CONFIG`` environment variable.
    """
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL needs GPUs; on CPUs gradients are reduced on one device.
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if kind == "multi_worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.strategy must be default, mirrored or multi_worker; got {kind!r}")


def tf_config() -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` (empty when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    try:
        config = json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {text[:200]!r}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object; got {text[:200]!r}")
    return config


def check_tf_config() -> None:
    """``TF_CONFIG`` names a cluster and this host's place in it (before TensorFlow waits on it).

    Raises:
        ConfigError: unset, not JSON, no ``cluster.worker`` list, or a task
            whose type is not in the cluster or whose index is out of range.

    Example:
        >>> # TF_CONFIG: {"cluster": {"worker": ["a:1", "b:1"]},
        >>> #             "task": {"type": "worker", "index": 2}}
        >>> check_tf_config()  # doctest: +SKIP
        Traceback (most recent call last):
        tfpipe.errors.ConfigError: TF_CONFIG task.index must be 0..1 (cluster.worker has 2
        hosts); got task.index=2
    """
    if not os.environ.get("TF_CONFIG"):
        raise ConfigError(
            "train.strategy: multi_worker needs the TF_CONFIG environment variable "
            f"(e.g. {TF_CONFIG_EXAMPLE}) on every host"
        )
    config = tf_config()
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker", []), list):
        raise ConfigError(
            f"TF_CONFIG needs a cluster with a worker list (e.g. {TF_CONFIG_EXAMPLE}); "
            f"got cluster={cluster!r}"
        )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError(
            f"TF_CONFIG task.type must be one of the cluster's jobs {sorted(cluster)}; "
            f"got task={task!r}"
        )
    hosts = cluster[task["type"]]
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(hosts):
        raise ConfigError(
            f"TF_CONFIG task.index must be 0..{len(hosts) - 1} (cluster.{task['type']} has "
            f"{len(hosts)} hosts); got task.index={index!r}"
        )


def num_workers() -> int:
    """Hosts taking part (1 without ``TF_CONFIG``)."""
    cluster = tf_config().get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def worker_name() -> str:
    """This host's task in ``TF_CONFIG``, e.g. ``"worker 1"`` (``"worker 0"`` without one)."""
    task = tf_config().get("task", {})
    return f"{task.get('type', 'worker')} {task.get('index', 0)}"


def is_chief() -> bool:
    """True on the host that writes the run folder (always True on one machine)."""
    config = tf_config()
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not has_chief


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with each ``multi_worker`` host keeping its share of every global batch.

    Every worker reads and decodes the whole global batch; one machine: no effect.
    """
    return _with_shard_policy(dataset, tf.data.experimental.AutoShardPolicy.DATA)


def shard_input(dataset: tf.data.Dataset, served: bool) -> tf.data.Dataset:
    """The sharding policy for a training or validation stream (see the module docstring).

    Args:
        served: The stream comes from the tf.data service: sharding OFF (each
            trainer already receives its own batches from a shared job).

    Example:
        >>> ds = shard_input(tf.data.Dataset.range(4).batch(2), served=True)
        >>> ds.options().experimental_distribute.auto_shard_policy.name
        'OFF'
    """
    if served:
        return _with_shard_policy(dataset, tf.data.experimental.AutoShardPolicy.OFF)
    return shard_by_data(dataset)


def _with_shard_policy(dataset: tf.data.Dataset, policy: Any) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def shared_token(strategy: tf.distribute.Strategy) -> str:
    """A random token that every worker of ``strategy`` receives, drawn once per run.

    Every worker draws a number; a collective sum in which only replica 0
    contributes hands its draw to all. It names the run's tf.data service
    jobs: the same on every trainer, new on every run (a named job that has
    finished serves nothing to a later run that reuses its name).

    Example:
        >>> shared_token(tf.distribute.get_strategy())  # doctest: +SKIP
        '5f3a09c2'
    """
    draw = float(secrets.randbits(32))  # float64 holds it exactly

    def contribution() -> tf.Tensor:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.cast(tf.equal(replica, 0), tf.float64) * draw

    @tf.function  # run eagerly, a collective strategy warns of its overhead
    def handed_out() -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(contribution), axis=None)

    return f"{int(handed_out().numpy()):08x}"


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight array's bytes (trainable and not), in the model's order.

    Equal digests on two workers mean bit-identical weights.

    Example:
        >>> weights_digest(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))[:4]
        ... # doctest: +SKIP
        'a41c'
    """
    digest = hashlib.sha256()
    for array in model.get_weights():
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def multi_worker_fit(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Run ``model.fit`` (and its validation) under ``strategy`` inside this block.

    Outside a ``MultiWorkerMirroredStrategy`` of several workers it does
    nothing. There it works around two Keras 3 bugs, undone on the way out:

    * ``fit`` reduces the first input batch across workers with
      ``strategy.reduce`` before training, which fails on an ``(image, mask)``
      tuple (keras-team/keras#20585). A model that does not record its
      strategy skips that step; ``fit`` then takes the strategy from the
      enclosing ``strategy.scope()``, and the compiled metrics, which that
      step would have built, are built in the first traced step.
    * Each step's logs are reduced across workers with ``axis=0``, which
      fails on scalars (tensorflow/tensorflow#72388): the steps return
      each value as a vector of one, which the reduction averages.

    It also makes every ``BatchNormalization`` layer ``synchronized``: the
    batch statistics are those of the global batch, so the moving mean and
    variance, which each worker updates on its own, stay identical on all
    workers (as the trained weights do) and equal to one machine's with the
    same global batch. The saved model keeps ``synchronized=False``.

    Example:
        >>> with multi_worker_fit(model, strategy):      # doctest: +SKIP
        ...     model.fit(train, epochs=2, steps_per_epoch=10)
    """
    several = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not several or num_workers() < 2:
        yield
        return
    # Keras keeps the strategy a model was built under in this attribute (no public setter).
    recorded = model._distribute_strategy
    model._distribute_strategy = None
    for name in ("train_step", "test_step"):
        setattr(model, name, _vector_logs(getattr(model, name)))
    norms = [layer for layer in batch_norms(model) if not layer.synchronized]
    for layer in norms:
        layer.synchronized = True  # read at every call: no rebuild needed
    try:
        with strategy.scope():
            yield
    finally:
        model._distribute_strategy = recorded
        for name in ("train_step", "test_step"):
            delattr(model, name)  # the instance attributes set above; the methods return
        for layer in norms:
            layer.synchronized = False


def batch_norms(model: keras.Model) -> Iterator[keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` layer of ``model``, inside nested models too."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from batch_norms(layer)


def _vector_logs(step: Any) -> Any:
    def wrapped(data: Any) -> dict[str, Any]:
        return {k: keras.ops.reshape(v, (1,)) for k, v in step(data).items()}

    return wrapped
