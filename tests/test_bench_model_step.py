"""Model step timing: the settled warm-up that keeps a retrace out of the timed steps."""

import numpy as np
import pytest

from tfpipe.bench.model_step import settled_start, synthetic_batch, time_train_loop
from tfpipe.config import load_experiment


class ScriptedModel:
    """A stand-in whose training steps take scripted durations (trace, retrace, steady) on a
    fake clock, so the test does not depend on how busy the machine is."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.now = 0.0
        self.steps = 0

    def clock(self):
        return self.now

    def train_on_batch(self, x, y):
        self.steps += 1
        self.now += self.durations.pop(0) if self.durations else 0.05


def batches():
    while True:
        yield np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 8, 8, 1), np.uint8)


@pytest.mark.parametrize(
    ("durations", "first_timed"),
    [
        ([0.6, 0.05, 0.05, 0.05], 1),  # traced once: one warm-up step is enough
        ([0.6, 0.25, 0.05, 0.05, 0.05], 2),  # traced twice: the retrace is discarded too
    ],
)
def test_timed_steps_start_once_two_steps_agree(durations, first_timed):
    ticks = []
    model = ScriptedModel(durations)
    m = time_train_loop(
        model,
        batches(),
        "compute",
        steps=2,
        warmup=1,
        tick=lambda: ticks.append(1),
        clock=model.clock,
    )
    assert m.images == [4, 4]
    assert model.steps == first_timed + 2  # the trace (and retrace) were stepped, not timed
    steady = 4 / 0.05  # images/s of the steady steps; a timed trace would pull it down
    assert m.min == pytest.approx(steady) and m.max == pytest.approx(steady)
    assert len(ticks) == 2


def test_settled_start_rules():
    assert settled_start([9.0, 1.0, 1.2], warmup=1) == 1
    assert settled_start([9.0, 3.0, 1.0, 1.1], warmup=1) == 2
    assert settled_start([9.0, 3.0], warmup=1) is None  # not settled yet: keep stepping
    assert settled_start([9.0, 1.0, 1.0, 1.0], warmup=2) == 2  # never fewer than warmup steps
    noisy = [9.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]
    assert settled_start(noisy, warmup=1) == 6  # capped: a noisy machine still finishes


def test_synthetic_batch_has_the_pipeline_dtypes():
    exp = load_experiment(None)
    x, y = synthetic_batch(exp, 2, (32, 32, 3))
    assert (x.dtype, x.shape, y.dtype, y.shape) == (
        np.uint8,
        (2, 32, 32, 3),
        np.uint8,
        (2, 32, 32, 1),
    )
    exp = load_experiment(None, ["model.task=classification", "model.classes=4"])
    x, y = synthetic_batch(exp, 2, (32, 32, 3))
    assert (y.dtype, y.shape) == (np.float32, (2, 4))


def test_the_augmenting_step_moves_masks_with_their_images():
    from types import SimpleNamespace

    import keras

    from tfpipe.bench.model_step import augmenting
    from tfpipe.config import AugmentConfig

    # The model predicts channel 0 of its input; each mask is channel 0 of its image.
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Lambda(lambda t: keras.ops.cast(t[..., :1], "float32"))(inputs)
    outputs = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(x)
    sp = SimpleNamespace(
        cfg=SimpleNamespace(augment=AugmentConfig(flip=True, rot90=True), seed=1),
        plan=SimpleNamespace(size=8, layout=SimpleNamespace(task="segmentation")),
    )
    model = augmenting(keras.Model(inputs, outputs), sp)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    images = np.random.default_rng(0).integers(0, 2, (16, 8, 8, 3)).astype(np.uint8)
    masks = images[..., :1].copy()
    state = model.augment.seed_generator.state.value.numpy()

    assert model.train_on_batch(images, masks) == 0.0  # every mask moved with its image
    drawn = model.augment.seed_generator.state.value.numpy()
    assert not np.array_equal(drawn, state)  # the step drew
    assert model.train_on_batch(images, np.roll(masks, 1, axis=1)) > 0  # the loss can tell
