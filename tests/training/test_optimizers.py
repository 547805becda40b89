"""RAdam (keras-radam 0.17 semantics) against a numpy reference; the schedules at the spec's check points."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emzoo.training.optimizers import PolyDecay, RAdam, WarmupLinearDecay, make_optimizer


def test_warmup_linear_decay_at_the_spec_checkpoints():
    schedule = WarmupLinearDecay(1e-3, total_steps=20_000, warmup_proportion=0.1, min_lr=1e-5)

    def lr(t):  # t is keras-radam's 1-based step
        return float(schedule(t - 1))

    assert lr(1) == pytest.approx(1e-3 / 2000, rel=1e-5)
    assert lr(2000) == pytest.approx(1e-3, rel=1e-5)
    assert lr(2001) == pytest.approx(1e-3 + (1e-5 - 1e-3) / 18_000, rel=1e-5)
    assert lr(20_000) == pytest.approx(1e-5, rel=1e-5)
    assert lr(30_000) == pytest.approx(1e-5, rel=1e-5)


def test_poly_decay():
    schedule = PolyDecay(1e-2, max_steps=30_000, power=0.8)
    assert float(schedule(0)) == pytest.approx(1e-2)
    assert float(schedule(15_000)) == pytest.approx(1e-2 * 0.5**0.8, rel=1e-6)
    assert float(schedule(30_000)) == 0.0


def _radam_reference(theta, grads, lrs, b1=0.9, b2=0.999, eps=1e-7):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    rho_inf = 2 / (1 - b2) - 1
    for i, (g, lr) in enumerate(zip(grads, lrs, strict=True)):
        t = i + 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t >= 5:
            r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            theta = theta - lr * r * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        else:
            theta = theta - lr * m_hat
        out.append(theta.copy())
    return out


def test_radam_matches_numpy_reference_over_both_branches():
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(12)]  # rho_t crosses 5 at t = 6
    schedule = WarmupLinearDecay(1e-2, total_steps=10, warmup_proportion=0.3, min_lr=1e-4)
    lrs = [float(schedule(i)) for i in range(12)]
    want = _radam_reference(theta0.astype(np.float64), grads, lrs)

    var = keras.Variable(theta0.astype("float32"))
    opt = RAdam(learning_rate=schedule)
    for i, g in enumerate(grads):
        opt.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), var)])
        np.testing.assert_allclose(np.asarray(var), want[i], rtol=2e-5, atol=2e-6)


def test_radam_is_serialisable():
    opt = RAdam(learning_rate=WarmupLinearDecay(1e-3, total_steps=100, min_lr=1e-5), beta_2=0.99)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, RAdam)
    assert restored.beta_2 == 0.99
    assert isinstance(restored._learning_rate, WarmupLinearDecay)
    assert restored._learning_rate.get_config()["total_steps"] == 100


def test_make_optimizer_recipes():
    sgd = make_optimizer("sgd", learning_rate=1e-2, total_steps=100, schedule="poly", momentum=0.9,
                         gradient_accumulation_steps=8)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.gradient_accumulation_steps == 8
    adam = make_optimizer("adam", learning_rate=1e-3, total_steps=10, beta_1=0.96838)
    assert isinstance(adam, keras.optimizers.Adam) and adam.beta_1 == pytest.approx(0.96838)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lamb", learning_rate=1.0, total_steps=1)
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer("adam", learning_rate=1.0, total_steps=1, schedule="cosine")
