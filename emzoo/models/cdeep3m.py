"""CDeep3M (DeepEM3D): an Inception-ResNet encoder with four multi-scale transposed-convolution heads, in 1-, 3- and
5-frame variants, and their ensemble.

Papers: Zeng T, Wu B, Ji S. DeepEM3D: approaching human-level performance on 3D anisotropic EM image segmentation.
Bioinformatics 33(14):i35, 2017. doi:10.1093/bioinformatics/btx188. Haberl MG et al. CDeep3M - plug-and-play cloud-based
deep learning for image segmentation. Nat. Methods 15:677, 2018. doi:10.1038/s41592-018-0106-z. Layout: the Caffe
prototxts ``model/inception_residual_train_prediction_{1,3,5}fm/train_val.prototxt`` of CRBS/cdeep3m (that folder is
MIT, (c) DiveLab); layer names follow the prototxt with ``/`` replaced by ``_`` (Keras forbids ``/``), so a weight
converter can map blobs by name. No weights ship with this module.

Reference figures (``ARCHITECTURES.md`` §8; counted layer by layer, the sources publish none): 1fm 24,028,860 params
(24,002,804 trainable), 182.49 GFLOPs at 512²; 3fm 24,047,868, 185.10 GFLOPs at 3x512²; 5fm 24,066,300, 187.62
GFLOPs at 5x512². GFLOPs count the *native* transposed-convolution MACs (input pixels x k² x C_in x C_out).

"fm" is the number of consecutive z slices, fed as a z-first 3D patch with one channel. Only conv1_1 and conv1_2
differ (Conv3D, collapsing z to 1); the rest is 2D. The output is a 2-class softmax for the centre slice, at the input
resolution; H and W must be divisible by 16.

Faithful to the prototxt, on purpose:

- Caffe ``BatchNorm`` + ``Scale`` = ``BatchNormalization(momentum=0.999, epsilon=1e-5)`` with gamma and beta.
- Strided 3x3 convs pad 1 on both sides (``ZeroPadding2D(1)`` + ``valid``; Keras ``same`` would pad (0, 1) and shift).
- Each Inception-ResNet stage has *one* module. Its 1x1 cbr projection (``conv{3,4,5}_1b``) is both the shortcut and
  the input of the branches; the branch concat goes through a 1x1 conv + BN *without* ReLU, is scaled by 0.1 and
  added to the shortcut, then ReLU. ``conv2_1b_3x3`` also has BN and no ReLU (the ReLU is commented out).
- The logits are the sum of four heads that each end in BN -> ReLU, so they are non-negative; softmax follows.
- The prototxt's misleading names are kept (``conv2_1x7`` is 7x1; Inception-C's ``b_conv1x7_1``/``b_conv7x1_1`` are
  1x3/3x1); the kernels are those of ``ARCHITECTURES.md`` §8.3.
- Initialisers: gaussian sigma 0.01 for conv1_x and the dilated deconvs, Caffe "xavier" (= ``lecun_uniform``) for the
  other convs, gaussian sigma 0.001 for the head 3x3 convs, Caffe's bilinear filler for the undilated deconvs, zero
  biases.

Deviations:

- Caffe trains every bias with twice the learning rate (``lr_mult: 2``) and the dilated deconv biases without weight
  decay (``decay_mult: 0``). Keras has no per-variable learning rate, so the bias-lr x2 is dropped.
- **Kernel flip.** Keras 3 ``Conv2DTranspose`` cannot combine stride and dilation, so the dilated head deconvs are
  :class:`~emzoo.layers.dilated_conv_transpose.DilatedConv2DTranspose` (zero insertion + stride-1 dilated conv), whose
  kernel is the *spatially flipped* Caffe deconv kernel, shape (kh, kw, in, out). The undilated d1 and 16x deconvs are
  ``Conv2DTranspose(k=2s, strides=s, padding="same")`` (crop s/2 = Caffe's pad), whose kernel is the Caffe kernel
  unflipped, shape (kh, kw, out, in). Random initialisation makes the flip irrelevant when training from scratch; it
  matters only when porting Caffe weights. Parameter counts are the same.
- The dilated deconvs are *defined* as zero insertion + padding + dilated conv, but evaluated phase by phase without
  the inserted zeros (``implementation="polyphase"``, the same sum): the literal form costs about s² x the MACs and,
  in the 8x head at a 512² input, a 3.4 GB intermediate per layer.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks import apply_conv_norm_act, output_activation
from emzoo.layers.dilated_conv_transpose import BilinearUpsampling, DilatedConv2DTranspose
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = [
    "apply_inception_resnet_a",
    "apply_inception_resnet_b",
    "apply_inception_resnet_c",
    "apply_multiscale_head",
    "apply_reduction_a",
    "apply_reduction_b",
    "apply_stem",
    "build_cdeep3m",
    "build_cdeep3m_ensemble",
]

_XAVIER = "lecun_uniform"  # Caffe's default "xavier" filler: U(+-sqrt(3 / fan_in))
_HEAD_DILATIONS = (5, 11, 17, 23)
_HEAD_SCALES = ((2, 2), (4, 3), (8, 4), (16, 5))  # (upsampling factor, prototxt stage index)


def _gaussian(std: float) -> keras.initializers.Initializer:
    # A fresh instance per layer: an unseeded Keras initializer reused across layers repeats the same values.
    return keras.initializers.RandomNormal(stddev=std)


def _cbr(
    x: Any,
    filters: int,
    kernel: int | tuple[int, ...],
    *,
    name: str,
    strides: int | tuple[int, ...] = 1,
    pad: int | tuple[int, ...] | None = None,
    relu: bool = True,
    kernel_initializer: Any = _XAVIER,
) -> Any:
    """Caffe conv (+ bias) -> BatchNorm + Scale -> ReLU ("cbr"), or without the ReLU ("cb").

    ``pad=None`` means Keras ``same`` (symmetric for odd kernels at stride 1); an explicit ``pad`` zero-pads both
    sides symmetrically and runs a ``valid`` conv, as Caffe does (needed for strided convs).
    """
    padding = "same"
    if pad is not None:
        pad_layer = keras.layers.ZeroPadding2D if len(x.shape) == 4 else keras.layers.ZeroPadding3D
        x = pad_layer(pad, name=f"{name}_pad")(x)
        padding = "valid"
    return apply_conv_norm_act(
        x,
        filters,
        kernel,
        strides=strides,
        padding=padding,
        activation="relu" if relu else None,
        kernel_initializer=kernel_initializer,
        bn_momentum=0.999,
        bn_epsilon=1e-5,
        name=name,
    )


def _residual_sum(shortcut: Any, branch: Any, *, scale: float, name: str) -> Any:
    # Caffe Eltwise SUM with coeff (1, scale), then ReLU.
    branch = keras.layers.Rescaling(scale, name=f"{name}_scale")(branch)
    x = keras.layers.Add(name=name)([shortcut, branch])
    return keras.layers.Activation("relu", name=f"{name}_act")(x)


def _squeeze_z(x: Any, *, name: str) -> Any:
    """(N, 1, H, W, C) -> (N, H, W, C) with a plain Reshape (one unknown side is allowed)."""
    _, z, h, w, c = x.shape
    if z != 1:
        raise ValueError(f"{name}: expected a single z plane to squeeze, got shape {tuple(x.shape)}")
    if h is None and w is None:
        raise ValueError(
            f"{name}: multi-frame CDeep3M needs at least one of H, W fixed (the z squeeze is a Reshape); "
            "build with a fixed input_shape such as (3, 512, 512, 1) and rebuild for other tile sizes."
        )
    return keras.layers.Reshape((h or -1, w or -1, c), name=name)(x)


def apply_stem(x: Any, *, frames: int = 1) -> tuple[Any, Any]:
    """CDeep3M stem: conv1_1 (stride 2), conv1_2, two branches (concat_stem_1), then pool ‖ strided conv.

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` for ``frames=1``, ``(N, frames, H, W, C)`` otherwise.
    frames : int
        Number of z slices. Above 1, conv1_1 is a 3x3x3 stride-2 Conv3D (pad 1) and conv1_2 a (z', 3, 3) Conv3D
        (pad 0 in z) that collapses the remaining z' planes to one, which is then squeezed away.

    Returns
    -------
    concat_stem_1 : tensor
        ``(N, H/2, W/2, 192)``, the source of the 2x head.
    concat_stem_2 : tensor
        ``(N, H/4, W/4, 384)``, the input of Inception-ResNet-A.

    Examples
    --------
    >>> import keras
    >>> s1, s2 = apply_stem(keras.Input((3, 32, 32, 1)), frames=3)
    >>> tuple(s1.shape), tuple(s2.shape)
    ((None, 16, 16, 192), (None, 8, 8, 384))
    """
    # conv1_1 is 3x3 (2D) or 3x3x3 (3D, z too is strided) from the rank of x.
    x = _cbr(x, 32, 3, strides=2, pad=1, kernel_initializer=_gaussian(0.01), name="conv1_1")
    if frames == 1:
        x = _cbr(x, 64, 3, kernel_initializer=_gaussian(0.01), name="conv1_2")
    else:
        depth = x.shape[1]  # (frames - 1) // 2 + 1 planes left: 3 -> 2, 5 -> 3
        x = _cbr(x, 64, (depth, 3, 3), pad=(0, 1, 1), kernel_initializer=_gaussian(0.01), name="conv1_2")
        x = _squeeze_z(x, name="conv1_2_squeeze")
    a = _cbr(x, 64, 1, name="conv2_1b")
    a = _cbr(a, 96, 3, relu=False, name="conv2_1b_3x3")
    b = _cbr(x, 64, 1, name="conv2_1x1")
    b = _cbr(b, 64, (7, 1), name="conv2_1x7")
    b = _cbr(b, 64, (1, 7), name="conv2_7x1")
    b = _cbr(b, 96, 3, name="conv2_3x3")
    stem_1 = keras.layers.Concatenate(name="concat_stem_1")([a, b])
    pool = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool_stem_concat")(stem_1)
    conv = _cbr(stem_1, 192, 3, strides=2, pad=1, name="stem_concat_conv_3x3")
    stem_2 = keras.layers.Concatenate(name="concat_stem_2")([pool, conv])
    return stem_1, stem_2


def apply_inception_resnet_a(
    x: Any,
    *,
    filters: int = 384,
    scale: float = 0.1,
    stage: str = "conv3",
    prefix: str = "ira_A",
) -> Any:
    """Inception-ResNet-A (one module): 1x1 projection, three branches (1x1 | 1x1-3x3 | 1x1-3x3-3x3), residual sum.

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)``.
    filters : int
        Width of the projection ``{stage}_1b`` (the shortcut) and of the linear top conv.
    scale : float
        Residual scaling of the branch output.
    stage, prefix : str
        Layer-name stems: ``{stage}_1b`` and ``{stage}_sum`` for the shortcut and the sum, ``{prefix}_...`` for the
        branches (the prototxt's ``conv3_1b``, ``ira_A_...``, ``conv3_sum``).

    Returns
    -------
    tensor
        ``(N, H, W, filters)`` after the ReLU.

    Examples
    --------
    >>> import keras
    >>> tuple(apply_inception_resnet_a(keras.Input((8, 8, 384))).shape)
    (None, 8, 8, 384)
    """
    shortcut = _cbr(x, filters, 1, name=f"{stage}_1b")
    b1 = _cbr(shortcut, 32, 1, name=f"{prefix}_1_conv1x1")
    b2 = _cbr(shortcut, 32, 1, name=f"{prefix}_2_conv1x1")
    b2 = _cbr(b2, 32, 3, name=f"{prefix}_2_conv3x3")
    b3 = _cbr(shortcut, 32, 1, name=f"{prefix}_3_conv1x1")
    b3 = _cbr(b3, 48, 3, name=f"{prefix}_3_conv3x3_1")
    b3 = _cbr(b3, 64, 3, name=f"{prefix}_3_conv3x3_2")
    branches = keras.layers.Concatenate(name=f"{prefix}_concat")([b1, b2, b3])
    top = _cbr(branches, filters, 1, relu=False, name=f"{prefix}_concat_top_conv_1x1")
    return _residual_sum(shortcut, top, scale=scale, name=f"{stage}_sum")


def _apply_inception_resnet_factorised(
    x: Any,
    *,
    filters: int,
    a_filters: int,
    b_filters: tuple[int, int, int],
    kernel: int,
    scale: float,
    stage: str,
    prefix: str,
) -> Any:
    """Shared body of Inception-ResNet-B and -C: branches 1x1 | 1x1-(1,k)-(k,1), linear top conv, residual sum."""
    shortcut = _cbr(x, filters, 1, name=f"{stage}_1b")
    a = _cbr(shortcut, a_filters, 1, name=f"{prefix}_a_conv1x1_1")
    b = _cbr(shortcut, b_filters[0], 1, name=f"{prefix}_b_conv1x1_1")
    b = _cbr(b, b_filters[1], (1, kernel), name=f"{prefix}_b_conv1x7_1")
    b = _cbr(b, b_filters[2], (kernel, 1), name=f"{prefix}_b_conv7x1_1")
    branches = keras.layers.Concatenate(name=f"{prefix}_concat")([a, b])
    top = _cbr(branches, filters, 1, relu=False, name=f"{prefix}_top_conv_1x1")
    return _residual_sum(shortcut, top, scale=scale, name=f"{stage}_sum")


def apply_inception_resnet_b(
    x: Any,
    *,
    filters: int = 1154,
    scale: float = 0.1,
    stage: str = "conv4",
    prefix: str = "ira_Inception_B_block_1",
) -> Any:
    """Inception-ResNet-B (one module): 1x1 projection to ``filters``, branches 1x1->192 | 1x1->128, (1,7)->160,
    (7,1)->192, linear 1x1 top conv, ``shortcut + scale * top``, ReLU.

    Examples
    --------
    >>> import keras
    >>> tuple(apply_inception_resnet_b(keras.Input((4, 4, 1152))).shape)
    (None, 4, 4, 1154)
    """
    return _apply_inception_resnet_factorised(
        x, filters=filters, a_filters=192, b_filters=(128, 160, 192), kernel=7, scale=scale, stage=stage,
        prefix=prefix,
    )


def apply_inception_resnet_c(
    x: Any,
    *,
    filters: int = 2048,
    scale: float = 0.1,
    stage: str = "conv5",
    prefix: str = "ira_Inception_C_block_1",
) -> Any:
    """Inception-ResNet-C (one module): 1x1 projection to ``filters``, branches 1x1->192 | 1x1->192, (1,3)->224,
    (3,1)->256, linear 1x1 top conv, ``shortcut + scale * top``, ReLU.

    Examples
    --------
    >>> import keras
    >>> tuple(apply_inception_resnet_c(keras.Input((2, 2, 2146))).shape)
    (None, 2, 2, 2048)
    """
    return _apply_inception_resnet_factorised(
        x, filters=filters, a_filters=192, b_filters=(192, 224, 256), kernel=3, scale=scale, stage=stage,
        prefix=prefix,
    )


def apply_reduction_a(x: Any, *, prefix: str = "ira_v4_reduction_A") -> Any:
    """Reduction-A: MaxPool 3/2 ‖ 3x3 s2 -> 384 ‖ 1x1 -> 256, 3x3 -> 256, 3x3 s2 -> 384; concat in that order.

    Examples
    --------
    >>> import keras
    >>> tuple(apply_reduction_a(keras.Input((8, 8, 384))).shape)
    (None, 4, 4, 1152)
    """
    pool = keras.layers.MaxPooling2D(3, 2, padding="same", name=f"{prefix}_pool")(x)
    b = _cbr(x, 384, 3, strides=2, pad=1, name=f"{prefix}_conv3x3_reduction_b")
    c = _cbr(x, 256, 1, name=f"{prefix}_conv1x1_c")
    c = _cbr(c, 256, 3, name=f"{prefix}_conv3x3_c")
    c = _cbr(c, 384, 3, strides=2, pad=1, name=f"{prefix}_conv3x3_reduction_c")
    return keras.layers.Concatenate(name=f"{prefix}_concat")([pool, b, c])


def apply_reduction_b(x: Any, *, prefix: str = "ira_Reduction_B_block_1") -> Any:
    """Reduction-B: MaxPool 3/2 ‖ 1x1 -> 256, 3x3 s2 -> 384 ‖ 1x1 -> 256, 3x3 s2 -> 288 ‖ 1x1 -> 256, 3x3 -> 288,
    3x3 s2 -> 320; concat in that order.

    Examples
    --------
    >>> import keras
    >>> tuple(apply_reduction_b(keras.Input((4, 4, 1154))).shape)
    (None, 2, 2, 2146)
    """
    pool = keras.layers.MaxPooling2D(3, 2, padding="same", name=f"{prefix}_a_pool")(x)
    b = _cbr(x, 256, 1, name=f"{prefix}_b_conv1x1_1")
    b = _cbr(b, 384, 3, strides=2, pad=1, name=f"{prefix}_b_conv3x3_1")
    c = _cbr(x, 256, 1, name=f"{prefix}_c_conv1x1_1")
    c = _cbr(c, 288, 3, strides=2, pad=1, name=f"{prefix}_c_conv3x3_1")
    d = _cbr(x, 256, 1, name=f"{prefix}_d_conv1x1_1")
    d = _cbr(d, 288, 3, name=f"{prefix}_d_conv3x3_1")
    d = _cbr(d, 320, 3, strides=2, pad=1, name=f"{prefix}_d_conv3x3_2")
    return keras.layers.Concatenate(name=f"{prefix}_concat")([pool, b, c, d])


def apply_multiscale_head(
    x: Any,
    *,
    scale: int,
    level: int,
    num_classes: int = 2,
    dilations: tuple[int, ...] = _HEAD_DILATIONS,
) -> Any:
    """One CDeep3M head: transposed convs (kernel 2s, stride s) back to full resolution, summed, BN -> ReLU ->
    3x3 conv -> BN -> ReLU.

    The undilated deconv ``d1`` (Caffe pad s/2, bilinear init) is a ``Conv2DTranspose(padding="same")``; each
    dilation ``d`` adds a :class:`DilatedConv2DTranspose` with Caffe pad ``(d(2s-1) + 1 - s) / 2`` (output = s x
    input, gaussian sigma 0.01 init). ``dilations=()`` gives the single-deconv 16x head.

    Parameters
    ----------
    x : tensor
        ``(N, H/s, W/s, C)``.
    scale : int
        Upsampling factor ``s`` (2, 4, 8 or 16).
    level : int
        Prototxt stage index used in the layer names (``deconv{level}_{scale}x``, ``fc1_{scale}x_c{i}``).
    num_classes : int
        Output channels.
    dilations : tuple of int
        Dilations of the extra deconvs.

    Returns
    -------
    tensor
        ``(N, H, W, num_classes)``, non-negative (it ends in a ReLU).

    Examples
    --------
    >>> import keras
    >>> tuple(apply_multiscale_head(keras.Input((16, 16, 192)), scale=2, level=2).shape)
    (None, 32, 32, 2)
    """
    kernel = 2 * scale
    name = f"deconv{level}_{scale}x"
    y = keras.layers.Conv2DTranspose(
        num_classes, kernel, strides=scale, padding="same", kernel_initializer=BilinearUpsampling(),
        name=f"{name}_d1" if dilations else name,
    )(x)
    if dilations:
        branches = [y]
        for i, d in enumerate(dilations):
            pad = (d * (kernel - 1) + 1 - scale) // 2
            branches.append(DilatedConv2DTranspose(
                num_classes, kernel, strides=scale, dilation_rate=d, padding=pad,
                kernel_initializer=_gaussian(0.01), name=f"fc1_{scale}x_c{i}",
            )(x))
        y = keras.layers.Add(name=f"fc1_{scale}x")(branches)
    y = keras.layers.BatchNormalization(momentum=0.999, epsilon=1e-5, name=f"{name}_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_act")(y)
    return _cbr(y, num_classes, 3, kernel_initializer=_gaussian(0.001), name=f"conv_{name}")


def build_cdeep3m(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 2,
    frames: int = 1,
    residual_scale: float = 0.1,
    name: str = "cdeep3m",
) -> keras.Model:
    """Build one CDeep3M network (1fm, 3fm or 5fm layout).

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` for ``frames=1``, ``(frames, H, W, C)`` otherwise; H and W divisible by 16.
    num_classes : int
        2 (the default) gives CDeep3M's softmax; 1 gives a single sigmoid channel.
    frames : int
        Consecutive z slices per prediction (1, 3 and 5 are the published variants).
    residual_scale : float
        Scaling of the Inception-ResNet branch outputs (0.1 in the prototxt).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Output ``(N, H, W, num_classes)``: class probabilities of the centre slice.

    Raises
    ------
    ValueError
        If the input rank, the number of slices or the spatial sides do not fit.

    Notes
    -----
    1fm: 24,028,860 params, 182.49 GFLOPs at 512x512x1. 3fm adds 19,008 params, 5fm 37,440.

    Examples
    --------
    >>> model = build_cdeep3m(input_shape=(3, 32, 32, 1), frames=3)
    >>> model.output_shape
    (None, 32, 32, 2)
    """
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{name}: frames must be a positive int, got {frames!r}")
    if frames == 1:
        shape = check_input_shape(input_shape, ndim=3, divisor=(16, 16), name=name)
    else:
        shape = check_input_shape(input_shape, ndim=4, divisor=(1, 16, 16), name=name)
        if shape[0] != frames:
            raise ValueError(
                f"{name}: a {frames}-frame model needs {frames} z slices first, got input_shape {shape}; "
                f"pass input_shape=({frames}, H, W, C)."
            )
    inputs = keras.Input(shape, name="image")
    stem_1, x = apply_stem(inputs, frames=frames)
    conv3 = apply_inception_resnet_a(x, scale=residual_scale)
    x = apply_reduction_a(conv3)
    conv4 = apply_inception_resnet_b(x, scale=residual_scale)
    x = apply_reduction_b(conv4)
    conv5 = apply_inception_resnet_c(x, scale=residual_scale)
    sources = {2: stem_1, 4: conv3, 8: conv4, 16: conv5}
    heads = [
        apply_multiscale_head(sources[scale], scale=scale, level=level, num_classes=num_classes,
                              dilations=() if scale == 16 else _HEAD_DILATIONS)
        for scale, level in _HEAD_SCALES
    ]
    logits = keras.layers.Add(name="deconv_all_sum")(heads)
    outputs = keras.layers.Activation(output_activation(num_classes), name="prob")(logits)
    return keras.Model(inputs, outputs, name=name)


def build_cdeep3m_ensemble(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 2,
    frames: tuple[int, ...] = (1, 3, 5),
    name: str = "cdeep3m",
) -> keras.Model:
    """Build the CDeep3M ensemble: one model per frame count on the centred sub-stack, probabilities averaged.

    Parameters
    ----------
    input_shape : tuple of int
        ``(max(frames), H, W, C)``; H and W divisible by 16.
    num_classes : int
        Output channels of every member.
    frames : tuple of int
        Members' frame counts; each must differ from ``max(frames)`` by an even number so its slices are centred.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Holds the members as sub-models named ``cdeep3m_{f}fm`` (so their weights load member by member); output
        ``(N, H, W, num_classes)``, the arithmetic mean of the members' probabilities (CDeep3M averages the
        foreground maps; averaging all channels keeps them summing to 1).

    Examples
    --------
    >>> model = build_cdeep3m_ensemble(input_shape=(5, 32, 32, 1))
    >>> [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    ['cdeep3m_1fm', 'cdeep3m_3fm', 'cdeep3m_5fm']
    """
    if not frames or any(not isinstance(f, int) or f < 1 for f in frames):
        raise ValueError(f"{name}: frames must be positive ints, got {frames!r}")
    depth = max(frames)
    shape = check_input_shape(input_shape, ndim=4, divisor=(1, 16, 16), name=name)
    if shape[0] != depth:
        raise ValueError(f"{name}: the ensemble needs {depth} z slices first, got input_shape {shape}.")
    if any((depth - f) % 2 for f in frames):
        raise ValueError(f"{name}: every member's frames must differ from {depth} by an even number, got {frames}.")
    inputs = keras.Input(shape, name="image")
    outputs = []
    for f in frames:
        crop = (depth - f) // 2
        x = inputs
        if crop:
            x = keras.layers.Cropping3D(((crop, crop), (0, 0), (0, 0)), name=f"centre_{f}_slices")(x)
        if f == 1:
            x = _squeeze_z(x, name="centre_slice_squeeze")
        member_shape = tuple(x.shape[1:])
        member = build_cdeep3m(input_shape=member_shape, num_classes=num_classes, frames=f, name=f"cdeep3m_{f}fm")
        outputs.append(member(x))
    output = keras.layers.Average(name="ensemble_mean")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, output, name=name)


_PAPER = "Zeng et al. 2017 (DeepEM3D); Haberl et al. 2018 (CDeep3M)"
_REF = (
    "Zeng T, Wu B, Ji S. DeepEM3D. Bioinformatics 33(14):i35, 2017. doi:10.1093/bioinformatics/btx188; "
    "Haberl MG et al. CDeep3M. Nat. Methods 15:677, 2018. doi:10.1038/s41592-018-0106-z"
)
_COMMON = dict(family="cdeep3m", num_classes=2, paper=_PAPER, reference=_REF)
_NOTES = ("Caffe prototxt layout; ReLU'd summed logits; dilated head deconvs as zero insertion + dilated conv "
          "(flipped kernel); Caffe bias lr x2 dropped.")


@register_entry(dims="2D", input_shape=(512, 512, 1), divisor=(16, 16), params=24_028_860,
                trainable_params=24_002_804, gflops=182.49, test_input_shape=(32, 32, 1), notes=_NOTES, **_COMMON)
def cdeep3m_1fm(*, input_shape: tuple[int, ...], num_classes: int = 2, **kwargs: Any) -> keras.Model:
    """CDeep3M 1fm (one slice). 24,028,860 params; 182.49 GFLOPs at 512x512x1."""
    return build_cdeep3m(input_shape=input_shape, num_classes=num_classes, frames=1, name="cdeep3m_1fm", **kwargs)


@register_entry(dims="3D->2D", input_shape=(3, 512, 512, 1), divisor=(1, 16, 16), params=24_047_868,
                trainable_params=24_021_812, gflops=185.10, test_input_shape=(3, 32, 32, 1), notes=_NOTES, **_COMMON)
def cdeep3m_3fm(*, input_shape: tuple[int, ...], num_classes: int = 2, **kwargs: Any) -> keras.Model:
    """CDeep3M 3fm (3 slices, centre predicted). 24,047,868 params; 185.10 GFLOPs at 3x512x512x1."""
    return build_cdeep3m(input_shape=input_shape, num_classes=num_classes, frames=3, name="cdeep3m_3fm", **kwargs)


@register_entry(dims="3D->2D", input_shape=(5, 512, 512, 1), divisor=(1, 16, 16), params=24_066_300,
                trainable_params=24_040_244, gflops=187.62, test_input_shape=(5, 32, 32, 1), notes=_NOTES, **_COMMON)
def cdeep3m_5fm(*, input_shape: tuple[int, ...], num_classes: int = 2, **kwargs: Any) -> keras.Model:
    """CDeep3M 5fm (5 slices, centre predicted). 24,066,300 params; 187.62 GFLOPs at 5x512x512x1."""
    return build_cdeep3m(input_shape=input_shape, num_classes=num_classes, frames=5, name="cdeep3m_5fm", **kwargs)


@register_entry(dims="3D->2D", input_shape=(5, 512, 512, 1), divisor=(1, 16, 16), params=72_143_028,
                trainable_params=72_064_860, gflops=555.21, test_input_shape=(5, 32, 32, 1),
                notes="Mean of the 1fm (centre slice), 3fm (centre 3) and 5fm probabilities, in one model; "
                      "no test-time augmentation (see emzoo.inference).", **_COMMON)
def cdeep3m(*, input_shape: tuple[int, ...], num_classes: int = 2, **kwargs: Any) -> keras.Model:
    """CDeep3M ensemble of 1fm, 3fm and 5fm. 72,143,028 params; 555.21 GFLOPs at 5x512x512x1."""
    return build_cdeep3m_ensemble(input_shape=input_shape, num_classes=num_classes, name="cdeep3m", **kwargs)
