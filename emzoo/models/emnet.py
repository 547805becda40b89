"""EM-net: seven encoder-decoder variants built from trainable-linear-unit (TLU) units.

Papers: Khadangi, Boudier, Rajagopal. EM-net: deep learning for electron microscopy image segmentation. ICPR 2020,
doi:10.1109/ICPR48806.2021.9413098; and the benchmark that compares the variants, Khadangi, Boudier, Rajagopal.
EM-stellar: benchmarking deep learning for electron microscopy image segmentation. Bioinformatics 37(1):97, 2021,
doi:10.1093/bioinformatics/btaa1094. Layout: the Keras 2.2.4 builders of the EM-net notebook (akhadangi/EM-net,
``EM_net.ipynb``, MIT), as written down in ``ARCHITECTURES.md`` §2-§3.

Reference figures (``ARCHITECTURES.md`` §1 and §3.4; GFLOPs = 2 x conv MACs at 512x512x1):

==================  ===========  ======  =====  ====  ====
entry               params       GFLOPs  convs  TLUs  BNs
==================  ===========  ======  =====  ====  ====
``emnet_v1_bn``      5,401,949   111.75     50    36    49
``emnet_v1_2x``      7,013,261   141.64     55    41    13
``emnet_v1_4x``     28,018,445   565.81     55    41    13
``emnet_v1_bn_2x``   6,808,077   112.99     74    60    73
``emnet_v2``         7,579,853   160.59     60    46    19
``emnet_v2_2x``     14,876,013   298.79     60    46    19
``emnet_v2_4x``     33,831,053   372.12     28    12    13
==================  ===========  ======  =====  ====  ====

Every variant is one :class:`EmnetSpec` fed to :func:`build_emnet`: encoder levels are chains of units (A3, N4, D3;
M2 in the V2 4X bottleneck), the bottleneck is one or more parallel unit chains, and every variant shares the same
decoder level and head (:func:`emzoo.blocks.unet_decoder.apply_upconv_decoder_level` and
:func:`~emzoo.blocks.unet_decoder.apply_two_channel_head`, shared with VGG16-U-Net).

Deliberate choices (the quirks of §3.6 are kept, because they are what the published weights were trained with):

- V2 4X's skips carry the spatially-dropped tensor (the SpatialDropout2D inside D3 precedes the skip).
- Decoder concatenation order is [upsampled, skip] (U-Net uses [skip, upsampled]).
- The 2x2 ``same`` up-convs pad 0 before and 1 after, as in Keras 2.
- The head is BN + ReLU on a 2-channel 3x3 conv, then a 1x1 sigmoid (softmax for more than one class).
- Fixed: the notebook builders read a global ``image_size`` and compile inside; here the input shape is an argument
  and the model is returned uncompiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from emzoo.blocks import apply_conv, apply_conv_norm_act
from emzoo.blocks.unet_decoder import apply_two_channel_head, apply_upconv_decoder_level
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = [
    "Unit",
    "Branch",
    "EmnetSpec",
    "apply_unit_a3",
    "apply_unit_n4",
    "apply_unit_d3",
    "apply_unit_m2",
    "build_emnet",
]

# He-normal for every 3x3 and 2x2 conv of the notebook; only the 1x1 output conv keeps Keras' glorot default.
_INIT = "he_normal"


# ---------------------------------------------------------------------------------------------------------------------
# Units (ARCHITECTURES.md §3.2)


def _conv_tlu(x: Any, filters: int, *, batch_norm: bool, name: str) -> Any:
    """C3 -> (BN) -> TLU, named ``{name}``, ``{name}_bn``, ``{name}_act``."""
    return apply_conv_norm_act(x, filters, 3, norm=batch_norm, activation="tlu", kernel_initializer=_INIT, name=name)


def apply_unit_a3(x: Any, filters: int, *, batch_norm: bool = False, name: str = "a3") -> Any:
    """Unit A3 (A3-BN with ``batch_norm=True``): three chained 3x3 conv -> (BN) -> TLU, output cat(first, third).

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` input.
    filters : int
        F, the width of each conv; the output has 2F channels.
    batch_norm : bool
        Insert BatchNormalization between each conv and its TLU (unit A3-BN).
    name : str
        Prefix of the layer names (``{name}_conv1`` ... ``{name}_concat``).

    Returns
    -------
    tensor
        ``(N, H, W, 2F)``.

    Examples
    --------
    >>> import keras
    >>> apply_unit_a3(keras.Input((32, 32, 1)), 8).shape
    (None, 32, 32, 16)
    """
    o1 = _conv_tlu(x, filters, batch_norm=batch_norm, name=f"{name}_conv1")
    o2 = _conv_tlu(o1, filters, batch_norm=batch_norm, name=f"{name}_conv2")
    o3 = _conv_tlu(o2, filters, batch_norm=batch_norm, name=f"{name}_conv3")
    return keras.layers.Concatenate(name=f"{name}_concat")([o1, o3])


def apply_unit_n4(x: Any, filters: int, *, batch_norm: bool = False, name: str = "n4") -> Any:
    """Unit N4: four chained 3x3 conv -> TLU of widths 2F, F, 2F, F; output cat(second, fourth).

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` input.
    filters : int
        F; the output has 2F channels.
    batch_norm : bool
        Insert BatchNormalization before each TLU (no EM-net variant does; kept for symmetry with A3).
    name : str
        Prefix of the layer names.

    Returns
    -------
    tensor
        ``(N, H, W, 2F)``.

    Examples
    --------
    >>> import keras
    >>> apply_unit_n4(keras.Input((32, 32, 1)), 8).shape
    (None, 32, 32, 16)
    """
    a = _conv_tlu(x, 2 * filters, batch_norm=batch_norm, name=f"{name}_conv1")
    b = _conv_tlu(a, filters, batch_norm=batch_norm, name=f"{name}_conv2")
    c = _conv_tlu(b, 2 * filters, batch_norm=batch_norm, name=f"{name}_conv3")
    d = _conv_tlu(c, filters, batch_norm=batch_norm, name=f"{name}_conv4")
    return keras.layers.Concatenate(name=f"{name}_concat")([b, d])


def apply_unit_d3(
    x: Any, filters: int, *, batch_norm: bool = False, dropout: float = 0.5, name: str = "d3"
) -> Any:
    """Unit D3 (densely connected, V2 4X): 3x3 conv -> TLU of widths 2F, F, F with two concatenations, then SD.

    ``o1 = T(C3(2F)(x)); o2 = T(C3(F)(o1)); o3 = cat(o1, o2); o = T(C3(F)(o3)); out = SD(cat(o3, o))``.

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` input.
    filters : int
        F; the output has 4F channels.
    batch_norm : bool
        Insert BatchNormalization before each TLU (not used by EM-net).
    dropout : float
        Rate of the final SpatialDropout2D.
    name : str
        Prefix of the layer names.

    Returns
    -------
    tensor
        ``(N, H, W, 4F)``.

    Examples
    --------
    >>> import keras
    >>> apply_unit_d3(keras.Input((32, 32, 1)), 8).shape
    (None, 32, 32, 32)
    """
    o1 = _conv_tlu(x, 2 * filters, batch_norm=batch_norm, name=f"{name}_conv1")
    o2 = _conv_tlu(o1, filters, batch_norm=batch_norm, name=f"{name}_conv2")
    o3 = keras.layers.Concatenate(name=f"{name}_concat1")([o1, o2])
    o = _conv_tlu(o3, filters, batch_norm=batch_norm, name=f"{name}_conv3")
    out = keras.layers.Concatenate(name=f"{name}_concat2")([o3, o])
    return keras.layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(out)


def apply_unit_m2(x: Any, filters: int, *, name: str = "m2") -> Any:
    """Unit M2 (V2 4X bottleneck): two plain 3x3 convs with fused ReLU; no BN, no TLU.

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` input.
    filters : int
        Width of both convs (and of the output).
    name : str
        Prefix of the layer names.

    Returns
    -------
    tensor
        ``(N, H, W, filters)``.

    Examples
    --------
    >>> import keras
    >>> apply_unit_m2(keras.Input((16, 16, 4)), 8).shape
    (None, 16, 16, 8)
    """
    x = apply_conv(x, filters, 3, activation="relu", kernel_initializer=_INIT, name=f"{name}_conv1")
    return apply_conv(x, filters, 3, activation="relu", kernel_initializer=_INIT, name=f"{name}_conv2")


# ---------------------------------------------------------------------------------------------------------------------
# Variant specification


@dataclass(frozen=True)
class Unit:
    """One unit of a chain.

    Attributes
    ----------
    kind : {"a3", "n4", "d3", "m2"}
        Unit type (§3.2).
    scale : float
        The unit's F is the stage width times ``scale`` (V1 BN 2X uses 0.5, V2 2X uses 2).
    batch_norm : bool
        BN between conv and TLU (A3-BN).
    """

    kind: str
    scale: float = 1.0
    batch_norm: bool = False


@dataclass(frozen=True)
class Branch:
    """A chain of units applied one after another; its output concatenates the outputs of ``outputs`` (indices).

    Attributes
    ----------
    units : tuple of Unit
        The chain, first unit first.
    outputs : tuple of int
        Indices (into ``units``) of the unit outputs that form the branch output, concatenated in this order.
    """

    units: tuple[Unit, ...]
    outputs: tuple[int, ...] = (-1,)


@dataclass(frozen=True)
class EmnetSpec:
    """Everything that distinguishes one EM-net variant (one row of ``ARCHITECTURES.md`` §3.3).

    Attributes
    ----------
    widths : tuple of int
        Level filters F of the encoder levels, shallow to deep.
    level : Branch
        Unit chain of every encoder level; ``level.outputs`` select what the level's max-pool receives.
    skip : int
        Index of the unit whose output is the level's skip connection.
    bottleneck_width : int
        Base F of the bottleneck units (each unit's F is this times its ``scale``).
    bottleneck : tuple of Branch
        Parallel branches reading the pooled deepest level; their outputs are concatenated, first branch first.
    decoder : tuple of (int, int)
        ``(filters, up_filters)`` of each decoder level, deep to shallow.
    dropout_before_bottleneck : bool
        SpatialDropout2D on the pooled deepest level.
    dropout_after_bottleneck : bool
        SpatialDropout2D on the bottleneck output.
    """

    widths: tuple[int, ...]
    level: Branch
    skip: int
    bottleneck_width: int
    bottleneck: tuple[Branch, ...]
    decoder: tuple[tuple[int, int], ...]
    dropout_before_bottleneck: bool = False
    dropout_after_bottleneck: bool = False


def _apply_unit(x: Any, unit: Unit, width: int, *, dropout: float, name: str) -> Any:
    filters = int(width * unit.scale)
    if unit.kind == "m2":
        if unit.batch_norm:
            raise ValueError(f"{name}: unit M2 has no batch-norm form; set batch_norm=False.")
        return apply_unit_m2(x, filters, name=name)
    if unit.kind == "d3":
        return apply_unit_d3(x, filters, batch_norm=unit.batch_norm, dropout=dropout, name=name)
    units: dict[str, Callable[..., Any]] = {"a3": apply_unit_a3, "n4": apply_unit_n4}
    if unit.kind not in units:
        raise ValueError(f"{name}: unknown EM-net unit kind {unit.kind!r}; choose one of 'a3', 'n4', 'd3', 'm2'.")
    return units[unit.kind](x, filters, batch_norm=unit.batch_norm, name=name)


def _concat(tensors: list[Any], name: str) -> Any:
    # Keras' Concatenate refuses a single input; a one-element selection is the tensor itself.
    return tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(name=name)(tensors)


def _apply_branch(x: Any, branch: Branch, width: int, *, dropout: float, name: str) -> tuple[Any, list[Any]]:
    """Run a unit chain; return (branch output, every unit output)."""
    outs = []
    for index, unit in enumerate(branch.units):
        x = _apply_unit(x, unit, width, dropout=dropout, name=f"{name}_unit{index + 1}")
        outs.append(x)
    return _concat([outs[i] for i in branch.outputs], f"{name}_concat"), outs


# ---------------------------------------------------------------------------------------------------------------------
# Family builder


def build_emnet(
    spec: EmnetSpec,
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    dropout: float = 0.5,
    name: str = "emnet",
) -> keras.Model:
    """Build an EM-net variant from its spec.

    Layer names: encoder ``enc{level}_unit{u}_conv{c}`` (``_bn``, ``_act`` for BN and TLU), ``enc{level}_pool``;
    bottleneck ``bottleneck_branch{b}_unit{u}_conv{c}``; decoder ``dec{level}_...`` (deepest level = ``dec4``);
    ``head_conv``, ``head_out``.

    Parameters
    ----------
    spec : EmnetSpec
        The variant (see the registered entries for the seven published ones).
    input_shape : tuple of int
        ``(H, W, C)``; H and W divisible by ``2 ** len(spec.widths)`` (16 for every EM-net).
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    dropout : float
        Rate of every SpatialDropout2D.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled.

    Raises
    ------
    ValueError
        If the input shape does not fit or the spec is inconsistent.

    Examples
    --------
    A two-level toy variant (the registered entries build the published ones):

    >>> spec = EmnetSpec(widths=(8, 16), level=Branch((Unit("a3"),)), skip=0, bottleneck_width=32,
    ...                  bottleneck=(Branch((Unit("m2"),)),), decoder=((16, 16), (8, 8)))
    >>> build_emnet(spec, input_shape=(32, 32, 1), num_classes=3).output_shape
    (None, 32, 32, 3)
    """
    depth = len(spec.widths)
    if len(spec.decoder) != depth:
        raise ValueError(
            f"{name}: the spec has {depth} encoder levels but {len(spec.decoder)} decoder levels; give one "
            "(filters, up_filters) pair per encoder level."
        )
    shape = check_input_shape(input_shape, ndim=3, divisor=(2**depth, 2**depth), name=name)

    inputs = keras.Input(shape, name="image")
    x = inputs
    skips = []
    for level, width in enumerate(spec.widths, start=1):
        x, outs = _apply_branch(x, spec.level, width, dropout=dropout, name=f"enc{level}")
        skips.append(outs[spec.skip])
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    if spec.dropout_before_bottleneck:
        x = keras.layers.SpatialDropout2D(dropout, name="bottleneck_dropout_in")(x)
    branch_outs = [
        _apply_branch(x, branch, spec.bottleneck_width, dropout=dropout, name=f"bottleneck_branch{b + 1}")[0]
        for b, branch in enumerate(spec.bottleneck)
    ]
    x = _concat(branch_outs, "bottleneck_concat")
    if spec.dropout_after_bottleneck:
        x = keras.layers.SpatialDropout2D(dropout, name="bottleneck_dropout_out")(x)

    for level, (filters, up_filters) in zip(range(depth, 0, -1), spec.decoder, strict=True):
        x = apply_upconv_decoder_level(x, skips[level - 1], filters, up_filters=up_filters,
                                       kernel_initializer=_INIT, name=f"dec{level}")
    outputs = apply_two_channel_head(x, num_classes, kernel_initializer=_INIT, name="head")
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------------------------------------------------
# Registered entries (ARCHITECTURES.md §3.3)

_A3, _A3_BN, _N4 = Unit("a3"), Unit("a3", batch_norm=True), Unit("n4")
_DEC = ((256, 256), (128, 128), (64, 64), (32, 32))

_PAPER = "Khadangi et al. 2020 (EM-net); EM-stellar (Khadangi et al. 2021)"
_REF = (
    "Khadangi A, Boudier T, Rajagopal V. EM-net: deep learning for electron microscopy image segmentation. "
    "ICPR 2020. doi:10.1109/ICPR48806.2021.9413098; Khadangi A, Boudier T, Rajagopal V. EM-stellar. "
    "Bioinformatics 37(1):97, 2021. doi:10.1093/bioinformatics/btaa1094"
)
_COMMON = dict(family="emnet", dims="2D", input_shape=(512, 512, 1), num_classes=1, divisor=(16, 16),
               paper=_PAPER, reference=_REF)


@register_entry(params=5_401_949, trainable_params=5_394_649, gflops=111.75, **_COMMON,
                notes="Levels A3-BN -> A3-BN; pool input cat(A, B), skip B; SD after pool 4.")
def emnet_v1_bn(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V1 BN. 5,401,949 params; 111.75 GFLOPs at 512x512x1."""
    spec = EmnetSpec(widths=(16, 32, 64, 128), level=Branch((_A3_BN, _A3_BN), (0, 1)), skip=1,
                     bottleneck_width=64, bottleneck=(Branch((_A3_BN, _A3_BN)), Branch((_A3_BN, _A3_BN))),
                     decoder=_DEC, dropout_before_bottleneck=True)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v1_bn", **kwargs)


@register_entry(params=7_013_261, trainable_params=7_010_377, gflops=141.64, **_COMMON,
                notes="Levels A3 -> N4 (no BN in the encoder); pool input cat(A, B), skip B; SD after pool 4.")
def emnet_v1_2x(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V1 2X. 7,013,261 params; 141.64 GFLOPs at 512x512x1."""
    spec = EmnetSpec(widths=(16, 32, 64, 128), level=Branch((_A3, _N4), (0, 1)), skip=1,
                     bottleneck_width=64, bottleneck=(Branch((_A3, _A3)), Branch((_N4, _A3))),
                     decoder=_DEC, dropout_before_bottleneck=True)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v1_2x", **kwargs)


@register_entry(params=28_018_445, trainable_params=28_012_681, gflops=565.81, **_COMMON,
                notes="V1 2X with every width doubled; SD after pool 4 and after the bottleneck concat.")
def emnet_v1_4x(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V1 4X. 28,018,445 params; 565.81 GFLOPs at 512x512x1."""
    spec = EmnetSpec(widths=(32, 64, 128, 256), level=Branch((_A3, _N4), (0, 1)), skip=1,
                     bottleneck_width=128, bottleneck=(Branch((_A3, _A3)), Branch((_N4, _A3))),
                     decoder=((512, 512), (256, 256), (128, 128), (64, 64)),
                     dropout_before_bottleneck=True, dropout_after_bottleneck=True)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v1_4x", **kwargs)


@register_entry(params=6_808_077, trainable_params=6_797_801, gflops=112.99, **_COMMON,
                notes="Levels A3-BN(F) -> A3-BN(F/2) -> A3-BN(F) -> A3-BN(F/2); pool input cat(B, D), skip D; "
                      "no dropout.")
def emnet_v1_bn_2x(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V1 BN 2X. 6,808,077 params; 112.99 GFLOPs at 512x512x1."""
    half = Unit("a3", scale=0.5, batch_norm=True)
    spec = EmnetSpec(widths=(16, 32, 64, 128), level=Branch((_A3_BN, half, _A3_BN, half), (1, 3)), skip=3,
                     bottleneck_width=128, bottleneck=(Branch((_A3_BN,) * 4, (1, 3)),), decoder=_DEC)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v1_bn_2x", **kwargs)


@register_entry(params=7_579_853, trainable_params=7_576_201, gflops=160.59, **_COMMON,
                notes="Levels N4 -> N4; pool input and skip = B; A3-BN only in the bottleneck; no dropout.")
def emnet_v2(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V2. 7,579,853 params; 160.59 GFLOPs at 512x512x1."""
    spec = EmnetSpec(widths=(16, 32, 64, 128), level=Branch((_N4, _N4)), skip=1,
                     bottleneck_width=64, bottleneck=(Branch((_A3_BN, _N4)), Branch((_N4, _A3_BN))), decoder=_DEC)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v2", **kwargs)


@register_entry(params=14_876_013, trainable_params=14_871_977, gflops=298.79, **_COMMON,
                notes="V2 with the second unit of every level (and of each bottleneck branch) at double width.")
def emnet_v2_2x(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V2 2X. 14,876,013 params; 298.79 GFLOPs at 512x512x1."""
    wide_n4, wide_a3_bn = Unit("n4", scale=2), Unit("a3", scale=2, batch_norm=True)
    spec = EmnetSpec(widths=(16, 32, 64, 128), level=Branch((_N4, wide_n4)), skip=1,
                     bottleneck_width=64, bottleneck=(Branch((_A3_BN, wide_n4)), Branch((_N4, wide_a3_bn))),
                     decoder=_DEC)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v2_2x", **kwargs)


@register_entry(params=33_831_053, trainable_params=33_827_209, gflops=372.12, **_COMMON,
                notes="One dense D3 unit per level (SD inside, so the skips carry the dropped tensor); "
                      "plain M2(1024) bottleneck then SD; up-convs twice the decoder width.")
def emnet_v2_4x(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """EM-net V2 4X. 33,831,053 params; 372.12 GFLOPs at 512x512x1."""
    spec = EmnetSpec(widths=(32, 64, 128, 256), level=Branch((Unit("d3"),)), skip=0,
                     bottleneck_width=1024, bottleneck=(Branch((Unit("m2"),)),),
                     decoder=((256, 512), (128, 256), (64, 128), (32, 64)), dropout_after_bottleneck=True)
    return build_emnet(spec, input_shape=input_shape, num_classes=num_classes, name="emnet_v2_4x", **kwargs)
