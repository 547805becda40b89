"""The leaderboard harness: score zoo entries, presets and ensembles on the user's own data.

EM-stellar's lesson is that no network wins on every dataset and metric, so the harness scores every model the same
way on the user's test split (pretrained, or fine-tuned on the user's train split), ensembles their probabilities,
and keeps a provenance record per row so any number in the table can be reproduced.
"""

from __future__ import annotations

import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emzoo._validate import check_int
from emzoo.benchmark.data import Dataset, Split, array_sha256, load_dataset
from emzoo.benchmark.instance_scores import INSTANCE_COLUMNS
from emzoo.benchmark.report import METRIC_COLUMNS, write_outputs

__all__ = ["ModelSpec", "parse_model_spec", "benchmark", "METRIC_COLUMNS"]
_ENSEMBLE_MODES = {"avg": "average", "average": "average", "majority": "majority"}


@dataclass(frozen=True)
class ModelSpec:
    """One leaderboard row to compute.

    ``kind`` is ``"model"`` (an entry, ``entry.tag`` or a preset folder) or ``"ensemble"`` (``mode`` is
    ``"average"``, ``"majority"`` or ``"topk"``; ``members`` name other rows; ``k`` for top-k).
    """

    label: str
    kind: str
    source: str = ""
    mode: str = ""
    members: tuple[str, ...] = ()
    k: int = 0


def parse_model_spec(text: str) -> ModelSpec:
    """Parse a model or ensemble spec.

    Examples
    --------
    >>> parse_model_spec("emnet_v2_4x.cardiac_mito").kind
    'model'
    >>> parse_model_spec("avg:unet+unet_bn").members
    ('unet', 'unet_bn')
    >>> parse_model_spec("top3").k
    3
    """
    text = text.strip()
    if not text:
        raise ValueError("empty model spec; give an entry name, entry.tag, a preset folder or an ensemble spec.")
    lowered = text.lower()
    if lowered.startswith("top") and lowered[3:].isdigit():
        k = int(lowered[3:])
        if k < 2:
            raise ValueError(f"{text!r}: a top-k ensemble needs k >= 2.")
        return ModelSpec(label=text, kind="ensemble", mode="topk", k=k)
    if ":" in text and not Path(text).exists():
        mode_text, _, members_text = text.partition(":")
        mode = _ENSEMBLE_MODES.get(mode_text.lower())
        if mode is None:
            raise ValueError(
                f"unknown ensemble mode {mode_text!r} in {text!r}; use 'avg:a+b+c', 'majority:a+b+c' or 'top3'."
            )
        members = tuple(m.strip() for m in members_text.split("+") if m.strip())
        if len(members) < 2:
            raise ValueError(f"{text!r}: an ensemble needs at least two members joined by '+'.")
        return ModelSpec(label=text, kind="ensemble", mode=mode, members=members)
    return ModelSpec(label=text, kind="model", source=text)


def _entry_of(source: str) -> str | None:
    from emzoo.registry import get_entry, split_name_tag

    path = Path(source)
    if path.is_dir():
        cfg = path / "config.json"
        if cfg.is_file():
            import json

            return json.loads(cfg.read_text()).get("entry")
        return None
    try:
        return get_entry(split_name_tag(source)[0]).info.name
    except KeyError:
        return None


def _cost(source: str) -> tuple[float, str]:
    """(GFLOPs, the input they are counted at) from the registry; NaN where unknown.

    2D entries are compared at one common input, 1x512x512x1 (exact: they are fully convolutional); volumetric
    entries at their own reference input.
    """
    from emzoo.registry import entry_info

    entry = _entry_of(source)
    if entry is None:
        return math.nan, ""
    meta = entry_info(entry)
    if meta.dims == "2D":
        return meta.gflops_at((512, 512)), "1x512x512x1"
    return meta.gflops, "x".join(map(str, meta.flops_input))


def _weights_digest(models: Sequence[Any]) -> str:
    # Over the weight values, not the .h5 file: HDF5 files embed timestamps, values do not.
    return array_sha256(*[np.asarray(w) for m in models for w in m.weights])


def _device() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else _cpu_name()
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    return "cpu"


def _cpu_name() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU: {model}, {os.cpu_count()} cores"


def _holdout(train: Split, fraction: float, gap: int = 1) -> tuple[Split, Split | None]:
    """Split off the last slices of a stack as validation, with :func:`emzoo.training.folds.holdout_split`.

    The same splitter as fine-tuning and K-fold: a contiguous validation slab at the end, ``gap`` slices before it
    dropped so that no training slice neighbours a validation slice. No validation split (``None``) when there are
    no labels, a single 2D image, ``fraction`` outside (0, 1), or too few slices to keep a training slice.
    """
    from emzoo.training.data import TrainingVolume
    from emzoo.training.folds import holdout_split

    if train.labels is None or train.raw.ndim < 3 or not 0 < fraction < 1:
        return train, None
    n = train.raw.shape[0]
    if n - max(1, int(round(n * fraction))) - gap < 1:
        return train, None
    (fit,), (val,), _ = holdout_split([TrainingVolume(train.raw, train.labels)], fraction, gap=gap)
    return (Split(fit.raw, fit.labels, train.raw_path, train.labels_path),
            Split(val.raw, val.labels, train.raw_path, train.labels_path))


class _Runner:
    """Holds the options of one benchmark run and the per-model predictions that ensembles reuse."""

    def __init__(self, dataset: Dataset, options: dict[str, Any], log: Callable[[str], None]):
        self.dataset = dataset
        self.options = options
        self.log = log
        self.test_probs: dict[str, np.ndarray] = {}
        self.val_probs: dict[str, np.ndarray] = {}
        self.val_split: Split | None = dataset.val
        self.fit_split: Split | None = dataset.train
        if options["finetune"] and dataset.train is not None and dataset.val is None:
            self.fit_split, self.val_split = _holdout(dataset.train, options["val_fraction"])
        if self.val_split is None and not options["finetune"]:
            # Pretrained weights never saw the user's data, so the train split is a fair validation set for them.
            self.val_split = dataset.train

    def predict(self, model: Any, raw: np.ndarray) -> np.ndarray:
        from emzoo.inference import foreground, predict

        prob = predict(model, raw, tile=self.options["tile"], halo=self.options["halo"], tta=self.options["tta"],
                       progress=False)
        return np.asarray(foreground(prob), dtype=np.float32)

    def acquire(self, spec: ModelSpec) -> tuple[Any, dict[str, Any]]:
        """The model for a row: pretrained weights, or fine-tuned on the train split."""
        steps = self.options["finetune"]
        if not steps:
            from emzoo.hub.presets import load

            return load(spec.source), {"weights": "pretrained"}
        if self.fit_split is None or self.fit_split.labels is None:
            raise ValueError("fine-tuning needs a labelled train split (train/raw.* + train/labels.*).")
        from emzoo.training import finetune, kfold

        train = (self.fit_split.raw, self.fit_split.labels)
        val = None if self.val_split is None else (self.val_split.raw, self.val_split.labels)
        common = dict(steps=steps, seed=self.options["seed"], progress=self.options["progress"],
                      **self.options["finetune_kwargs"])
        if self.options["kfold"]:
            result = kfold(spec.source, train, k=self.options["kfold"], **common)
            return result.ensemble, {"weights": f"fine-tuned {steps} steps, {self.options['kfold']}-fold mean"}
        model, _history = finetune(spec.source, train, val, **common)
        return model, {"weights": f"fine-tuned {steps} steps"}

    def score(self, prob: np.ndarray, split: Split) -> dict[str, float]:
        row = score_objects(split.labels, prob, objects=self.options["objects"], threshold=self.options["threshold"])
        if self.options.get("instances"):
            from emzoo.benchmark.instance_scores import score_instances

            row.update(score_instances(split.labels, prob, method=self.options["instances"],
                                       threshold=self.options["threshold"], objects=self.options["objects"],
                                       volume=self.options.get("instances_3d", False),
                                       min_size=self.options.get("instance_min_size", 0)))
        return row

    def run_model(self, spec: ModelSpec) -> dict[str, Any]:
        start = time.perf_counter()
        model, how = self.acquire(spec)
        self.test_probs[spec.label] = self.predict(model, self.dataset.test.raw)
        if self.options["need_val"] and self.val_split is not None and self.val_split.labels is not None:
            self.val_probs[spec.label] = self.predict(model, self.val_split.raw)
        row = self.score(self.test_probs[spec.label], self.dataset.test)
        gflops, flops_input = _cost(spec.source)
        models = getattr(model, "members", [model])  # a k-fold result is an Ensemble of fold models
        row.update(gflops=gflops * len(models), params=int(sum(m.count_params() for m in models)),
                   flops_input=flops_input)
        row["provenance"] = {**how, "weights_sha256": _weights_digest(models), "wall_s": time.perf_counter() - start}
        return row

    def combine(self, labels: Sequence[str], probs: dict[str, np.ndarray], mode: str) -> np.ndarray:
        """Average the members' foreground maps, or take EM-stellar's majority vote as a binary mask."""
        from emzoo.inference import Ensemble

        ensemble = Ensemble(list(labels), mode=mode, threshold=self.options["threshold"])
        combined = ensemble.combine([probs[m][..., None] for m in labels])[..., 0]
        if mode == "majority":
            # combined is the fraction of members voting foreground; a tie counts as foreground (TRAINING.md 1.4).
            return (combined >= 0.5).astype(np.float32)
        return combined.astype(np.float32)

    def run_ensemble(self, spec: ModelSpec, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        ok = [label for label, row in rows.items() if row.get("status") == "ok" and label in self.test_probs]
        if spec.mode == "topk":
            if self.val_split is None or not self.val_probs:
                raise ValueError(f"{spec.label}: ranking needs a labelled validation split (val/ or train/).")
            sort = self.options["sort"]
            ranked = sorted(ok, key=lambda m: self.score(self.val_probs[m], self.val_split)[sort], reverse=True)
            members, mode = tuple(ranked[: spec.k]), "average"
            if len(members) < 2:
                raise ValueError(f"{spec.label}: fewer than two models succeeded, nothing to ensemble.")
        else:
            members, mode = spec.members, spec.mode
            missing = [m for m in members if m not in ok]
            if missing:
                raise ValueError(f"{spec.label}: member(s) {missing} failed or were not evaluated.")
        prob = self.combine(members, self.test_probs, mode)
        self.test_probs[spec.label] = prob
        if self.val_probs and all(m in self.val_probs for m in members):
            self.val_probs[spec.label] = self.combine(members, self.val_probs, mode)
        row = self.score(prob, self.dataset.test)
        costs = [rows[m] for m in members]
        row.update(gflops=float(sum(r["gflops"] for r in costs)), params=int(sum(r["params"] for r in costs)),
                   flops_input=costs[0].get("flops_input", ""))
        rule = "majority vote at the threshold, a tie counts as foreground" if mode == "majority" else "mean"
        row["provenance"] = {"weights": f"{mode} of {', '.join(members)}", "members": list(members),
                             "combination": rule, "wall_s": time.perf_counter() - start}
        return row


def score_objects(labels: np.ndarray, prob: np.ndarray, *, objects: str = "foreground",
                  threshold: float = 0.5) -> dict[str, float]:
    """:func:`emzoo.metrics.all_metrics` of a prediction, on the foreground or on the regions between boundaries.

    With ``objects="background"`` (boundary labels, ISBI 2012 / Fiji protocol) the objects are the regions between
    boundaries, so every metric is computed on ``1 - p`` against ``1 - labels``.
    """
    from emzoo.metrics import all_metrics

    if objects == "background":
        return all_metrics(1 - np.asarray(labels), 1 - np.asarray(prob, np.float32), threshold=threshold)
    return all_metrics(labels, prob, threshold=threshold)


def benchmark(
    models: Sequence[str],
    data: str | Path | Dataset | None = None,
    *,
    ensembles: Sequence[str] = (),
    finetune: int | None = None,
    kfold: int | None = None,
    threshold: float = 0.5,
    tile: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    tta: str | None = None,
    sort: str = "vrand",
    seed: int = 0,
    val_fraction: float = 0.2,
    out: str | Path | None = None,
    progress: bool = True,
    finetune_kwargs: dict[str, Any] | None = None,
    predictions: dict[str, tuple[np.ndarray, str]] | None = None,
    keep_probabilities: dict[str, np.ndarray] | None = None,
    objects: str = "foreground",
    overlays: bool = True,
    instances: str | None = "cc",
    instances_3d: bool = False,
    instance_min_size: int = 0,
) -> pd.DataFrame:
    """Score zoo entries, presets and ensembles on a dataset and return the leaderboard.

    Parameters
    ----------
    models : sequence of str
        Entry names (their default weights), ``entry.tag``, local preset folders, or ensemble specs
        (``"avg:a+b"``, ``"majority:a+b+c"``, ``"top3"``).
    data : path or Dataset, optional
        A folder with ``train/`` and ``test/`` (``raw`` + ``labels``); default: the packaged demo sample.
    ensembles : sequence of str
        More ensemble specs (same syntax), evaluated after every model.
    finetune : int, optional
        Fine-tune each model for this many steps on the train split (the last ``val_fraction`` of it is held out
        for validation) instead of using pretrained weights.
    kfold : int, optional
        With ``finetune``: K-fold cross-validation on the train split; the row scores the fold-mean ensemble.
    threshold : float
        Binarisation threshold of the confusion-matrix metrics (VRand/VInfo sweep their own thresholds).
    tile, halo, tta
        Passed to :func:`emzoo.inference.predict`.
    sort : str
        Metric column the leaderboard is sorted by (descending); also the top-k ranking metric.
    seed : int
        Seed of the fine-tuning runs.
    out : path, optional
        Folder for ``leaderboard.csv/.json/.md``, ``heatmap.png``, ``ballchart.png`` and ``provenance.json``.
    progress : bool
        Show progress bars.
    predictions : dict, optional
        ``{label: (probabilities, provenance)}``: precomputed foreground probabilities of the test split (e.g. a
        paper's published outputs), scored like the models as reference rows (no cost columns).
    keep_probabilities : dict, optional
        Filled with ``{row label: test-split foreground probabilities}`` of every scored model and ensemble.
    objects : {"foreground", "background"}
        What the metrics count as objects: the foreground class (mitochondria), or the background when the labels
        are boundaries (membranes, ISBI 2012 protocol: the cells between them; every metric on ``1 - p``).
    overlays : bool
        With ``out``: also write ``overlays/<model>/<item>.png`` per scored row and test item (its F1, Jaccard,
        precision and recall in the corner) and ``overlays/contact_sheet.png``
        (:func:`emzoo.benchmark.overlays.write_overlays`).
    instances : {"cc", "distance_ws", "boundary_ws"} or None
        How objects are decoded from each prediction for the instance columns (``inst_f1`` = matching F1 at IoU
        0.5, ``inst_iou`` = mean matched IoU, ``are`` = adapted Rand error, ``vi_split`` / ``vi_merge``), scored
        against the ground-truth objects (instance labels as they are, binary labels by connected components);
        None leaves these columns NaN. See :mod:`emzoo.benchmark.instance_scores`.
    instances_3d : bool
        Label a (Z, Y, X) test stack in 3D for the instance columns; default: slice by slice.
    instance_min_size : int
        Predicted objects smaller than this (pixels, or voxels in 3D) are dropped before the instance columns are
        scored (a fixed choice: never tuned on the test data).

    Returns
    -------
    pandas.DataFrame
        One row per model/ensemble, sorted; failed rows carry ``status="failed"`` and their error.

    Examples
    --------
    >>> board = benchmark(["unet2d_fb", "resnet50_unet", "avg:unet2d_fb+resnet50_unet"], finetune=100)  # doctest: +SKIP
    """
    if objects not in ("foreground", "background"):
        raise ValueError(f"objects must be 'foreground' or 'background', got {objects!r}.")
    if instances is not None:
        from emzoo.inference.instances import _check_method

        instances = _check_method(instances)
    instance_min_size = check_int(instance_min_size, "instance_min_size", minimum=0)
    if sort not in METRIC_COLUMNS:
        raise ValueError(f"unknown sort metric {sort!r}; choose one of {', '.join(METRIC_COLUMNS)}.")
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    specs = [parse_model_spec(m) for m in [*models, *ensembles]]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a model is listed twice in {labels}; list each once.")
    # Ensemble members that were not listed are evaluated too (they get their own rows).
    listed = set(labels)
    for spec in list(specs):
        for member in spec.members:
            if member not in listed:
                specs.insert(0, parse_model_spec(member))
                listed.add(member)
    model_specs = [s for s in specs if s.kind == "model"]
    ensemble_specs = [s for s in specs if s.kind == "ensemble"]
    options = dict(finetune=finetune, kfold=kfold, threshold=threshold, tile=tile, halo=halo, tta=tta, sort=sort,
                   seed=seed, val_fraction=val_fraction, progress=progress, finetune_kwargs=finetune_kwargs or {},
                   need_val=any(s.mode == "topk" for s in ensemble_specs), objects=objects, instances=instances,
                   instances_3d=instances_3d, instance_min_size=instance_min_size)

    def log(message: str) -> None:
        if progress:
            print(message, flush=True)

    runner = _Runner(dataset, options, log)
    common = {
        "dataset": dataset.name,
        "data_sha256": dataset.test.sha256,
        "train_sha256": dataset.train.sha256 if dataset.train is not None else None,
        "threshold": threshold, "tile": tile, "halo": halo, "tta": tta, "seed": seed, "backend": _backend(),
        "device": _device(), "emzoo_version": _version(),
        # emzoo.metrics' convention for ratios with a zero denominator (METRICS.md asks to record it).
        "zero_division": "nan", "objects": objects, "instances": instances,
        "instances_labelled": "3D" if instances_3d else "per slice", "instance_min_size": instance_min_size,
    }
    rows: dict[str, dict[str, Any]] = {}
    for index, spec in enumerate([*model_specs, *ensemble_specs], start=1):
        log(f"[{index}/{len(specs)}] {spec.label}")
        try:
            row = runner.run_model(spec) if spec.kind == "model" else runner.run_ensemble(spec, rows)
            row["status"], row["error"] = "ok", ""
        except Exception as exc:  # noqa: BLE001 - a failing model is recorded and the rest continue
            row = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                   "provenance": {"traceback": traceback.format_exc(limit=3)}}
            log(f"    failed: {row['error']}")
        row["provenance"] = {**common, **row.get("provenance", {})}
        rows[spec.label] = row
    for label, (prob, origin) in (predictions or {}).items():
        if label in rows:
            raise ValueError(f"prediction row {label!r} has the name of a model row; rename it.")
        prob = np.asarray(prob, np.float32)
        if prob.shape != dataset.test.raw.shape:
            raise ValueError(f"prediction {label!r} has shape {prob.shape} but the test split {dataset.test.raw.shape}.")
        start = time.perf_counter()
        row = runner.score(prob, dataset.test)
        row.update(status="ok", error="", provenance={**common, "weights": "given prediction", "source": origin,
                                                      "prediction_sha256": array_sha256(prob),
                                                      "wall_s": time.perf_counter() - start})
        rows[label] = row
    if keep_probabilities is not None:
        keep_probabilities.update(runner.test_probs)
    board = _to_frame(rows, sort)
    if out is not None:
        write_outputs(board, Path(out), sort=sort)
        if overlays:
            from emzoo.benchmark.overlays import write_overlays

            probs = {**runner.test_probs, **{k: np.asarray(v[0], np.float32) for k, v in (predictions or {}).items()}}
            shown = {m: probs[m] for m in board.loc[board["status"] == "ok", "model"]}  # leaderboard order
            write_overlays(dataset.test, shown, Path(out) / "overlays", threshold=threshold, objects=objects)
    return board


def _to_frame(rows: dict[str, dict[str, Any]], sort: str) -> pd.DataFrame:
    records = []
    for label, row in rows.items():
        record = {"model": label, "status": row.get("status", "failed")}
        for col in (*METRIC_COLUMNS, *INSTANCE_COLUMNS):
            record[col] = row.get(col, math.nan)
        record["vrand_threshold"] = row.get("vrand_threshold", math.nan)
        record["vinfo_threshold"] = row.get("vinfo_threshold", math.nan)
        record["gflops"] = row.get("gflops", math.nan)
        record["params"] = row.get("params", 0)
        record["flops_input"] = row.get("flops_input", "")
        record["wall_s"] = row.get("provenance", {}).get("wall_s", math.nan)
        record["error"] = row.get("error", "")
        record["provenance"] = row.get("provenance", {})
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    frame = frame.sort_values(by=[sort], ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _version() -> str:
    from emzoo import __version__

    return __version__
