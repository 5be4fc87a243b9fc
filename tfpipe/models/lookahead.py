"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back") for Keras 3.

tensorflow-addons, which used to provide it, no longer imports on TF 2.21
(docs/design.md), so tfpipe carries this small wrapper. An inner optimizer updates
the *fast* weights θ (the model's variables) every step; every ``k`` inner
steps the *slow* weights φ move part of the way towards them and the fast
weights restart from there::

    φ ← φ + α (θ − φ)
    θ ← φ

φ starts equal to θ. The slow weights are optimizer variables, so they are
saved in ``.keras`` checkpoints and restored by ``BackupAndRestore`` like the
inner optimizer's moments. Under mixed precision Keras wraps the whole thing
in a ``LossScaleOptimizer`` (loss scaling outside, Lookahead inside): a step
skipped for non-finite gradients then counts neither as an inner step nor as a
Lookahead step, so the k-step rhythm stays aligned with the applied updates.

Example:
    >>> import keras
    >>> from tfpipe.models.lookahead import Lookahead
    >>> opt = Lookahead(keras.optimizers.Adam(1e-3), k=5, alpha=0.5)
    >>> model.compile(optimizer=opt, loss="binary_crossentropy")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfpipe")
class Lookahead(keras.optimizers.Optimizer):
    """Wrap ``optimizer`` so that its updates are smoothed by Lookahead.

    Args:
        optimizer: The inner optimizer (Adam, SGD, AdamW…), a
            ``keras.optimizers.Optimizer`` instance or a name Keras knows.
        k: Inner steps between two synchronisations (``k ≥ 1``).
        alpha: Slow-weights step size, ``0 < alpha ≤ 1``.
        name: Optimizer name.

    Example:
        >>> opt = Lookahead(keras.optimizers.SGD(0.1), k=2, alpha=0.5)
        >>> opt.learning_rate is not None     # the inner optimizer's
        True
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer | str,
        k: int = 5,
        alpha: float = 0.5,
        name: str = "lookahead",
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise ValueError(
                f"Lookahead takes no optimizer arguments of its own (set them on the inner "
                f"optimizer); got {sorted(kwargs)}"
            )
        if int(k) < 1:
            raise ValueError(f"Lookahead k must be >= 1; got k={k}")
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"Lookahead alpha must be in (0, 1]; got alpha={alpha}")
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = keras.optimizers.get(optimizer)
        self.k = int(k)
        self.alpha = float(alpha)
        self._slow: list[Any] = []

    def build(self, var_list: list[Any]) -> None:
        """Create the inner optimizer's state and one slow copy per trainable variable."""
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        # The initializer reads the variable's current value (φ0 = θ0), inside
        # init_scope, so the copy is right even if build runs during tracing.
        self._slow = [
            self.add_variable_from_reference(var, name="slow", initializer=_copy_of(var))
            for var in var_list
        ]

    @property
    def variables(self) -> list[Any]:
        return self._variables + self.inner_optimizer.variables

    @property
    def slow_weights(self) -> list[Any]:
        """The slow weights φ, in the order of the trainable variables."""
        return list(self._slow)

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        # ReduceLROnPlateau and LearningRateScheduler set the rate on the wrapper.
        self.inner_optimizer.learning_rate = value

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> None:
        """One inner step, then — every ``k``-th step — the Lookahead synchronisation."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else self._trainable_variables
        )
        self.inner_optimizer.apply(grads, trainable_variables)
        self._synchronise(variables)
        self._iterations.assign_add(1)

    def _should_sync(self) -> Any:
        # Runs before this step's increment: step number is iterations + 1.
        return ops.equal(ops.mod(self._iterations + 1, self.k), 0)

    def _synchronise(self, variables: list[Any]) -> None:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            raw = [v.value if isinstance(v, keras.Variable) else v for v in variables]
            # Under tf.distribute the variables must be updated in cross-replica
            # context, one update per mirrored copy (as the inner optimizer does).
            tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_sync, self._distribution_strategy, raw
            )
        else:
            ops.cond(self._should_sync(), lambda: self._sync_all(variables), lambda: None)

    def _distributed_sync(self, distribution: Any, variables: list[Any]) -> None:
        def sync_all() -> None:
            for var in variables:
                distribution.extended.update(var, self._sync_one, group=False)

        ops.cond(self._should_sync(), sync_all, lambda: None)

    def _sync_all(self, variables: list[Any]) -> None:
        for var in variables:
            self._sync_one(var)

    def _sync_one(self, var: Any) -> None:
        slow = self._slow[self._get_variable_index(var)]
        alpha = ops.cast(self.alpha, var.dtype)
        updated = slow + alpha * (ops.cast(var, slow.dtype) - slow)
        self.assign(slow, updated)
        self.assign(var, updated)

    def finalize_variable_values(self, var_list: list[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optimizer": keras.optimizers.serialize(self.inner_optimizer),
            "k": self.k,
            "alpha": self.alpha,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Lookahead:
        config = dict(config)
        inner = keras.optimizers.deserialize(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


def _copy_of(var: Any) -> Any:
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.cast(ops.convert_to_tensor(var), dtype or var.dtype)

    return initializer
