"""Prediction at any size: tiling with halo and blending, test-time augmentation, ensembles, and blockwise
prediction of volumes larger than memory with dask."""

from emzoo.inference.blockwise import predict_blockwise
from emzoo.inference.effective import measure_halo
from emzoo.inference.ensemble import Ensemble
from emzoo.inference.instances_blockwise import instances_blockwise
from emzoo.inference.predict import foreground, predict
from emzoo.inference.receptive import receptive_field

__all__ = ["predict", "predict_blockwise", "Ensemble", "foreground", "receptive_field", "measure_halo",
           "instances_blockwise"]
