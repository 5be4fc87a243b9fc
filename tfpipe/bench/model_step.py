"""Model step time: pure compute on in-memory batches, then training steps fed by the pipeline.

The experiment's model (``tfpipe.models.build_model``) is compiled with the
experiment's loss and trained with ``train_on_batch``; each call returns
host-side numbers, so every step is timed to completion.

* **compute**: the same synthetic batch (uint8 image, target of the pipeline's
  shape) is already in memory, so the step measures the model alone. Warm-up
  steps (tracing, autotuning) are excluded. On a GPU the step is measured
  twice, in float32 and under ``mixed_float16`` (the global Keras policy is
  restored afterwards).
* **end-to-end**: the same model trained on batches pulled from the real
  pipeline (``tfpipe.data.load``); end-to-end − compute is the stall per step,
  the time the model waits for input.
* **augmentation in the model** (:func:`measure_augment_in_model`): both
  again with the experiment's augmentation moved into the training step
  (:class:`tfpipe.data.Augment` on the batch and its masks), fed by the
  pipeline with augmentation off.

Example:
    >>> timing = measure_model(exp, iter(load(...)), (256, 256, 3))  # doctest: +SKIP
    >>> round(timing.step_ms), round(timing.stall_ms)                # doctest: +SKIP
    (4210, 35)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from tfpipe.bench.measure import Measurement
from tfpipe.bench.report import AugmentPlacement, ModelTiming
from tfpipe.config import Experiment

if TYPE_CHECKING:
    from tfpipe.bench.stages import StagePlan


def measure_model(
    exp: Experiment,
    batches: Iterator[Any] | None,
    input_shape: tuple[int, int, int],
    *,
    steps: int = 3,
    warmup: int = 1,
    fit_steps: int | None = None,
    steps_per_epoch: int = 100,
    tick: Callable[[], None] | None = None,
) -> ModelTiming:
    """Time the experiment's training step without input, then fed by ``batches``.

    Args:
        exp: The experiment (model, loss, learning rate, batch size, precision).
        batches: Iterator over the pipeline's ``(image, target)`` batches, or None
            to skip the end-to-end measurement.
        input_shape: ``(height, width, channels)`` of one image.
        steps: Timed compute-only steps.
        warmup: Untimed steps before each measurement.
        fit_steps: Timed end-to-end steps (default ``steps``).
        steps_per_epoch: For the learning-rate schedule (it shapes values, not cost).
        tick: Called after each timed step (progress display).

    Returns:
        The :class:`ModelTiming`.
    """
    gpu = has_gpu()
    batch_size = exp.train.batch_size or exp.input.batch_size
    x, y = synthetic_batch(exp, batch_size, input_shape)
    timed = {"steps": steps, "warmup": warmup, "tick": tick}
    model = compiled_model(exp, input_shape, steps_per_epoch)
    compute = time_steps(model, x, y, "compute float32", **timed)
    compute_mixed, e2e_model = None, model
    if gpu:
        with dtype_policy("mixed_float16"):
            mixed_model = compiled_model(exp, input_shape, steps_per_epoch)
            compute_mixed = time_steps(mixed_model, x, y, "compute mixed_float16", **timed)
        if wants_mixed(exp, gpu):
            e2e_model = mixed_model
    end_to_end = time_fed(e2e_model, batches, "end-to-end", timed, fit_steps)
    return ModelTiming(
        model=f"{exp.model.arch}-{exp.model.backbone}",
        device=device_name(),
        batch_size=batch_size,
        input_shape=list(input_shape),
        compute=compute,
        compute_mixed=compute_mixed,
        end_to_end=end_to_end,
        end_to_end_precision="mixed_float16" if e2e_model is not model else "float32",
    )


def measure_augment_in_model(
    sp: StagePlan,
    batches: Iterator[Any] | None,
    pipeline: Measurement,
    *,
    steps: int = 3,
    warmup: int = 1,
    fit_steps: int | None = None,
    tick: Callable[[], None] | None = None,
) -> AugmentPlacement:
    """Time the training step with the experiment's augmentation inside it.

    Args:
        sp: The plan (experiment, input settings, output shape).
        batches: Iterator over the pipeline's batches with augmentation off, or
            None to skip the end-to-end measurement.
        pipeline: That pipeline's measured throughput (reported alongside).
        steps, warmup, fit_steps, tick: As :func:`measure_model`.

    Returns:
        The :class:`AugmentPlacement`; precision as :func:`measure_model`'s end-to-end step.
    """
    from tfpipe.bench.stages import augmenter

    exp, shape = sp.exp, sp.input_shape
    x, y = synthetic_batch(exp, sp.cfg.batch_size, shape)
    timed = {"steps": steps, "warmup": warmup, "tick": tick}
    with dtype_policy("mixed_float16") if wants_mixed(exp, has_gpu()) else nullcontext():
        model = compiled_model(exp, shape, sp.plan.num_records // sp.cfg.batch_size, sp)
        compute = time_steps(model, x, y, "compute + Augment", **timed)
        end_to_end = time_fed(model, batches, "end-to-end + Augment", timed, fit_steps)
    return AugmentPlacement(list(augmenter(sp).ops), pipeline, compute, end_to_end)


def wants_mixed(exp: Experiment, gpu: bool) -> bool:
    """Whether ``tfpipe train`` would train under ``mixed_float16`` on this machine."""
    return exp.train.mixed_precision == "on" or (exp.train.mixed_precision == "auto" and gpu)


def time_fed(
    model: Any,
    batches: Iterator[Any] | None,
    name: str,
    timed: dict[str, Any],
    fit_steps: int | None,
) -> Measurement | None:
    """The training step fed by the pipeline's ``batches`` (None without them).

    The step is traced and warm by now; the settled-start rule still drops a
    first step slowed by the pipeline's start-up, without a fixed warm-up step.
    """
    if batches is None:
        return None
    steps = fit_steps or timed["steps"]
    return time_train_loop(model, batches, name, **{**timed, "steps": steps, "warmup": 0})


def augmenting(model: Any, sp: StagePlan) -> Any:
    """``model`` whose training step first augments the batch with ``tfpipe.data.Augment``.

    Segmentation masks move with their images, so the layer runs in the
    training step on ``(images, masks)`` rather than as the model's first layer.
    """
    import keras

    from tfpipe.data import Augment

    # Tile mixing stays in the input pipeline (the layer cannot mix targets).
    per_tile = sp.cfg.augment.model_copy(update={"mixup_p": 0.0, "cutmix_p": 0.0})
    layer = Augment(per_tile, size=sp.plan.size, seed=sp.cfg.seed)
    pairs = sp.plan.layout.task == "segmentation"

    class Augmenting(keras.Model):
        def __init__(self) -> None:
            super().__init__(name=f"{model.name}_augmenting")
            self.inner, self.augment = model, layer

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self.inner(inputs, training=training)

        def train_step(self, data: Any) -> Any:
            x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
            if pairs:
                x, y = self.augment((x, y), training=True)
            else:
                x = self.augment(x, training=True)
            return super().train_step((x, y, weights))

    return Augmenting()


def compiled_model(
    exp: Experiment,
    input_shape: tuple[int, int, int],
    steps_per_epoch: int,
    augment: StagePlan | None = None,
) -> Any:
    """``build_model`` compiled as ``tfpipe train`` compiles it: the experiment's loss and
    optimizer (schedule, Lookahead); under the active Keras dtype policy, so Keras adds the
    loss scaling itself under ``mixed_float16``. Training metrics are left out (they cost a
    reduction per step, not a second forward pass). With ``augment`` (the plan), the
    step augments the batch first (:func:`augmenting`); without it, the model carries the
    colour layer of ``input.augment.colour_in_model``, as in training."""
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    from tfpipe.models import build_model, get_loss
    from tfpipe.train.fold import colour_layer
    from tfpipe.train.optim import build_optimizer, make_optimizer

    model = build_model(exp.model, input_shape, augment=None if augment else colour_layer(exp))
    if augment is not None:
        model = augmenting(model, augment)
    optimizer = make_optimizer(exp.train, max(1, steps_per_epoch))
    model.compile(optimizer=optimizer, loss=get_loss(exp.train.loss))
    build_optimizer(model)  # one trace of the step instead of two
    return model


def synthetic_batch(
    exp: Experiment, batch_size: int, input_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A random batch with the pipeline's shapes and dtypes (uint8 images, uint8 masks or
    float32 labels), so the compute step and the end-to-end step share one traced function."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size, *input_shape), dtype=np.uint8)
    if exp.model.task == "segmentation":
        y = (rng.random((batch_size, *input_shape[:2], 1)) < 0.1).astype(np.uint8)
    else:
        y = (rng.random((batch_size, exp.model.classes)) < 0.3).astype(np.float32)
    return x, y


def time_steps(
    model: Any,
    x: Any,
    y: Any,
    name: str,
    *,
    steps: int,
    warmup: int,
    tick: Callable[[], None] | None = None,
) -> Measurement:
    """Time ``train_on_batch`` on the same in-memory batch: compute only."""
    import tensorflow as tf

    # Copied to the accelerator once, so no step pays for a host-to-device transfer.
    device = "/GPU:0" if has_gpu() else "/CPU:0"
    with tf.device(device):
        x, y = tf.identity(tf.constant(x)), tf.identity(tf.constant(y))
    return time_train_loop(
        model, iter(lambda: (x, y), None), name, steps=steps, warmup=warmup, tick=tick
    )


def time_train_loop(
    model: Any,
    batches: Iterator[Any],
    name: str,
    *,
    steps: int,
    warmup: int,
    tick: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time ``steps`` calls of ``train_on_batch`` over ``batches`` after a settled warm-up.

    At least ``warmup`` steps are discarded, and then every step before the
    first two consecutive steps that agree within :data:`SETTLED` (at most
    :data:`MAX_WARMUP` in all): a step function can be traced twice (an
    optimizer that creates state on its first call), and a fixed warm-up would
    put that multi-second retrace among the timed steps.
    """
    times: list[float] = []
    start: int | None = None
    batch_size = 0
    for x, y in batches:
        began = clock()
        model.train_on_batch(x, y)
        times.append(clock() - began)
        batch_size = int(x.shape[0])
        if tick is not None and warmup < len(times) <= warmup + steps:
            tick()
        start = settled_start(times, warmup)
        if start is not None and len(times) - start >= steps:
            break
    if start is None:
        raise ValueError(f"{name}: the batches ran out after {len(times)} steps")
    timed = times[start : start + steps]
    return Measurement(name, timed, [batch_size] * len(timed), warmup_seconds=sum(times[:start]))


SETTLED = 1.5
"""Two consecutive steps within this factor of each other end the warm-up."""
MAX_WARMUP = 6
"""Most steps ever discarded as warm-up."""


def settled_start(times: list[float], warmup: int) -> int | None:
    """Index of the first timed step: the first of two agreeing steps after ``warmup``."""
    for i in range(warmup, len(times) - 1):
        fast, slow = sorted(times[i : i + 2])
        if slow <= SETTLED * fast or i >= MAX_WARMUP:
            return i
    return MAX_WARMUP if len(times) > MAX_WARMUP else None


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set the global Keras dtype policy for the block, then restore the previous one."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def device_name() -> str:
    """``GPU: <name>`` when TensorFlow sees a GPU, else ``CPU (<n> cores)``."""
    from tfpipe.bench.machine import gpu_names

    gpus = gpu_names()
    return f"GPU: {gpus[0]}" if gpus else f"CPU ({os.cpu_count()} cores)"
