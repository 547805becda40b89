"""HighRes3DNet and HighRes3DZMNet: dilated residual 3D networks that keep full resolution end to end.

Papers: Li W, Wang G, Fidon L, Ourselin S, Cardoso MJ, Vercauteren T. On the compactness, efficiency, and
representation of 3D convolutional networks: brain parcellation as a pretext task. IPMI 2017.
doi:10.1007/978-3-319-59050-9_28. Žerovnik Mekuč M et al. Automatic segmentation of mitochondria and endolysosomes
in volumetric electron microscopy data. Comput Biol Med 119:103693, 2020. doi:10.1016/j.compbiomed.2020.103693
(HighRes3DZMNet; trained in NiftyNet, no code published). Layout: NifTK/NiftyNet ``niftynet/network/highres3dnet.py``
(Apache-2.0), read for facts; this is a from-scratch Keras 3 builder.

Block notation (NiftyNet's)::

    conv_0 [3³, 16] -> res_1 3x[BN-act-conv 3³ d1]x2 -> res_2 3x[... d2, 32] -> res_3 3x[... d4, 64]
           -> conv_1 [1³, 80] -> conv_2 [1³, n_classes] -> BN (logits) -> softmax

Reference figures (``ARCHITECTURES.md`` §9): ``highres3dnet`` (2 classes) 810,392 params (808,948 trainable),
807,504 MACs per voxel, 1,428.86 GFLOPs at 96³; ``highres3dzmnet`` (3 classes) 810,476 (809,030), 1,429.00 GFLOPs.
The paper layout (``extra_1x1=False``) has 804,920 params at 2 classes and 815,664 at 160 (Li et al.'s 0.81 M).

Deliberate choices:

- NiftyNet layout by default (the extra 1³ conv to 80 features and BN on the logits are what NiftyNet trains);
  ``extra_1x1=False`` gives the paper's 20-conv layout (the classifier still ends in BN, as in NiftyNet).
- ReLU, NiftyNet's shipped config (the NiftyNet class default is PReLU: ``activation="prelu"`` adds 720 alphas).
- Dilated convolutions are native ``Conv3D(dilation_rate=d)``: no "side divisible by 8" constraint, any size works.
- Widening shortcuts (16 -> 32, 32 -> 64) zero-pad the channels symmetrically
  (:class:`~emzoo.layers.channel_pad.ChannelPad`), as NiftyNet's residual sum does; no projection, no parameters.
- The softmax is a separate final layer (``probs``) after the BN'd logits, so the model outputs probabilities.
- HighRes3DZMNet: every conv_0 filter is zero-mean by **re-parameterisation** (:class:`ZeroMeanConv3D` applies
  ``W - mean(W)`` over (kz, ky, kx, C_in) in its forward pass), not by a kernel constraint: exact from the first step
  and for any loaded weights, and it adds no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from emzoo.blocks import apply_activation, output_activation
from emzoo.layers.channel_pad import ChannelPad
from emzoo.layers.zero_mean_conv import ZeroMeanConv3D
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_highres3dnet"]

# The stage spec as data (NiftyNet's self.layers): (features, dilation) per residual stage, shallow to deep.
_STAGES: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (64, 4))


def build_highres3dnet(
    stages: Sequence[tuple[int, int]] = _STAGES,
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 2,
    stem_features: int = 16,
    blocks_per_stage: int = 3,
    convs_per_block: int = 2,
    extra_1x1: bool = True,
    extra_features: int = 80,
    zero_mean_first: bool = False,
    activation: str = "relu",
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    name: str = "highres3dnet",
) -> keras.Model:
    """Build a HighRes3DNet (NiftyNet layout by default).

    Parameters
    ----------
    stages : sequence of (int, int)
        ``(features, dilation)`` of each residual stage, shallow to deep.
    input_shape : tuple of int
        ``(Z, Y, X, C)``; any size (``None`` allowed), the output has the same spatial size.
    num_classes : int
        Output channels: softmax for more than one, sigmoid for one.
    stem_features : int
        Features of conv_0.
    blocks_per_stage, convs_per_block : int
        Residual blocks per stage and pre-activation convs per block.
    extra_1x1 : bool
        NiftyNet's extra 1³ conv -> BN -> act to ``extra_features`` before the classifier; ``False`` gives the
        paper's 20-conv layout.
    extra_features : int
        Width of that extra 1³ conv.
    zero_mean_first : bool
        Make conv_0 a :class:`~emzoo.layers.zero_mean_conv.ZeroMeanConv3D` (HighRes3DZMNet).
    activation : {"relu", "prelu", "elu", "tlu"}
        Activation after every BN but the last.
    bn_momentum, bn_epsilon : float
        BatchNormalization settings (NiftyNet: decay 0.9, epsilon 1e-5).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        ``(batch, Z, Y, X, C) -> (batch, Z, Y, X, num_classes)`` probabilities.

    Examples
    --------
    >>> model = build_highres3dnet(input_shape=(16, 16, 16, 1), num_classes=2)
    >>> model.output_shape
    (None, 16, 16, 16, 2)
    >>> model.count_params()
    810392
    """
    shape = check_input_shape(input_shape, ndim=4, name=name)
    if not stages:
        raise ValueError(f"{name}: stages must list at least one (features, dilation) pair, got {stages!r}.")
    init = "he_normal"  # Keras' HeNormal is NiftyNet's truncated normal with stddev sqrt(2 / fan_in)

    def conv(x: Any, filters: int, kernel: int, dilation: int, layer_name: str, cls: type = keras.layers.Conv3D) -> Any:
        return cls(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                   kernel_initializer=init, name=layer_name)(x)

    def bn(x: Any, layer_name: str) -> Any:
        return keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name=layer_name)(x)

    inputs = keras.Input(shape, name="image")
    x = conv(inputs, stem_features, 3, 1, "conv_0", ZeroMeanConv3D if zero_mean_first else keras.layers.Conv3D)
    x = apply_activation(bn(x, "conv_0_bn"), activation, name="conv_0_act")

    for stage, (features, dilation) in enumerate(stages, start=1):
        for block in range(blocks_per_stage):
            prefix = f"res_{stage}_{block}"
            shortcut = x
            for i in range(convs_per_block):
                x = apply_activation(bn(x, f"{prefix}_bn_{i}"), activation, name=f"{prefix}_act_{i}")
                x = conv(x, features, 3, dilation, f"{prefix}_conv_{i}")
            grow = features - int(shortcut.shape[-1])
            if grow < 0:
                raise ValueError(f"{name}: stage widths must not shrink, got {list(stages)}.")
            if grow:
                shortcut = ChannelPad(grow // 2, grow - grow // 2, name=f"{prefix}_pad")(shortcut)
            x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])

    if extra_1x1:
        x = conv(x, extra_features, 1, 1, "conv_1")
        x = apply_activation(bn(x, "conv_1_bn"), activation, name="conv_1_act")
    x = bn(conv(x, num_classes, 1, 1, "conv_2"), "conv_2_bn")
    outputs = keras.layers.Activation(output_activation(num_classes), name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


_PAPER = "Li et al. 2017 (HighRes3DNet); Žerovnik Mekuč et al. 2020 (HighRes3DZMNet)"
_REF = (
    "Li W, Wang G, Fidon L, Ourselin S, Cardoso MJ, Vercauteren T. On the compactness, efficiency, and representation "
    "of 3D convolutional networks: brain parcellation as a pretext task. IPMI 2017. doi:10.1007/978-3-319-59050-9_28; "
    "Žerovnik Mekuč M et al. Automatic segmentation of mitochondria and endolysosomes in volumetric electron "
    "microscopy data. Comput Biol Med 119:103693, 2020. doi:10.1016/j.compbiomed.2020.103693"
)
_COMMON = dict(family="highres3dnet", dims="3D", input_shape=(96, 96, 96, 1), divisor=(1, 1, 1),
               test_input_shape=(16, 16, 16, 1), paper=_PAPER, reference=_REF)


@register_entry(num_classes=2, params=810_392, trainable_params=808_948, gflops=1428.86, **_COMMON,
                notes="NiftyNet layout (extra 1x1x1 conv to 80, BN on the logits), ReLU, native dilated Conv3D, "
                      "zero-padded widening shortcuts; softmax added as the final layer. extra_1x1=False gives the "
                      "paper's 20-conv layout (804,920 params at 2 classes).")
def highres3dnet(*, input_shape: tuple[int, ...], num_classes: int = 2, **kwargs: Any) -> keras.Model:
    """HighRes3DNet (NiftyNet layout). 810,392 params; 1,428.86 GFLOPs at 96³x1."""
    return build_highres3dnet(input_shape=input_shape, num_classes=num_classes, name="highres3dnet", **kwargs)


@register_entry(num_classes=3, params=810_476, trainable_params=809_030, gflops=1429.00, **_COMMON,
                notes="HighRes3DNet (NiftyNet layout) with every conv_0 filter zero-mean by re-parameterisation "
                      "(ZeroMeanConv3D, W - mean(W) in the forward pass). 3 classes: background, mitochondria, "
                      "endolysosomes; the paper's window size is unknown, 96³ is only the FLOP reference. Which "
                      "layout the published weights used is AMBIGUOUS (extra_1x1=False gives the paper layout).")
def highres3dzmnet(*, input_shape: tuple[int, ...], num_classes: int = 3, **kwargs: Any) -> keras.Model:
    """HighRes3DZMNet (zero-mean conv_0). 810,476 params; 1,429.00 GFLOPs at 96³x1."""
    kwargs.setdefault("zero_mean_first", True)
    return build_highres3dnet(input_shape=input_shape, num_classes=num_classes, name="highres3dzmnet", **kwargs)
