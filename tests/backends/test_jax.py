"""The JAX backend. ``make test`` runs this module (with tests/layers) again under ``KERAS_BACKEND=jax``; the
TensorFlow pass skips it.

Weights written by TensorFlow (the bundled preset, and a small random configuration of each family saved by a
TensorFlow subprocess) must load under JAX and give TensorFlow's outputs within 1e-4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests._backend import jax_only
from tests.backends.cases import CASES, PRESET, case_input, outputs, preset_input

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


def test_the_pass_runs_on_the_backend_it_names():
    """``make test-jax`` sets EMZOO_TEST_BACKEND=jax: a pass that fell back to TensorFlow fails here."""
    expected = os.environ.get("EMZOO_TEST_BACKEND")
    if expected is None:
        pytest.skip("EMZOO_TEST_BACKEND is not set (make test-jax sets it)")
    assert keras.backend.backend() == expected
    if expected == "jax":
        import jax

        assert isinstance(keras.ops.ones((2,)), jax.Array)


@pytest.fixture(scope="module")
def tf_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TensorFlow subprocess writes each case's weights and outputs, and the preset's (about 20 s)."""
    out = tmp_path_factory.mktemp("tf_reference")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("XLA_FLAGS", None)  # the JAX pass's compile-speed flag: the reference runs as users run TF
    done = subprocess.run([sys.executable, "-m", "tests.backends.cases", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "backend.txt").read_text() == "tensorflow"
    return out


def _assert_same(got: list[np.ndarray], reference: Path) -> None:
    expected = np.load(reference)
    assert len(got) == len(expected.files)
    for i, array in enumerate(got):
        np.testing.assert_allclose(array, expected[f"arr_{i}"], rtol=0, atol=TOLERANCE)


@jax_only
@pytest.mark.parametrize("case", sorted(CASES))
def test_family_weights_saved_under_tensorflow_load_and_agree(case, tf_reference):
    model = CASES[case][0]()
    model.load_weights(tf_reference / f"{case}.weights.h5")
    _assert_same(outputs(model, case_input(case)), tf_reference / f"{case}.npz")


@jax_only
def test_bundled_preset_agrees_with_tensorflow(tf_reference):
    import emzoo

    model = emzoo.load(PRESET)
    _assert_same(outputs(model, preset_input(model)), tf_reference / "preset.npz")
