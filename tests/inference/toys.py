"""Tiny models for the inference tests (built in milliseconds, deterministic weights)."""

from __future__ import annotations

import keras
import numpy as np

import emzoo


def tiny_unet(seed: int = 0) -> keras.Model:
    """A 3-level zoo U-Net (pooling, up-sampling, even 2x2 up-convs, skips); margin 27, divisor 4."""
    keras.utils.set_random_seed(seed)
    return emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))


def tiny_dilated_3d() -> keras.Model:
    """The zoo's HighRes3DNet with two small stages (dilation 1 and 2); margin 7 per axis."""
    keras.utils.set_random_seed(1)
    try:
        return emzoo.build("highres3dnet", input_shape=(None, None, None, 1), stages=((4, 1), (4, 2)),
                           blocks_per_stage=1, stem_features=4, extra_features=8)
    except (KeyError, TypeError):  # the entry's options changed: an equivalent dilated 3D stack
        x = inputs = keras.Input((None, None, None, 1))
        for d in (1, 1, 2, 2):
            x = keras.layers.Conv3D(4, 3, padding="same", dilation_rate=d, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Conv3D(2, 1, activation="softmax")(x))


def valid_net(input_shape: tuple[int | None, ...] = (None, None, 1)) -> keras.Model:
    """Two valid 3x3 convs: the output is 4 px smaller than the input (2 on each side)."""
    keras.utils.set_random_seed(2)
    x = inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="valid", activation="relu", name="v1")(x)
    x = keras.layers.Conv2D(2, 3, padding="valid", activation="softmax", name="v2")(x)
    return keras.Model(inputs, x)


def cropped_3d(input_shape: tuple[int | None, ...]) -> keras.Model:
    """A genenet-like 3D net: per-slice convs, (1,2,2) pooling, up-sampling, a cropped skip, a valid last conv and a
    second (auxiliary) output. Built for a fixed or free input of the same weights layout."""
    keras.utils.set_random_seed(3)
    x = inputs = keras.Input(input_shape)
    skip = keras.layers.Conv3D(4, (1, 3, 3), padding="same", activation="relu", name="c1")(x)
    y = keras.layers.MaxPooling3D((1, 2, 2), name="pool")(skip)
    y = keras.layers.Conv3D(4, (1, 3, 3), padding="same", activation="relu", name="c2")(y)
    y = keras.layers.UpSampling3D((1, 2, 2), name="up")(y)
    y = keras.layers.Concatenate(name="cat")([skip, y])
    aux = keras.layers.Conv3D(3, 1, activation="softmax", name="aux")(y)
    y = keras.layers.Conv3D(3, (1, 3, 3), padding="valid", activation="softmax", name="main")(y)
    return keras.Model(inputs, [y, aux])


def frames_net(frames: int = 3) -> keras.Model:
    """A multi-frame net like CDeep3M 3fm: (frames, H, W, 1) -> (H, W, 2), z collapsed by a valid conv."""
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((frames, None, None, 1))
    x = keras.layers.ZeroPadding3D((0, 1, 1))(x)
    x = keras.layers.Conv3D(4, (frames, 3, 3), activation="relu")(x)
    x = keras.ops.squeeze(x, axis=1)
    x = keras.layers.Conv2D(2, 3, padding="same", dilation_rate=2, activation="softmax")(x)
    return keras.Model(inputs, x)


def symmetric_net(ndim: int = 2) -> keras.Model:
    """Convolutions whose kernels are invariant under the D4 group in (y, x) (and z reversal in 3D), with zero
    'same' padding: the whole net commutes with every TTA transform."""
    conv = keras.layers.Conv2D if ndim == 2 else keras.layers.Conv3D
    x = inputs = keras.Input((None,) * ndim + (1,))
    layers = [conv(3, 3, padding="same", activation="relu"), conv(1, 3, padding="same", dilation_rate=2,
                                                                   activation="sigmoid")]
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(5)
    for layer in layers:
        kernel, bias = layer.get_weights()
        k = rng.normal(size=kernel.shape).astype(np.float32)
        # Symmetrise over the in-plane group (rotations, flips) and, in 3D, the z reversal.
        plane = (0, 1) if ndim == 2 else (1, 2)
        sym = sum(np.rot90(np.flip(k, axis=plane[1]) if f else k, r, axes=plane) for r in range(4) for f in (0, 1))
        if ndim == 3:
            sym = sym + np.flip(sym, axis=0)
        layer.set_weights([sym / np.abs(sym).max(), bias + 0.1])
    return model
