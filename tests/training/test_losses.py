"""Every loss against a numpy hand computation of its formula (TRAINING.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.training import losses

RNG = np.random.default_rng(0)
EPS = 1e-7


def _binary(shape=(2, 6, 6, 1)):
    g = (RNG.random(shape) > 0.6).astype("float32")
    p = RNG.uniform(0.02, 0.98, shape).astype("float32")
    return g, p


def _multi(shape=(2, 5, 5), classes=3):
    y = RNG.integers(0, classes, shape)
    logits = RNG.normal(size=(*shape, classes))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return y[..., None].astype("float32"), p.astype("float32")


def test_bce_matches_hand_computation():
    g, p = _binary()
    want = -np.mean(g * np.log(p) + (1 - g) * np.log(1 - p))
    assert float(losses.binary_crossentropy(g, p)) == pytest.approx(want, rel=1e-5)
    w = (RNG.random(g.shape) > 0.3).astype("float32")
    want_w = -np.sum(w * (g * np.log(p) + (1 - g) * np.log(1 - p))) / w.sum()
    assert float(losses.binary_crossentropy(g, p, weights=w)) == pytest.approx(want_w, rel=1e-5)


def test_balanced_softmax_ce_uses_per_batch_min_over_count_weights():
    y, p = _multi()
    labels = y[..., 0].astype(int)
    counts = np.bincount(labels.ravel(), minlength=3)
    w = counts.min() / counts
    ce = -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0])
    want = np.mean(w[labels] * ce)
    assert float(losses.balanced_softmax_crossentropy(y, p)) == pytest.approx(want, rel=1e-5)
    # one-hot labels give the same value
    onehot = np.eye(3, dtype="float32")[labels]
    assert float(losses.balanced_softmax_crossentropy(onehot, p)) == pytest.approx(want, rel=1e-5)


def test_balanced_softmax_ce_falls_back_to_plain_ce_when_a_class_is_absent():
    y, p = _multi()
    y = np.minimum(y, 1)  # class 2 absent
    labels = y[..., 0].astype(int)
    want = np.mean(-np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0]))
    assert float(losses.balanced_softmax_crossentropy(y, p)) == pytest.approx(want, rel=1e-5)


def test_balanced_ce_on_a_sigmoid_output_treats_it_as_two_classes():
    g, p = _binary()
    n1 = g.sum()
    n0 = g.size - n1
    w0, w1 = min(n0, n1) / n0, min(n0, n1) / n1
    want = np.mean(-(w1 * g * np.log(p) + w0 * (1 - g) * np.log(1 - p)))
    assert float(losses.balanced_softmax_crossentropy(g, p)) == pytest.approx(want, rel=1e-5)


def test_jaccard_log_loss():
    g, p = _binary()
    inter = np.sum(g * p)
    want = -np.log((inter + 1) / (p.sum() + g.sum() - inter + 1))
    assert float(losses.jaccard_log_loss(g, p)) == pytest.approx(want, rel=1e-5)


def test_focal_loss_alpha_quarter_gamma_two():
    g, p = _binary()
    want = -np.mean(0.25 * (1 - p) ** 2 * g * np.log(p) + 0.75 * p**2 * (1 - g) * np.log(1 - p))
    assert float(losses.focal_loss(g, p)) == pytest.approx(want, rel=1e-5)


def test_dice_standard_and_emstellar_forms():
    g, p = _binary()
    inter, total = np.sum(g * p), p.sum() + g.sum()
    assert float(losses.dice_loss(g, p)) == pytest.approx(1 - (2 * inter + 1) / (total + 1), rel=1e-5)
    printed = float(losses.dice_loss(g, p, variant="emstellar"))
    assert printed == pytest.approx(-(inter + 1) / (total + 1), rel=1e-5)
    assert -0.5 <= printed <= 0  # the missing factor 2 of eq. 6
    with pytest.raises(ValueError, match="variant"):
        losses.dice_loss(g, p, variant="nope")


def test_dice_of_a_softmax_pools_the_foreground_classes():
    y, p = _multi()
    onehot = np.eye(3)[y[..., 0].astype(int)]
    inter = np.sum(onehot[..., 1:] * p[..., 1:])
    total = p[..., 1:].sum() + onehot[..., 1:].sum()
    assert float(losses.dice_loss(y, p)) == pytest.approx(1 - (2 * inter + 1) / (total + 1), rel=1e-5)


def test_masked_dice_mekuc_eq8_ignores_masked_voxels():
    y, p = _multi()
    r = np.eye(3)[y[..., 0].astype(int)]
    w = (RNG.random(y.shape) > 0.4).astype("float32")
    want = 1 - 2 * np.sum(w * p * r) / np.sum(w * (p + r))
    assert float(losses.masked_dice_loss(y, p, weights=w)) == pytest.approx(want, rel=1e-5)
    # changing predictions where the mask is 0 changes nothing
    p2 = p.copy()
    p2[w[..., 0] == 0] = np.array([1.0, 0.0, 0.0], "float32")
    assert float(losses.masked_dice_loss(y, p2, weights=w)) == pytest.approx(want, rel=1e-5)


def test_masked_dice_niftynet_form():
    y, p = _multi()
    r = np.eye(3)[y[..., 0].astype(int)]
    w = (RNG.random(y.shape) > 0.4).astype("float32")
    num = 2 * np.sum(w * p * r, axis=(1, 2)) + 1e-5
    den = np.sum(w * p * p, axis=(1, 2)) + np.sum(w * r, axis=(1, 2)) + 1e-5
    want = 1 - np.mean(num / den)
    got = float(losses.masked_dice_loss(y, p, weights=w, variant="niftynet"))
    assert got == pytest.approx(want, rel=1e-5)


def test_weighted_multi_output_loss_net2d3d():
    y, p3 = _multi(classes=7)
    _, p2 = _multi(classes=7)
    w = RNG.random(y.shape).astype("float32") * 5
    labels = y[..., 0].astype(int)

    def ce(p):
        return -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0])

    want = np.sum((w[..., 0] + 0.01) * ce(p3)) + 0.33 * np.sum((w[..., 0] + 0.01) * ce(p2))
    got = float(losses.multi_output_weighted_loss(y, p3, p2, weights=w))
    assert got == pytest.approx(want, rel=1e-5)
    mean = float(losses.weighted_crossentropy(y, p3, weights=w, floor=0.01, reduction="mean"))
    assert mean == pytest.approx(np.sum((w[..., 0] + 0.01) * ce(p3)) / labels.size, rel=1e-5)


def test_packed_loss_unpacks_the_weight_channel():
    g, p = _binary()
    w = (RNG.random(g.shape) > 0.5).astype("float32")
    packed = losses.PackedLoss("bce", weighted=True)
    got = float(packed(np.concatenate([g, w], -1), p))
    assert got == pytest.approx(float(losses.binary_crossentropy(g, p, weights=w)), rel=1e-6)
    restored = losses.PackedLoss.from_config(packed.get_config())
    assert restored.weighted and restored.loss == "bce"


def test_binary_losses_refuse_softmax_outputs_and_unknown_names():
    y, p = _multi()
    with pytest.raises(ValueError, match="sigmoid"):
        losses.binary_crossentropy(y, p)
    with pytest.raises(ValueError, match="Did you mean"):
        losses.get_loss("dicee")


def test_losses_have_gradients():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    import tensorflow as tf

    g, p = _binary()
    var = keras.Variable(np.log(p / (1 - p)))

    for name in ("bce", "jaccard", "focal", "dice", "balanced_ce", "masked_dice"):
        with tf.GradientTape() as tape:
            value = losses.get_loss(name)(g, keras.ops.sigmoid(var))
        grad = tape.gradient(value, var)
        assert grad is not None and np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
