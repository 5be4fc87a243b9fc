"""``train.strategy``: one device, all local devices, or several machines, via tf.distribute.

| strategy         | tf.distribute                   | devices                                  |
|------------------|---------------------------------|------------------------------------------|
| ``default``      | the default strategy            | one device                               |
| ``mirrored``     | ``MirroredStrategy``            | every local GPU (or every logical CPU)   |
| ``multi_worker`` | ``MultiWorkerMirroredStrategy`` | every GPU of every host in ``TF_CONFIG`` |

The model and optimizer are created inside ``strategy.scope()``.
``train.batch_size`` is per replica; the input pipeline produces the global
batch (per replica × replicas) and Keras splits it across replicas.

Input sharding across workers (multi_worker only, :func:`shard_by_data`):
every worker builds the same keyed stream of global batches and keeps its
1/N share of each (``AutoShardPolicy.DATA``). Sharding by file would be
wrong here: an epoch is a pure function of (seed, epoch) over all shard
files, and an endless ``repeat`` stream has no per-worker file list. (For
input that does not scale with the workers, use the tf.data service:
``input.service``.) On one machine the policy has no effect.

Only the chief (``task.type == "chief"``, or worker 0 when there is no
chief) writes the run folder; the other workers write into a temporary folder
that is deleted at the end (Keras needs every worker to save, because saving
mirrored variables is a collective operation).

Example:
    >>> strategy = make_strategy("mirrored")                   # doctest: +SKIP
    >>> strategy.num_replicas_in_sync                          # doctest: +SKIP
    2
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfpipe.errors import ConfigError


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` for ``train.strategy``.

    Raises:
        ConfigError: ``multi_worker`` without a ``TF_CONFIG`` environment variable.
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
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "train.strategy: multi_worker needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}) on every host'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.strategy must be default, mirrored or multi_worker; got {kind!r}")


def tf_config() -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` (empty when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {text[:200]!r}") from None


def num_workers() -> int:
    """Hosts taking part (1 without ``TF_CONFIG``)."""
    cluster = tf_config().get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


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
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
