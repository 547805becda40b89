"""Acceptance run: train ``emnet_v1_bn`` from scratch on cardiac_mito/train, report wall time and test F1.

Target (issue 7): within 20 minutes on the 2-core CPU machine, test F1 >= 0.90 on cardiac_mito/test (pooled
foreground F1 at 0.5, ``METRICS.md`` §2; EM-stellar's published EM-net V1 BN reaches 0.975 after 250 epochs).

The EM-net recipe (BCE, RAdam 1e-3 with 10 % linear warm-up then linear decay to 1e-5, EM-net augmentation, global
z-score fitted on train/) with CPU-sized defaults: 128² patches, batch 4, 800 steps (0.75 s per step on the idle
2-core machine, 1.2 s under a load of 4; plus ~30 s of graph building, BatchNorm recalibration and the final test
prediction). Measured (seed 0): 150 steps -> test F1 0.894 in 2.2 min; 300 steps -> 0.920 in 6.3 min (loaded). No validation split: all 20 training slices
train, the schedule ends at its floor and the last weights are scored on test/ once. Everything the time includes:
data loading, building, compiling, training, the whole-image test prediction and writing the preset.

Usage (the same run as a CLI command: ``emzoo finetune emnet_v1_bn --data ../shared/data/cardiac_mito --steps 800
--batch-size 4 --patch-size 128 --out emnet_cardiac``)::

    .venv/bin/python benchmarks/acceptance_emnet.py [--steps 800] [--batch 4] [--patch 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cardiac_mito"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="cardiac_mito folder (train/ and test/).")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Preset folder (default: a temporary folder).")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    args = parser.parse_args()

    start = time.perf_counter()
    from emzoo.training import finetune

    out = args.out or Path(tempfile.mkdtemp(prefix="emnet_cardiac_")) / "preset"
    _model, history = finetune("emnet_v1_bn", args.data, test=args.data, steps=args.steps, batch_size=args.batch,
                               patch_size=args.patch, seed=args.seed, out_dir=out, resume=False,
                               progress=not args.quiet)
    elapsed = time.perf_counter() - start
    f1 = history["test_metrics"]["f1"]
    print(f"emnet_v1_bn from scratch on cardiac_mito/train: {args.steps} steps x {args.batch} x {args.patch}^2, "
          f"seed {args.seed}")
    print(f"elapsed {elapsed:.0f} s ({elapsed / 60:.1f} min; training {history['train_s']:.0f} s, "
          f"{history['seconds_per_step']:.2f} s/step)")
    print(f"test F1 {f1:.4f} (precision {history['test_metrics']['ppv']:.4f}, recall "
          f"{history['test_metrics']['sensitivity']:.4f}); preset {out}")
    ok = elapsed <= 20 * 60 and f1 >= 0.90
    print("ACCEPTANCE " + ("PASSED" if ok else "FAILED") + " (target: <= 20 min and test F1 >= 0.90)")


if __name__ == "__main__":
    main()
