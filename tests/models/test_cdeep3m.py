"""CDeep3M: per-block parameter subtotals of ARCHITECTURES.md §8.5, layer inventory, heads, stems and the ensemble."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emzoo.layers.dilated_conv_transpose import BilinearUpsampling, DilatedConv2DTranspose
from emzoo.models.cdeep3m import build_cdeep3m, build_cdeep3m_ensemble

_CONVS = (keras.layers.Conv2D, keras.layers.Conv3D)
_DECONVS = (keras.layers.Conv2DTranspose, DilatedConv2DTranspose)

# ARCHITECTURES.md §8.5 (1fm): block -> (conv/deconv params, BN channels, trainable)
SUBTOTALS = {
    "stem": (527_360, 736, 528_832),
    "ir_a": (285_168, 1_008, 287_184),
    "red_a": (2_901_248, 1_280, 2_903_808),
    "ir_b": (2_503_204, 2_980, 2_509_164),
    "red_b": (3_929_600, 2_048, 3_933_696),
    "ir_c": (6_404_960, 4_960, 6_414_880),
    "head_2x": (30_768, 4, 30_776),
    "head_4x": (245_808, 4, 245_816),
    "head_8x": (2_954_288, 4, 2_954_296),
    "head_16x": (4_194_344, 4, 4_194_352),
}
_PREFIXES = {
    "stem": ("conv1_", "conv2_", "concat_stem", "pool_stem", "stem_concat"),
    "ir_a": ("conv3_", "ira_A_"),
    "red_a": ("ira_v4_reduction_A",),
    "ir_b": ("conv4_", "ira_Inception_B"),
    "red_b": ("ira_Reduction_B",),
    "ir_c": ("conv5_", "ira_Inception_C"),
    "head_2x": ("deconv2_2x", "fc1_2x", "conv_deconv2_2x"),
    "head_4x": ("deconv3_4x", "fc1_4x", "conv_deconv3_4x"),
    "head_8x": ("deconv4_8x", "fc1_8x", "conv_deconv4_8x"),
    "head_16x": ("deconv5_16x", "conv_deconv5_16x"),
}


def _block(name):
    hits = [block for block, prefixes in _PREFIXES.items() if name.startswith(prefixes)]
    assert len(hits) == 1, f"layer {name!r} maps to {hits}"
    return hits[0]


@pytest.fixture(scope="module")
def model_1fm():
    return build_cdeep3m(input_shape=(32, 32, 1), frames=1, name="cdeep3m_1fm")


@pytest.fixture(scope="module")
def ensemble():
    return build_cdeep3m_ensemble(input_shape=(5, 32, 32, 1))


def test_block_subtotals_match_spec(model_1fm):
    totals = {block: [0, 0, 0] for block in SUBTOTALS}
    for layer in model_1fm.layers:
        if not layer.weights:
            continue
        row = totals[_block(layer.name)]
        if isinstance(layer, keras.layers.BatchNormalization):
            row[1] += layer.gamma.shape[0]
            row[2] += 2 * layer.gamma.shape[0]
        else:
            assert isinstance(layer, _CONVS + _DECONVS), layer
            n = sum(int(np.prod(w.shape)) for w in layer.weights)
            row[0] += n
            row[2] += n
    assert {block: tuple(v) for block, v in totals.items()} == SUBTOTALS
    assert sum(v[2] for v in SUBTOTALS.values()) == 24_002_804


def test_layer_inventory_1fm(model_1fm):
    layers = model_1fm.layers
    assert sum(isinstance(la, keras.layers.Conv2D) for la in layers) == 44
    assert sum(isinstance(la, _DECONVS) for la in layers) == 16
    assert sum(isinstance(la, DilatedConv2DTranspose) for la in layers) == 12
    bns = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) == 48
    assert {(bn.momentum, bn.epsilon) for bn in bns} == {(0.999, 1e-5)}  # Caffe BatchNorm + Scale
    assert all(isinstance(la, _CONVS + _DECONVS) and la.use_bias for la in layers
               if isinstance(la, _CONVS + _DECONVS))
    assert model_1fm.get_layer("deconv5_16x").count_params() == 4_194_306  # the single largest layer
    assert [la.scale for la in layers if isinstance(la, keras.layers.Rescaling)] == [0.1, 0.1, 0.1]


def test_strided_convs_pad_symmetrically(model_1fm):
    strided = [la for la in model_1fm.layers if isinstance(la, _CONVS) and max(la.strides) > 1]
    assert len(strided) == 7  # conv1_1, stem_concat_conv_3x3, 2 in Reduction-A, 3 in Reduction-B
    for conv in strided:
        assert conv.padding == "valid"
        pad = model_1fm.get_layer(f"{conv.name}_pad")
        assert pad.padding == ((1, 1), (1, 1))


def test_head_deconvs_follow_the_prototxt(model_1fm):
    caffe_pads = {2: (7, 16, 25, 34), 4: (16, 37, 58, 79), 8: (34, 79, 124, 169)}
    for scale, pads in caffe_pads.items():
        for i, (pad, dilation) in enumerate(zip(pads, (5, 11, 17, 23), strict=True)):
            layer = model_1fm.get_layer(f"fc1_{scale}x_c{i}")
            assert layer.kernel_size == (2 * scale,) * 2 and layer.strides == (scale,) * 2
            assert layer.dilation_rate == (dilation,) * 2 and layer.padding == (pad, pad)
            assert isinstance(layer.kernel_initializer, keras.initializers.RandomNormal)
            assert layer.kernel_initializer.stddev == 0.01
    for name, k in (("deconv2_2x_d1", 4), ("deconv3_4x_d1", 8), ("deconv4_8x_d1", 16), ("deconv5_16x", 32)):
        layer = model_1fm.get_layer(name)
        assert isinstance(layer, keras.layers.Conv2DTranspose) and layer.padding == "same"
        assert layer.kernel_size == (k, k) and layer.strides == (k // 2, k // 2)
        expected = np.asarray(BilinearUpsampling()(layer.kernel.shape))
        np.testing.assert_allclose(np.asarray(layer.kernel), expected)
    for name in ("conv_deconv2_2x", "conv_deconv5_16x"):
        assert model_1fm.get_layer(name).kernel_initializer.stddev == 0.001
    assert model_1fm.get_layer("conv1_1").kernel_initializer.stddev == 0.01


def test_output_is_softmax_of_nonnegative_logits(model_1fm):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    probe = keras.Model(model_1fm.input, [model_1fm.get_layer("deconv_all_sum").output, model_1fm.output])
    logits, probs = (np.asarray(t) for t in probe(x, training=False))
    assert probs.shape == (2, 32, 32, 2)
    assert logits.min() >= 0.0  # sums of ReLU'd heads, as in the trained Caffe models
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("frames, conv1_2, extra", [(3, 36_928, 19_008), (5, 55_360, 37_440)])
def test_multiframe_stems(ensemble, frames, conv1_2, extra):
    member = ensemble.get_layer(f"cdeep3m_{frames}fm")
    assert member.input_shape == (None, frames, 32, 32, 1)
    assert member.count_params() == 24_028_860 + extra
    conv1_1, conv1_2_layer = member.get_layer("conv1_1"), member.get_layer("conv1_2")
    assert isinstance(conv1_1, keras.layers.Conv3D) and conv1_1.count_params() == 896
    assert conv1_1.strides == (2, 2, 2) and conv1_1.output.shape[1] == (frames - 1) // 2 + 1
    assert conv1_2_layer.kernel_size == ((frames - 1) // 2 + 1, 3, 3)
    assert conv1_2_layer.count_params() == conv1_2 and conv1_2_layer.output.shape[1] == 1
    assert sum(isinstance(la, keras.layers.Conv3D) for la in member.layers) == 2
    assert sum(isinstance(la, keras.layers.Conv2D) for la in member.layers) == 42


def test_ensemble_averages_its_members(ensemble):
    x = np.random.default_rng(1).normal(size=(1, 5, 32, 32, 1)).astype("float32")
    out = np.asarray(ensemble(x, training=False))
    m1, m3, m5 = (ensemble.get_layer(f"cdeep3m_{f}fm") for f in (1, 3, 5))
    expected = (np.asarray(m1(x[:, 2], training=False)) + np.asarray(m3(x[:, 1:4], training=False))
                + np.asarray(m5(x, training=False))) / 3
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    assert ensemble.count_params() == sum(m.count_params() for m in (m1, m3, m5)) == 72_143_028
    assert not any(isinstance(la, keras.layers.Lambda) for la in ensemble.layers)


def test_unknown_spatial_size_builds_and_runs():
    model = build_cdeep3m(input_shape=(None, None, 1))
    assert np.asarray(model(np.zeros((1, 32, 48, 1), "float32"))).shape == (1, 32, 48, 2)
    assert build_cdeep3m(input_shape=(3, None, 64, 1), frames=3).output_shape == (None, None, 64, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(5, 32, 32, 1), frames=3), "3 z slices"),
        (dict(input_shape=(40, 40, 1), frames=1), "multiple of"),
        (dict(input_shape=(32, 32, 1), frames=3), "axes"),
        (dict(input_shape=(3, None, None, 1), frames=3), "at least one of H, W"),
    ],
)
def test_bad_inputs_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_cdeep3m(**kwargs)


def test_bad_ensemble_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="5 z slices"):
        build_cdeep3m_ensemble(input_shape=(3, 32, 32, 1))
    with pytest.raises(ValueError, match="even number"):
        build_cdeep3m_ensemble(input_shape=(5, 32, 32, 1), frames=(2, 5))
