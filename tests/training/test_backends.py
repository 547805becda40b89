"""The training code is backend-agnostic: a tiny run on JAX (skipped when JAX is not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    assert keras.backend.backend() == "jax"
    from emzoo.training import finetune
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(4, 48, 48)).astype("float32")
    labels = (raw > 0.5).astype("uint8")
    model, history = finetune("unet_bn", (raw, labels), (raw[:1], labels[:1]), steps=2, batch_size=2,
                              patch_size=32, build_kwargs={"widths": (4, 8, 16)}, progress=False, workers=1)
    assert history["final_weights_sha256"] != history["initial_weights_sha256"]
    assert np.isfinite(history["loss"]).all() and "f1" in history["val_metrics"]
    print("JAX-OK")
""")


@pytest.mark.slow
def test_finetune_runs_on_jax():
    """~30 s: a fresh process imports JAX and compiles (slow marker)."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "JAX-OK" in done.stdout, done.stderr[-3000:]
