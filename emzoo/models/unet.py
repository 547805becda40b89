"""U-Net, U-Net BN and PReLU-net, as compared in EM-stellar.

Paper: Ronneberger, Fischer, Brox. U-Net: convolutional networks for biomedical image segmentation. MICCAI 2015.
doi:10.1007/978-3-319-24574-4_28. Layout: zhixuhao/unet, as copied into the EM-net notebook (akhadangi/EM-net, MIT)
and benchmarked in Khadangi et al., EM-stellar, Bioinformatics 37(1):97, 2021, doi:10.1093/bioinformatics/btaa1094.

Reference figures (``ARCHITECTURES.md`` §4): U-Net 31,031,685 params, U-Net BN 31,059,085, 436.85 GFLOPs at 512².

Deliberate choices:

- zhixuhao's quirks are kept: Dropout(0.5) after enc4 (so the enc4 skip is the dropped tensor) and after the
  bottleneck, ReLU on the 2x2 up-convs, concat order [skip, upsampled], and a ReLU'd 2-channel 3x3 conv before the
  1x1 sigmoid head.
- PReLU-net has no public code. It is a *reconstruction* from the EM-stellar text: the U-Net BN topology with every
  ReLU replaced by a channel-wise PReLU (alpha shared over space, init 0.25 as in He et al. 2015), He-normal init.
  31,065,935 params = U-Net BN + 6,850 alphas.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks import apply_activation, apply_conv_norm_act, output_activation
from emzoo.registry import check_input_shape, register_entry

__all__: list[str] = ["build_unet"]

_WIDTHS = (64, 128, 256, 512, 1024)


def build_unet(
    *,
    input_shape: tuple[int | None, ...],
    num_classes: int = 1,
    widths: tuple[int, ...] = _WIDTHS,
    batch_norm: bool = False,
    activation: str = "relu",
    dropout: float = 0.5,
    name: str = "unet",
) -> keras.Model:
    """Build a zhixuhao-layout U-Net.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``; H and W divisible by ``2 ** (len(widths) - 1)``.
    num_classes : int
        1 gives one sigmoid channel, more give a softmax.
    widths : tuple of int
        Filters per level, shallow to deep (the last is the bottleneck).
    batch_norm : bool
        Conv -> BN -> activation everywhere (U-Net BN) instead of conv with fused activation.
    activation : {"relu", "prelu"}
        Activation after every conv but the head.
    dropout : float
        Rate of the two Dropout layers (after the deepest encoder level and after the bottleneck).
    name : str
        Model name.

    Returns
    -------
    keras.Model
    """
    depth = len(widths) - 1
    shape = check_input_shape(input_shape, ndim=3, divisor=(2**depth, 2**depth), name=name)
    init = "he_normal"

    def conv(x: Any, filters: int, kernel: int, layer_name: str) -> Any:
        if batch_norm:
            return apply_conv_norm_act(x, filters, kernel, activation=activation, kernel_initializer=init,
                                       name=layer_name)
        x = keras.layers.Conv2D(filters, kernel, padding="same", kernel_initializer=init, name=layer_name)(x)
        return apply_activation(x, activation, name=f"{layer_name}_act")

    inputs = keras.Input(shape, name="image")
    x = inputs
    skips = []
    for level, filters in enumerate(widths):
        if level:
            x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = conv(x, filters, 3, f"enc{level + 1}_conv1")
        x = conv(x, filters, 3, f"enc{level + 1}_conv2")
        if level >= depth - 1:
            x = keras.layers.Dropout(dropout, name=f"enc{level + 1}_dropout")(x)
        skips.append(x)
    for level in range(depth, 0, -1):
        filters = widths[level - 1]
        x = keras.layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        x = conv(x, filters, 2, f"dec{level}_upconv")
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([skips[level - 1], x])
        x = conv(x, filters, 3, f"dec{level}_conv1")
        x = conv(x, filters, 3, f"dec{level}_conv2")
    x = conv(x, 2, 3, "head_conv")
    outputs = keras.layers.Conv2D(
        num_classes, 1, activation=output_activation(num_classes), name="head_out"
    )(x)
    return keras.Model(inputs, outputs, name=name)


_PAPER = "Ronneberger et al. 2015; EM-stellar (Khadangi et al. 2021)"
_REF = (
    "Ronneberger O, Fischer P, Brox T. U-Net. MICCAI 2015. doi:10.1007/978-3-319-24574-4_28; "
    "Khadangi A, Boudier T, Rajagopal V. EM-stellar. Bioinformatics 37(1):97, 2021. doi:10.1093/bioinformatics/btaa1094"
)
_COMMON = dict(family="unet", dims="2D", input_shape=(512, 512, 1), num_classes=1, divisor=(16, 16),
               gflops=436.85, paper=_PAPER, reference=_REF)


@register_entry(params=31_031_685, trainable_params=31_031_685, **_COMMON,
                notes="zhixuhao layout; Dropout(0.5) at enc4 and bottleneck; ReLU'd 2-channel conv before the head.")
def unet(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """U-Net (zhixuhao layout). 31,031,685 params; 436.85 GFLOPs at 512x512x1."""
    return build_unet(input_shape=input_shape, num_classes=num_classes, name="unet", **kwargs)


@register_entry(params=31_059_085, trainable_params=31_045_385, **_COMMON,
                notes="U-Net with conv -> BN -> ReLU everywhere (23 BN layers).")
def unet_bn(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """U-Net BN. 31,059,085 params; 436.85 GFLOPs at 512x512x1."""
    return build_unet(input_shape=input_shape, num_classes=num_classes, batch_norm=True, name="unet_bn", **kwargs)


@register_entry(params=31_065_935, trainable_params=31_052_235, **_COMMON,
                notes="Reconstruction (no public code): U-Net BN with channel-wise PReLU (alpha init 0.25).")
def prelu_net(*, input_shape: tuple[int, ...], num_classes: int = 1, **kwargs: Any) -> keras.Model:
    """PReLU-net (reconstruction). 31,065,935 params; 436.85 GFLOPs at 512x512x1."""
    return build_unet(input_shape=input_shape, num_classes=num_classes, batch_norm=True, activation="prelu",
                      name="prelu_net", **kwargs)
