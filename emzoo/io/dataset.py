"""The dataset-folder layout: which files of a folder are a split's raw image, labels and weights.

One rule for every reader of dataset folders (the benchmark harness, fine-tuning, the CLI), laid out like
``../shared/data/cardiac_mito``::

    <root>/dataset.json            optional: {"name": ..., "labels": {"1": "mitochondria"}, ...}
    <root>/train/raw.tif           the raw image (stems RAW_STEMS, any suffix in SUFFIXES, or a folder of slices)
    <root>/train/labels.tif        its labels (stems LABEL_STEMS)
    <root>/train/weights.tif       optional per-voxel loss weights (stem "weights")
    <root>/val/..., <root>/test/...

Examples
--------
>>> import numpy as np, emzoo
>>> _ = emzoo.write(tmp / "train" / "raw.tif", np.zeros((2, 8, 8), "uint8"))  # doctest: +SKIP
>>> split_files(tmp, "train").raw.name  # doctest: +SKIP
'raw.tif'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SPLITS", "RAW_STEMS", "LABEL_STEMS", "WEIGHT_STEMS", "SUFFIXES", "SplitFiles", "find_file",
           "split_files", "dataset_metadata"]

SPLITS = ("train", "val", "test")
RAW_STEMS = ("raw", "image", "images")
LABEL_STEMS = ("labels", "label", "gt", "groundtruth", "masks")
WEIGHT_STEMS = ("weights",)
SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".zarr", ".npy", ".mrc", ".png")


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split; None where the folder has none."""

    raw: Path | None
    labels: Path | None
    weights: Path | None


def find_file(folder: str | Path, stems: tuple[str, ...]) -> Path | None:
    """The first ``<stem><suffix>`` (stems in order, then :data:`SUFFIXES` in order) or ``<stem>/`` slice folder.

    Examples
    --------
    >>> find_file("/nonexistent", RAW_STEMS) is None
    True
    """
    folder = Path(folder)
    for stem in stems:
        for suffix in SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.exists():
                return candidate
        if (folder / stem).is_dir():  # a folder of slices
            return folder / stem
    return None


def split_files(folder: str | Path, split: str | None = None) -> SplitFiles:
    """The raw, labels and weights files of ``folder/split`` (of ``folder`` itself when ``split`` is None)."""
    source = Path(folder) / split if split else Path(folder)
    return SplitFiles(find_file(source, RAW_STEMS), find_file(source, LABEL_STEMS), find_file(source, WEIGHT_STEMS))


def dataset_metadata(folder: str | Path) -> tuple[str, dict[str, Any]]:
    """``(name, dataset.json content)`` of a dataset folder; the folder's name and ``{}`` without a dataset.json."""
    folder = Path(folder)
    path = folder / "dataset.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return str(meta.get("name", folder.name)), meta
