"""Optimisers and learning-rate schedules of the zoo's recipes (backend-agnostic Keras 3, ``keras.ops`` only).

- :class:`RAdam` with :class:`WarmupLinearDecay`: EM-net's optimiser, the semantics of keras-radam 0.17.0
  (``TRAINING.md`` §1.2). Keras 3 has no RAdam.
- :class:`PolyDecay`: Caffe's "poly" policy of CDeep3M's SGD (``TRAINING.md`` §3.3), which is Keras'
  ``PolynomialDecay`` ending at 0 (a thin subclass keeping Caffe's argument names).
- :func:`make_optimizer`: the named optimisers the recipes use (``"radam"``, ``"sgd"``, ``"adam"``).

Every class is registered serialisable under the ``emzoo`` package.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["RAdam", "WarmupLinearDecay", "PolyDecay", "make_optimizer", "OPTIMIZERS"]


@keras.saving.register_keras_serializable(package="emzoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``learning_rate``, then linear decay to ``min_lr``, then constant (keras-radam 0.17).

    With t = step + 1 (Keras counts steps from 0, keras-radam from 1), W = ``warmup_proportion`` · ``total_steps``
    and D = ``total_steps`` - W: ``lr(t) = lr0·t/W`` for t ≤ W, else ``lr0 + (min_lr - lr0)·min(t - W, D)/D``.

    Parameters
    ----------
    learning_rate : float
        Peak learning rate lr0 (EM-net: 1e-3).
    total_steps : int
        Steps of the whole schedule (EM-net: 20,000).
    warmup_proportion : float
        Fraction of ``total_steps`` spent warming up (0.1).
    min_lr : float
        Floor reached at ``total_steps`` (EM-net: 1e-5).

    Examples
    --------
    >>> schedule = WarmupLinearDecay(1e-3, total_steps=20_000, min_lr=1e-5)
    >>> [round(float(schedule(t - 1)), 8) for t in (1, 2000, 20000)]
    [5e-07, 0.001, 1e-05]
    """

    def __init__(self, learning_rate: float = 1e-3, total_steps: int = 20_000, warmup_proportion: float = 0.1,
                 min_lr: float = 1e-5) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        if not 0.0 <= warmup_proportion < 1.0:
            raise ValueError(f"warmup_proportion must be in [0, 1), got {warmup_proportion}.")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_proportion = float(warmup_proportion)
        self.min_lr = float(min_lr)

    def __call__(self, step: Any) -> Any:
        t = ops.cast(step, "float32") + 1.0
        warmup = max(self.total_steps * self.warmup_proportion, 1e-12)
        decay = max(self.total_steps - warmup, 1.0)
        lr0 = self.learning_rate
        warm = lr0 * t / warmup
        decayed = lr0 + (self.min_lr - lr0) * ops.minimum(t - warmup, decay) / decay
        return ops.where(t <= warmup, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_proportion": self.warmup_proportion, "min_lr": self.min_lr}


@keras.saving.register_keras_serializable(package="emzoo")
class PolyDecay(keras.optimizers.schedules.PolynomialDecay):
    """Caffe's "poly" policy: ``lr = base_lr · (1 - step/max_steps)^power``, 0 after ``max_steps``.

    Keras' :class:`~keras.optimizers.schedules.PolynomialDecay` with ``end_learning_rate=0`` (the same numbers);
    kept under this name, with Caffe's argument names, for the recipes and saved configs that use it.

    Parameters
    ----------
    learning_rate : float
        Base learning rate (CDeep3M: 1e-2).
    max_steps : int
        Caffe's ``max_iter`` (CDeep3M's training script: 30,000).
    power : float
        Exponent (CDeep3M: 0.8).

    Examples
    --------
    >>> [round(float(PolyDecay(1e-2, max_steps=100, power=1.0)(s)), 6) for s in (0, 50, 100)]
    [0.01, 0.005, 0.0]
    """

    def __init__(self, learning_rate: float = 1e-2, max_steps: int = 30_000, power: float = 0.8) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        super().__init__(float(learning_rate), int(max_steps), end_learning_rate=0.0, power=float(power))
        self.learning_rate = float(learning_rate)
        self.max_steps = int(max_steps)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "max_steps": self.max_steps, "power": self.power}


@keras.saving.register_keras_serializable(package="emzoo")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2020) with keras-radam 0.17.0's update rule.

    With t = iteration + 1, ``m ← β1·m + (1-β1)·g``, ``v ← β2·v + (1-β2)·g²``, ``m̂ = m/(1-β1ᵗ)``,
    ``ρ∞ = 2/(1-β2) - 1``, ``ρt = ρ∞ - 2tβ2ᵗ/(1-β2ᵗ)``. If ρt ≥ 5 the step is
    ``lr·rt·m̂ / (√(v/(1-β2ᵗ)) + ε)`` with ``rt = √[(ρt-4)(ρt-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρt)]``; otherwise the
    un-adapted momentum step ``lr·m̂``. No AMSGrad. EM-net's schedule is a separate :class:`WarmupLinearDecay`
    passed as ``learning_rate`` (keras-radam folds it into the optimiser; the arithmetic is the same).

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule
        Learning rate or schedule.
    beta_1, beta_2 : float
        Moment decay rates (0.9, 0.999).
    epsilon : float
        Added to the denominator (keras-radam: ``K.epsilon()`` = 1e-7).
    **kwargs
        Standard ``keras.optimizers.Optimizer`` arguments (``weight_decay``, ``clipnorm``,
        ``gradient_accumulation_steps``...).

    References
    ----------
    Liu L. et al. On the variance of the adaptive learning rate and beyond. ICLR 2020. arXiv:1908.03265

    Examples
    --------
    >>> opt = RAdam(learning_rate=WarmupLinearDecay(1e-3, total_steps=20_000, min_lr=1e-5))
    >>> opt.beta_1
    0.9
    """

    def __init__(self, learning_rate: Any = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str = "radam", **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        b1 = ops.cast(self.beta_1, dtype)
        b2 = ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]

        self.assign_add(m, ops.multiply(ops.subtract(g, m), 1.0 - b1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(g), v), 1.0 - b2))

        b1_t = ops.power(b1, t)
        b2_t = ops.power(b2, t)
        m_hat = m / (1.0 - b1_t)
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2_t / (1.0 - b2_t)
        # The max() keeps the unused branch finite while rho_t < 4 (warm-up steps take the momentum branch).
        ratio = (ops.maximum(rho_t - 4.0, 0.0) * ops.maximum(rho_t - 2.0, 0.0) * rho_inf) / (
            (rho_inf - 4.0) * (rho_inf - 2.0) * rho_t
        )
        r_t = ops.sqrt(ratio)
        v_hat = ops.sqrt(v / (1.0 - b2_t))
        adaptive = r_t * m_hat / (v_hat + self.epsilon)
        step = ops.where(rho_t >= 5.0, adaptive, m_hat)
        self.assign_sub(variable, ops.multiply(lr, step))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


OPTIMIZERS = ("radam", "sgd", "adam")


def make_optimizer(
    name: str,
    *,
    learning_rate: float,
    total_steps: int,
    schedule: str | None = None,
    warmup_proportion: float = 0.1,
    min_lr: float = 1e-5,
    poly_power: float = 0.8,
    **options: Any,
) -> keras.optimizers.Optimizer:
    """A fresh optimiser of the recipes.

    Parameters
    ----------
    name : {"radam", "sgd", "adam"}
        Optimiser.
    learning_rate : float
        Base (peak) learning rate.
    total_steps : int
        Training steps, for the schedule.
    schedule : {None, "warmup_linear", "poly"}
        ``"warmup_linear"``: :class:`WarmupLinearDecay` (EM-net); ``"poly"``: :class:`PolyDecay` (CDeep3M);
        None: constant.
    warmup_proportion, min_lr : float
        Options of ``"warmup_linear"``.
    poly_power : float
        Exponent of ``"poly"``.
    **options
        Passed to the optimiser (``momentum``, ``beta_1``, ``weight_decay``, ``gradient_accumulation_steps``...).

    Returns
    -------
    keras.optimizers.Optimizer

    Examples
    --------
    >>> type(make_optimizer("radam", learning_rate=1e-3, total_steps=100, schedule="warmup_linear")).__name__
    'RAdam'
    """
    if schedule is None:
        lr: Any = float(learning_rate)
    elif schedule == "warmup_linear":
        lr = WarmupLinearDecay(learning_rate, total_steps=total_steps, warmup_proportion=warmup_proportion,
                               min_lr=min_lr)
    elif schedule == "poly":
        lr = PolyDecay(learning_rate, max_steps=total_steps, power=poly_power)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose None, 'warmup_linear' or 'poly'.")
    if name == "radam":
        return RAdam(learning_rate=lr, **options)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, **options)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, **options)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS} or pass a keras Optimizer.")
