"""DilatedConv2DTranspose against an independent scatter-add implementation of Caffe's Deconvolution."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emzoo.flops import count_flops
from emzoo.layers.dilated_conv_transpose import BilinearUpsampling, DilatedConv2DTranspose
from tests._backend import tensorflow_only


def caffe_deconv(x, weights, bias, strides, dilation, pad):
    """Caffe ``Deconvolution`` forward by explicit scatter-add.

    x: (N, H, W, Cin); weights: Caffe blob (Cin, Cout, kh, kw). Input pixel (i, j) adds ``x[i, j] @ W[:, :, a, b]`` to
    full-output pixel (s*i + d*a, s*j + d*b); then ``pad`` pixels are cropped from each side.
    """
    n, h, w, _ = x.shape
    _, cout, kh, kw = weights.shape
    (sh, sw), (dh, dw), (ph, pw) = strides, dilation, pad
    full = np.zeros((n, sh * (h - 1) + dh * (kh - 1) + 1, sw * (w - 1) + dw * (kw - 1) + 1, cout))
    for a in range(kh):
        for b in range(kw):
            contrib = np.einsum("nijc,co->nijo", x, weights[:, :, a, b])
            full[:, dh * a : dh * a + sh * h : sh, dw * b : dw * b + sw * w : sw] += contrib
    return full[:, ph : full.shape[1] - ph, pw : full.shape[2] - pw] + bias


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


IMPLEMENTATIONS = ("polyphase", "zero_insertion")


def _run_layer(x, caffe_w, bias, k, s, d, p, implementation="polyphase"):
    layer = DilatedConv2DTranspose(caffe_w.shape[1], k, strides=s, dilation_rate=d, padding=p,
                                   implementation=implementation)
    layer.build(x.shape)
    # Conv formulation: spatially flipped Caffe kernel, (kh, kw, in, out).
    layer.set_weights([caffe_w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1), bias])
    return np.asarray(layer(x.astype("float32")))


CDEEP3M_HEADS = [  # (k, s, d, Caffe pad) of every dilated head deconvolution in the prototxt
    (4, 2, 5, 7), (4, 2, 11, 16), (4, 2, 17, 25), (4, 2, 23, 34),
    (8, 4, 5, 16), (8, 4, 11, 37), (8, 4, 17, 58), (8, 4, 23, 79),
    (16, 8, 5, 34), (16, 8, 11, 79), (16, 8, 17, 124), (16, 8, 23, 169),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("k, s, d, p", CDEEP3M_HEADS)
def test_cdeep3m_head_deconvs_equal_caffe_scatter_add(k, s, d, p, implementation):
    rng = np.random.default_rng(k * 100 + d)
    x = rng.normal(size=(2, 3, 4, 3))
    w = rng.normal(scale=0.1, size=(3, 2, k, k))
    bias = rng.normal(size=2)
    expected = caffe_deconv(x, w, bias, (s, s), (d, d), (p, p))
    assert expected.shape[1:3] == (3 * s, 4 * s)  # "same": output = s x input
    out = _run_layer(x, w, bias, k, s, d, p, implementation)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-5
    # padding="same" is the same layer for these heads (2p = d(k-1) + 1 - s)
    np.testing.assert_allclose(_run_layer(x, w, bias, k, s, d, "same", implementation), out, atol=1e-6)


@pytest.mark.parametrize(
    "k, s, d, p",
    [
        (3, 2, 2, 0),  # no crop: full Caffe output
        (3, 1, 3, 2),  # stride 1: a plain dilated transposed conv
        (2, 3, 2, 1),  # stride larger than the kernel
        (2, 4, 1, 2),  # pad beyond d(k-1): the front is cropped, not padded
        (4, 2, 2, 1),  # gcd(d, s) = 2: one output phase gets every tap, the other none
        (6, 4, 2, 3),  # gcd(d, s) = 2 with a shorter output than s x input
        (3, 3, 3, 0),  # d = s
        ((3, 4), (2, 1), (2, 3), (1, 2)),  # every argument different per axis
        ((5, 2), (3, 2), (2, 3), (4, 0)),
    ],
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_general_arguments_equal_caffe_scatter_add(k, s, d, p, implementation):
    rng = np.random.default_rng(7)
    kh, kw = _as_pair(k)
    x = rng.normal(size=(1, 4, 5, 2))
    w = rng.normal(scale=0.3, size=(2, 3, kh, kw))
    bias = rng.normal(size=3)
    expected = caffe_deconv(x, w, bias, _as_pair(s), _as_pair(d), _as_pair(p))
    out = _run_layer(x, w, bias, k, s, d, p, implementation)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("k, s", [(4, 2), (8, 4), (32, 16), (3, 2), (5, 2), (2, 1)])
def test_undilated_equals_keras_conv2d_transpose_same(k, s, implementation):
    rng = np.random.default_rng(k + s)
    x = rng.normal(size=(1, 3, 4, 3)).astype("float32")
    caffe_w = rng.normal(scale=0.1, size=(3, 2, k, k))
    bias = rng.normal(size=2)
    ours = _run_layer(x, caffe_w, bias, k, s, 1, "same", implementation)
    ref = keras.layers.Conv2DTranspose(2, k, strides=s, padding="same")
    ref.build(x.shape)
    # Keras' transposed kernel is (kh, kw, out, in) and not flipped: it scatters like Caffe.
    ref.set_weights([caffe_w.transpose(2, 3, 1, 0), bias])
    np.testing.assert_allclose(ours, np.asarray(ref(x)), atol=1e-5)
    assert ours.shape[1:3] == (3 * s, 4 * s)


def test_keras_same_equals_caffe_pad_for_cdeep3m_bilinear_deconvs():
    # The d1 / 16x head deconvs are plain Conv2DTranspose(k=2s, s, "same"); that must crop Caffe's p = s/2.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 3, 3, 2)).astype("float32")
    for s in (2, 4, 8, 16):
        w = rng.normal(scale=0.1, size=(2, 2, 2 * s, 2 * s))
        ref = keras.layers.Conv2DTranspose(2, 2 * s, strides=s, padding="same")
        ref.build(x.shape)
        ref.set_weights([w.transpose(2, 3, 1, 0), np.zeros(2)])
        expected = caffe_deconv(x, w, 0.0, (s, s), (1, 1), (s // 2, s // 2))
        assert np.abs(np.asarray(ref(x)) - expected).max() < 1e-5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dynamic_spatial_shape(implementation):
    inputs = keras.Input((None, None, 3))
    layer = DilatedConv2DTranspose(2, 8, strides=4, dilation_rate=11, padding=37, implementation=implementation)
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, 2)
    x = np.random.default_rng(0).normal(size=(2, 5, 3, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(layer(x)), atol=1e-6)
    assert model(x).shape == (2, 20, 12, 2)


def test_flops_count_native_macs():
    fixed = keras.Input((6, 10, 3))
    flops = count_flops(keras.Model(fixed, DilatedConv2DTranspose(2, 8, strides=4, dilation_rate=11)(fixed)))
    assert flops.macs == 6 * 10 * 8 * 8 * 3 * 2  # native transposed-conv MACs, not the zero-inserted grid


def test_save_load_roundtrip(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = DilatedConv2DTranspose(2, 4, strides=2, dilation_rate=5, padding=(7, 7), name="dil")(inputs)
    y = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", kernel_initializer=BilinearUpsampling())(inputs)
    model = keras.Model(inputs, keras.layers.Add()([x, y]))
    data = np.random.default_rng(1).normal(size=(1, 6, 6, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe mode: the classes must be registered
    np.testing.assert_array_equal(np.asarray(model(data)), np.asarray(restored(data)))
    config = model.get_layer("dil").get_config()
    clone = DilatedConv2DTranspose.from_config(config)
    assert (clone.kernel_size, clone.strides, clone.dilation_rate, clone.padding) == ((4, 4), (2, 2), (5, 5), (7, 7))
    assert clone.implementation == "polyphase"


def test_bilinear_initializer_is_caffes_filler():
    kernel = np.asarray(BilinearUpsampling()((4, 4, 2, 3)))
    np.testing.assert_allclose(kernel[:, 0, 0, 0], [0.0625, 0.1875, 0.1875, 0.0625])
    assert (kernel == kernel[:, :, :1, :1]).all()  # every (in, out) pair gets the same kernel
    # Bilinear x4 upsampling of a constant image is constant away from the border (summed over 2 input channels).
    layer = keras.layers.Conv2DTranspose(1, 8, strides=4, padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampling())
    out = np.asarray(layer(np.ones((1, 5, 5, 2), "float32")))
    np.testing.assert_allclose(out[0, 4:-4, 4:-4, 0], 2.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(padding="valid"), "padding must be"),
        (dict(padding=-1), ">= 0"),
        (dict(strides=0), ">= 1"),
        (dict(kernel_size=(2, 2, 2)), "pair of ints"),
        (dict(implementation="fft"), "implementation"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    args = dict(filters=2, kernel_size=4, strides=2, dilation_rate=5) | kwargs
    with pytest.raises(ValueError, match=message):
        DilatedConv2DTranspose(**args)


def test_same_padding_needs_reach_of_at_least_the_stride():
    layer = DilatedConv2DTranspose(2, 1, strides=2, padding="same")
    with pytest.raises(ValueError, match="padding='same'"):
        layer.build((1, 4, 4, 3))


@tensorflow_only
def test_both_implementations_have_the_same_gradients():
    import tensorflow as tf

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 3, 3, 4)).astype("float32"))
    target = tf.constant(rng.normal(size=(2, 24, 24, 2)).astype("float32"))
    grads = []
    for implementation in IMPLEMENTATIONS:
        layer = DilatedConv2DTranspose(2, 16, strides=8, dilation_rate=17, padding=124, implementation=implementation,
                                       kernel_initializer=keras.initializers.RandomNormal(seed=1))
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum((layer(x) - target) ** 2)
        grads.append([np.asarray(g) for g in tape.gradient(loss, [x, layer.kernel, layer.bias])])
    for a, b in zip(*grads, strict=True):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
