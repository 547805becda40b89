"""The benchmark's pictures: one overlay per model and test item, with the item's scores, and one contact sheet.

``<out>/overlays/<model>/<item>.png`` (drawn by :func:`emzoo.viz.write_overlay`) and
``<out>/overlays/contact_sheet.png`` (the models in leaderboard order, each one
row of items; more than 8 items wrap). The items of a (Z, Y, X) test stack
are its slices (``slice_000``, ...; at most :data:`MAX_ITEMS`, evenly spaced, for a deep volume), a 2D test image
is one item (``image``). The folder is written beside its target and renamed into place, so it only ever holds one
run's pictures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from emzoo.benchmark.data import Split
from emzoo.io.atomic import atomic_dir

__all__ = ["MAX_ITEMS", "overlay_items", "item_scores", "model_folder_names", "write_overlays"]

#: A deeper test volume is shown by this many evenly spaced slices (one picture per slice and model).
MAX_ITEMS = 16


def overlay_items(shape: tuple[int, ...], max_items: int = MAX_ITEMS) -> list[tuple[str, int | None]]:
    """``(name, z index)`` of the items drawn for a test split of ``shape`` (``None``: the whole 2D image).

    Examples
    --------
    >>> overlay_items((512, 512))
    [('image', None)]
    >>> overlay_items((4, 8, 8))
    [('slice_0', 0), ('slice_1', 1), ('slice_2', 2), ('slice_3', 3)]
    >>> [z for _, z in overlay_items((100, 8, 8), max_items=3)]
    [0, 50, 99]
    """
    if len(shape) == 2:
        return [("image", None)]
    depth = int(shape[0])
    if depth <= max_items:
        picked = list(range(depth))
    else:
        picked = sorted({int(round(z)) for z in np.linspace(0, depth - 1, max_items)})
    digits = len(str(depth - 1))
    return [(f"slice_{z:0{digits}d}", z) for z in picked]


def item_scores(labels: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5,
                objects: str = "foreground") -> dict[str, float]:
    """F1, Jaccard, precision and recall of one item, counted as the leaderboard counts them.

    With ``objects="background"`` (boundary labels) the objects are the regions between boundaries: the scores
    are of ``1 - prob`` against ``1 - labels``, as in :func:`emzoo.benchmark.harness.score_objects`.

    Examples
    --------
    >>> item_scores(np.array([[0, 1, 1, 0]]), np.array([[0.1, 0.8, 0.4, 0.6]]))["f1"]
    0.5
    """
    from emzoo.metrics import pixel_metrics

    labels = (np.asarray(labels) > 0).astype(np.uint8)  # object ids count as foreground
    if objects == "background":
        labels, prob = 1 - labels, 1 - np.asarray(prob, np.float32)
    row = pixel_metrics(labels, prob, threshold=threshold)
    return {key: row[key] for key in ("f1", "jaccard", "ppv", "sensitivity")}


def model_folder_names(labels: list[str]) -> dict[str, str]:
    """A distinct, file-system-safe folder name per row label (``avg:a+b`` becomes ``avg_a_b``).

    Examples
    --------
    >>> model_folder_names(["unet", "avg:unet+segnet", "avg/unet+segnet"])
    {'unet': 'unet', 'avg:unet+segnet': 'avg_unet_segnet', 'avg/unet+segnet': 'avg_unet_segnet-2'}
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for label in labels:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model"
        name, n = base, 1
        while name.lower() in taken:  # case-insensitive file systems
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        names[label] = name
    return names


def write_overlays(test: Split, probabilities: Mapping[str, np.ndarray], out: str | Path, *,
                   threshold: float = 0.5, objects: str = "foreground", max_items: int = MAX_ITEMS) -> list[Path]:
    """Write the per-item overlays of every model and the contact sheet into ``out`` (replacing it as a whole).

    Parameters
    ----------
    test : Split
        The labelled test split the probabilities were predicted on.
    probabilities : mapping
        ``{row label: foreground probabilities}`` (each the test split's shape), in the order of the sheet's rows.
    out : path
        The overlays folder (``<benchmark out>/overlays``).
    threshold, objects
        As in :func:`emzoo.benchmark.benchmark`: the binarisation drawn and scored, and what the scores count.
    max_items : int
        At most this many slices per model.

    Returns
    -------
    list of Path
        The files written: ``<model>/<item>.png`` per model and item, then ``contact_sheet.png`` (absent when
        there is no model).
    """
    from emzoo.viz import write_contact_sheet, write_overlay

    items = overlay_items(test.raw.shape, max_items)
    folders = model_folder_names(list(probabilities))
    target = Path(out)
    written: list[str] = []
    titles: list[str] = []
    with atomic_dir(target) as tmp:
        for label, prob in probabilities.items():
            prob = np.asarray(prob, np.float32)
            if prob.shape != test.raw.shape:
                raise ValueError(f"probabilities of {label!r} have shape {prob.shape} but the test split "
                                 f"{test.raw.shape}.")
            for item, z in items:
                cut = (slice(None),) * 2 if z is None else (z,)
                labels = None if test.labels is None else test.labels[cut]
                scores = None if labels is None else item_scores(labels, prob[cut], threshold=threshold,
                                                                 objects=objects)
                rel = f"{folders[label]}/{item}.png"
                (tmp / folders[label]).mkdir(exist_ok=True)
                write_overlay(tmp / rel, test.raw[cut], prob[cut], labels, scores=scores, title=f"{label} | {item}",
                              threshold=threshold)
                written.append(rel)
                titles.append(f"{label} | {item}")
        if written:
            write_contact_sheet([tmp / rel for rel in written], tmp / "contact_sheet.png", titles=titles,
                                ncols=min(len(items), 8) if len(items) > 1 else math.ceil(math.sqrt(len(written))))
            written.append("contact_sheet.png")
    return [target / rel for rel in written]
