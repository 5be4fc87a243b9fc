"""Lookahead against the paper's update rule, and inside Keras: fit, mixed precision, saving."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpipe.models.lookahead import Lookahead

A = np.array([1.0, 3.0], np.float32)  # f(w) = 0.5 * sum(A * w**2), gradient A * w
W0 = np.array([2.0, -1.0], np.float32)


def paper_trajectory(lr: float, k: int, alpha: float, steps: int) -> np.ndarray:
    """Zhang et al. 2019, Algorithm 1, with SGD as the inner optimizer."""
    fast, slow, out = W0.copy(), W0.copy(), []
    for t in range(1, steps + 1):
        fast = fast - lr * A * fast
        if t % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
        out.append(fast.copy())
    return np.array(out)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(("k", "alpha"), [(3, 0.5), (1, 0.8), (4, 1.0)])
def test_quadratic_trajectory_follows_paper(compiled: bool, k: int, alpha: float) -> None:
    var = keras.Variable(W0)
    opt = Lookahead(keras.optimizers.SGD(0.1), k=k, alpha=alpha)

    def step() -> None:
        opt.apply([A * var.value], [var])

    run = tf.function(step) if compiled else step
    got = []
    for _ in range(10):
        run()
        got.append(var.numpy().copy())
    np.testing.assert_allclose(np.array(got), paper_trajectory(0.1, k, alpha, 10), atol=1e-6)
    assert int(opt.iterations) == 10 and int(opt.inner_optimizer.iterations) == 10


def tiny_regression() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    return model, x, x.sum(axis=1, keepdims=True)


def test_fit_syncs_fast_to_slow_every_k_steps() -> None:
    model, x, y = tiny_regression()
    model.compile(Lookahead(keras.optimizers.Adam(0.01), k=4, alpha=0.5), "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 8 steps: last step is a sync
    opt = model.optimizer
    assert int(opt.iterations) == 8
    for slow, fast in zip(opt.slow_weights, model.trainable_variables, strict=True):
        np.testing.assert_allclose(slow.numpy(), fast.numpy(), atol=1e-7)
    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)  # one step: no sync
    assert any(
        not np.allclose(s.numpy(), f.numpy())
        for s, f in zip(opt.slow_weights, model.trainable_variables, strict=True)
    )


def test_slow_weights_survive_keras_file(tmp_path: Path) -> None:
    model, x, y = tiny_regression()
    model.compile(Lookahead(keras.optimizers.Adam(0.01), k=3), "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 8 steps: slow != fast
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, Lookahead) and loaded.optimizer.k == 3
    assert int(loaded.optimizer.iterations) == 8
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy())


def test_backup_and_restore_brings_back_slow_weights(tmp_path: Path) -> None:
    model, x, y = tiny_regression()
    model.compile(Lookahead(keras.optimizers.SGD(0.05), k=3), "mse")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[backup])  # 16 steps
    fresh, _, _ = tiny_regression()
    fresh.compile(Lookahead(keras.optimizers.SGD(0.05), k=3), "mse")
    restored = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)
    fresh.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[restored])  # nothing left
    assert int(fresh.optimizer.iterations) == 16
    for a, b in zip(model.optimizer.slow_weights, fresh.optimizer.slow_weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy())


def test_mixed_precision_wraps_lookahead_in_loss_scaling() -> None:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, x, y = tiny_regression()
        model.compile(Lookahead(keras.optimizers.Adam(0.01), k=2), "mse")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    outer = model.optimizer
    assert isinstance(outer, keras.optimizers.LossScaleOptimizer)
    lookahead = outer.inner_optimizer
    assert isinstance(lookahead, Lookahead)
    # Steps with overflowing float16 gradients are skipped by the loss scaler (each
    # halves the scale) and count neither as inner nor as Lookahead steps.
    skipped = round(np.log2(outer.initial_scale / float(outer.dynamic_scale)))
    applied = int(lookahead.iterations)
    assert 0 < applied == 8 - skipped == int(lookahead.inner_optimizer.iterations)
    assert np.isfinite(history.history["loss"][-1])
    synced = [
        np.allclose(slow.numpy(), fast.numpy(), atol=1e-6)
        for slow, fast in zip(lookahead.slow_weights, model.trainable_variables, strict=True)
    ]
    # k=2: the last applied step synced fast to slow exactly when it was an even one.
    assert all(synced) if applied % 2 == 0 else not all(synced)


def test_learning_rate_is_the_inner_optimizers() -> None:
    opt = Lookahead(keras.optimizers.SGD(0.1))
    opt.learning_rate = 0.05  # what ReduceLROnPlateau does
    assert float(opt.inner_optimizer.learning_rate) == pytest.approx(0.05)
    assert float(opt.learning_rate) == pytest.approx(0.05)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        Lookahead(keras.optimizers.SGD(0.1), k=0)
    with pytest.raises(ValueError, match="alpha must be in"):
        Lookahead(keras.optimizers.SGD(0.1), alpha=1.5)


def test_built_optimizer_traces_the_train_step_once() -> None:
    from tfpipe.train.optim import build_optimizer

    traces: list[int] = []

    class Counting(keras.Model):
        def train_step(self, data):  # runs only while tf.function traces
            traces.append(1)
            return super().train_step(data)

    inputs = keras.Input((8, 8, 3))
    model = Counting(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
    model.compile(Lookahead(keras.optimizers.Adam(1e-3), k=2), "mse")
    build_optimizer(model)
    for slow, fast in zip(model.optimizer.slow_weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(slow.numpy(), fast.numpy())
    x, y = np.ones((4, 8, 8, 3), np.float32), np.zeros((4, 8, 8, 1), np.float32)
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(4), epochs=2, verbose=0)
    assert len(traces) == 1
