"""On-the-fly augmentation of training windows, applied identically to raw, labels and weight maps (numpy/scipy).

Every geometric change (flips, rot90, arbitrary rotation, zoom, elastic deformation, z flips) is folded into one map
from output pixels to source coordinates, so each window is read from the volume exactly once: by integer indexing
when the map is a signed permutation (flips, rot90: exact, fast) and by ``scipy.ndimage.map_coordinates``
otherwise (linear for raw, nearest for labels and masks, mirrored borders). The label window is the centred crop of
the same coordinate grid, so labels stay aligned with the input even when the model's output is smaller than its
input (``net2d3d``) or is one frame of a multi-frame input (CDeep3M 3fm/5fm).

z is never swapped with y or x (EM stacks are usually anisotropic); z flips and z zoom are separate switches, meant
for 3D windows of (near-)isotropic data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["Augment", "Transform", "sample_transform", "window_coordinates", "read_window", "adjust_intensity"]


@dataclass(frozen=True)
class Augment:
    """Augmentation switches and ranges.

    Attributes
    ----------
    flip : bool
        Random flips of y and x (each with probability 1/2).
    rot90 : bool
        Random in-plane rotation by a multiple of 90°.
    rotation : float
        Arbitrary in-plane rotation, uniform in ``[-rotation, rotation]`` degrees (0: off).
    zoom : float
        Scale factor uniform in ``[1 - zoom, 1 + zoom]`` (0: off).
    zoom_independent : bool
        Draw separate y and x factors (Keras ``ImageDataGenerator``, used by EM-net).
    zoom_z : bool
        Zoom z with the y factor as well (3D windows of isotropic data; HighRes3DZMNet's ±10 % rescaling).
    elastic : float
        Standard deviation in pixels of the elastic displacement at the control points (0: off).
    elastic_grid : int
        Control points per in-plane side; the field between them is cubic.
    brightness : float
        Additive shift uniform in ``[-brightness, brightness]`` × the training data's intensity range.
    contrast : float
        Contrast factor uniform in ``[1 - contrast, 1 + contrast]`` about the window mean.
    flip_z : bool
        Random z reversal (3D windows, multi-frame inputs; never for 2D stacks of unrelated images).

    Examples
    --------
    >>> Augment.none().is_identity
    True
    """

    flip: bool = True
    rot90: bool = True
    rotation: float = 0.0
    zoom: float = 0.0
    zoom_independent: bool = False
    zoom_z: bool = False
    elastic: float = 0.0
    elastic_grid: int = 4
    brightness: float = 0.0
    contrast: float = 0.0
    flip_z: bool = False

    def __post_init__(self) -> None:
        if self.rotation < 0 or self.zoom < 0 or self.elastic < 0 or self.brightness < 0 or self.contrast < 0:
            raise ValueError(f"augmentation ranges must be >= 0, got {self}.")
        if self.zoom >= 1 or self.contrast >= 1:
            raise ValueError(f"zoom and contrast must be < 1 (factors 1 ± value), got zoom={self.zoom}, "
                             f"contrast={self.contrast}.")
        if self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be >= 2 control points, got {self.elastic_grid}.")

    @classmethod
    def none(cls) -> Augment:
        """No augmentation (validation windows, tests)."""
        return cls(flip=False, rot90=False)

    @property
    def is_identity(self) -> bool:
        """True when nothing is switched on."""
        return self == Augment.none()

    def to_dict(self) -> dict[str, Any]:
        """The switches as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class Transform:
    """One drawn augmentation.

    Attributes
    ----------
    matrix : ndarray
        ``(2, 2)`` map from an output offset (dy, dx) about the window centre to the source offset.
    z_scale : float
        Source z offset per output z offset (-1 reverses z).
    elastic : ndarray or None
        ``(2, g, g)`` displacement (dy, dx) in pixels at the control points.
    brightness, contrast : float
        Intensity change (shift as a fraction of the intensity range; factor).
    """

    matrix: np.ndarray
    z_scale: float = 1.0
    elastic: np.ndarray | None = None
    brightness: float = 0.0
    contrast: float = 1.0

    @property
    def integer(self) -> bool:
        """The map sends pixel centres to pixel centres (no interpolation needed)."""
        return (self.elastic is None and abs(abs(self.z_scale) - 1.0) < 1e-9
                and bool(np.all(np.isin(np.round(self.matrix, 9), (-1.0, 0.0, 1.0)))))


IDENTITY = Transform(matrix=np.eye(2))


def sample_transform(augment: Augment, rng: np.random.Generator) -> Transform:
    """Draw one :class:`Transform` (the draws happen in a fixed order, so a seeded ``rng`` reproduces it).

    Examples
    --------
    >>> sample_transform(Augment.none(), np.random.default_rng(0)).integer
    True
    """
    u = rng.random(8)
    matrix = np.eye(2)
    if augment.flip:
        matrix = matrix @ np.diag([-1.0 if u[0] < 0.5 else 1.0, -1.0 if u[1] < 0.5 else 1.0])
    if augment.rot90:
        k = int(u[2] * 4) % 4
        matrix = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), k) @ matrix
    if augment.rotation:
        theta = np.deg2rad((2 * u[3] - 1) * augment.rotation)
        c, s = np.cos(theta), np.sin(theta)
        matrix = np.array([[c, -s], [s, c]]) @ matrix
    z_scale = 1.0
    if augment.zoom:
        zy = 1.0 + (2 * u[4] - 1) * augment.zoom
        zx = 1.0 + (2 * u[5] - 1) * augment.zoom if augment.zoom_independent else zy
        matrix = matrix @ np.diag([zy, zx])
        if augment.zoom_z:
            z_scale = zy
    if augment.flip_z and u[6] < 0.5:
        z_scale = -z_scale
    elastic = None
    if augment.elastic:
        g = augment.elastic_grid
        elastic = rng.normal(0.0, augment.elastic, size=(2, g, g))
    brightness = contrast = 0.0
    if augment.brightness or augment.contrast:
        b, c = rng.random(2)
        brightness = (2 * b - 1) * augment.brightness
        contrast = (2 * c - 1) * augment.contrast
    return Transform(matrix=np.round(matrix, 12), z_scale=z_scale, elastic=elastic, brightness=brightness,
                     contrast=1.0 + contrast)


def _elastic_field(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cubic upsampling of the ``(2, g, g)`` control-point displacements to ``(2, *shape)``."""
    g = coarse.shape[-1]
    gy, gx = np.meshgrid(np.linspace(0, g - 1, shape[0]), np.linspace(0, g - 1, shape[1]), indexing="ij")
    return np.stack([ndimage.map_coordinates(c, [gy, gx], order=3, mode="nearest") for c in coarse])


def window_coordinates(
    start: tuple[int, int, int], shape: tuple[int, int, int], transform: Transform = IDENTITY
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates of every pixel of a window.

    Parameters
    ----------
    start : (z, y, x)
        Corner of the untransformed window in the volume (may lie partly outside; borders are mirrored).
    shape : (Z, Y, X)
        Window shape.
    transform : Transform
        The augmentation, about the window centre.

    Returns
    -------
    z : ndarray
        ``(Z,)`` source z of each output plane.
    yx : ndarray
        ``(2, Y, X)`` source (y, x) of each output pixel (the same on every plane).

    Examples
    --------
    >>> z, yx = window_coordinates((0, 10, 20), (1, 2, 2))
    >>> z.tolist(), yx[0].tolist(), yx[1].tolist()
    ([0.0], [[10.0, 10.0], [11.0, 11.0]], [[20.0, 21.0], [20.0, 21.0]])
    """
    wz, wy, wx = shape
    cz, cy, cx = (s + (w - 1) / 2.0 for s, w in zip(start, shape, strict=True))
    z = cz + transform.z_scale * (np.arange(wz) - (wz - 1) / 2.0)
    dy, dx = np.meshgrid(np.arange(wy) - (wy - 1) / 2.0, np.arange(wx) - (wx - 1) / 2.0, indexing="ij")
    m = transform.matrix
    yx = np.stack([cy + m[0, 0] * dy + m[0, 1] * dx, cx + m[1, 0] * dy + m[1, 1] * dx])
    if transform.elastic is not None:
        yx = yx + _elastic_field(transform.elastic, (wy, wx))
    return z, yx


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Mirror integer indices into ``[0, n)`` (scipy's ``mode="mirror"``: the edge pixel is not repeated)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def read_window(
    volume: np.ndarray, z: np.ndarray, yx: np.ndarray, *, order: int, integer: bool
) -> np.ndarray:
    """Sample ``volume`` (``(Z, Y, X)``) at the coordinates of :func:`window_coordinates`.

    Parameters
    ----------
    volume : ndarray
        Source volume.
    z, yx : ndarray
        Coordinates (a crop of them for a smaller label window).
    order : int
        Interpolation order (1 for raw, 0 for labels and masks); ignored when ``integer``.
    integer : bool
        The coordinates are whole pixels in z and in-plane (plain indexing, exact).

    Returns
    -------
    ndarray
        ``(len(z), *yx.shape[1:])`` in the volume's dtype (float32 when interpolated).
    """
    nz, ny, nx = volume.shape
    if integer:
        zi = _mirror(np.rint(z).astype(np.int64), nz)
        yi = _mirror(np.rint(yx[0]).astype(np.int64), ny)
        xi = _mirror(np.rint(yx[1]).astype(np.int64), nx)
        return volume[zi[:, None, None], yi[None], xi[None]]
    dtype = np.float32 if order else volume.dtype
    if np.allclose(z, np.rint(z)):
        # In-plane transforms: one 2D interpolation per plane (cheaper than a 3D one with integer z).
        planes = [ndimage.map_coordinates(volume[int(k)], yx, order=order, mode="mirror", output=dtype)
                  for k in _mirror(np.rint(z).astype(np.int64), nz)]
        return np.stack(planes)
    coords = np.stack([np.broadcast_to(z[:, None, None], (len(z), *yx.shape[1:])),
                       np.broadcast_to(yx[0], (len(z), *yx.shape[1:])),
                       np.broadcast_to(yx[1], (len(z), *yx.shape[1:]))])
    return ndimage.map_coordinates(volume, coords, order=order, mode="mirror", output=dtype)


def adjust_intensity(window: np.ndarray, transform: Transform, intensity_range: float) -> np.ndarray:
    """Brightness and contrast: ``(x - mean)·contrast + mean + brightness·intensity_range`` (raw only).

    Examples
    --------
    >>> t = Transform(matrix=np.eye(2), brightness=0.5, contrast=2.0)
    >>> adjust_intensity(np.array([0.0, 2.0], "float32"), t, 1.0).tolist()
    [-0.5, 3.5]
    """
    if transform.brightness == 0.0 and transform.contrast == 1.0:
        return window
    mean = window.mean(dtype=np.float64)
    out = (window - mean) * transform.contrast + mean + transform.brightness * intensity_range
    return out.astype(np.float32)
