"""The smallest variant of one entry per family, shared by the export tests and ``benchmarks/export_table.py``."""

from __future__ import annotations

# family -> (entry, build kwargs, test input shape with batch): the smallest variant of one entry per family,
# chosen to carry the family's custom layer (PReLU, pooling indices, zero-mean 3D conv, TLU, CDeep3M's deconv).
FAMILIES: dict[str, tuple[str, dict, tuple[int, ...]]] = {
    "unet": ("prelu_net", {"input_shape": (32, 32, 1), "widths": (4, 8, 16)}, (1, 32, 32, 1)),
    "segnet": ("segnet_indices", {"input_shape": (32, 32, 1), "encoder": ((4,), (4,), (8,), (8,), (8,)),
                                  "decoder": ((8,), (8,), (4,), (4,), (4,))}, (1, 32, 32, 1)),
    "highres3dnet": ("highres3dzmnet", {"input_shape": (8, 8, 8, 1), "stages": ((4, 1), (4, 2)),
                                        "stem_features": 4, "extra_features": 8}, (1, 8, 8, 8, 1)),
    "net2d3d": ("net2d3d", {"input_shape": (5, 16, 16, 1), "widths": (4, 8, 8, 8), "pyramid_features": (4, 4)},
                (1, 5, 16, 16, 1)),
    "stable_unet": ("attention_unet2d_fb", {"input_shape": (32, 32, 1), "widths": (4, 8, 8),
                                            "dropout": (0.1, 0.1, 0.1)}, (1, 32, 32, 1)),
    "resnet_unet": ("resnet50_unet", {"input_shape": (32, 32, 1), "base_filters": 2}, (1, 32, 32, 1)),
    "vgg_unet": ("vgg16_unet", {"input_shape": (32, 32, 1), "encoder": ((4,), (4,), (8,), (8,), (8,)),
                                "decoder": (8, 8, 4, 4, 4)}, (1, 32, 32, 1)),
    "emnet": ("emnet_v1_bn", {"input_shape": (32, 32, 1)}, (1, 32, 32, 1)),
    "cdeep3m": ("cdeep3m_3fm", {"input_shape": (3, 16, 16, 1)}, (1, 3, 16, 16, 1)),
}
