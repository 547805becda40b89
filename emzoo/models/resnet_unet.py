"""ResNet50-U-Net, EM-stellar's narrow variant: a truncated ResNet-style bottleneck encoder-decoder.

Paper: He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016. doi:10.1109/CVPR.2016.90.
Layout: the Keras 2.2.4 ``resnet`` builder of the EM-net notebook (akhadangi/EM-net, ``EM_net.ipynb``, MIT), as
benchmarked (under the name "ResNet-50") in Khadangi, Boudier, Rajagopal. EM-stellar. Bioinformatics 37(1):97, 2021.
doi:10.1093/bioinformatics/btaa1094.

Reference figures (``ARCHITECTURES.md`` §1 and §7): 82 convs, 81 BNs; 2,752,161 params (14,336 non-trainable);
17.76 GFLOPs (8.88 GMACs) at 512x512x1.

Despite its name it is not ResNet-50: base width 16, bottleneck expansion x2 (ResNet-50: x4), three blocks in every
stage (ResNet-50: 3-4-6-3), and a decoder of "up-conv" bottleneck blocks. Quirks of the notebook, all kept because they
are what EM-stellar trained:

- the stem pads by 4 (ResNet-50: 3) before its 7x7 stride-2 ``valid`` conv and 3x3 stride-2 ``valid`` max pooling, so
  it maps a side of 4m to exactly m (512 -> 520 -> 257 -> 128); input sides must be multiples of 32;
- block letters left over from ResNet-50 (stage 3 ends with block ``d``, stages 4 and 7 with ``f``; there is no stage
  9), so the conv/BN names are Keras-2 ResNet names (``res4f_branch2c``, ``bn4f_branch2c``) and Keras-2 weight files
  can be matched by name;
- in the decoder identity blocks the first 1x1 conv *expands* (e.g. 128 -> 256 in stage 6);
- no skip at full or half resolution: the last skip joins at 1/4 (after stage 8), stage 10 up-samples to 1/2 and the
  head up-samples once more with ``UpSampling2D`` before a 3x3 sigmoid conv (``convLast``);
- every conv uses glorot-uniform and a bias, even those followed by BN.

Fixed: the notebook reads a global image size and compiles in the builder; here the input shape is an argument and the
model is returned uncompiled.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks import output_activation
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["apply_bottleneck_block", "build_resnet50_unet"]

_BLOCK_KINDS = ("conv", "identity", "up")


def apply_bottleneck_block(
    x: Any,
    filters: tuple[int, int, int],
    *,
    kind: str,
    strides: int = 1,
    kernel_size: int = 3,
    name: str,
) -> Any:
    """A Keras-2 ResNet50 (v1) bottleneck block, BN after every conv, ReLU after the addition.

    Main path: ``1x1 f1 (stride s) -> BN -> ReLU -> kxk f2 -> BN -> ReLU -> 1x1 f3 -> BN``. Shortcut, by ``kind``:

    - ``"conv"``: ``1x1 f3 (stride s) -> BN`` (ResNet's ``conv_block``);
    - ``"identity"``: the input itself, which must have ``f3`` channels (``identity_block``);
    - ``"up"``: both paths start with ``UpSampling2D(2)`` and the shortcut is ``1x1 f3 -> BN`` (the notebook's
      ``up_conv_block``).

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)``.
    filters : tuple of 3 int
        ``(f1, f2, f3)``.
    kind : {"conv", "identity", "up"}
        The shortcut and up-sampling choice above.
    strides : int
        Stride of the first 1x1 conv and of the conv shortcut (``"conv"`` only).
    kernel_size : int
        Kernel of the middle conv.
    name : str
        The Keras-2 block name, ``"{stage}{block}"`` (e.g. ``"4f"``): convs ``res4f_branch2a`` ... ``res4f_branch1``,
        BNs ``bn4f_branch2a`` ..., up-samplings ``up4f_branch2a`` / ``up4f_branch1``, then ``res4f_add`` and
        ``res4f_out``.

    Returns
    -------
    tensor
        ``(N, H', W', f3)`` with ``H' = H / strides`` (``2H`` for ``"up"``).

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or an identity block's input does not have ``f3`` channels.

    Examples
    --------
    >>> import keras
    >>> apply_bottleneck_block(keras.Input((16, 16, 8)), (4, 4, 8), kind="up", name="6a").shape
    (None, 32, 32, 8)
    """
    if kind not in _BLOCK_KINDS:
        raise ValueError(f"block {name}: kind must be one of {_BLOCK_KINDS}, got {kind!r}.")
    f1, f2, f3 = filters
    if kind == "identity" and x.shape[-1] != f3:
        raise ValueError(
            f"block {name}: an identity block needs {f3} input channels (its f3), got {x.shape[-1]}; use kind='conv'."
        )
    if kind != "conv" and strides != 1:
        raise ValueError(f"block {name}: strides apply to kind='conv' only, got strides={strides} for {kind!r}.")

    def conv_bn(t: Any, f: int, k: int, branch: str, s: int = 1, relu: bool = True) -> Any:
        t = keras.layers.Conv2D(f, k, strides=s, padding="valid" if k == 1 else "same",
                                name=f"res{name}_branch{branch}")(t)
        t = keras.layers.BatchNormalization(name=f"bn{name}_branch{branch}")(t)
        return keras.layers.Activation("relu", name=f"res{name}_branch{branch}_relu")(t) if relu else t

    main = keras.layers.UpSampling2D(2, name=f"up{name}_branch2a")(x) if kind == "up" else x
    main = conv_bn(main, f1, 1, "2a", s=strides)
    main = conv_bn(main, f2, kernel_size, "2b")
    main = conv_bn(main, f3, 1, "2c", relu=False)
    if kind == "identity":
        shortcut = x
    else:
        shortcut = keras.layers.UpSampling2D(2, name=f"up{name}_branch1")(x) if kind == "up" else x
        shortcut = conv_bn(shortcut, f3, 1, "1", s=strides, relu=False)
    x = keras.layers.Add(name=f"res{name}_add")([main, shortcut])
    return keras.layers.Activation("relu", name=f"res{name}_out")(x)


def build_resnet50_unet(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    base_filters: int = 16,
    name: str = "resnet50_unet",
) -> keras.Model:
    """Build EM-stellar's narrow ResNet-U-Net (stages 2-5 down, 6-8 and 10 up; skips from stages 4, 3 and 2).

    Layer names: stem ``conv1_pad``, ``conv1``, ``bn_conv1``, ``conv1_relu``, ``pool1``; blocks as in
    :func:`apply_bottleneck_block` (``res2a_branch2a`` ... ``res10c_out``); ``stage{6,7,8}_concat``; head ``head_up``,
    ``convLast``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``; H and W divisible by 32.
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    base_filters : int
        ``f`` of the notebook (16 in EM-stellar); every width is a multiple of it.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled.

    Examples
    --------
    >>> model = build_resnet50_unet(input_shape=(64, 64, 1), base_filters=4)
    >>> model.output_shape
    (None, 64, 64, 1)
    """
    shape = check_input_shape(input_shape, ndim=3, divisor=(32, 32), name=name)
    f = base_filters
    # (stage, block letters, widths, stride of the first block); encoder then decoder, as in the notebook.
    encoder = (
        (2, "abc", (f, f, 2 * f), 1),
        (3, "abd", (2 * f, 2 * f, 4 * f), 2),
        (4, "abf", (4 * f, 4 * f, 8 * f), 2),
        (5, "abc", (8 * f, 8 * f, 16 * f), 2),
    )
    decoder = (
        (6, "abc", (16 * f, 8 * f, 8 * f)),
        (7, "abf", (16 * f, 4 * f, 4 * f)),
        (8, "abd", (8 * f, 2 * f, 2 * f)),
        (10, "abc", (4 * f, f, f)),
    )

    inputs = keras.Input(shape, name="image")
    x = keras.layers.ZeroPadding2D(4, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(f, 7, strides=2, padding="valid", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn_conv1")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)

    skips = []
    for stage, letters, widths, strides in encoder:
        x = apply_bottleneck_block(x, widths, kind="conv", strides=strides, name=f"{stage}{letters[0]}")
        for letter in letters[1:]:
            x = apply_bottleneck_block(x, widths, kind="identity", name=f"{stage}{letter}")
        skips.append(x)
    # Stage 5's output is the bottleneck, not a skip; stages 6, 7, 8 concatenate [x, skip of stage 4, 3, 2].
    skips = skips[:-1]
    for stage, letters, widths in decoder:
        x = apply_bottleneck_block(x, widths, kind="up", name=f"{stage}{letters[0]}")
        for letter in letters[1:]:
            x = apply_bottleneck_block(x, widths, kind="identity", name=f"{stage}{letter}")
        if skips:
            x = keras.layers.Concatenate(name=f"stage{stage}_concat")([x, skips.pop()])

    x = keras.layers.UpSampling2D(2, name="head_up")(x)
    outputs = keras.layers.Conv2D(num_classes, 3, padding="same",
                                  activation=output_activation(num_classes), name="convLast")(x)
    return keras.Model(inputs, outputs, name=name)


@register_entry(
    family="resnet_unet", dims="2D", input_shape=(512, 512, 1), num_classes=1, divisor=(32, 32),
    params=2_752_161, trainable_params=2_737_825, gflops=17.76,
    paper="He et al. 2016; EM-stellar (Khadangi et al. 2021)",
    reference=(
        "He K, Zhang X, Ren S, Sun J. Deep residual learning for image recognition. CVPR 2016. "
        "doi:10.1109/CVPR.2016.90; Khadangi A, Boudier T, Rajagopal V. EM-stellar. Bioinformatics 37(1):97, 2021. "
        "doi:10.1093/bioinformatics/btaa1094"
    ),
    notes="EM-stellar's narrow 'ResNet-50': f=16, x2 bottlenecks, 3 blocks per stage, pad-4 stem, no full- or "
          "half-resolution skip, 3x3 sigmoid head after a final up-sampling; Keras-2 ResNet layer names.",
)
def resnet50_unet(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """ResNet50-U-Net, EM-stellar's narrow variant. 2,752,161 params; 17.76 GFLOPs at 512x512x1."""
    return build_resnet50_unet(input_shape=input_shape, num_classes=num_classes, name="resnet50_unet", **kwargs)
