"""Measure each bundled preset's effective halo and bfloat16 verdict on its test data; optionally store them (issue 14).

For every bundled preset (``emzoo/weights/<entry>/<tag>``), on the held-out test slices of its dataset:

- the effective halo: the smallest halo (a multiple of the divisor) at which tiled prediction (256-px cores, so
  seams cross every slice) stays within ``--tolerance`` (1e-3) of the exact whole-image prediction
  (:func:`emzoo.inference.effective.measure_halo`);
- bfloat16 inference: whole-slice prediction time in float32 and bfloat16 (min of ``--repeats``, after a warm-up)
  and the foreground F1 of both at threshold 0.5. bfloat16 is marked for use when it is at least 10 % faster and
  its F1 is within 0.002 of float32's (``SPEEDUP_MIN``: a smaller gain does not pay for probabilities that move by
  up to ~0.1).

With ``--write`` the results go into the preset's ``emzoo.json`` (``"halo"`` and ``"inference_measured"``, with
the digest of the weights they belong to) and the recorded sha256/size of that file in
``weights_manifest/<entry>.json``.

Usage::

    .venv/bin/python benchmarks/effective_halo.py [--write] [--only emnet_v1_bn] [--data ../shared/data]
    .venv/bin/python benchmarks/effective_halo.py --rejudge   # re-apply the bfloat16 rule to the stored figures
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "emzoo" / "weights"
MANIFEST = REPO / "weights_manifest"
# bfloat16 moves single probabilities by up to ~0.1 even where F1 is unchanged: worth it only for a clear gain (and
# a gain below this is within the run-to-run spread of a shared 2-core machine).
SPEEDUP_MIN = 1.25
F1_TOLERANCE = 0.002


def _test_data(meta: dict, data_root: Path):
    import numpy as np

    from emzoo.io import read

    card = meta.get("zoo_card", {})
    name = card.get("dataset") or meta["training_data"]["name"]
    split = card.get("test", {"split": "test", "raw": "raw.tif", "labels": "labels.tif"})
    folder = data_root / name / split["split"]
    raw = np.asarray(read(folder / split["raw"]).data)
    labels = np.asarray(read(folder / split["labels"]).data)
    return f"{name}/{split['split']}", raw, labels


def _f1(prob, labels) -> float:
    import numpy as np

    pred, true = prob >= 0.5, labels > 0
    tp = np.count_nonzero(pred & true)
    return float(2 * tp / max(1, np.count_nonzero(pred) + np.count_nonzero(true)))


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: traces the predict function at this shape
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _judge(speedup: float, f1_float32: float, f1_bfloat16: float) -> bool:
    return bool(speedup >= SPEEDUP_MIN and abs(f1_bfloat16 - f1_float32) <= F1_TOLERANCE)


def rejudge(preset: Path) -> None:
    """Apply the current bfloat16 rule to the figures already stored in ``preset`` (nothing is measured)."""
    from emzoo.inference.effective import RECORD

    record = json.loads((preset / "emzoo.json").read_text()).get(RECORD)
    if not record:
        print("  nothing measured yet; run with --write first")
        return
    bf16 = record["bfloat16"]
    bf16["use"] = _judge(bf16["speedup"], bf16["f1_float32"], bf16["f1_bfloat16"])
    bf16["rule"] = f"speed-up >= {SPEEDUP_MIN} and |F1 difference| <= {F1_TOLERANCE}"
    print(f"  bfloat16 x{bf16['speedup']:.2f}, F1 {bf16['f1_float32']:.4f} -> {bf16['f1_bfloat16']:.4f}: "
          f"{'use bfloat16' if bf16['use'] else 'keep float32'}")
    write(preset, record)


def measure(preset: Path, data_root: Path, tolerance: float, repeats: int) -> dict:
    import keras
    import numpy as np

    import emzoo
    from emzoo._hardware import cpu_has_bf16
    from emzoo.inference.effective import measure_halo, weights_digest
    from emzoo.inference.predict import resolve_model

    meta = json.loads((preset / "emzoo.json").read_text())
    model = resolve_model(str(preset))
    split, raw, labels = _test_data(meta, data_root)
    images = [raw[i] for i in range(raw.shape[0])] if raw.ndim == 3 else [raw]
    report = measure_halo(model, images, tolerance=tolerance)
    print(f"  halo: {report.halo} (exact {report.exact}); max deviation per halo {report.deviation}; "
          f"{report.seconds:.0f} s")

    def run(precision: str):
        return emzoo.predict(model, raw, tile=10**6, halo="exact", blend="none", precision=precision,
                             progress=False)[..., 0]

    t32, p32 = _timed(lambda: run("float32"), repeats)
    t16, p16 = _timed(lambda: run("bfloat16"), repeats)
    f32, f16 = _f1(p32, labels), _f1(p16, labels)
    speedup = t32 / t16
    use = _judge(speedup, f32, f16)
    print(f"  float32 {t32:.2f} s F1 {f32:.4f} | bfloat16 {t16:.2f} s F1 {f16:.4f} | x{speedup:.2f} -> "
          f"{'use bfloat16' if use else 'keep float32'}; max |bf16 - fp32| {float(np.abs(p16 - p32).max()):.4f}")
    return {
        "weights_digest": weights_digest(model),
        "halo": {"value": report.halo, "exact": report.exact, "tolerance": report.tolerance,
                 "max_deviation": {str(k): round(v, 6) for k, v in report.deviation.items()},
                 "core": report.core, "data": split, "blend": "none"},
        "bfloat16": {"use": use, "speedup": round(speedup, 3), "seconds_float32": round(t32, 3),
                     "seconds_bfloat16": round(t16, 3), "f1_float32": round(f32, 5), "f1_bfloat16": round(f16, 5),
                     "max_abs_difference": round(float(np.abs(p16 - p32).max()), 5),
                     "rule": f"speed-up >= {SPEEDUP_MIN} and |F1 difference| <= {F1_TOLERANCE}",
                     "input": f"{split}, {raw.shape}, one window per slice"},
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, bf16 native: {cpu_has_bf16()}, "
                   f"{keras.backend.backend()}",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": "benchmarks/effective_halo.py --write",
    }


def write(preset: Path, record: dict) -> None:
    from emzoo.inference.effective import RECORD

    path = preset / "emzoo.json"
    meta = json.loads(path.read_text())
    meta["halo"] = record["halo"]["value"]
    meta[RECORD] = record
    text = json.dumps(meta, indent=2) + "\n"
    path.write_text(text)
    entry, tag = preset.parent.name, preset.name
    manifest_path = MANIFEST / f"{entry}.json"
    manifest = json.loads(manifest_path.read_text())
    data = text.encode()
    manifest["tags"][tag]["files"]["emzoo.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"  wrote {path.relative_to(REPO)} and {manifest_path.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="Dataset root.")
    parser.add_argument("--only", default=None, help="Comma-separated entries (default: every bundled preset).")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="Store the results in the presets.")
    parser.add_argument("--rejudge", action="store_true", help="Only re-apply the bfloat16 rule to stored figures.")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    for preset in sorted(p.parent for p in WEIGHTS.glob("*/*/emzoo.json")):
        if only and preset.parent.name not in only:
            continue
        print(f"{preset.parent.name}.{preset.name}")
        if args.rejudge:
            rejudge(preset)
            continue
        record = measure(preset, args.data, args.tolerance, args.repeats)
        if args.write:
            write(preset, record)


if __name__ == "__main__":
    main()
