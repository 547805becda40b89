"""Rules 2 and 4 of issue 11: never return a wrong number with exit 0, and every ``emzoo predict`` error is one line.

Numeric arguments are checked by one helper (:mod:`emzoo._validate`) at every entry point, with the argument named
as the caller spelled it; ``emzoo predict`` refuses to write a prediction holding NaN.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.inference import predict, predict_blockwise
from tests.inference import toys
from tests.reliability.helpers import VOLUME, assert_one_line_error, invoke, snapshot

IMAGE = VOLUME[0].astype(np.float32) / 255


@pytest.fixture(scope="module")
def model():
    return toys.tiny_unet()


BAD_PREDICT = [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": -3}, "batch_size must be an integer >= 1, got -3"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ({"halo": -1}, "halo must be an integer >= 0, got -1"),
    ({"halo": (4, -2)}, "halo must hold integers >= 0, got -2"),
    ({"tile": 0}, "tile must be an integer >= 1, got 0"),
    ({"tile": 64.5}, "tile must be an integer >= 1, got 64.5"),
    ({"tile": (64, 0)}, "tile must hold integers >= 1, got 0"),
    ({"tile": "64"}, "tile must be an integer >= 1 or a tuple of them, got '64'"),
    ({"tile": (1, 2, 3, 4)}, "tile must be an integer >= 1 or 2 or 3 of them"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_PREDICT, ids=[str(k) for k, _ in BAD_PREDICT])
def test_predict_refuses_bad_numbers(model, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predict(model, IMAGE, progress=False, **kwargs)


def test_predict_accepts_integer_valued_numbers(model):
    prob = predict(model, IMAGE, tile=np.int64(32), halo=(8.0, 8), batch_size=np.int32(2), progress=False)
    assert prob.shape == (40, 36, 1) and np.isfinite(prob).all() and prob.std() > 0


BAD_BLOCKWISE = [
    ({"threshold": 0.0, "output": "mask"}, "threshold must be a number strictly between 0 and 1, got 0.0"),
    ({"threshold": 1.0, "output": "mask"}, "threshold must be a number strictly between 0 and 1, got 1.0"),
    ({"threshold": float("nan"), "output": "mask"}, "threshold must be a number strictly between 0 and 1"),
    ({"block": 0}, "block must be an integer >= 1, got 0"),
    ({"block": (1, -32, 32)}, "block must hold integers >= 1, got -32"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"halo": -4}, "halo must be an integer >= 0, got -4"),
    ({"chunks": (1, 0, 16)}, "chunks must hold integers >= 1, got 0"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_BLOCKWISE, ids=[str(k) for k, _ in BAD_BLOCKWISE])
def test_blockwise_refuses_bad_numbers_before_writing(model, inputs, kwargs, message):
    before = snapshot(inputs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predict_blockwise(model, str(inputs / "in.zarr"), inputs / "out.zarr", progress=False, **kwargs)
    assert snapshot(inputs) == before and not (inputs / "out.zarr").exists()


BAD_CLI = [
    (("--batch-size", "0"), "--batch-size must be an integer >= 1, got 0"),
    (("--batch-size", "abc"), "--batch-size must be an integer >= 1, got 'abc'"),
    (("--threshold", "1"), "--threshold must be a number strictly between 0 and 1, got 1.0"),
    (("--threshold", "0"), "--threshold must be a number strictly between 0 and 1, got 0.0"),
    (("--threshold", "x"), "--threshold must be a number strictly between 0 and 1, got 'x'"),
    (("--tile", "64.5"), "--tile must be an int or comma-separated ints"),
    (("--tile", "0"), "--tile must be an integer >= 1, got 0"),
    (("--halo", "-1"), "--halo must be an integer >= 0, got -1"),
    (("--block", "0,32,32"), "--block must hold integers >= 1, got 0"),
    (("--threshold", "0.5", "--foreground"), "pick one"),
    (("--block", "1,32,32"), "--scheduler and --block apply to .zarr output"),
]


@pytest.mark.parametrize(("args", "message"), BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_cli_bad_numbers_are_one_line_usage_errors(model_file, inputs, args, message):
    before = snapshot(inputs)
    out = "out.zarr" if "--block" in args and "1,32,32" not in args else "out.tif"
    result = invoke(model_file, inputs / "in.tif", inputs / out, *args)
    assert_one_line_error(result, 2, message)
    assert snapshot(inputs) == before and not (inputs / out).exists()


@pytest.mark.parametrize(("model_arg", "output", "extra", "message"), [
    ("no_such_entry_xyz", "out.tif", (), "no_such_entry_xyz"),
    ("{model}", "out.jpg", ("--foreground",), "unknown output type '.jpg'"),
    ("{model}", "out.tif", ("--tta", "spin"), "spin"),
    ("{model}", "out.tif", ("--blend", "cubic"), "blend must be one of"),
    ("{model}", "out.mrc", (), "MRC output holds no channel axis"),
], ids=["unknown-model", "unknown-extension", "bad-tta", "bad-blend", "mrc-with-classes"])
def test_cli_library_errors_are_one_line(model_file, inputs, model_arg, output, extra, message):
    before = snapshot(inputs)
    model = str(model_file) if model_arg == "{model}" else model_arg
    result = invoke(model, inputs / "in2d.tif", inputs / output, *extra)
    assert_one_line_error(result, 1, message)
    assert snapshot(inputs) == before and not (inputs / output).exists()


@pytest.fixture(scope="module")
def nan_model_file(tmp_path_factory):
    model = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("nan") / "nan.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("output", ["out.tif", "out.npy", "out.h5:/p"])
def test_cli_refuses_to_write_nan(nan_model_file, inputs, output):
    before = snapshot(inputs)
    result = invoke(nan_model_file, inputs / "in2d.tif", inputs / output)
    assert_one_line_error(result, 1, "NaN/Inf value(s); nothing was written")
    assert snapshot(inputs) == before


def test_blockwise_writes_no_nan_block(nan_model_file, inputs):
    model = keras.saving.load_model(nan_model_file)
    with pytest.raises(ValueError, match="predicted .* NaN/Inf value"):
        predict_blockwise(model, str(inputs / "in.zarr"), inputs / "out.zarr", progress=False)
    assert not list((inputs / "out.zarr").rglob("*.done"))  # no block recorded as done
    with pytest.raises(ValueError, match=r"unfinished blockwise prediction: 1 of 1 blocks are missing \(\(0, 0, 0\)"):
        emzoo.read(inputs / "out.zarr")  # an unfinished output never reads as a complete one
    data = np.asarray(emzoo.read(inputs / "out.zarr", allow_incomplete=True).data)
    assert np.isfinite(data).all()  # only the fill value, never a NaN


def test_validator_is_shared():
    from emzoo._validate import check_int, check_ints, check_probability

    assert check_int(7.0, "n") == 7 and check_ints((None, 4, 4), "tile") == (None, 4, 4)
    assert check_probability(0.25, "threshold") == 0.25
    with pytest.raises(ValueError, match="x must be an integer >= 1, got nan"):
        check_int(float("nan"), "x")
