"""The export table: one small entry per family x (onnx, savedmodel, keras), the largest deviation from Keras.

Each entry (``tests/export/cases.py``, the same as the tests) is exported with :func:`emzoo.export`, run with its
own runtime (ONNX Runtime, ``tf.saved_model.load``, Keras) on a random input, and compared with the Keras model;
a format passes at ``--tolerance`` (1e-4). A failing export prints its one-line error instead of a number.

Usage::

    .venv/bin/python benchmarks/export_table.py [--only unet segnet] [--formats onnx] [--tolerance 1e-4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = {"onnx": ".onnx", "savedmodel": "_savedmodel", "keras": ".keras"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="families to run (default: all)")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)

    import emzoo
    from emzoo.exporters import max_deviation
    from tests.export.cases import FAMILIES

    families = args.only or list(FAMILIES)
    print("| family | entry | params | " + " | ".join(args.formats) + " |")
    print("|---|---|---:|" + "---|" * len(args.formats))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            entry, kwargs, shape = FAMILIES[family]
            model = emzoo.build(entry, **kwargs)
            x = np.random.default_rng(0).standard_normal(shape).astype("float32")
            cells = []
            for fmt in args.formats:
                start = time.perf_counter()
                try:
                    path = emzoo.export(model, Path(tmp) / f"{entry}{FORMATS[fmt]}", format=fmt)
                    dev = max_deviation(model, path, x, format=fmt)
                    verdict = "pass" if dev < args.tolerance else "FAIL"
                    cells.append(f"{verdict} {dev:.1e} ({time.perf_counter() - start:.0f} s)")
                    failed += verdict == "FAIL"
                except Exception as exc:  # the table reports every failure and goes on
                    cells.append(f"FAIL {type(exc).__name__}: {' '.join(str(exc).split())[:80]}")
                    failed += 1
            print(f"| {family} | {entry} | {model.count_params():,} | " + " | ".join(cells) + " |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
