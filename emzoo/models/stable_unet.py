"""Franco-Barranco et al.'s "stable" U-Nets for mitochondria segmentation: U-Net, Residual, Attention and SE, 2D and 3D.

Paper: Franco-Barranco D, Muñoz-Barrutia A, Arganda-Carreras I. Stable deep neural network architectures for
mitochondria segmentation on electron microscopy volumes. Neuroinformatics 20:437-450, 2022.
doi:10.1007/s12021-021-09556-1. Layout: the Keras model files of danifranco/EM_Image_Segmentation as continued in the
TensorFlow versions of BiaPyX/BiaPy (MIT), read for facts; this is a from-scratch Keras 3 builder. One builder serves
2D and 3D (``ndim``); every block reads the rank from its tensor.

Reference figures (``ARCHITECTURES.md`` §11.6, GFLOPs = 2 x MACs): 2D at 256² — U-Net 1,940,817 params / 6.03,
Residual 2,028,609 / 6.36, Attention 1,985,061 / 6.30, SE 1,951,697 / 6.027236608 (the U-Net's 3,013,607,424 conv
MACs plus 10,880 SE dense MACs); 3D at 80³ — U-Net 788,817 / 115.32, Residual 1,501,293 / 118.30, Attention
797,924 / 117.37, SE 790,769 / 115.323907904 (57,661,952,000 conv + 1,952 SE dense MACs).

Wiring (``variant``):

- ``"unet"``: Block(F, d) = conv -> ELU -> Dropout(d) -> conv -> ELU; encoder blocks keep a skip and max-pool; the
  decoder up-samples with a 2x transposed conv (glorot, bias) and concatenates ``[up, skip]``.
- ``"resunet"``: full pre-activation residual blocks, shortcut = 1x1 conv (always present), main path
  [ELU, except in the network's first block] -> conv -> Dropout -> ELU -> conv, no activation after the sum.
  Concat order ``[skip, up]`` in 2D and ``[up, skip]`` in 3D, as in BiaPy-TF.
- ``"attention"``: an attention gate per decoder level, ψ = σ(conv1x1(ReLU(conv1x1(skip) + conv1x1(up)))).
- ``"se"``: a squeeze-excitation block (ratio 16) after every conv + ELU of the encoder and decoder blocks (not the
  bottleneck); the dropout sits after the first one.

Deliberate choices (faithful to BiaPy-TF unless an option says otherwise):

- The attention gate multiplies the **up-sampled decoder tensor** and the block reads ``[up, up * ψ]`` (encoder
  features reach the decoder only through ψ). ``gate_skip=True`` gives Oktay et al.'s textbook gate,
  ``[up, skip * ψ]``, with the same parameters.
- The Residual U-Net's recursive builder indexes its dropout list from the bottom up, so the list is applied in
  reverse (the top level gets the last rate); kept (``reverse_dropout``). With the 2D rates this puts 0.3 at the top.
- Dropout rates: 2D per level [0.1, 0.1, 0.2, 0.2, 0.3] (the paper); 3D 0.1 at every level (the BiaPy-TF default;
  the paper gives no 3D rates, UNVERIFIED). No batch normalisation (UNVERIFIED for the 3D templates).
- 3D pooling is (z_down, 2, 2) with z_down = 2 (isotropic Lucchi); ``z_down=1`` for anisotropic data.
- The head is a 1x1 conv with sigmoid for one class (the paper), softmax for more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from emzoo.blocks import apply_activation, apply_conv, output_activation
from emzoo.blocks.squeeze_excite import apply_squeeze_excite
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_stable_unet"]

_VARIANTS = ("unet", "resunet", "attention", "se")
_INIT = "he_normal"


def _pool(x: Any, z_down: int, name: str) -> Any:
    if len(x.shape) == 4:
        return keras.layers.MaxPooling2D(2, name=name)(x)
    return keras.layers.MaxPooling3D((z_down, 2, 2), name=name)(x)


def _upsample(x: Any, filters: int, z_down: int, name: str) -> Any:
    strides = 2 if len(x.shape) == 4 else (z_down, 2, 2)
    # Glorot (the Keras default) and a bias on the up-convs, as in BiaPy-TF.
    return apply_conv(x, filters, 2, strides=strides, transpose=True, name=name)


def _dropout(x: Any, rate: float, name: str) -> Any:
    return keras.layers.Dropout(rate, name=name)(x) if rate > 0 else x


def _conv_act(x: Any, filters: int, prefix: str, index: int, se: bool) -> Any:
    x = apply_conv(x, filters, 3, kernel_initializer=_INIT, name=f"{prefix}_conv{index}")
    x = apply_activation(x, "elu", name=f"{prefix}_act{index}")
    return apply_squeeze_excite(x, 16, name=f"{prefix}_se{index}") if se else x


def _plain_block(x: Any, filters: int, rate: float, prefix: str, se: bool = False) -> Any:
    """conv -> ELU -> [SE] -> Dropout -> conv -> ELU -> [SE]."""
    x = _conv_act(x, filters, prefix, 1, se)
    x = _dropout(x, rate, f"{prefix}_drop")
    return _conv_act(x, filters, prefix, 2, se)


def _residual_block(x: Any, filters: int, rate: float, prefix: str, first: bool = False) -> Any:
    """Full pre-activation block: 1x1-conv shortcut + ([ELU] -> conv -> Dropout -> ELU -> conv); no act after sum."""
    shortcut = apply_conv(x, filters, 1, kernel_initializer=_INIT, name=f"{prefix}_shortcut")
    if not first:
        x = apply_activation(x, "elu", name=f"{prefix}_act0")
    x = apply_conv(x, filters, 3, kernel_initializer=_INIT, name=f"{prefix}_conv1")
    x = _dropout(x, rate, f"{prefix}_drop")
    x = apply_activation(x, "elu", name=f"{prefix}_act1")
    x = apply_conv(x, filters, 3, kernel_initializer=_INIT, name=f"{prefix}_conv2")
    return keras.layers.Add(name=f"{prefix}_add")([shortcut, x])


def _attention_gate(up: Any, skip: Any, filters: int, prefix: str, gate_skip: bool) -> Any:
    """ψ = σ(conv1x1(ReLU(conv1x1(skip) + conv1x1(up)))); returns ``up * ψ`` (BiaPy-TF) or ``skip * ψ``."""
    g = apply_conv(skip, filters, 1, name=f"{prefix}_att_skip")
    u = apply_conv(up, filters, 1, name=f"{prefix}_att_up")
    a = keras.layers.Add(name=f"{prefix}_att_add")([g, u])
    a = apply_activation(a, "relu", name=f"{prefix}_att_relu")
    psi = apply_conv(a, 1, 1, activation="sigmoid", name=f"{prefix}_att_psi")
    return keras.layers.Multiply(name=f"{prefix}_att_gate")([skip if gate_skip else up, psi])


def build_stable_unet(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    ndim: int = 2,
    variant: str = "unet",
    widths: Sequence[int] = (16, 32, 64, 128, 256),
    dropout: Sequence[float] = (0.1, 0.1, 0.2, 0.2, 0.3),
    z_down: int = 2,
    gate_skip: bool = False,
    reverse_dropout: bool | None = None,
    skip_first: bool | None = None,
    name: str = "stable_unet",
) -> keras.Model:
    """Build a Franco-Barranco "stable" U-Net, 2D or 3D.

    Parameters
    ----------
    input_shape : tuple of int
        ``(Y, X, C)`` for ``ndim=2`` or ``(Z, Y, X, C)`` for ``ndim=3``; each side divisible by the pooling factor
        to the power ``len(widths) - 1`` (z by ``z_down`` to that power).
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    ndim : {2, 3}
        Spatial dimensions.
    variant : {"unet", "resunet", "attention", "se"}
        Block and skip wiring (see the module docstring).
    widths : sequence of int
        Filters per level, shallow to deep (the last is the bottleneck).
    dropout : sequence of float
        Dropout rate per level, same length as ``widths``; decoder level i reuses level i's rate. 0 omits the layer.
    z_down : int
        z pooling / up-sampling factor of the 3D nets (2 isotropic, 1 anisotropic).
    gate_skip : bool
        ``variant="attention"`` only: gate the skip (Oktay et al.) instead of the up-sampled tensor (BiaPy-TF).
    reverse_dropout : bool, optional
        Apply ``dropout`` top level = last rate (BiaPy-TF's ResUNet quirk). Default: True for ``"resunet"`` only.
    skip_first : bool, optional
        Concatenate ``[skip, up]`` instead of ``[up, skip]``. Default: True for the 2D ``"resunet"`` only.
    name : str
        Model name.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        For an unknown variant, mismatched ``widths``/``dropout`` or an input side that does not divide.

    Examples
    --------
    >>> model = build_stable_unet(input_shape=(32, 32, 1))
    >>> model.count_params()
    1940817
    >>> build_stable_unet(input_shape=(16, 16, 16, 1), ndim=3, widths=(28, 36, 48, 64),
    ...                   dropout=(0.1,) * 4).output_shape
    (None, 16, 16, 16, 1)
    """
    if variant not in _VARIANTS:
        raise ValueError(f"{name}: variant must be one of {_VARIANTS}, got {variant!r}.")
    if ndim not in (2, 3):
        raise ValueError(f"{name}: ndim must be 2 or 3, got {ndim!r}.")
    if len(widths) < 2 or len(dropout) != len(widths):
        raise ValueError(f"{name}: need at least 2 widths and one dropout rate per width, got widths={tuple(widths)} "
                         f"and dropout={tuple(dropout)}.")
    if gate_skip and variant != "attention":
        raise ValueError(f"{name}: gate_skip=True only applies to variant='attention', got variant={variant!r}.")
    depth = len(widths) - 1
    divisor = (2**depth,) * 2 if ndim == 2 else (z_down**depth, 2**depth, 2**depth)
    shape = check_input_shape(input_shape, ndim=ndim + 1, divisor=divisor, name=name)
    if reverse_dropout is None:
        reverse_dropout = variant == "resunet"
    if skip_first is None:
        skip_first = variant == "resunet" and ndim == 2
    rates = tuple(dropout)[::-1] if reverse_dropout else tuple(dropout)

    def block(x: Any, level: int, prefix: str, first: bool = False, se: bool = False) -> Any:
        if variant == "resunet":
            return _residual_block(x, widths[level], rates[level], prefix, first=first)
        return _plain_block(x, widths[level], rates[level], prefix, se=se)

    inputs = keras.Input(shape, name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = block(x, level, f"enc{level}", first=level == 0, se=variant == "se")
        skips.append(x)
        x = _pool(x, z_down, f"enc{level}_pool")
    x = block(x, depth, "bottom")
    for level in range(depth - 1, -1, -1):
        prefix = f"dec{level}"
        up = _upsample(x, widths[level], z_down, f"{prefix}_up")
        skip = skips[level]
        if variant == "attention":
            skip = _attention_gate(up, skip, widths[level], prefix, gate_skip)
        x = keras.layers.Concatenate(name=f"{prefix}_concat")([skip, up] if skip_first else [up, skip])
        x = block(x, level, prefix, se=variant == "se")
    outputs = apply_conv(x, num_classes, 1, activation=output_activation(num_classes),
                         name="head_out")
    return keras.Model(inputs, outputs, name=name)


_PAPER = "Franco-Barranco et al. 2022"
_REF = (
    "Franco-Barranco D, Muñoz-Barrutia A, Arganda-Carreras I. Stable deep neural network architectures for "
    "mitochondria segmentation on electron microscopy volumes. Neuroinformatics 20:437-450, 2022. "
    "doi:10.1007/s12021-021-09556-1"
)
# The gflops= figures below are the spec's (ARCHITECTURES.md §2, 2 decimals), not the counter's output, so the
# entries test checks emzoo.flops against an independent number.
_2D = dict(family="stable_unet", dims="2D", input_shape=(256, 256, 1), num_classes=1, divisor=(16, 16),
           test_input_shape=(32, 32, 1), paper=_PAPER, reference=_REF)
_3D = dict(family="stable_unet", dims="3D", input_shape=(80, 80, 80, 1), num_classes=1, divisor=(8, 8, 8),
           test_input_shape=(16, 16, 16, 1), paper=_PAPER, reference=_REF)
_WIDTHS_2D = (16, 32, 64, 128, 256)
_RATES_2D = (0.1, 0.1, 0.2, 0.2, 0.3)
_WIDTHS_3D = (28, 36, 48, 64)
_WIDTHS_3D_RES = (28, 36, 48, 64, 80)
_NOTE_3D = "3D dropout 0.1 per level (BiaPy-TF default; the paper gives none, UNVERIFIED); pooling (2,2,2)."


def _stable(
    name: str,
    ndim: int,
    variant: str,
    widths: Sequence[int],
    rates: Sequence[float],
    input_shape: tuple[int, ...],
    num_classes: int,
    kwargs: dict[str, Any],
) -> keras.Model:
    """Call :func:`build_stable_unet` with an entry's spec; keyword overrides win."""
    kwargs.setdefault("widths", widths)
    kwargs.setdefault("dropout", rates)
    return build_stable_unet(input_shape=input_shape, num_classes=num_classes, ndim=ndim, variant=variant, name=name,
                             **kwargs)


@register_entry(params=1_940_817, trainable_params=1_940_817, gflops=6.03, **_2D,
                notes="[16..256], ELU, he_normal, dropout [0.1,0.1,0.2,0.2,0.3], transposed-conv up-sampling, "
                      "concat [up, skip], no BN.")
def unet2d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """2D U-Net (Franco-Barranco). 1,940,817 params; 6.03 GFLOPs at 256x256x1."""
    return _stable("unet2d_fb", 2, "unet", _WIDTHS_2D, _RATES_2D, input_shape, num_classes, kwargs)


@register_entry(params=2_028_609, trainable_params=2_028_609, gflops=6.36, **_2D,
                notes="Full pre-activation residual blocks with an always-present 1x1 shortcut; concat [skip, up]; "
                      "dropout list applied top = last rate (BiaPy-TF's recursive indexing, kept).")
def resunet2d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """2D Residual U-Net (Franco-Barranco). 2,028,609 params; 6.36 GFLOPs at 256x256x1."""
    return _stable("resunet2d_fb", 2, "resunet", _WIDTHS_2D, _RATES_2D, input_shape, num_classes, kwargs)


@register_entry(params=1_985_061, trainable_params=1_985_061, gflops=6.30, **_2D,
                notes="Attention gate on the up-sampled decoder tensor, block input [up, up*psi] (BiaPy-TF form); "
                      "gate_skip=True gives Oktay et al.'s [up, skip*psi] with the same params.")
def attention_unet2d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """2D Attention U-Net (Franco-Barranco). 1,985,061 params; 6.30 GFLOPs at 256x256x1."""
    return _stable("attention_unet2d_fb", 2, "attention", _WIDTHS_2D, _RATES_2D, input_shape, num_classes, kwargs)


@register_entry(params=1_951_697, trainable_params=1_951_697, gflops=6.03, **_2D,
                notes="SE (ratio 16, no-bias dense layers) after every conv+ELU of encoder and decoder, not the "
                      "bottleneck; dropout after the first SE of a block. GFLOPs include the 10,880 SE dense MACs.")
def se_unet2d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """2D SE U-Net (Franco-Barranco). 1,951,697 params; 6.027236608 GFLOPs at 256x256x1."""
    return _stable("se_unet2d_fb", 2, "se", _WIDTHS_2D, _RATES_2D, input_shape, num_classes, kwargs)


@register_entry(params=788_817, trainable_params=788_817, gflops=115.32, **_3D,
                notes="[28, 36, 48, 64], 3 poolings. " + _NOTE_3D)
def unet3d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """3D U-Net (Franco-Barranco). 788,817 params; 115.32 GFLOPs at 80x80x80x1."""
    return _stable("unet3d_fb", 3, "unet", _WIDTHS_3D, (0.1,) * 4, input_shape, num_classes, kwargs)


@register_entry(params=1_501_293, trainable_params=1_501_293, gflops=118.30,
                **{**_3D, "divisor": (16, 16, 16)},
                notes="[28, 36, 48, 64, 80], 4 poolings, full pre-activation residual blocks, concat [up, skip]. "
                      + _NOTE_3D)
def resunet3d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """3D Residual U-Net (Franco-Barranco). 1,501,293 params; 118.30 GFLOPs at 80x80x80x1."""
    return _stable("resunet3d_fb", 3, "resunet", _WIDTHS_3D_RES, (0.1,) * 5, input_shape, num_classes, kwargs)


@register_entry(params=797_924, trainable_params=797_924, gflops=117.37, **_3D,
                notes="[28, 36, 48, 64]; attention gate on the decoder tensor (BiaPy-TF), gate_skip=True for the "
                      "textbook form. " + _NOTE_3D)
def attention_unet3d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """3D Attention U-Net (Franco-Barranco). 797,924 params; 117.37 GFLOPs at 80x80x80x1."""
    return _stable("attention_unet3d_fb", 3, "attention", _WIDTHS_3D, (0.1,) * 4, input_shape, num_classes, kwargs)


@register_entry(params=790_769, trainable_params=790_769, gflops=115.32, **_3D,
                notes="[28, 36, 48, 64]; SE as in 2D with 3D pooling (the 3D SE file was not inspected, assumed "
                      "analogous). GFLOPs include the SE dense MACs. " + _NOTE_3D)
def se_unet3d_fb(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """3D SE U-Net (Franco-Barranco). 790,769 params; 115.323907904 GFLOPs at 80x80x80x1."""
    return _stable("se_unet3d_fb", 3, "se", _WIDTHS_3D, (0.1,) * 4, input_shape, num_classes, kwargs)
