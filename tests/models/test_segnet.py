"""SegNet family facts (ARCHITECTURES.md §5): layer counts, index wiring and what the indices change."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D
from emzoo.models.segnet import build_segnet

SHAPE = (64, 64, 1)


@pytest.fixture(scope="module")
def models():
    return emzoo.build("segnet", input_shape=SHAPE), emzoo.build("segnet_indices", input_shape=SHAPE)


def _count(model, cls):
    return sum(isinstance(layer, cls) for layer in model.layers)


def _widths(model):
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_layer_counts_and_widths(models):
    nearest, indices = models
    expected = [32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256,
                256, 256, 256, 256, 256, 256, 128, 128, 64, 64, 32, 32, 1]
    for model in models:
        assert _widths(model) == expected  # 26 convs
        assert _count(model, keras.layers.BatchNormalization) == 26  # including the BN on the output logit
        assert all(layer.kernel_initializer.__class__.__name__ == "GlorotUniform"
                   for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        assert not any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers)  # no skips
    assert _count(nearest, keras.layers.MaxPooling2D) == 5 and _count(nearest, keras.layers.UpSampling2D) == 5
    assert _count(indices, MaxPoolingWithIndices2D) == 5 and _count(indices, MaxUnpooling2D) == 5
    assert _count(indices, keras.layers.MaxPooling2D) == 0 and _count(indices, keras.layers.UpSampling2D) == 0
    assert [layer.name for layer in nearest.layers[-3:]] == ["head_conv", "head_conv_bn", "head_act"]


def test_each_unpooling_uses_the_mirror_pools_indices(models):
    _, model = models
    for level in range(1, 6):
        unpool = model.get_layer(f"dec{level}_unpool")
        values, switches = unpool._inbound_nodes[0].arguments.keras_tensors
        assert switches is model.get_layer(f"enc{level}_pool").output[1]
        # the pooling at the same resolution: only level 3 needs its 128 switches tiled over 256 channels
        assert unpool.tile_indices == (level == 3)
        assert (values.shape[-1], switches.shape[-1]) == ((256, 128) if level == 3 else (switches.shape[-1],) * 2)


def test_weights_are_interchangeable_and_indices_change_the_output(models):
    nearest, indices = models
    assert [w.shape for w in nearest.weights] == [w.shape for w in indices.weights]
    indices.set_weights(nearest.get_weights())
    x = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype("float32")
    assert nearest(x).shape == indices(x).shape == (1, *SHAPE[:2], 1)
    # compare the logits: with fresh BN statistics the sigmoid outputs all sit within 1e-5 of 0.5
    logit_nearest = np.asarray(keras.Model(nearest.input, nearest.get_layer("head_conv").output)(x))
    logit_indices = np.asarray(keras.Model(indices.input, indices.get_layer("head_conv").output)(x))
    assert np.abs(logit_nearest - logit_indices).mean() > 0.1 * np.abs(logit_nearest).mean()
    # the same encoder: the deepest pooled features agree
    enc_nearest = keras.Model(nearest.input, nearest.get_layer("enc5_pool").output)(x)
    enc_indices = keras.Model(indices.input, indices.get_layer("enc5_pool").output[0])(x)
    np.testing.assert_allclose(np.asarray(enc_nearest), np.asarray(enc_indices), rtol=1e-5, atol=1e-6)


def test_unpooled_maps_are_sparse_where_upsampled_maps_are_not(models):
    nearest, indices = models
    x = np.random.default_rng(1).normal(size=(1, *SHAPE)).astype("float32")
    unpooled = np.asarray(keras.Model(indices.input, indices.get_layer("dec1_unpool").output)(x))
    upsampled = np.asarray(keras.Model(nearest.input, nearest.get_layer("dec1_up").output)(x))
    windows = unpooled.reshape(1, 32, 2, 32, 2, -1).transpose(0, 1, 3, 5, 2, 4).reshape(1, 32, 32, -1, 4)
    assert ((windows != 0).sum(-1) <= 1).all()  # at most one value per window: the recorded maximum
    assert (upsampled != 0).mean() > 0.25  # nearest up-sampling copies every value four times


def test_softmax_head_and_bad_arguments():
    model = build_segnet(input_shape=(32, 32, 1), num_classes=3, encoder=((4,),) * 5, decoder=((4,),) * 5,
                         unpooling="indices")
    out = np.asarray(model(np.zeros((1, 32, 32, 1), "float32")))
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of"):
        emzoo.build("segnet", input_shape=(48, 48, 1))
    with pytest.raises(ValueError, match="unpooling"):
        build_segnet(input_shape=(32, 32, 1), unpooling="bilinear")
    with pytest.raises(ValueError, match="decoder level"):
        build_segnet(input_shape=(32, 32, 1), decoder=((4,),) * 4)
