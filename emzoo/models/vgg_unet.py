"""VGG16-U-Net, as benchmarked in EM-stellar: the VGG16 conv stack as encoder, an up-conv decoder with BN.

Papers: Simonyan, Zisserman. Very deep convolutional networks for large-scale image recognition. ICLR 2015.
arXiv:1409.1556. Layout: the Keras 2.2.4 builder of the EM-net notebook (akhadangi/EM-net, ``EM_net.ipynb``, MIT), as
benchmarked in Khadangi, Boudier, Rajagopal. EM-stellar. Bioinformatics 37(1):97, 2021.
doi:10.1093/bioinformatics/btaa1094.

Reference figures (``ARCHITECTURES.md`` §1 and §6): 30 convs, 16 BNs; 25,994,061 params (6,148 non-trainable);
299.94 GFLOPs (149.97 GMACs) at 512x512x1.

Deliberate choices:

- Trained from scratch in EM-stellar: no ImageNet weights, 1-channel input, He-normal init, no BN in the encoder.
- Encoder layer names follow ``keras.applications.VGG16`` (``block1_conv1`` ... ``block5_pool``).
- The notebook's quirk is kept: the skips are the *pooled* features (``block4_pool`` ... ``block1_pool``), so every
  skip reaches the decoder at half the resolution it was computed at; only the last skip, ``block1_conv2``, is taken
  before pooling. A textbook U-Net would take every skip before pooling.
- The decoder level (up-sampling, 2x2 conv, BN, ReLU; concat [upsampled, skip]; two conv-BN-ReLU) and the 2-channel
  head are EM-net's (:mod:`emzoo.blocks.unet_decoder`).
- Fixed: the notebook reads a global image size and compiles in the builder; here the input shape is an argument and
  the model is returned uncompiled.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks.unet_decoder import apply_two_channel_head, apply_upconv_decoder_level
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_vgg16_unet"]

# VGG16's conv widths per block; the decoder widths, deepest level first.
_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_DECODER = (512, 256, 128, 64, 64)


def build_vgg16_unet(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    encoder: tuple[tuple[int, ...], ...] = _VGG16,
    decoder: tuple[int, ...] = _DECODER,
    name: str = "vgg16_unet",
) -> keras.Model:
    """Build a VGG-encoder U-Net with pooled-feature skips.

    Layer names: encoder ``block{b}_conv{i}``, ``block{b}_pool``; decoder level ``L`` (the deepest is ``dec5``)
    ``dec{L}_up``, ``dec{L}_upconv``, ``dec{L}_concat``, ``dec{L}_conv1``, ``dec{L}_conv2`` (+ ``_bn``, ``_act``);
    head ``head_conv``, ``head_out``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``; H and W divisible by ``2 ** len(encoder)`` (32 for VGG16).
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    encoder : tuple of tuple of int
        Conv widths of each VGG block, shallow to deep; every block ends with a 2x2 max pooling.
    decoder : tuple of int
        Width of each decoder level, deepest first; one per encoder block.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled.

    Raises
    ------
    ValueError
        If the input shape does not fit or encoder and decoder differ in depth.

    Examples
    --------
    >>> model = build_vgg16_unet(input_shape=(32, 32, 1), encoder=((8,), (8,), (8,), (8,), (8,)),
    ...                          decoder=(8, 8, 8, 8, 8))
    >>> model.output_shape
    (None, 32, 32, 1)
    """
    depth = len(encoder)
    if len(decoder) != depth:
        raise ValueError(
            f"{name}: {depth} encoder blocks but {len(decoder)} decoder levels; give one decoder width per block."
        )
    shape = check_input_shape(input_shape, ndim=3, divisor=(2**depth, 2**depth), name=name)

    inputs = keras.Input(shape, name="image")
    x = inputs
    # Skip for decoder level L: the pooled output of block L-1; level 1 gets the last full-resolution conv.
    skips = []
    for block, widths in enumerate(encoder, start=1):
        for i, filters in enumerate(widths, start=1):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                                    name=f"block{block}_conv{i}")(x)
        if block == 1:
            skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        if block < depth:
            skips.append(x)
    for level, filters in zip(range(depth, 0, -1), decoder, strict=True):
        x = apply_upconv_decoder_level(x, skips[level - 1], filters, name=f"dec{level}")
    outputs = apply_two_channel_head(x, num_classes, name="head")
    return keras.Model(inputs, outputs, name=name)


@register_entry(
    family="vgg_unet", dims="2D", input_shape=(512, 512, 1), num_classes=1, divisor=(32, 32),
    params=25_994_061, trainable_params=25_987_913, gflops=299.94,
    paper="Simonyan & Zisserman 2015; EM-stellar (Khadangi et al. 2021)",
    reference=(
        "Simonyan K, Zisserman A. Very deep convolutional networks for large-scale image recognition. ICLR 2015. "
        "arXiv:1409.1556; Khadangi A, Boudier T, Rajagopal V. EM-stellar. Bioinformatics 37(1):97, 2021. "
        "doi:10.1093/bioinformatics/btaa1094"
    ),
    notes="VGG16 encoder (no BN, from scratch) with pooled-feature skips; EM-net's BN up-conv decoder and head.",
)
def vgg16_unet(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """VGG16-U-Net. 25,994,061 params; 299.94 GFLOPs at 512x512x1."""
    return build_vgg16_unet(input_shape=input_shape, num_classes=num_classes, name="vgg16_unet", **kwargs)
