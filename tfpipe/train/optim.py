"""Optimizer and learning-rate schedule from the ``train`` section.

* ``constant``: ``learning_rate`` throughout.
* ``cosine``: cosine decay from ``learning_rate`` to ``min_learning_rate`` over all steps.
* ``warmup_cosine``: linear warm-up from ``learning_rate`` / 100 to ``learning_rate``
  over ``warmup_epochs``, then cosine decay to ``min_learning_rate``.
* ``plateau``: ``learning_rate``, multiplied by ``plateau_factor`` whenever the
  validation metric has not improved for ``plateau_patience`` epochs
  (``ReduceLROnPlateau``), down to ``min_learning_rate``.

Schedules are functions of the optimizer's step counter, which is saved with
the optimizer, so a resumed run continues the curve where it stopped. With
``lookahead.enabled`` the optimizer is wrapped in :class:`Lookahead`; under
mixed precision Keras wraps the result in a ``LossScaleOptimizer`` at compile.

Example:
    >>> opt = make_optimizer(exp.train, steps_per_epoch=100)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras

from tfpipe.config import TrainConfig
from tfpipe.errors import ConfigError
from tfpipe.models.lookahead import Lookahead

WARMUP_START = 0.01


def make_schedule(cfg: TrainConfig, steps_per_epoch: int, where: str = "") -> Any:
    """A float (constant, plateau) or a ``LearningRateSchedule`` for ``cfg.schedule``.

    Raises:
        ConfigError: ``warmup_epochs`` leaves no epoch for the cosine part, or
            ``min_learning_rate`` exceeds ``learning_rate``.
    """
    lr = float(cfg.learning_rate)
    if cfg.min_learning_rate > lr:
        raise ConfigError(
            f"train.min_learning_rate must not exceed train.learning_rate; got "
            f"min_learning_rate={cfg.min_learning_rate}, learning_rate={lr}{where}"
        )
    total = cfg.epochs * steps_per_epoch
    alpha = cfg.min_learning_rate / lr
    if cfg.schedule in ("constant", "plateau"):
        return lr
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=alpha)
    if cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(
            "train.warmup_epochs must be smaller than train.epochs for schedule warmup_cosine; "
            f"got warmup_epochs={cfg.warmup_epochs}, epochs={cfg.epochs}{where}"
        )
    warmup = cfg.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        lr * WARMUP_START,
        decay_steps=total - warmup,
        alpha=alpha,
        warmup_target=lr,
        warmup_steps=warmup,
    )


def make_optimizer(
    cfg: TrainConfig, steps_per_epoch: int, where: str = ""
) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with its schedule, wrapped by Lookahead if enabled.

    ``weight_decay`` is decoupled (AdamW) and applies to ``adamw`` only.
    """
    rate = make_schedule(cfg, steps_per_epoch, where)
    if cfg.optimizer == "adam":
        inner = keras.optimizers.Adam(rate)
    elif cfg.optimizer == "adamw":
        inner = keras.optimizers.AdamW(rate, weight_decay=cfg.weight_decay)
    else:
        inner = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    if not cfg.lookahead.enabled:
        return inner
    return Lookahead(inner, k=cfg.lookahead.k, alpha=cfg.lookahead.alpha)


def plateau_callback(cfg: TrainConfig, monitor: str) -> keras.callbacks.Callback | None:
    """``ReduceLROnPlateau`` on the validation metric for ``schedule: plateau``; else None."""
    if cfg.schedule != "plateau":
        return None
    return keras.callbacks.ReduceLROnPlateau(
        monitor=monitor,
        mode="max",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_learning_rate,
        verbose=1,
    )


def build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's state now, from the model's current weights.

    Left to Keras, the state is created inside the first traced train step, and
    tf.function then traces the step a second time (~1 minute for a
    Unet-EfficientNetB0 on 2 CPU cores). Building here, after any transferred
    weights are in place, gives one trace and the same Lookahead start (slow = fast).
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
