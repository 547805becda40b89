"""Pure tensor -> tensor building blocks shared by two or more families (NiftyNet's middle tier)."""

from emzoo.blocks.conv import (
    apply_activation,
    apply_conv,
    apply_conv_norm_act,
    conv_layer_class,
    output_activation,
)

__all__ = ["apply_activation", "apply_conv", "apply_conv_norm_act", "conv_layer_class", "output_activation"]
