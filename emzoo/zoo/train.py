"""``train_zoo``: one command from a :class:`~emzoo.zoo.cards.ZooCard` to a scored, compactly stored preset.

Stages (each resumable; rerunning the command continues where it stopped):

1. **train** — :func:`emzoo.finetune` on the card's training voxels into ``OUT/run`` (checkpoints every fifth of the
   run, so a killed run resumes); weights snapshots at ¼ and ½ of the steps for the learning curve. Fixed steps,
   last weights: the test split chooses nothing.
2. **score** — the float32 preset on the card's test voxels through the benchmark harness, without and with each
   of the card's test-time augmentations; the snapshots without TTA (the learning curve).
3. **encode** — the weights in the card's compact storage (:mod:`emzoo.hub.compact`) into ``OUT/preset``, which is
   scored again: the decoded metrics (no TTA) must stay within 0.003 (F1, VRand) of float32's, else the command
   fails; the deltas with TTA are recorded.
4. **record** — ``OUT/preset`` gets its model card and ``emzoo.json`` (card, metrics with/without TTA beside the
   paper's, learning curve, CPU time, command), and ``OUT/manifest/<entry>.json`` its manifest record. With
   ``bundle=True`` the preset is copied into the package (``emzoo/weights/<entry>/<tag>``) and the packaged
   manifest is updated.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.zoo.cards import SplitSpec, ZooCard, get_card

__all__ = ["train_zoo", "load_card_split", "TOLERANCE"]

#: Largest change of F1 and VRand the compact encoding may cause (issue 10 §3).
TOLERANCE = 0.003
_SNAPSHOT_FRACTIONS = (0.25, 0.5)


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[train-zoo] {message}", flush=True)


def load_card_split(data: str | os.PathLike[str], spec: SplitSpec) -> tuple[np.ndarray, np.ndarray]:
    """Raw and label voxels ``(Z, Y, X)`` of one card split from a dataset folder.

    Raises
    ------
    FileNotFoundError
        If the split's files are missing.
    ValueError
        If raw and labels differ in shape or the slice range does not fit the stack.
    """
    from emzoo.io import read

    folder = Path(data) / spec.split if spec.split else Path(data)
    paths = [folder / spec.raw, folder / spec.labels]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; pass --data the dataset folder the card names.")
    raw, labels = (np.asarray(read(p)) for p in paths)
    if raw.ndim == 2:
        raw, labels = raw[None], labels[None]
    if raw.shape != labels.shape:
        raise ValueError(f"{paths[0]} has shape {raw.shape} but {paths[1]} has {labels.shape}.")
    if spec.z is not None:
        start, stop = spec.z
        if not 0 <= start < stop <= raw.shape[0]:
            raise ValueError(f"slice range z {start}-{stop - 1} does not fit {paths[0]} with {raw.shape[0]} slices.")
        raw, labels = raw[start:stop], labels[start:stop]
    return raw, labels


def _check_dataset(card: ZooCard, data: Path) -> None:
    from emzoo.io.dataset import dataset_metadata

    if not data.is_dir():
        raise FileNotFoundError(f"dataset folder {data} does not exist; pass --data shared/data/{card.dataset}.")
    name = dataset_metadata(data)[1].get("name")
    if name and name != card.dataset:
        raise ValueError(f"{data} holds dataset {name!r} but card {card.name} trains on {card.dataset!r}; "
                         f"pass --data .../{card.dataset}.")


def _atomic_json(path: Path, value: Any) -> None:
    from emzoo.io.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def _save_weights(model: Any, target: Path) -> None:
    """``model.save_weights(target)``, written then renamed: the file is written under its own name (Keras wants the
    ``.weights.h5`` suffix) in a hidden folder beside it (:func:`emzoo.io.atomic.temp_sibling`), then moved."""
    from emzoo.io.atomic import temp_sibling

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = temp_sibling(target, folder=True)
    try:
        model.save_weights(scratch / target.name)
        os.replace(scratch / target.name, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _snapshot_steps(steps: int) -> dict[int, str]:
    return {max(1, int(round(steps * f))): f"{f:g}" for f in _SNAPSHOT_FRACTIONS}


def _train(card: ZooCard, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Stage 1: fine-tune (resumable) into ``out/run``; returns the run record."""
    record_path = out / "train_record.json"
    run_dir = out / "run"
    if record_path.is_file() and (run_dir / "emzoo.json").is_file():
        return json.loads(record_path.read_text())
    from emzoo.training import finetune

    train = load_card_split(data, card.train)
    snapshots = _snapshot_steps(int(card.finetune["steps"]))
    snap_dir = out / "snapshots"

    def on_step(step: int, model: Any) -> None:
        if step in snapshots:
            _save_weights(model, snap_dir / f"step_{step:07d}.weights.h5")

    kwargs = dict(card.finetune)
    # A card trains on its whole train split for fixed steps and keeps the last weights: no validation carved.
    kwargs.setdefault("val_fraction", 0)
    if card.num_classes is not None:
        kwargs["num_classes"] = card.num_classes
    started = time.process_time()
    wall = time.perf_counter()
    _log(f"training {card.name} on {card.train.describe(card.dataset)}: {kwargs}", progress)
    _model, history = finetune(card.entry, train, out_dir=run_dir, resume=True, progress=progress,
                               data_name=card.dataset, on_step=on_step,
                               description=f"{card.entry} trained on {card.train.describe(card.dataset)} "
                                           f"(emzoo zoo card {card.name})", **kwargs)
    record = {
        "steps": int(card.finetune["steps"]), "start_step": history["start_step"],
        "train_s": history["train_s"], "seconds_per_step": history["seconds_per_step"],
        "samples_per_s": history["samples_per_s"], "elapsed_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - started, "policy": kwargs.get("mixed_precision"),
        "final_train_loss": history["loss"][-1] if history.get("loss") else None,
        "snapshots": {str(s): f for s, f in snapshots.items()},
    }
    # A resumed run adds its time to the earlier part's.
    old = out / "train_record.partial.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        for key in ("train_s", "elapsed_s", "cpu_s"):
            record[key] += prev.get(key, 0.0)
        old.unlink()
    _atomic_json(record_path, record)
    return record


def _free_input(run_dir: Path) -> None:
    """Make the run's preset take any image size (``input_shape`` with free spatial sides), idempotently.

    The convolutional weights do not depend on the window, and a free model predicts a whole test image in one
    window: no tiling seams in the scores, and users' large images are tiled by ``emzoo.predict`` at its own size
    instead of the training patch.
    """
    from emzoo.hub.manifest import sha256_file

    config_path, meta_path = run_dir / "config.json", run_dir / "emzoo.json"
    config = json.loads(config_path.read_text())
    shape = config["build_kwargs"].get("input_shape")
    if not shape or all(s is None for s in shape[:-1]):
        return
    free = [None] * (len(shape) - 1) + [shape[-1]]
    config["build_kwargs"]["input_shape"] = free
    _atomic_json(config_path, config)
    meta = json.loads(meta_path.read_text())
    meta["input"]["shape"] = free
    if "files" in meta:
        meta["files"]["config.json"] = sha256_file(config_path)
    _atomic_json(meta_path, meta)


def _eval_options(card: ZooCard, test_raw: np.ndarray) -> dict[str, Any]:
    from emzoo.registry import get_entry

    info = get_entry(card.entry).info
    if info.dims == "3D":
        return {"tile": tuple(int(s) for s in test_raw.shape), "halo": 0}
    return {"tile": tuple(int(s) for s in test_raw.shape[1:]), "halo": 0}


def _score(source: str, card: ZooCard, test: tuple[np.ndarray, np.ndarray], tta: str | None) -> dict[str, float]:
    """Harness row of one preset folder on the test voxels (whole image per window: no tiling seams)."""
    from emzoo.benchmark.data import Dataset, Split
    from emzoo.benchmark.harness import METRIC_COLUMNS, benchmark

    raw, labels = test
    labels = (labels > 0).astype(np.uint8)
    split = Split(raw, labels, f"{card.dataset}:{card.test.describe(card.dataset)}", None)
    dataset = Dataset(name=card.dataset, test=split)
    board = benchmark([source], data=dataset, tta=tta, progress=False, objects=card.objects,
                      **_eval_options(card, raw))
    row = board.iloc[0]
    if row["status"] != "ok":
        raise RuntimeError(f"scoring {source} failed: {row['error']}")
    return {k: float(row[k]) for k in METRIC_COLUMNS}


def _calibration_batches(model: Any, train: tuple[np.ndarray, np.ndarray], count: int = 8) -> list[np.ndarray]:
    """Normalised training windows of the model's input size on a fixed grid (deterministic), batches of 2."""
    from emzoo.io.normalize import normalize

    raw = normalize(np.asarray(train[0]), model.emzoo_metadata["normalization"]).astype(np.float32)
    spatial = tuple(model.input_shape[1:-1])
    three_d = len(spatial) == 3
    free = 64 if three_d else 256
    size = tuple(min(s or free, d) for s, d in zip(spatial, raw.shape[-len(spatial):], strict=True))
    rng = np.random.default_rng(0)
    windows = []
    for _ in range(min(count, 4) if three_d else count):
        if three_d:
            start = [int(rng.integers(0, d - s + 1)) for s, d in zip(size, raw.shape, strict=True)]
            windows.append(raw[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))])
        else:
            z = int(rng.integers(0, raw.shape[0]))
            start = [int(rng.integers(0, d - s + 1)) for s, d in zip(size, raw.shape[1:], strict=True)]
            windows.append(raw[z][tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))])
    stack = np.stack(windows)[..., None]
    return [stack[i:i + 2] for i in range(0, len(stack), 2)]


def _score_snapshot(card: ZooCard, run_dir: Path, snapshot: Path, test: tuple[np.ndarray, np.ndarray],
                    train: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Metrics of a training snapshot (the run's preset with the snapshot's weights), no TTA."""
    from emzoo.hub.presets import load
    from emzoo.inference import foreground, predict
    from emzoo.training.evaluate import recalibrate_batchnorm

    model = load(run_dir)
    model.load_weights(snapshot)
    # As at the end of training: BatchNorm statistics re-estimated on training windows (a snapshot's moving
    # averages lag its weights by hundreds of steps).
    recalibrate_batchnorm(model, _calibration_batches(model, train))
    prob = predict(model, test[0], progress=False, **_eval_options(card, test[0]))
    return card_metrics(card, test[1], np.asarray(foreground(prob), np.float32))


def card_metrics(card: ZooCard, labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """The harness metrics of a card's test prediction (on the objects the card scores)."""
    from emzoo.benchmark.harness import score_objects

    labels = (np.asarray(labels) > 0).astype(np.uint8)
    return {k: float(v) for k, v in score_objects(labels, prob, objects=card.objects).items()}


_METRIC_NAMES = {"f1": "F1", "jaccard": "Jaccard", "vrand": "VRand (thinned)", "vinfo": "VInfo (thinned)",
                 "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV",
                 "npv": "NPV"}


def command(card: ZooCard) -> str:
    """The command that reproduces a card's preset."""
    return f"emzoo train-zoo {card.name} --data ../shared/data/{card.dataset} --out zoo_runs/{card.name}"


def _cover_picture(preset: Path, card: ZooCard, test: tuple[np.ndarray, np.ndarray]) -> tuple[Any, dict[str, Any]]:
    """The card's picture (the bioimage.io cover's drawing): the stored preset's prediction of the middle test slice
    (for a 3D entry, the middle of a 32-slice slab around it) over the raw data, with the ground truth outlined."""
    from emzoo.hub.presets import load
    from emzoo.hub.save import _cover
    from emzoo.inference.predict import foreground, predict
    from emzoo.registry import get_entry

    raw, labels = np.asarray(test[0]), np.asarray(test[1]) > 0
    model = load(preset)
    mid = raw.shape[0] // 2
    if get_entry(card.entry).info.dims == "3D":
        lo, hi = max(0, mid - 16), min(raw.shape[0], mid + 16)
        prob = foreground(predict(model, raw[lo:hi], axes="ZYX"))[mid - lo]
    else:
        prob = foreground(predict(model, raw[mid], axes="YX"))
    split = f"{card.test.describe(card.dataset)}, slice {mid}"
    return _cover((raw[mid], prob, labels[mid]), split)


def _finish_preset(preset: Path, *, card: ZooCard, report: dict[str, Any], data: Path,
                   cover: tuple[Any, dict[str, Any]] | None = None) -> None:
    """``emzoo.json`` and README.md of a zoo preset: card, metrics with/without TTA beside the paper's, curve, and
    the picture (``cover.png``) when ``cover`` (from :func:`_cover_picture`) is given."""
    from huggingface_hub import EvalResult, ModelCardData

    from emzoo.hub.compact import layer_signature, preset_file_hashes
    from emzoo.hub.layout import COVER_FILE
    from emzoo.io.atomic import atomic_file
    from emzoo.io.dataset import dataset_metadata
    from emzoo.viz import write_image

    meta = json.loads((preset / "emzoo.json").read_text())
    meta.pop("cover", None)
    if cover is not None:
        write_image(preset / COVER_FILE, cover[0])
        meta["cover"] = cover[1]
    enc = card.storage
    shipped = report["scores"][f"{enc}/none"]
    test_split = f"{card.test.describe(card.dataset)} (held out; never used in training or model choice)"
    source = dataset_metadata(data)[1]
    train = report["train"]
    meta.update({
        "name": card.name,
        "description": f"{card.entry} trained on {card.train.describe(card.dataset)}; scored on "
                       f"{card.test.describe(card.dataset)}.",
        "metrics": {"test_split": test_split, "values": shipped},
        "metrics_objects": card.objects,
        "metrics_tta": {t: report["scores"][f"{enc}/{t}"] for t in card.tta},
        "metrics_float32": {t or "none": report["scores"][f"float32/{t or 'none'}"] for t in (None, *card.tta)},
        "encoding_delta": report["encoding_delta"],
        "reference": card.reference,
        "learning_curve": report["learning_curve"],
        "license": card.license,
        "datasets": [card.dataset],
        "zoo_card": card.to_dict(),
        "data_source": {k: source.get(k) for k in ("source", "license", "citation") if source.get(k)},
        "training": {"steps": train["steps"], "train_s": round(train["train_s"], 1),
                     "cpu_s": round(train["cpu_s"], 1), "seconds_per_step": train["seconds_per_step"],
                     "policy": train["policy"], "machine": "2-core CPU (AMD EPYC, AMX-BF16), TensorFlow",
                     "command": command(card)},
    })
    meta["files"] = preset_file_hashes(preset)
    meta["layer_signature"] = layer_signature(emzoo_build_from(preset))
    results = [EvalResult(task_type="image-segmentation", dataset_type=card.dataset, dataset_name=card.dataset,
                          dataset_split=card.test.describe(card.dataset), metric_type=k, metric_value=v)
               for k, v in shipped.items()]
    front = ModelCardData(library_name="emzoo", license="other", tags=["emzoo", "keras", "image-segmentation",
                          "electron-microscopy", card.entry], datasets=[card.dataset],
                          pipeline_tag="image-segmentation", model_name=card.name, eval_results=results)
    ref = card.reference
    cols = [k for k in ("f1", "jaccard", "vrand", "vinfo", "accuracy", "ppv", "sensitivity") if k in shipped]
    head = "| weights | " + " | ".join(_METRIC_NAMES[k] for k in cols) + " |"
    rows = [head, "|---|" + "---:|" * len(cols)]
    for label, scores in [(f"this preset ({enc}), no TTA", shipped),
                          *((f"this preset ({enc}), TTA {t}", report["scores"][f"{enc}/{t}"]) for t in card.tta),
                          ("float32 weights, no TTA", report["scores"]["float32/none"])]:
        rows.append(f"| {label} | " + " | ".join(f"{scores[k]:.4f}" for k in cols) + " |")
    if any(k in ref for k in cols):
        rows.append(f"| paper: {ref['source']} | " + " | ".join(f"{ref[k]:.4f}" if k in ref else "-" for k in cols)
                    + " |")
    curve = ["| step | fraction | F1 | Jaccard | VRand |", "|---:|---:|---:|---:|---:|"]
    for step, point in sorted(report["learning_curve"].items(), key=lambda kv: int(kv[0])):
        curve.append(f"| {step} | {point['fraction']:g} | {point['f1']:.4f} | {point['jaccard']:.4f} | "
                     f"{point['vrand']:.4f} |")
    lines = [
        "---", front.to_yaml(), "---", "",
        f"# {card.name}", "", meta["description"], "",
        *([f"![{meta['cover']['caption']}]({COVER_FILE})", "", f"*{meta['cover']['caption']}*", ""]
          if cover is not None else []),
        "```python", "import emzoo", "", f'model = emzoo.load("{card.name}")   # bundled with emzoo, no network',
        "prob = emzoo.predict(model, image)", "```", "",
        f"## Metrics on {test_split}", "",
        "Pooled pixel metrics at threshold 0.5; VRand/VInfo are Fiji's thinned scores (best of 11 thresholds, "
        "per-slice mean). " + ("" if any(k in ref for k in cols) else f"Reference: {ref.get('source', '-')}.")
        + (" Objects are the regions between the predicted boundaries (ISBI 2012 / Fiji protocol): every metric "
           "is computed on 1 - p against 1 - labels." if card.objects == "background" else ""), "",
        *rows, "",
        "## Learning curve (test split, no TTA; each snapshot's BatchNorm statistics re-estimated on 8 training "
        "windows, as at the end of training)", "", *curve, "",
        "## Training", "",
        f"- data: {card.train.describe(card.dataset)} ({card.dataset}; licence: {card.license})",
        f"- recipe and overrides: `{json.dumps(card.finetune)}`",
        f"- {train['steps']} steps in {train['train_s'] / 60:.1f} min of training "
        f"({train['seconds_per_step']:.2f} s/step, policy {train['policy']}) on a 2-core CPU",
        f"- reproduce: `{command(card)}`",
        f"- weights stored as {enc}: {meta['weights_encoding']['format']}; largest change against float32 "
        f"weights: F1 {report['encoding_delta']['f1']:.4f}, VRand {report['encoding_delta']['vrand']:.4f}",
        *([f"- notes: {card.notes}"] if card.notes else []), "",
        "## Files", "", "- `config.json`: entry and build kwargs (rebuilt with emzoo's builder, no pickles)",
        f"- `model.weights.compact.h5`: {enc} weights, decoded to float32 by `emzoo.load`",
        "- `emzoo.json`: axes, input, normalisation, metrics, zoo card, sha256 of the files",
        *([f"- `{COVER_FILE}`: the picture above (`emzoo.viz.cover_image`, also the bioimage.io cover)"]
          if cover is not None else []), "",
    ]
    _atomic_json(preset / "emzoo.json", meta)
    with atomic_file(preset / "README.md") as tmp:
        tmp.write_text("\n".join(lines))


def emzoo_build_from(preset: str | os.PathLike[str]) -> Any:
    """The model a preset's ``config.json`` builds (random weights)."""
    from emzoo.hub.presets import _tuples
    from emzoo.registry import build

    config = json.loads((Path(preset) / "config.json").read_text())
    return build(config["entry"], **_tuples(config["build_kwargs"]))


def _manifest_record(preset: Path, card: ZooCard) -> dict[str, Any]:
    from emzoo.hub.compact import bundled_location
    from emzoo.hub.manifest import tag_record

    record = tag_record(preset, repo_id=f"emzoo/{card.entry}-{card.tag}", revision=None,
                        default=card.default)
    # Not pushed to the Hub yet: no revision exists (``emzoo publish --push --update`` fills it).
    record["bundled"] = bundled_location(card.entry, card.tag)
    return record


def _keep_measured(preset: Path, card: ZooCard) -> None:
    """Carry what ``benchmarks/effective_halo.py --write`` measured on the bundled copy (the effective halo, the
    bfloat16 verdict) into a rewritten preset when its weights are the same ones (the record names their digest)."""
    from emzoo.hub.compact import bundled_dir
    from emzoo.hub.presets import load
    from emzoo.inference.measured import RECORD, weights_digest

    old = bundled_dir() / card.entry / card.tag / "emzoo.json"
    prior = json.loads(old.read_text()) if old.is_file() else {}
    if RECORD not in prior or prior[RECORD].get("weights_digest") != weights_digest(load(preset)):
        return
    meta = json.loads((preset / "emzoo.json").read_text())
    meta[RECORD], meta["halo"] = prior[RECORD], prior.get("halo")
    _atomic_json(preset / "emzoo.json", meta)


def _bundle(preset: Path, card: ZooCard, record: dict[str, Any]) -> Path:
    from emzoo.hub.compact import COMPACT_FILE, bundled_dir
    from emzoo.hub.layout import COVER_FILE
    from emzoo.hub.manifest import update_manifest
    from emzoo.io.atomic import atomic_dir

    target = bundled_dir() / card.entry / card.tag
    with atomic_dir(target) as tmp:
        for name in ("config.json", COMPACT_FILE, "emzoo.json", "README.md", COVER_FILE):
            if name == COVER_FILE and not (preset / name).is_file():
                continue
            shutil.copyfile(preset / name, tmp / name)
    update_manifest(card.entry, card.tag, record)
    return target


def train_zoo(
    name: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bundle: bool = False,
    train_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, score, encode and record the preset of one zoo card.

    Parameters
    ----------
    name : str
        Zoo card, ``entry.tag`` (see :func:`emzoo.zoo.list_cards`).
    data : path
        The dataset folder the card names (``shared/data/<dataset>``).
    out : path
        Work folder: ``run/`` (float32 preset and checkpoints), ``snapshots/``, ``preset/`` (the compact preset),
        ``manifest/<entry>.json`` and ``report.json``.
    bundle : bool
        Also copy the preset into the package and update the packaged manifest.
    train_only : bool
        Stop after stage 1 (rerun without it to score and encode).
    progress : bool
        Print progress.

    Returns
    -------
    dict
        The report: metrics of float32 and of the stored encoding with and without TTA, learning curve, times.

    Raises
    ------
    KeyError
        Unknown card.
    RuntimeError
        If the encoded weights move F1 or VRand by more than :data:`TOLERANCE`.
    """
    card = get_card(name)
    data = Path(data).expanduser()
    out = Path(out).expanduser()
    _check_dataset(card, data)
    out.mkdir(parents=True, exist_ok=True)
    record = _train(card, data, out, progress)
    if train_only:
        return {"train": record}
    from emzoo.hub import compact
    from emzoo.hub.presets import load

    run_dir = out / "run"
    _free_input(run_dir)
    test = load_card_split(data, card.test)
    report_path = out / "report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update({"card": card.to_dict(), "train": record})

    # ---- stage 2: float32 scores and the learning curve
    for tta in (None, *card.tta):
        key = f"float32/{tta or 'none'}"
        if key not in report.get("scores", {}):
            _log(f"scoring float32 weights on {card.test.describe(card.dataset)}, tta={tta}", progress)
            report.setdefault("scores", {})[key] = _score(str(run_dir), card, test, tta)
            _atomic_json(report_path, report)
    curve = report.setdefault("learning_curve", {})
    for step, fraction in record["snapshots"].items():
        snap = out / "snapshots" / f"step_{int(step):07d}.weights.h5"
        if step not in curve and snap.is_file():
            _log(f"scoring the snapshot at step {step} ({fraction} of the run)", progress)
            metrics = _score_snapshot(card, run_dir, snap, test, load_card_split(data, card.train))
            curve[step] = {"fraction": float(fraction), "f1": metrics["f1"], "jaccard": metrics["jaccard"],
                           "vrand": metrics["vrand"]}
            _atomic_json(report_path, report)
    curve[str(record["steps"])] = {"fraction": 1.0, **{k: report["scores"]["float32/none"][k]
                                                       for k in ("f1", "jaccard", "vrand")}}

    # ---- stage 3: compact encoding, scored again
    preset = out / "preset"
    compact.write_compact_preset(run_dir, preset, encoding=card.storage, overwrite=True)
    for tta in (None, *card.tta):
        key = f"{card.storage}/{tta or 'none'}"
        if key not in report["scores"]:
            _log(f"scoring the {card.storage} weights, tta={tta}", progress)
            report["scores"][key] = _score(str(preset), card, test, tta)
            _atomic_json(report_path, report)
    def delta(metric: str, tta: str) -> float:
        return abs(report["scores"][f"{card.storage}/{tta}"][metric] - report["scores"][f"float32/{tta}"][metric])

    # The tolerance binds the preset's headline numbers (no TTA); the TTA deltas are recorded beside them (VRand
    # jumps when one merge appears or disappears, so they are not a measure of the encoding).
    worst = {m: delta(m, "none") for m in ("f1", "vrand")}
    report["encoding_delta"] = worst
    report["encoding_delta_tta"] = {t: {m: delta(m, t) for m in ("f1", "vrand")} for t in card.tta}
    _atomic_json(report_path, report)
    if max(worst.values()) > TOLERANCE:
        raise RuntimeError(f"{card.name}: the {card.storage} encoding moves F1/VRand by {worst} (> {TOLERANCE}); "
                           "store this preset as float16 (card storage) instead.")

    # ---- stage 4: card, emzoo.json, manifest
    _finish_preset(preset, card=card, report=report, data=data, cover=_cover_picture(preset, card, test))
    _keep_measured(preset, card)
    _ = load(preset)  # the written preset loads (sha256 of config and weights checked)
    record_m = _manifest_record(preset, card)
    _atomic_json(out / "manifest" / f"{card.entry}.json", {"entry": card.entry, "tags": {card.tag: record_m}})
    below = {k: round(shipped_value, 4) for k, floor in card.floor.items()
             if (shipped_value := report["scores"][f"{card.storage}/none"][k]) < floor}
    report["floor_met"] = not below
    _atomic_json(report_path, report)
    if below:
        _log(f"{card.name} is below its quality floor {card.floor}: {below}", progress)
    if bundle:
        if below:
            raise RuntimeError(f"{card.name} scores {below}, below its card's floor {card.floor}; it is not bundled "
                               "(train longer or change the card).")
        path = _bundle(preset, card, record_m)
        _log(f"bundled into {path}", progress)
    _log(f"done: {card.name} " + ", ".join(f"{k}={v['f1']:.4f}" for k, v in report["scores"].items()), progress)
    return report
