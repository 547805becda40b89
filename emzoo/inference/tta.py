"""Test-time augmentation: predict transformed copies, undo each transform on the output, average.

The groups follow ``TRAINING.md`` §7: ``"d4"`` is the 8 in-plane transforms ``rot90^r ∘ flip_x^f``; ``"d4+z"``
adds the z reversal (16 in 3D; z is never swapped with y or x because EM stacks are anisotropic); ``"flips"`` is
every combination of axis reversals (4 in 2D: y, x; 8 in 3D and for multi-frame nets: z, y, x). For 2D nets the
z reversal cannot change a per-slice prediction, so ``"d4+z"`` is ``"d4"`` there (as CDeep3M 1fm does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from emzoo.registry import kind_key

__all__ = ["Transform", "tta_transforms", "TTA_MODES"]

TTA_MODES = (None, "none", "flips", "d4", "d4+z")


@dataclass(frozen=True)
class Transform:
    """One element of the group, acting on batches shaped ``(B, Z, Y, X, C)``.

    ``forward`` flips (z, y, x as requested) and then rotates by ``rot`` quarter turns in the (y, x) plane;
    ``inverse`` undoes it on the model's output.
    """

    rot: int = 0
    flip_z: bool = False
    flip_y: bool = False
    flip_x: bool = False

    @property
    def name(self) -> str:
        parts = [f"rot{90 * self.rot}"] if self.rot else []
        parts += [f"flip_{a}" for a, f in zip("zyx", (self.flip_z, self.flip_y, self.flip_x), strict=True) if f]
        return "+".join(parts) or "identity"

    def _flip(self, x: np.ndarray) -> np.ndarray:
        axes = tuple(a for a, f in zip((1, 2, 3), (self.flip_z, self.flip_y, self.flip_x), strict=True) if f)
        return np.flip(x, axis=axes) if axes else x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Transform an input batch."""
        x = self._flip(x)
        if self.rot:
            x = np.rot90(x, self.rot, axes=(2, 3))
        return np.ascontiguousarray(x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo the transform on an output batch."""
        if self.rot:
            y = np.rot90(y, -self.rot, axes=(2, 3))
        return self._flip(y)


def tta_transforms(tta: str | None, kind: str) -> list[Transform]:
    """The transforms of a TTA mode for a net of ``kind`` (any spelling of :func:`emzoo.registry.model_kind`).

    Examples
    --------
    >>> len(tta_transforms("d4", "2d")), len(tta_transforms("d4+z", "3d")), len(tta_transforms("flips", "2d"))
    (8, 16, 4)
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if tta in (None, "none"):
        return [Transform()]
    kind = kind_key(kind)
    z_options = (False,) if kind == "2d" else (False, True)
    if tta == "flips":
        return [Transform(flip_z=z, flip_y=y, flip_x=x)
                for z, y, x in itertools.product(z_options, (False, True), (False, True))]
    d4 = [(r, f) for f in (False, True) for r in range(4)]
    zs = z_options if tta == "d4+z" else (False,)
    return [Transform(rot=r, flip_x=f, flip_z=z) for z in zs for r, f in d4]
