"""The object-length prior: learned from bounded training objects only, removes longer predicted objects, is
recorded by finetune in the preset and applied by emzoo.predict (unless postprocess=False)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import emzoo
from emzoo.inference.postprocess import LENGTH_MARGIN, apply_postprocess, length_prior, remove_long_objects
from emzoo.training import finetune


def _discs(n=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        for _ in range(5):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(3, 6))]
            labels[z][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    raw = (80 + 100 * labels + rng.normal(0, 15, labels.shape)).clip(0, 255).astype(np.uint8)
    return raw, labels


def test_prior_is_the_longest_labelled_object_times_the_margin():
    lab = np.zeros((2, 100, 100), np.uint8)
    lab[0, 10:14, 10:30] = 1  # 20 px long
    lab[1, 50:54, 50:60] = 1
    prior = length_prior([lab], per_slice=True)
    assert prior["per"] == "slice" and prior["objects"] == 2
    assert prior["longest_training_object"] == pytest.approx(23.0, abs=0.2)
    assert prior["remove_longer_than"] == pytest.approx(LENGTH_MARGIN * prior["longest_training_object"])
    # 3D objects in a 3D volume; a 2-slice stack does not bound them in z (they span all of it)
    vol = np.zeros((40, 60, 60), np.uint8)
    vol[10:14, 10:14, 10:24] = 1
    assert length_prior([vol], per_slice=False)["per"] == "volume"
    assert length_prior([lab], per_slice=False) is None


def test_no_prior_where_the_labels_do_not_bound_object_length():
    assert length_prior([np.zeros((2, 32, 32))], per_slice=True) is None  # no foreground
    membranes = np.zeros((1, 64, 64), np.uint8)
    membranes[0, :, 30:32] = 1  # one network across the image
    membranes[0, 30:32, :] = 1
    assert length_prior([membranes], per_slice=True) is None


def test_remove_long_objects_keeps_short_ones_and_counts():
    p = np.zeros((2, 40, 40), np.float32)
    p[0, 5:8, 2:38] = 0.9  # 36 px bar
    p[0, 20:25, 20:25] = 0.7
    p[1, 10:30, 10:12] = 0.6  # 20 px bar
    out, removed = remove_long_objects(p, 25.0, per_slice=True)
    assert removed == 1
    assert out[0, 6, 20] == 0 and out[0, 22, 22] == pytest.approx(0.7) and out[1, 20, 11] == pytest.approx(0.6)
    assert p[0, 6, 20] == pytest.approx(0.9)  # the input is not modified
    # below the threshold nothing is an object
    assert remove_long_objects(p * 0.5, 25.0, per_slice=True)[1] == 0
    with pytest.raises(ValueError, match="max_length"):
        remove_long_objects(p, 0.0, per_slice=True)


def test_apply_postprocess_on_sigmoid_softmax_and_multiclass_outputs():
    spec = {"remove_longer_than": 25.0, "per": "slice"}
    fg = np.zeros((40, 40), np.float32)
    fg[5:8, 2:38] = 0.9
    sig = fg[..., None]
    assert apply_postprocess(sig, spec)[6, 20, 0] == 0
    soft = np.stack([1 - fg, fg], -1)
    out = apply_postprocess(soft, spec)
    assert out[6, 20, 1] == 0 and out[6, 20, 0] == 1 and out[0, 0, 0] == 1
    three = np.concatenate([soft, np.zeros_like(sig)], -1)
    assert apply_postprocess(three, spec) is three  # more than 2 classes: untouched
    assert apply_postprocess(sig, None) is sig


def _identity_model():
    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Activation("linear")(inp))
    object.__setattr__(model, "emzoo_metadata", {"postprocess": {"remove_longer_than": 25.0, "per": "slice"}})
    return model


def test_predict_applies_the_recorded_prior_unless_told_not_to():
    image = np.zeros((48, 48), np.float32)
    image[5:8, 2:46] = 0.9
    image[20:25, 20:25] = 0.8
    model = _identity_model()
    filtered = emzoo.predict(model, image, progress=False, normalization=None)
    raw = emzoo.predict(model, image, progress=False, normalization=None, postprocess=False)
    assert raw[6, 20, 0] == pytest.approx(0.9) and filtered[6, 20, 0] == 0
    assert filtered[22, 22, 0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="postprocess must be True or False"):
        emzoo.predict(model, image, progress=False, postprocess="yes")


@pytest.mark.filterwarnings("ignore:.*collapsed")
def test_finetune_records_the_prior_in_history_metadata_and_preset(tmp_path):
    raw, labels = _discs()
    kw = dict(steps=2, patch_size=32, batch_size=2, build_kwargs={"widths": (4, 8, 16)}, progress=False, workers=1,
              val_fraction=0)
    model, history = finetune("unet", (raw, labels), out_dir=tmp_path / "p", **kw)
    prior = history["postprocess"]
    assert prior == length_prior([labels > 0], per_slice=True)
    assert model.emzoo_metadata["postprocess"] == prior
    meta = json.loads((tmp_path / "p" / "emzoo.json").read_text())
    assert meta["postprocess"] == prior
    assert "post-processing" in (tmp_path / "p" / "README.md").read_text()
    assert emzoo.load(tmp_path / "p").emzoo_metadata["postprocess"] == prior
    _, off = finetune("unet", (raw, labels), object_filter=False, **kw)
    assert off["postprocess"] is None
    with pytest.raises(ValueError, match="object_filter"):
        finetune("unet", (raw, labels), object_filter="auto", **kw)


def test_exporting_a_preset_with_a_prior_says_the_filter_is_left_out(tmp_path):
    model = _identity_model()
    with pytest.warns(UserWarning, match="object-length filter"):
        emzoo.export(model, tmp_path / "m.keras", format="keras")
