"""Guay et al.'s 2D-3D+3x3x3 network (multi-frame platelet segmentation) and its Table S1 ablations.

Paper: Guay MD, Emam ZAS, Anderson AB, Aronova MA, Pokrovskaya ID, Storrie B, Leapman RD. Dense cellular
segmentation for EM using 2D-3D neural network ensembles. Sci Rep 11:2357, 2021. doi:10.1038/s41598-021-81590-0.
Layout: leapmanlab/examples (genenet, TF 1.15), read for facts only (no licence file); this is a from-scratch
Keras 3 builder.

Structure: a 2D encoder-decoder (per-slice 1×3×3 convs, (1,2,2) pooling, z never pooled) with one 3×3×3 conv of
half width at the start of every block at scales 0 and 1, a 2D predictor, then a two-branch 3D "spatial pyramid" on
[2D features, 2D logits] and a 3D predictor. Two outputs, main first: ``pred3d`` and the auxiliary ``pred2d``.

Reference figures (``ARCHITECTURES.md`` §10): ``net2d3d`` 10,283,406 params, 664.64 GMACs = 1,329.28 GFLOPs at
5×300×300×1; ``net2d3d_no3x3x3`` 9,932,622 params, 1,215.27 GFLOPs (607,636,390,400 MACs; §10.4's "607.64 GMACs"
doubled after rounding reads 1,215.28); ``net2d3d_nopyramid`` 7,882,311 params, 577.29 GFLOPs. Guay et al.
Table S1: 10.3 M, 9.9 M, 7.9 M.

Input and output sizes (needed for tiled inference). The network pools y and x three times with ``valid`` (floor)
pooling and merges skips genenet-style, by centre-cropping every tensor to the smallest one (``Cropping3D``). For an
input of ``Y × X`` the output is::

    out = 8 * (size // 8)        for y and x (each side >= 8); z is unchanged

so 300 -> 296 (crops 75 -> 74, 150 -> 148, 300 -> 296). The output covers input pixels
``[(size - out) // 2, (size - out) // 2 + out)`` (2 px inside the window at 300), read off the full-resolution skip;
:func:`net2d3d_output_window` returns it. Sides that are multiples of 8 give ``out == size`` and no cropping at
all, which is what tiled inference should use. Quirk kept: the decoder path is built from floor-pooled features
that cover pixels ``[0, out)`` while the cropped skips cover ``[(size - out) // 2, ...)``; for sides that are not
multiples of 8 the two are offset by ``(size - out) // 2`` pixels (genenet does the same).

Deliberate choices:

- Both predictors are 1×1×1 convs with **ReLU on the logits** (genenet's quirk); the pyramid reads the ReLU'd 2D
  logits (not probabilities). Each output then gets a final softmax layer (``pred3d``/``pred2d``; the ReLU'd
  logits are ``pred3d_logits``/``pred2d_logits``), so the model outputs probabilities. With ``num_classes=1`` the
  ReLU'd logit followed by a sigmoid could never go below 0.5, so that combination is refused.
- The pyramid pools (1,2,2) but up-samples with a (2,2,2) transposed conv and centre-crops z back (read from the
  genenet code, faithful); ``pyramid_up=(1, 2, 2)`` gives the clean alternative (10,267,022 params).
- ``net2d3d_no3x3x3`` replaces the four inserted 3×3×3 convs by 1×3×3 convs of the same width
  (``inserted_convs="1x3x3"``, 9,932,622 params). The other reading of Table S1, removing them
  (``inserted_convs="none"``: the next 1×3×3 conv reads the block input, up-convs keep 64/32 filters), gives
  9,923,502 params and 1,206.80 GFLOPs; both round to the paper's 9.9 M (``ARCHITECTURES.md`` §10.4, AMBIGUOUS).
- "No multi-loss" is ``net2d3d`` trained without the 2D loss term (a training option, not an entry).
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks import output_activation
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_net2d3d", "net2d3d_output_window"]

_INSERTED = {"3x3x3": (3, 3, 3), "1x3x3": (1, 3, 3), "none": None}


def net2d3d_output_window(size: int) -> tuple[int, int]:
    """Where the output of a Guay 2D-3D net lies along y or x: ``(start, length)`` in input pixels.

    Parameters
    ----------
    size : int
        Input side (y or x), at least 8.

    Returns
    -------
    tuple of int
        ``start = (size - out) // 2`` and ``out = 8 * (size // 8)``.

    Raises
    ------
    ValueError
        If ``size < 8``.

    Examples
    --------
    >>> net2d3d_output_window(300)
    (2, 296)
    >>> net2d3d_output_window(256)
    (0, 256)
    """
    if size < 8:
        raise ValueError(
            f"net2d3d: each y/x side must be >= 8 (three (1,2,2) poolings), got {size}; pad the input to at least 8 "
            "(multiples of 8 keep the output the same size as the input)."
        )
    out = 8 * (size // 8)
    return (size - out) // 2, out


def _centre_crop(x: Any, target: tuple[int, int, int], name: str) -> Any:
    """Crop the (z, y, x) axes of ``x`` to ``target``, genenet-style: start at ``(size - target) // 2``.

    Always a ``Cropping3D`` layer, even when nothing is cropped, so the layer graph does not depend on the input size.
    """
    crops = []
    for size, want in zip(x.shape[1:4], target, strict=True):
        start = (size - want) // 2
        crops.append((start, size - want - start))
    return keras.layers.Cropping3D(tuple(crops), name=name)(x)


def build_net2d3d(
    *,
    input_shape: tuple[int, ...],
    num_classes: int = 7,
    widths: tuple[int, ...] = (64, 128, 256, 512),
    inserted_convs: str = "3x3x3",
    pyramid: bool = True,
    pyramid_features: tuple[int, int] = (64, 128),
    pyramid_up: tuple[int, int, int] = (2, 2, 2),
    relu_logits: bool = True,
    name: str = "net2d3d",
) -> keras.Model:
    """Build Guay et al.'s 2D-3D network (or one of its ablations).

    Parameters
    ----------
    input_shape : tuple of int
        ``(Z, Y, X, C)`` with known sizes; Y and X >= 8. The output is ``(Z, 8*(Y//8), 8*(X//8))``.
    num_classes : int
        Output classes (7 in the paper). Each output is a softmax over the ReLU'd logits.
    widths : tuple of int
        Filters of the 1×3×3 convs at scales 0..3 (the last is the bottom); scales 0 and 1 also get an inserted conv
        of half width and the up-conv into them has that half width.
    inserted_convs : {"3x3x3", "1x3x3", "none"}
        Kernel of the half-width conv at the start of every scale-0/1 block; ``"none"`` removes it.
    pyramid : bool
        Add the 3D spatial pyramid and ``pred3d``; ``False`` leaves the 2D network with ``pred2d`` as its only
        output (the "No 3D pyramid" ablation).
    pyramid_features : tuple of int
        Filters of pyramid branch 0 (full resolution) and branch 1 (half resolution in y, x).
    pyramid_up : tuple of int
        Kernel and stride of the pyramid's transposed conv: genenet's (2, 2, 2) (z is then cropped back) or
        (1, 2, 2).
    relu_logits : bool
        ReLU on both predictors' logits (genenet's quirk).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Outputs ``[pred3d, pred2d]`` (``pyramid=True``) or ``pred2d``, each ``(batch, Z, Y', X', num_classes)``.

    Raises
    ------
    ValueError
        For unknown sizes, sides below 8, an unknown ``inserted_convs`` or ``num_classes=1`` with ReLU'd logits.

    Examples
    --------
    >>> model = build_net2d3d(input_shape=(5, 20, 20, 1))
    >>> [tuple(o.shape) for o in model.outputs]
    [(None, 5, 16, 16, 7), (None, 5, 16, 16, 7)]
    """
    shape = check_input_shape(input_shape, ndim=4, name=name)
    if any(s is None for s in shape):
        raise ValueError(f"{name}: needs a fully known input_shape (the skip crops depend on it), got {shape}.")
    for side in shape[1:3]:
        net2d3d_output_window(side)
    if inserted_convs not in _INSERTED:
        raise ValueError(f"{name}: inserted_convs must be one of {sorted(_INSERTED)}, got {inserted_convs!r}.")
    if num_classes == 1 and relu_logits:
        raise ValueError(f"{name}: num_classes=1 with ReLU'd logits gives sigmoid outputs >= 0.5; use "
                         "num_classes=2 (softmax) or relu_logits=False.")
    if len(widths) < 3:
        raise ValueError(f"{name}: widths needs at least 3 scales, got {widths}.")
    depth = len(widths) - 1
    inserted_kernel = _INSERTED[inserted_convs]

    def conv(x: Any, filters: int, kernel: tuple[int, ...], layer_name: str) -> Any:
        return keras.layers.Conv3D(filters, kernel, padding="same", activation="relu", name=layer_name)(x)

    def block(x: Any, scale: int, prefix: str) -> Any:
        if scale <= 1 and inserted_kernel is not None:
            x = conv(x, widths[scale] // 2, inserted_kernel, f"{prefix}_conv0")
        x = conv(x, widths[scale], (1, 3, 3), f"{prefix}_conv1")
        return conv(x, widths[scale], (1, 3, 3), f"{prefix}_conv2")

    inputs = keras.Input(shape, name="image")
    x = inputs
    skips = []
    for scale in range(depth):
        x = block(x, scale, f"enc{scale}")
        skips.append(x)
        x = keras.layers.MaxPooling3D((1, 2, 2), padding="valid", name=f"enc{scale}_pool")(x)
    x = block(x, depth, "bottom")
    for scale in range(depth - 1, -1, -1):
        up_filters = widths[scale] // 2 if scale <= 1 else widths[scale]
        x = keras.layers.Conv3DTranspose(up_filters, (1, 2, 2), strides=(1, 2, 2), padding="same",
                                         name=f"dec{scale}_up")(x)
        skip = _centre_crop(skips[scale], tuple(x.shape[1:4]), name=f"dec{scale}_crop")
        x = keras.layers.Concatenate(name=f"dec{scale}_concat")([skip, x])
        x = block(x, scale, f"dec{scale}")

    logit_act = "relu" if relu_logits else None
    head = output_activation(num_classes)
    logits_2d = keras.layers.Conv3D(num_classes, 1, activation=logit_act, name="pred2d_logits")(x)
    pred_2d = keras.layers.Activation(head, name="pred2d")(logits_2d)
    if not pyramid:
        return keras.Model(inputs, pred_2d, name=name)

    features_0, features_1 = pyramid_features
    p = keras.layers.Concatenate(name="pyr_concat")([x, logits_2d])
    b0 = p
    for i in range(3):
        b0 = conv(b0, features_0, (3, 3, 3), f"pyr0_conv{i + 1}")
    b1 = keras.layers.MaxPooling3D((1, 2, 2), padding="valid", name="pyr1_pool")(p)
    for i in range(5):
        b1 = conv(b1, features_1, (3, 3, 3), f"pyr1_conv{i + 1}")
    b1 = conv(b1, features_0, (1, 1, 1), "pyr1_conv6")
    b1 = keras.layers.Conv3DTranspose(features_0, tuple(pyramid_up), strides=tuple(pyramid_up), padding="same",
                                      name="pyr1_up")(b1)
    b1 = _centre_crop(b1, tuple(b0.shape[1:4]), name="pyr1_crop")
    x3 = keras.layers.Add(name="pyr_add")([b0, b1])
    logits_3d = keras.layers.Conv3D(num_classes, 1, activation=logit_act, name="pred3d_logits")(x3)
    pred_3d = keras.layers.Activation(head, name="pred3d")(logits_3d)
    return keras.Model(inputs, [pred_3d, pred_2d], name=name)


_PAPER = "Guay et al. 2021"
_REF = (
    "Guay MD, Emam ZAS, Anderson AB, Aronova MA, Pokrovskaya ID, Storrie B, Leapman RD. Dense cellular segmentation "
    "for EM using 2D-3D neural network ensembles. Sci Rep 11:2357, 2021. doi:10.1038/s41598-021-81590-0"
)
_IO_NOTE = ("Output y/x = 8*(side//8) (300 -> 296, centre-cropped skips); sides that are multiples of 8 keep their "
            "size.")
_COMMON = dict(family="net2d3d", dims="3D", input_shape=(5, 300, 300, 1), num_classes=7, divisor=(1, 1, 1),
               test_input_shape=(5, 20, 20, 1), paper=_PAPER, reference=_REF)


@register_entry(params=10_283_406, trainable_params=10_283_406, gflops=1329.28, output_names=("pred3d", "pred2d"),
                notes="genenet layout: ReLU'd predictors (softmax added as final layers), (2,2,2) pyramid up-conv "
                      "with z cropped back (pyramid_up=(1,2,2): 10,267,022 params). Outputs pred3d (main), pred2d "
                      "(auxiliary). " + _IO_NOTE, **_COMMON)
def net2d3d(*, input_shape: tuple[int, ...], num_classes: int = 7, **kwargs: Any) -> keras.Model:
    """2D-3D+3x3x3 network. 10,283,406 params; 1,329.28 GFLOPs at 5x300x300x1."""
    return build_net2d3d(input_shape=input_shape, num_classes=num_classes, name="net2d3d", **kwargs)


@register_entry(params=9_932_622, trainable_params=9_932_622, gflops=1215.27, output_names=("pred3d", "pred2d"),
                notes="Table S1 'No 3x3x3 convs', same-width 1x3x3 reading (AMBIGUOUS; inserted_convs='none', the "
                      "removal reading, gives 9,923,502 params / 1,206.80 GFLOPs). " + _IO_NOTE, **_COMMON)
def net2d3d_no3x3x3(*, input_shape: tuple[int, ...], num_classes: int = 7, **kwargs: Any) -> keras.Model:
    """2D-3D ablation without 3x3x3 convs (1x3x3 of the same width). 9,932,622 params; 1,215.27 GFLOPs."""
    kwargs.setdefault("inserted_convs", "1x3x3")
    return build_net2d3d(input_shape=input_shape, num_classes=num_classes, name="net2d3d_no3x3x3", **kwargs)


@register_entry(params=7_882_311, trainable_params=7_882_311, gflops=577.29,
                notes="Table S1 'No 3D pyramid': the 2D encoder-decoder (with its 3x3x3 convs) and pred2d only; "
                      "single output. " + _IO_NOTE, **_COMMON)
def net2d3d_nopyramid(*, input_shape: tuple[int, ...], num_classes: int = 7, **kwargs: Any) -> keras.Model:
    """2D-3D ablation without the 3D pyramid. 7,882,311 params; 577.29 GFLOPs at 5x300x300x1."""
    return build_net2d3d(input_shape=input_shape, num_classes=num_classes, pyramid=False, name="net2d3d_nopyramid",
                         **kwargs)
