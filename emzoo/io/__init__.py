"""Reading and writing EM images and volumes (TIFF, PNG/TIFF slice folders, HDF5, Zarr/OME-Zarr, MRC, .npy) and
the intensity normalisation recorded with each model."""

from emzoo.io.core import read, write
from emzoo.io.normalize import fit_normalization, normalize, resolve_normalization
from emzoo.io.volume import Volume, check_array

__all__ = ["read", "write", "Volume", "check_array", "normalize", "fit_normalization", "resolve_normalization"]
