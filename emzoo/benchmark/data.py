"""Datasets for the harness: a folder with ``train/`` and ``test/`` (``raw`` + ``labels`` in any format emzoo reads),
the layout of ``shared/data``, or explicit file pairs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.io.dataset import RAW_STEMS, SPLITS, SUFFIXES, dataset_metadata, split_files

__all__ = ["Split", "Dataset", "load_dataset", "demo_dataset_path", "array_sha256"]


@dataclass(frozen=True)
class Split:
    """One split: raw image stack and binary labels, both (Y, X) or (Z, Y, X)."""

    raw: np.ndarray
    labels: np.ndarray | None
    raw_path: str
    labels_path: str | None

    @property
    def sha256(self) -> str:
        """Digest of the raw and label voxels (not of the files, so the format does not matter)."""
        return array_sha256(self.raw, self.labels)


@dataclass(frozen=True)
class Dataset:
    """A named dataset with a test split and optional train/val splits."""

    name: str
    test: Split
    train: Split | None = None
    val: Split | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def array_sha256(*arrays: np.ndarray | None) -> str:
    """sha256 over dtype, shape and bytes of each array (``None`` skipped)."""
    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def demo_dataset_path() -> Path:
    """The small real sample shipped inside the package (cardiac mitochondria, 256x256 crops)."""
    return Path(__file__).resolve().parents[1] / "data" / "cardiac_mito_sample"


def _read(path: str | Path) -> np.ndarray:
    from emzoo.io import read

    return np.asarray(read(path).data)


def _binary_labels(labels: np.ndarray, path: str) -> np.ndarray:
    values = np.unique(labels)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        raise ValueError(
            f"labels in {path} are not binary (values {values[:8].tolist()}...); the harness scores binary "
            "segmentation: pass labels with 0 = background and one foreground value."
        )
    return (labels > 0).astype(np.uint8)


def load_split(raw_path: str | Path, labels_path: str | Path | None) -> Split:
    """Read one raw/labels pair and check the shapes agree."""
    raw = _read(raw_path)
    labels = None
    if labels_path is not None:
        labels = _binary_labels(_read(labels_path), str(labels_path))
        if labels.shape != raw.shape:
            raise ValueError(
                f"raw {raw_path} has shape {raw.shape} but labels {labels_path} have {labels.shape}; "
                "they must cover the same voxels."
            )
    return Split(raw, labels, str(raw_path), None if labels_path is None else str(labels_path))


def load_dataset(
    source: str | Path | None = None,
    *,
    test: tuple[str | Path, str | Path] | None = None,
    train: tuple[str | Path, str | Path] | None = None,
    val: tuple[str | Path, str | Path] | None = None,
) -> Dataset:
    """Load a dataset folder (``train/``, optional ``val/``, ``test/``) or explicit ``(raw, labels)`` pairs.

    Parameters
    ----------
    source : path, optional
        Folder laid out like ``shared/data/cardiac_mito``. ``None`` with no pairs gives the packaged demo sample.
    test, train, val : (raw path, labels path), optional
        Explicit file pairs; they override the folder's splits.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If the folder or a split's files are missing (the message lists the file names looked for).
    """
    splits: dict[str, Split] = {}
    name = "custom"
    meta: dict[str, Any] = {}
    if source is None and test is None:
        source = demo_dataset_path()
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder {folder} does not exist; pass a folder with train/ and test/.")
        name, meta = dataset_metadata(folder)
        for split in SPLITS:
            if not (folder / split).is_dir():
                continue
            files = split_files(folder, split)
            if files.raw is None:
                raise FileNotFoundError(f"{folder / split} holds no raw image (looked for {'/'.join(RAW_STEMS)} with "
                                        f"{', '.join(SUFFIXES)}).")
            if files.labels is None and split != "train":
                continue  # an unlabelled test/val split cannot be scored
            splits[split] = load_split(files.raw, files.labels)
    for split, pair in (("train", train), ("val", val), ("test", test)):
        if pair is not None:
            splits[split] = load_split(*pair)
    if "test" not in splits:
        raise FileNotFoundError(
            f"no labelled test split found in {source}: expected test/raw.* and test/labels.*, or pass test=(raw, labels)."
        )
    return Dataset(name=name, test=splits["test"], train=splits.get("train"), val=splits.get("val"), meta=meta)
