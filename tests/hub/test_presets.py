"""save_preset writes the KerasHub-style layout; load rebuilds with emzoo's builder and refuses what it must."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

import emzoo
from emzoo.flops import count_flops
from emzoo.hub.manifest import sha256_file
from emzoo.hub.presets import load, read_preset_metadata, save_preset
from tests.hub.conftest import REPO_ID, TINY


def _tiny(**kw):
    return emzoo.build("unet", **{**TINY, **kw})


def test_preset_layout_config_and_metadata(tiny_preset):
    path = tiny_preset.path
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "emzoo.json", "model.weights.h5"]
    config = json.loads((path / "config.json").read_text())
    assert config["entry"] == "unet"
    assert config["build_kwargs"] == {"widths": [4, 8, 16], "input_shape": [32, 32, 1], "num_classes": 1}
    assert config["keras_version"] == keras.__version__
    meta = read_preset_metadata(path)
    model = _tiny()
    assert meta["axes"] == "YXC" and meta["input"]["shape"] == [32, 32, 1]
    assert meta["input"]["divisor"] == [4, 4]  # two poolings with widths (4, 8, 16), not the registry's 16
    assert meta["params"] == model.count_params() == 7469
    assert meta["flops"] == {"gflops": count_flops(model).gflops, "input_shape": [1, 32, 32, 1]}
    assert meta["normalization"] == {"method": "minmax", "min": 0, "max": 255}
    assert meta["training_data"] == {"name": "synthetic-noise", "sha256": "0" * 64}
    assert meta["metrics"] == {"test_split": "synthetic, 4 tiles", "values": {"foreground_f1": 0.5}}
    assert meta["tta"] == ["flip_x", "flip_y"] and meta["halo"] == [8, 8] and meta["seed"] == 0
    assert meta["versions"]["keras"] == keras.__version__ and meta["date"].endswith("+00:00")


def test_model_card_front_matter_and_stats(tiny_preset):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_preset.path / "README.md")
    data = card.data.to_dict()
    # The Hub's "Use this model" snippet for library "keras" is keras.saving.load_model, which cannot read a preset.
    assert data["library_name"] == "emzoo" and data["license"] == "mit" and "keras" in data["tags"]
    assert 'model = emzoo.load("path/to/this/folder")' in card.text
    assert data["datasets"] == ["synthetic-noise"] and "emzoo" in data["tags"]
    result = data["model-index"][0]["results"][0]
    assert result["metrics"] == [{"type": "foreground_f1", "value": 0.5}]
    assert result["dataset"]["split"] == "synthetic, 4 tiles"
    assert "| params | 7,469 |" in card.text and "GFLOPs" in card.text


def test_save_preset_is_atomic(tmp_path, monkeypatch):
    model = _tiny()
    target = tmp_path / "p"
    save_preset(model, target, build_kwargs={"widths": TINY["widths"]})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_preset(model, target, build_kwargs={"widths": TINY["widths"]})
    before = sha256_file(target / "model.weights.h5")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        save_preset(model, target, build_kwargs={"widths": TINY["widths"]}, overwrite=True)
    assert sha256_file(target / "model.weights.h5") == before  # the old preset is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folder left behind
    monkeypatch.undo()
    save_preset(model, target, build_kwargs={"widths": TINY["widths"]}, overwrite=True, seed=3)
    assert read_preset_metadata(target)["seed"] == 3 and [p.name for p in tmp_path.iterdir()] == ["p"]


def test_save_preset_refuses_lambda_and_models_it_cannot_rebuild(tmp_path):
    inputs = keras.Input((32, 32, 1))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs), name="unet")
    with pytest.raises(ValueError, match=r"Lambda layers \['double'\]"):
        save_preset(lam, tmp_path / "lam")
    with pytest.raises(ValueError, match=r"does not rebuild this model: enc1_conv1/kernel has shape \(3, 3, 1, 4\)"):
        save_preset(_tiny(), tmp_path / "p")  # built with widths=(4, 8, 16) but saved without them
    with pytest.raises(ValueError, match="pass entry="):
        save_preset(keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs), name="mine"), tmp_path / "q")
    assert not list(tmp_path.iterdir())


def test_save_preset_metadata_is_checked(tmp_path):
    model = _tiny()
    kw = {"build_kwargs": {"widths": TINY["widths"]}}
    with pytest.raises(TypeError, match=r"'normalisation' \(did you mean 'normalization'\?\)"):
        save_preset(model, tmp_path / "a", normalisation="zscore", **kw)
    with pytest.raises(ValueError, match="test_split"):
        save_preset(model, tmp_path / "b", metrics={"f1": 0.9}, **kw)
    with pytest.raises(ValueError, match="method in"):
        save_preset(model, tmp_path / "c", normalization={"method": "quantile"}, **kw)
    with pytest.raises(ValueError, match="sha256"):
        save_preset(model, tmp_path / "d", training_data={"name": "x", "sha256": "abc"}, **kw)


def test_load_local_folder_predicts_identically_and_still_saves(tiny_preset, tmp_path):
    for model in (load(tiny_preset.path), load(str(tiny_preset.path)), load("unet", weights=tiny_preset.path)):
        np.testing.assert_array_equal(model.predict(tiny_preset.x, verbose=0), tiny_preset.y)
        assert model.emzoo_metadata["entry"] == "unet"
    # emzoo_metadata is not tracked by Keras: saving still works and does not carry it.
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    assert "emzoo_metadata" not in zipfile.ZipFile(tmp_path / "m.keras").read("config.json").decode()
    restored = load(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(tiny_preset.x, verbose=0), tiny_preset.y)


def test_any_tile_size_through_a_build_override(tiny_preset, tmp_path):
    model = load(tiny_preset.path, input_shape=(None, None, 1))
    assert model.input_shape == (None, None, None, 1)
    np.testing.assert_allclose(model.predict(tiny_preset.x, verbose=0), tiny_preset.y, rtol=1e-5, atol=1e-6)
    # Saved again at any tile size: FLOPs are counted at the entry's reference tile (512 x 512).
    meta = read_preset_metadata(save_preset(model, tmp_path / "any", build_kwargs={"widths": TINY["widths"]}))
    # The divisor is read off the graph (emzoo.inference.receptive.model_divisor), so an open input size keeps it:
    # two poolings of the 3-level tiny U-Net.
    assert meta["input"]["shape"] == [None, None, 1] and meta["input"]["divisor"] == [4, 4]
    assert meta["flops"] == {"gflops": count_flops(_tiny(input_shape=(512, 512, 1))).gflops,
                             "input_shape": [1, 512, 512, 1]}


def test_weights_for_another_architecture_or_channels_name_the_layer(tiny_preset):
    with pytest.raises(ValueError, match=r"layer 'enc1_conv1' \(Conv2D\) needs a variable of shape \(3, 3, 3, 4\) "
                                         r"but the file holds \(3, 3, 1, 4\)"):
        load(tiny_preset.path, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"layer 'enc1_conv1' .*\(3, 3, 1, 8\) but the file holds \(3, 3, 1, 4\)"):
        load(tiny_preset.path, widths=(8, 16, 32))
    with pytest.raises(ValueError, match=r"layer 'head_out' .*\(1, 1, 2, 3\) but the file holds \(1, 1, 2, 1\)"):
        load(tiny_preset.path, num_classes=3)
    with pytest.raises(ValueError, match="holds weights for entry 'unet', not 'unet_bn'"):
        load("unet_bn", weights=tiny_preset.path)


def test_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda t: t + 1.0, name="plus_one")(keras.layers.Conv2D(1, 3, name="c")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "lam.keras")
    with pytest.raises(ValueError, match=r"Lambda layers \['plus_one'\].*safe mode"):
        load(tmp_path / "lam.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a Keras 3 .keras archive"):
        load(tmp_path / "junk.keras")


def test_random_init_and_conflicting_arguments(tiny_preset, hub_env):
    model = load("unet", weights=None, **TINY)
    assert model.count_params() == 7469 and model.emzoo_metadata == {}
    with pytest.raises(ValueError, match="weights=None asks for random"):
        load("unet.tiny", weights=None)
    with pytest.raises(ValueError, match="give the tag once"):
        load("unet.tiny", weights="other")
    with pytest.raises(ValueError, match="already names the weights"):
        load(tiny_preset.path, weights="tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("unet", weights=hub_env / "missing")
    with pytest.raises(ValueError, match="compile=True"):
        load(tiny_preset.path, compile=True)


def test_unknown_entry_or_tag_suggests_names(hub):
    with pytest.raises(KeyError, match="Did you mean: unet"):
        load("unte.tiny")
    with pytest.raises(KeyError, match=r"no weights tag 'tinny' for 'unet'\. Did you mean: tiny\?"):
        load("unet.tinny")
    with pytest.raises(KeyError, match="'unet_bn' has no published weights.*weights=None"):
        load("unet_bn")


def test_hf_uri_is_verified_when_the_manifest_knows_it(hub, monkeypatch, tmp_path):
    model = load(f"hf://{REPO_ID}@{hub.commit}")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    assert read_preset_metadata(f"hf://{REPO_ID}@{hub.commit}")["entry"] == "unet"
    # A repo the manifest does not list loads with a warning that nothing could be sha256-checked.
    files = {p.name: p.read_bytes() for p in hub.preset.path.iterdir()}
    other = hub.server.add_repo("someone/unet-copy", files)
    with pytest.warns(UserWarning, match="not in the weights manifest"):
        model = load("unet", weights=f"hf://someone/unet-copy@{other}")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    # The manifest's URI served with a changed config.json (fresh cache): caught, as the manifest pins its hashes.
    config = files["config.json"].replace(b'"num_classes": 1', b'"num_classes": 2')
    hub.server.add_repo(REPO_ID, {**files, "config.json": config}, commit=hub.commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "fresh_hf_home"))
    with pytest.raises(ValueError, match=r"config\.json .* fails the sha256 check"):
        load(f"hf://{REPO_ID}@{hub.commit}")


def test_model_card_shows_the_load_line_of_a_named_preset():
    from huggingface_hub import ModelCard

    from emzoo.hub.card import model_card

    meta = {"entry": "unet", "name": "unet.demo", "input": {"shape": [None, None, 1], "dtype": "float32"},
            "params": 1, "axes": "YXC", "num_classes": 1, "date": "2026-01-01T00:00:00+00:00"}
    card = ModelCard(model_card(meta, {"emzoo_version": "0.1.0", "keras_version": keras.__version__}))
    assert card.data.to_dict()["library_name"] == "emzoo"
    assert 'model = emzoo.load("unet.demo")' in card.text
