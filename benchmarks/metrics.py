"""Time the full EM-stellar golden table: 13 networks x 4 slices of 512² x 11 thresholds (``METRICS.md`` §6).

Computes :func:`emzoo.metrics.all_metrics` (seven confusion metrics + Fiji's thinned VRand/VInfo) for every
network in ``shared/data/cardiac_mito/emstellar_outputs``, prints the seconds per network, the total, and the
largest deviation from ``emstellar_metrics.csv``. ``--workers 2`` scores networks in parallel processes.
Usage::

    .venv/bin/python benchmarks/metrics.py [--workers 2] [--src ../shared/data/cardiac_mito/emstellar_outputs]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

from emzoo.metrics import all_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "cardiac_mito" / "emstellar_outputs"
COLUMNS = {
    "F1": "f1",
    "VRand": "vrand",
    "VInfo": "vinfo",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "PPV": "ppv",
    "NPV": "npv",
    "Jaccard": "jaccard",
}


def read_probability(path: Path) -> np.ndarray:
    """8-bit TIFF -> float32(k) / 255 in float32, as EM-stellar and Fiji read it."""
    return tifffile.imread(path).astype(np.float32) / np.float32(255)


def score(args: tuple[Path, str]) -> tuple[str, dict[str, float], float, float]:
    src, name = args
    truth = read_probability(src / "groundtruth_uint8.tif")
    prediction = read_probability(src / f"{name.replace(' ', '_')}.tif")
    wall, cpu = time.perf_counter(), time.process_time()
    row = all_metrics(truth, prediction)
    return name, row, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (one network each)")
    args = parser.parse_args()
    with open(args.src / "emstellar_metrics.csv", newline="") as handle:
        table = {row["Network"]: row for row in csv.DictReader(handle)}

    jobs = [(args.src, name) for name in table]
    start = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(score, jobs))
    else:
        results = [score(job) for job in jobs]
    total = time.perf_counter() - start

    worst = dict.fromkeys(COLUMNS, 0.0)
    print(f"{'network':<16} {'wall s':>7} {'cpu s':>7}  VRand    VInfo    (thresholds)")
    for name, row, wall, cpu in results:
        for column, key in COLUMNS.items():
            worst[column] = max(worst[column], abs(row[key] - float(table[name][column])))
        print(
            f"{name:<16} {wall:7.2f} {cpu:7.2f}  {row['vrand']:.5f}  {row['vinfo']:.5f}  "
            f"({row['vrand_threshold']:.2f}, {row['vinfo_threshold']:.2f})"
        )
    cpu_total = sum(r[3] for r in results)
    print(
        f"full table: {total:.2f} s wall ({cpu_total:.2f} s CPU) with {args.workers} worker(s) on "
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"
    )
    print("max |deviation| from the CSV: " + ", ".join(f"{c} {v:.1e}" for c, v in worst.items()))


if __name__ == "__main__":
    main()
