"""What the cross-backend test compares: a bundled preset, and a small configuration of every other family.

Imported by the TensorFlow reference writer (``python -m tests.backends.cases OUT``) and by the JAX tests, so
both processes build the very same graphs. Widths are cut down (random weights, tiny inputs) because JAX
compiles every new shape of every op (initialisers included) with XLA. The emnet family (TLU, BatchNorm) is
the bundled preset :data:`PRESET` at its published size, on a real EM crop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PRESET = "emnet_v1_bn.cardiac_mito"
SAMPLE = Path(__file__).resolve().parents[2] / "emzoo" / "data" / "cardiac_mito_sample" / "test" / "raw.tif"


def _cdeep3m_head() -> Any:
    """CDeep3M has no width knobs (24 M parameters), so its own 8x head: dilated strided transposed convs."""
    import keras

    from emzoo.models.cdeep3m import apply_multiscale_head

    inputs = keras.Input((4, 4, 6))
    return keras.Model(inputs, apply_multiscale_head(inputs, scale=8, level=4), name="cdeep3m_head")


def _entry(name: str, shape: tuple[int, ...], **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import emzoo

        return emzoo.build(name, input_shape=shape, **kwargs)

    return build


# case -> (builder, input shape without the batch axis, input gain). The gain spreads the outputs of the
# randomly initialised nets (several end in tiny-std inits) over most of [0, 1], so a 1e-4 tolerance means
# something.
CASES: dict[str, tuple[Callable[[], Any], tuple[int, ...], float]] = {
    # PReLU (channel-wise, shared over space)
    "prelu_net": (_entry("prelu_net", (16, 16, 1), widths=(4, 8, 16)), (16, 16, 1), 1.0),
    # MaxPoolingWithIndices2D + MaxUnpooling2D
    "segnet_indices": (_entry("segnet_indices", (16, 16, 1), encoder=((4,), (8, 8)), decoder=((8, 8), (4,))),
                       (16, 16, 1), 30.0),
    # DilatedConv2DTranspose (polyphase) beside a bilinear-initialised Conv2DTranspose
    "cdeep3m_head": (_cdeep3m_head, (4, 4, 6), 500.0),
    # ZeroMeanConv3D, ChannelPad, dilated 3D convs
    "highres3dzmnet": (_entry("highres3dzmnet", (8, 8, 8, 1), stages=((4, 1), (8, 2)), stem_features=4,
                              blocks_per_stage=1, extra_features=8), (8, 8, 8, 1), 1.0),
    "net2d3d_nopyramid": (_entry("net2d3d_nopyramid", (3, 16, 16, 1), widths=(4, 8, 8, 16)), (3, 16, 16, 1),
                          300.0),
    "resnet50_unet": (_entry("resnet50_unet", (32, 32, 1), base_filters=2), (32, 32, 1), 3.0),
    "attention_unet3d_fb": (_entry("attention_unet3d_fb", (8, 8, 8, 1), widths=(4, 8, 16),
                                   dropout=(0.0, 0.0, 0.0)), (8, 8, 8, 1), 5.0),
    "vgg16_unet": (_entry("vgg16_unet", (16, 16, 1), encoder=((4,), (8,)), decoder=(8, 4)), (16, 16, 1), 3.0),
}


def case_input(case: str) -> np.ndarray:
    """The batch of one every backend feeds to ``case``: seeded uniform noise times the case's gain."""
    _, shape, gain = CASES[case]
    return (gain * np.random.default_rng(0).uniform(0.0, 1.0, size=(1, *shape))).astype("float32")


def preset_input(model: Any) -> np.ndarray:
    """A 64x64 crop of the bundled cardiac test slice (22 % mitochondria), z-scored as the preset says."""
    import tifffile

    norm = model.emzoo_metadata["normalization"]
    crop = tifffile.imread(SAMPLE)[0, 64:128, 0:64].astype("float32")
    return ((crop - norm["mean"]) / norm["std"])[None, :, :, None].astype("float32")


def outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    """``predict_on_batch`` (the path ``emzoo.predict`` takes: one jitted graph) as numpy arrays."""
    import keras

    out = model.predict_on_batch(x)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in out]


def write_reference(out: Path) -> None:
    """Build every case with seeded random weights; save ``<case>.weights.h5`` and its outputs (``.npz``).

    Also ``preset.npz`` (the bundled preset's output on :func:`preset_input`) and ``backend.txt``.
    """
    import keras

    import emzoo

    for case, (build, _, _) in CASES.items():
        keras.utils.set_random_seed(0)
        model = build()
        model.save_weights(out / f"{case}.weights.h5")
        np.savez(out / f"{case}.npz", *outputs(model, case_input(case)))
    preset = emzoo.load(PRESET)
    np.savez(out / "preset.npz", *outputs(preset, preset_input(preset)))
    (out / "backend.txt").write_text(keras.backend.backend())


if __name__ == "__main__":
    write_reference(Path(sys.argv[1]))
