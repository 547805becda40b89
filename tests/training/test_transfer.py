"""Transfer: new heads on a shared body, encoder freezing from the graph, Mekuč's binary -> multi-class."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import emzoo
from emzoo.training.transfer import binary_to_multiclass, encoder_layers, freeze_encoder, replace_head
from tests.training.test_finetune import TINY, _blobs


def _tiny():
    return emzoo.build("unet", input_shape=(32, 32, 1), **TINY)


def test_replace_head_keeps_the_body_and_swaps_the_activation():
    base = _tiny()
    new = replace_head(base, 3)
    assert new.output_shape == (None, 32, 32, 3)
    assert new.get_layer("head_out").get_config()["activation"] == "softmax"
    assert new.get_layer("enc1_conv1") is base.get_layer("enc1_conv1")  # shared, not copied
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(new(x)).sum(-1), 1.0, rtol=1e-5)
    back = replace_head(new, 1)
    assert back.get_layer("head_out").get_config()["activation"] == "sigmoid"


def test_replace_head_rebuilds_models_whose_logits_feed_other_layers():
    base = emzoo.build("net2d3d", input_shape=(5, 16, 16, 1), num_classes=2)
    new = replace_head(base, 4)
    assert [tuple(o.shape) for o in new.outputs] == [(None, 5, 16, 16, 4)] * 2
    kept = base.get_layer("enc0_conv2").get_weights()[0]
    np.testing.assert_array_equal(new.get_layer("enc0_conv2").get_weights()[0], kept)


def test_encoder_is_everything_before_the_deepest_downsampling():
    model = _tiny()
    names = encoder_layers(model)
    assert "enc1_conv1" in names and "enc2_pool" in names and "enc2_conv1" in names
    assert not any(n.startswith(("dec", "head", "enc3")) for n in names)
    frozen = freeze_encoder(model)
    assert all(not model.get_layer(n).trainable for n in frozen)
    assert model.get_layer("dec1_conv1").trainable
    with pytest.raises(ValueError, match="no layer"):
        freeze_encoder(model, layers=["nothing_"])


def _layer_weights(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights}


def test_binary_then_multiclass_transfer(monkeypatch):
    module = sys.modules["emzoo.training.finetune"]
    real, calls = module.finetune, []

    def spy(model_or_name, *args, **kwargs):
        start = model_or_name if isinstance(model_or_name, str) else _layer_weights(model_or_name)
        model, history = real(model_or_name, *args, **kwargs)
        calls.append((start, _layer_weights(model)))
        return model, history

    monkeypatch.setattr(module, "finetune", spy)
    raw, labels = _blobs(n=3, classes=3)
    model, history = binary_to_multiclass(
        "unet", (raw, labels), num_classes=3, binary_steps=2, steps=2, batch_size=2, patch_size=32,
        build_kwargs=TINY, progress=False, workers=1, recipe="highres3d")
    assert model.output_shape[-1] == 3
    binary, multi = history["binary"], history["multiclass"]
    assert binary["num_classes"] == 2 and multi["num_classes"] == 3
    assert binary["recipe"]["sampler"]["class_probabilities"] == {0: 0.2, 1: 0.8}
    assert multi["recipe"]["loss"] == "masked_dice"
    # stage 2 starts from stage 1's trained weights, every layer but the new head
    (_, binary_end), (multi_start, _) = calls
    assert set(binary_end) == set(multi_start)
    for name, weights in multi_start.items():
        if name == "head_out":
            assert weights[0].shape[-1] == 3 and binary_end[name][0].shape[-1] == 2
            continue
        for a, b in zip(weights, binary_end[name], strict=True):
            np.testing.assert_array_equal(a, b)
