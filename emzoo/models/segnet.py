"""SegNet, as benchmarked in EM-stellar, and its max-pooling-indices variant.

Paper: Badrinarayanan, Kendall, Cipolla. SegNet: a deep convolutional encoder-decoder architecture for image
segmentation. IEEE TPAMI 39(12):2481, 2017. doi:10.1109/TPAMI.2016.2644615. Layout: the Keras 2.2.4 builder of the
EM-net notebook (akhadangi/EM-net, ``EM_net.ipynb``, MIT), as benchmarked in Khadangi, Boudier, Rajagopal. EM-stellar.
Bioinformatics 37(1):97, 2021. doi:10.1093/bioinformatics/btaa1094.

Reference figures (``ARCHITECTURES.md`` §1 and §5): 26 convs and 26 BNs; 7,817,541 params (8,194 non-trainable);
87.14 GFLOPs (43.57 GMACs) at 512x512x1, for both entries.

Deliberate choices:

- ``segnet`` is EM-stellar's network: its decoder up-samples with nearest neighbour (``UpSampling2D``), not with the
  pooling indices that define SegNet, and has no skips. Kept, because it is the network that was benchmarked.
- The BN on the single output logit before the sigmoid is the notebook's; kept.
- ``segnet_indices`` (§5.2) keeps every layer and width and swaps the two operations: each encoder pool records the
  arg-max position of its 2x2 windows (ties go to the first position in row-major order) and each decoder
  up-sampling becomes max-unpooling with the indices of the mirror pool (decoder level ``L`` uses ``enc{L}_pool``).
  The two entries' weights are interchangeable.
- **AMBIGUOUS, resolved here:** with EM-stellar's widths the level-3 unpooling receives 256 channels while
  ``enc3_pool`` recorded switches for 128. ``dec3_unpool`` therefore tiles the switches along channels (channel ``c``
  uses the switches of channel ``c mod 128``); every other unpooling matches channel for channel. The alternative,
  narrowing the last conv of decoder level 4 to 128 (as SegNet's VGG decoder does), would change the parameter count.
- Fixed: the notebook builds a Sequential model with a global image size and compiles it; here the input shape is an
  argument and the model is returned uncompiled.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks import apply_conv_norm_act, output_activation
from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_segnet"]

# Conv widths per level, shallow to deep (encoder) and deep to shallow (decoder); one pool/up-sampling per level.
_ENCODER = ((32, 32), (64, 64), (128, 128, 128), (256, 256, 256), (256, 256, 256))
_DECODER = ((256, 256, 256), (256, 256, 256), (128, 128, 64), (64, 32), (32,))


def build_segnet(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    encoder: tuple[tuple[int, ...], ...] = _ENCODER,
    decoder: tuple[tuple[int, ...], ...] = _DECODER,
    unpooling: str = "nearest",
    name: str = "segnet",
) -> keras.Model:
    """Build a SegNet-style encoder-decoder without skips.

    Layer names: ``enc{L}_conv{i}`` (+ ``_bn``, ``_act``), ``enc{L}_pool``; decoder level ``L`` (deepest first, so the
    first decoder level is ``dec5``) has ``dec{L}_up`` or ``dec{L}_unpool`` then ``dec{L}_conv{i}``; head
    ``head_conv``, ``head_conv_bn``, ``head_act``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``; H and W divisible by ``2 ** len(encoder)`` (32 for the registered entries).
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    encoder, decoder : tuple of tuple of int
        Conv widths per level; the encoder shallow to deep, the decoder deep to shallow, one level per pooling.
    unpooling : {"nearest", "indices"}
        ``"nearest"``: EM-stellar's ``UpSampling2D``; ``"indices"``: max-unpooling with the mirror pool's arg-max.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled.

    Raises
    ------
    ValueError
        If the input shape does not fit, ``unpooling`` is unknown or encoder and decoder differ in depth.

    Examples
    --------
    >>> model = build_segnet(input_shape=(32, 32, 1), unpooling="indices")
    >>> model.output_shape
    (None, 32, 32, 1)
    """
    if unpooling not in ("nearest", "indices"):
        raise ValueError(f"{name}: unpooling must be 'nearest' or 'indices', got {unpooling!r}.")
    depth = len(encoder)
    if len(decoder) != depth:
        raise ValueError(
            f"{name}: {depth} encoder levels but {len(decoder)} decoder levels; give one decoder level per pooling."
        )
    shape = check_input_shape(input_shape, ndim=3, divisor=(2**depth, 2**depth), name=name)

    def conv(x: Any, filters: int, layer_name: str) -> Any:
        return apply_conv_norm_act(x, filters, 3, kernel_initializer="glorot_uniform", name=layer_name)

    inputs = keras.Input(shape, name="image")
    x = inputs
    switches = []
    for level, widths in enumerate(encoder, start=1):
        for i, filters in enumerate(widths, start=1):
            x = conv(x, filters, f"enc{level}_conv{i}")
        if unpooling == "indices":
            x, indices = MaxPoolingWithIndices2D(2, name=f"enc{level}_pool")(x)
            switches.append(indices)
        else:
            x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    for level, widths in zip(range(depth, 0, -1), decoder, strict=True):
        if unpooling == "indices":
            tile = x.shape[-1] != switches[level - 1].shape[-1]
            x = MaxUnpooling2D(2, tile_indices=tile, name=f"dec{level}_unpool")([x, switches[level - 1]])
        else:
            x = keras.layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        for i, filters in enumerate(widths, start=1):
            x = conv(x, filters, f"dec{level}_conv{i}")
    x = apply_conv_norm_act(x, num_classes, 1, activation=None, name="head_conv")
    outputs = keras.layers.Activation(output_activation(num_classes), name="head_act")(x)
    return keras.Model(inputs, outputs, name=name)


_PAPER = "Badrinarayanan et al. 2017; EM-stellar (Khadangi et al. 2021)"
_REF = (
    "Badrinarayanan V, Kendall A, Cipolla R. SegNet. IEEE TPAMI 39(12):2481, 2017. doi:10.1109/TPAMI.2016.2644615; "
    "Khadangi A, Boudier T, Rajagopal V. EM-stellar. Bioinformatics 37(1):97, 2021. doi:10.1093/bioinformatics/btaa1094"
)
_COMMON = dict(family="segnet", dims="2D", input_shape=(512, 512, 1), num_classes=1, divisor=(32, 32),
               params=7_817_541, trainable_params=7_809_347, gflops=87.14, paper=_PAPER, reference=_REF)


@register_entry(**_COMMON, notes="EM-stellar's SegNet: nearest up-sampling (no pooling indices), no skips; "
                "conv-BN-ReLU everywhere, BN on the output logit.")
def segnet(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """SegNet, EM-stellar variant (nearest up-sampling). 7,817,541 params; 87.14 GFLOPs at 512x512x1."""
    return build_segnet(input_shape=input_shape, num_classes=num_classes, name="segnet", **kwargs)


@register_entry(**_COMMON, notes="segnet's layers with max-pooling-indices unpooling (ties: first in row-major "
                "window order); dec3_unpool tiles enc3's 128-channel switches over its 256 channels.")
def segnet_indices(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """SegNet with max-pooling-indices unpooling (same widths as ``segnet``). 7,817,541 params; 87.14 GFLOPs."""
    return build_segnet(input_shape=input_shape, num_classes=num_classes, unpooling="indices",
                        name="segnet_indices", **kwargs)
