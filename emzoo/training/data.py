"""Training data: reading (raw, labels) pairs, hashing them, and the seeded patch loader.

Data forms accepted by :func:`load_pairs` (and so by :func:`emzoo.finetune`):

- a ``(raw, labels)`` or ``(raw, labels, weights)`` tuple of arrays: one 2D image ``(Y, X)``, a stack of 2D images or
  a volume ``(Z, Y, X)``;
- a dataset folder laid out like ``../shared/data/cardiac_mito``: ``<root>/train/raw.tif`` and
  ``<root>/train/labels.tif`` (the ``split`` sub-folder is used when it exists; otherwise ``raw.*`` and
  ``labels.*`` directly inside the folder). An optional ``weights.*`` file is read too;
- a list of any of these (several volumes: windows never straddle two of them).

:class:`PatchDataset` makes batch ``i`` from a generator seeded with ``(seed, i)`` alone, so a batch does not depend
on the loader's threads, their timing or on where a run was resumed: resuming at step ``s`` replays exactly the batches
an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.io.dataset import SPLITS, dataset_metadata, split_files
from emzoo.registry import KIND_KEYS, kind_key
from emzoo.training.augment import (
    Augment,
    adjust_intensity,
    read_window,
    sample_transform,
    window_coordinates,
)
from emzoo.training.sampling import Sampler

__all__ = [
    "TrainingVolume",
    "MODES",
    "training_mode",
    "DataSource",
    "read_image",
    "load_pairs",
    "prepare_labels",
    "PatchDataset",
    "prefetch",
]


#: Training's ``mode`` (recorded in histories) is the registry's lower-case kind key; kept under its old name.
MODES = KIND_KEYS


def training_mode(kind: str) -> str:
    """Training's spelling (``"2d"``, ``"multiframe"``, ``"3d"``) of any spelling of a model kind.

    Raises
    ------
    ValueError
        For a string that names no kind (:func:`emzoo.registry.model_kind`).

    Examples
    --------
    >>> training_mode("3D->2D"), training_mode("multiframe"), training_mode("3d")
    ('multiframe', 'multiframe', '3d')
    """
    return kind_key(kind)


@dataclass
class TrainingVolume:
    """One training volume: ``(Z, Y, X)`` raw (float32 once normalised), labels and an optional weight map."""

    raw: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class DataSource:
    """Where the data came from: a name and the sha256 of the raw and label bytes (recorded in the preset).

    Attributes
    ----------
    name : str
        Dataset name (``dataset.json``'s ``name``, else the folder name, else ``"arrays"``).
    sha256 : str
        Hash over every volume's shape, dtype and bytes, raw and labels, in order.
    class_names : tuple of str or None
        From ``dataset.json``'s ``labels`` when present.
    """

    name: str
    sha256: str
    class_names: tuple[str, ...] | None = None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a grayscale image, stack or volume into memory as ``(Y, X)`` or ``(Z, Y, X)`` (:func:`emzoo.io.read`).

    EM data are single-channel, so a 2D file read with several channels (``"YXC"``, e.g. a stack stored as one TIFF
    page with one sample per slice, as ``cardiac_mito/test`` is) is taken as a stack of those slices, with a
    warning.

    Examples
    --------
    >>> read_image("raw.tif").shape  # doctest: +SKIP
    (20, 512, 512)
    """
    from emzoo.io import read

    volume = read(str(path))
    data = np.asarray(volume.data)
    if volume.axes == "YXC" and data.shape[-1] > 1:
        warnings.warn(f"{path}: read as {data.shape[-1]} channels of {data.shape[:2]}; training data are single-"
                      f"channel, so they are taken as {data.shape[-1]} slices.", stacklevel=2)
        data = np.moveaxis(data, -1, 0)
    elif volume.axes == "ZYXC" and data.shape[-1] > 1:
        raise ValueError(f"{path} has {data.shape[-1]} channels; emzoo trains on single-channel EM data, so convert "
                         "it to one channel first.")
    return data


def _as_volume(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{what} must be a 2D image (Y, X) or a stack/volume (Z, Y, X), got shape {array.shape}.")
    return array


def _folder_pair(folder: Path, split: str | Sequence[str]) -> tuple[list[np.ndarray], str, tuple[str, ...] | None]:
    name, info = dataset_metadata(folder)
    label_names, class_names = info.get("labels"), None
    if isinstance(label_names, dict):
        class_names = tuple(str(label_names[k]) for k in sorted(label_names, key=int))
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist.")
    splits = [split] if isinstance(split, str) else list(split)
    source = next((folder / s for s in splits if (folder / s).is_dir()), None)
    if source is None:
        # Only training data may sit at the folder's root; a validation or test split never falls back to another
        # split or to the root (that would let the training or test data choose checkpoints).
        if "train" in splits and not any((folder / s).is_dir() for s in SPLITS):
            source = folder
        else:
            raise FileNotFoundError(f"{folder} has no {' or '.join(s + '/' for s in splits)} folder; pass that split's "
                                    "data explicitly (or omit it).")
    files = split_files(source)  # the one dataset-folder layout (emzoo.io.dataset)
    raw, labels = files.raw, files.labels
    if raw is None or labels is None:
        raise FileNotFoundError(
            f"no raw.* and labels.* in {source}; a dataset folder holds {splits[0]}/raw.tif and {splits[0]}/labels.tif "
            "(or raw.* and labels.* directly)."
        )
    arrays = [read_image(raw), read_image(labels)]
    if files.weights is not None:
        arrays.append(read_image(files.weights))
    return arrays, name, class_names


def _items(data: Any) -> list[Any]:
    if isinstance(data, (str, os.PathLike)):
        return [data]
    if isinstance(data, tuple) and 2 <= len(data) <= 3 and not isinstance(data[0], (str, os.PathLike, tuple)):
        return [data]
    if isinstance(data, (list, tuple)):
        return list(data)
    raise TypeError(f"training data must be a (raw, labels) pair of arrays, a dataset folder or a list of them; "
                    f"got {type(data).__name__}.")


def load_pairs(data: Any, *, split: str | Sequence[str] = "train") -> tuple[list[TrainingVolume], DataSource]:
    """Read training data into :class:`TrainingVolume` records (labels as read, raw not yet normalised).

    Parameters
    ----------
    data : tuple, path or list
        See the module docstring.
    split : str or sequence of str
        Sub-folder of a dataset folder (``"train"``, ``"test"``...); with several, the first that exists
        (validation data uses ``("val", "test")``).

    Returns
    -------
    volumes : list of TrainingVolume
    source : DataSource

    Raises
    ------
    ValueError
        If raw and labels differ in shape.

    Examples
    --------
    >>> vols, src = load_pairs((np.zeros((8, 8)), np.ones((8, 8))))
    >>> vols[0].raw.shape, src.name
    ((1, 8, 8), 'arrays')
    """
    volumes, names, class_names = [], [], None
    digest = hashlib.sha256()
    for item in _items(data):
        if isinstance(item, (str, os.PathLike)):
            arrays, name, class_names = _folder_pair(Path(item), split)
        else:
            arrays, name = list(item), "arrays"
            if not 2 <= len(arrays) <= 3:
                raise ValueError(f"expected (raw, labels) or (raw, labels, weights), got {len(arrays)} arrays.")
        raw = _as_volume(arrays[0], "raw")
        labels = _as_volume(arrays[1], "labels")
        weights = _as_volume(arrays[2], "weights").astype(np.float32) if len(arrays) == 3 else None
        for what, other in (("labels", labels), ("weights", weights)):
            if other is not None and other.shape != raw.shape:
                raise ValueError(f"raw {raw.shape} and {what} {other.shape} differ in shape; they must cover the "
                                 "same voxels.")
        for array in (raw, labels):
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))  # no copy of the bytes
        volumes.append(TrainingVolume(raw=raw, labels=labels, weights=weights))
        names.append(name)
    if not volumes:
        raise ValueError("no training data given.")
    name = names[0] if len(set(names)) == 1 else "+".join(dict.fromkeys(names))
    return volumes, DataSource(name=name, sha256=digest.hexdigest(), class_names=class_names)


def prepare_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class-index labels (uint8/int32) for a model with ``num_classes`` outputs.

    A one-channel (sigmoid) or two-class model binarises (``labels > 0``: 0/255 and 0/1 masks alike); more classes
    keep the values as class indices, which must be below ``num_classes``.

    Examples
    --------
    >>> prepare_labels(np.array([0, 255]), 1).tolist()
    [0, 1]
    """
    labels = np.asarray(labels)
    if num_classes <= 2:
        values = np.unique(labels) if labels.size <= 50_000_000 else np.unique(labels[::7])
        nonzero = values[values != 0]
        if len(nonzero) > 1:
            # {0, 7, 255} binarised silently would merge classes the user may not mean to merge.
            warnings.warn(f"labels hold {len(values)} distinct values ({', '.join(map(str, values[:6]))}"
                          f"{', ...' if len(values) > 6 else ''}) but the model has one foreground class: every "
                          "non-zero value becomes foreground. Pass num_classes= for class indices.", stacklevel=2)
        elif len(nonzero) == 0:
            warnings.warn("the labels hold no foreground at all: the model can only learn to predict background.",
                          stacklevel=2)
        return (labels > 0).astype(np.uint8)
    out = labels.astype(np.int32)
    top = int(out.max()) if out.size else 0
    if top >= num_classes or int(out.min()) < 0:
        raise ValueError(f"labels take values up to {top} but the model has {num_classes} classes; relabel to "
                         f"0..{num_classes - 1} or pass num_classes={top + 1}.")
    return out.astype(np.uint8) if num_classes <= 256 else out


class PatchDataset(keras.utils.PyDataset):
    """Seeded, augmented training batches (a ``keras.utils.PyDataset``; ``__getitem__`` is thread-safe).

    Parameters
    ----------
    volumes : sequence of TrainingVolume
        Normalised raw, class-index labels, optional weights.
    input_window : (Z, Y, X)
        Model input window (Z = 1 for 2D models, the frame count for multi-frame ones).
    label_window : (Z, Y, X)
        Model output window; centred in the input window.
    sampler : Sampler
        Prepared on the label volumes and ``label_window``.
    augment : Augment
        Augmentation.
    batch_size : int
        Windows per batch.
    steps : int
        Number of batches (``len(self)``).
    seed : int
        Batch ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    mode : {"2d", "multiframe", "3d"}
        Tensor layout: ``x`` is ``(B, Y, X, 1)``, ``(B, F, Y, X, 1)`` or ``(B, Z, Y, X, 1)``; ``y`` is ``(B, Y, X, k)``
        for the first two and ``(B, Z, Y, X, k)`` for 3D.
    weighted : bool
        Pack a weight channel after the labels (ones where a volume has no weight map).
    num_outputs : int
        The model's outputs; each gets the same ``y``.
    intensity_range : float
        Data range of the normalised raw, the unit of brightness shifts.
    **kwargs
        ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``keras.utils.PyDataset``.

    Examples
    --------
    >>> from emzoo.training.sampling import UniformSampler
    >>> vol = TrainingVolume(np.zeros((1, 32, 32), "float32"), np.zeros((1, 32, 32), "uint8"))
    >>> ds = PatchDataset([vol], input_window=(1, 16, 16), label_window=(1, 16, 16),
    ...                   sampler=UniformSampler().prepare([vol.labels], (1, 16, 16)), augment=Augment(),
    ...                   batch_size=2, steps=3, seed=0)
    >>> x, y = ds[0]
    >>> x.shape, y.shape
    ((2, 16, 16, 1), (2, 16, 16, 1))
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        *,
        input_window: tuple[int, int, int],
        label_window: tuple[int, int, int],
        sampler: Sampler,
        augment: Augment,
        batch_size: int,
        steps: int,
        seed: int,
        mode: str = "2d",
        weighted: bool = False,
        num_outputs: int = 1,
        intensity_range: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        mode = training_mode(mode)
        self.volumes = list(volumes)
        self.input_window = tuple(int(v) for v in input_window)
        self.label_window = tuple(int(v) for v in label_window)
        self.offset = tuple((i - o) // 2 for i, o in zip(self.input_window, self.label_window, strict=True))
        if any(o < 0 for o in self.offset):
            raise ValueError(f"the output window {self.label_window} is larger than the input window "
                             f"{self.input_window}; models must not enlarge their input.")
        self.sampler = sampler
        self.augment = augment
        self.batch_size = int(batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.mode = mode
        self.weighted = weighted
        self.num_outputs = int(num_outputs)
        self.intensity_range = float(intensity_range)

    def __len__(self) -> int:
        return self.steps

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One window: raw ``input_window``, labels and weights ``label_window`` (all ``(Z, Y, X)``)."""
        v, corner = self.sampler.sample(rng)
        vol = self.volumes[v]
        transform = sample_transform(self.augment, rng)
        start = tuple(c - o for c, o in zip(corner, self.offset, strict=True))
        z, yx = window_coordinates(start, self.input_window, transform)
        oz, oy, ox = self.offset
        lz, ly, lx = self.label_window
        lab_z, lab_yx = z[oz:oz + lz], yx[:, oy:oy + ly, ox:ox + lx]
        integer = transform.integer
        raw = read_window(vol.raw, z, yx, order=1, integer=integer)
        raw = adjust_intensity(raw, transform, self.intensity_range)
        labels = read_window(vol.labels, lab_z, lab_yx, order=0, integer=integer)
        weights = None
        if self.weighted:
            weights = (np.ones(labels.shape, np.float32) if vol.weights is None
                       else read_window(vol.weights, lab_z, lab_yx, order=0, integer=integer))
        return raw, labels, weights

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range for {self.steps} steps")
        rng = np.random.default_rng([self.seed, int(index)])
        xs, ys = [], []
        for _ in range(self.batch_size):
            raw, labels, weights = self.sample(rng)
            y = labels.astype(np.float32)[..., None]
            if weights is not None:
                y = np.concatenate([y, weights.astype(np.float32)[..., None]], axis=-1)
            xs.append(raw.astype(np.float32)[..., None])
            ys.append(y)
        x, y = np.stack(xs), np.stack(ys)
        if self.mode == "2d":
            x = x[:, 0]
        if self.mode in ("2d", "multiframe"):
            y = y[:, 0]
        if self.num_outputs > 1:
            return x, tuple([y] * self.num_outputs)
        return x, y


def prefetch(dataset: keras.utils.PyDataset, start: int, stop: int, *, workers: int = 1,
             queue: int = 4) -> Iterator[Any]:
    """Yield ``dataset[start] .. dataset[stop - 1]`` in order, computed ahead by ``workers`` threads.

    Order and content do not depend on ``workers``: each batch is a function of its index only.

    Examples
    --------
    >>> list(prefetch([10, 11, 12], 1, 3))
    [11, 12]
    """
    workers = max(1, int(workers))
    depth = max(queue, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emzoo-data") as pool:
        pending = [pool.submit(dataset.__getitem__, i) for i in range(start, min(stop, start + depth))]
        nxt = start + len(pending)
        for _ in range(start, stop):
            batch = pending.pop(0).result()
            if nxt < stop:
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield batch
