"""Ensembles of models: average their probabilities, vote on their binarised masks, or average the best k.

The modes follow the sources (``TRAINING.md`` §1.4, §5.5):

- ``"average"``: the per-voxel mean of the members' probability maps (EM-stellar's average voting, CDeep3M's
  1fm + 3fm + 5fm mean, kept in float);
- ``"majority"``: each member's map is binarised with emzoo's one rule, :func:`emzoo.metrics.binarize`
  (foreground probability ``> threshold``, strict, as in every metric; 1-channel sigmoid and 2-class softmax
  members), or by arg-max for more classes, and the result is the fraction of members voting for each class.
  Two thresholds, two rules, both fixed: a member's *probability* equal to ``threshold`` is background (strict
  ``>``); the *vote fraction* is thresholded at 0.5 *inclusive* (:meth:`Ensemble.majority_mask`), so a tie (an even
  number of members split in half) counts as foreground, the rule ``TRAINING.md`` §1.4 proposes. Do not pass the
  vote fraction through ``binarize(fraction, 0.5)``: that would count ties as background;
- ``"topk"``: Guay et al.'s ensembles: rank the members by a score (e.g. validation MIoU), average the top ``k``.

Members with one sigmoid channel and members with a 2-class softmax may be mixed: the 1-channel maps are expanded
to ``[1 - p, p]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Ensemble"]

_MODES = ("average", "majority", "topk")


def _to_classes(prob: np.ndarray, classes: int) -> np.ndarray:
    have = prob.shape[-1]
    if have == classes:
        return prob
    if have == 1 and classes == 2:
        return np.concatenate([1.0 - prob, prob], axis=-1)
    raise ValueError(f"ensemble members disagree on the classes: {have} vs {classes}; only 1-channel sigmoid and "
                     "2-class softmax members can be mixed.")


class Ensemble:
    """Several models predicted as one.

    Parameters
    ----------
    members : sequence
        Models: ``keras.Model`` objects, entry names, ``entry.tag``, preset folders or ``.keras`` files (anything
        :func:`emzoo.predict` takes). Each is predicted with its own geometry and normalisation.
    mode : {"average", "majority", "topk"}
        How to combine (see the module notes).
    k : int, optional
        Members kept by ``"topk"``.
    threshold : float
        Binarisation threshold of ``"majority"`` for 1-channel and 2-class members: a member votes foreground
        where its probability is ``> threshold`` (:func:`emzoo.metrics.binarize`).
    scores : sequence of float, optional
        One score per member (higher is better) for ``"topk"``.

    Examples
    --------
    >>> ens = Ensemble(["a", "b", "c"], mode="topk", k=2, scores=[0.7, 0.9, 0.8])
    >>> ens.selected
    [1, 2]
    >>> p = [np.full((2, 2, 1), v, np.float32) for v in (0.2, 0.6, 0.8)]
    >>> float(Ensemble(["a", "b", "c"], mode="majority").combine(p)[0, 0, 0])
    0.6666666865348816
    """

    def __init__(self, members: Sequence[Any], mode: str = "average", k: int | None = None, threshold: float = 0.5,
                 *, scores: Sequence[float] | None = None) -> None:
        members = list(members)
        if not members:
            raise ValueError("an Ensemble needs at least one member.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
        if scores is not None and len(scores) != len(members):
            raise ValueError(f"scores has {len(scores)} values for {len(members)} members; give one per member.")
        if mode == "topk":
            if scores is None:
                raise ValueError("mode='topk' ranks members by score: pass scores=[...] (e.g. validation MIoU), one "
                                 "per member.")
            if k is None or not 1 <= int(k) <= len(members):
                raise ValueError(f"mode='topk' needs k between 1 and {len(members)}, got {k!r}")
        self.members = members
        self.mode = mode
        self.k = None if k is None else int(k)
        self.threshold = float(threshold)
        self.scores = None if scores is None else [float(s) for s in scores]

    def __repr__(self) -> str:
        return f"Ensemble({len(self.members)} members, mode={self.mode!r}, k={self.k}, threshold={self.threshold})"

    @property
    def selected(self) -> list[int]:
        """Indices of the members used (all but for ``"topk"``; ties in score keep the earlier member)."""
        if self.mode != "topk":
            return list(range(len(self.members)))
        order = sorted(range(len(self.members)), key=lambda i: (-self.scores[i], i))  # type: ignore[index]
        return sorted(order[: self.k])

    def votes(self, prob: np.ndarray) -> np.ndarray:
        """One member's binarised map as one-hot class votes (same shape as ``prob``).

        1-channel and 2-class members vote foreground where ``binarize(p_foreground, threshold)``, i.e.
        ``p > threshold`` (a probability equal to the threshold votes background); more classes vote by arg-max.
        """
        from emzoo.metrics import binarize

        classes = prob.shape[-1]
        if classes == 1:
            return binarize(prob, self.threshold).astype(np.float32)
        if classes == 2:
            fg = binarize(prob[..., 1:2], self.threshold).astype(np.float32)
            return np.concatenate([1.0 - fg, fg], axis=-1)
        winner = np.argmax(prob, axis=-1)
        return (winner[..., None] == np.arange(classes)).astype(np.float32)

    @staticmethod
    def majority_mask(fraction: np.ndarray) -> np.ndarray:
        """The majority mask of ``"majority"`` vote fractions: ``fraction >= 0.5``, so a tie counts as foreground.

        Examples
        --------
        >>> Ensemble.majority_mask(np.array([0.0, 0.5, 1.0])).tolist()
        [False, True, True]
        """
        return np.asarray(fraction) >= 0.5

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """Combine the members' probability maps (already predicted, in member order, selected members only).

        Returns
        -------
        numpy.ndarray
            ``average``/``topk``: mean probabilities; ``majority``: the fraction of members voting for each class.
        """
        acc = _Accumulator(self, max(p.shape[-1] for p in probs))
        for p in probs:
            acc.add(p)
        return acc.result()


class _Accumulator:
    """Running sum for :class:`Ensemble`, so only one member's output is held besides the sum."""

    def __init__(self, ensemble: Ensemble, classes: int) -> None:
        self.ensemble = ensemble
        self.classes = classes
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, prob: np.ndarray) -> None:
        if self.ensemble.mode == "majority":
            prob = self.ensemble.votes(prob)
        prob = _to_classes(np.asarray(prob, np.float32), self.classes)
        self.total = prob.copy() if self.total is None else self.total + prob
        self.count += 1

    def result(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("no member predictions were added to the ensemble.")
        return self.total / np.float32(self.count)
