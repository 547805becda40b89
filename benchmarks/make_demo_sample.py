"""Rebuild the demo sample shipped in ``emzoo/data/cardiac_mito_sample`` from ``../shared/data/cardiac_mito``.

The sample is a 256x256 crop of 8 training slices (2 per stack) and of the 4 test slices, < 1 MiB in all, so
``make demo`` runs the harness on real EM data without downloads. The EM-stellar paper's own published predictions
of its 13 networks on the 4 test slices (MIT, github CellSMB/EM-stellar) are cropped the same way into
``emstellar/<network>.tif`` with the sha256 of each source file in ``dataset.json``: the demo's reference rows.
Usage::

    .venv/bin/python benchmarks/make_demo_sample.py [--src ../shared/data/cardiac_mito] [--emstellar-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "emzoo" / "data" / "cardiac_mito_sample"
CROP = (slice(128, 384), slice(0, 256))  # y, x: a region dense in mitochondria on every stack
TRAIN_SLICES = [0, 3, 5, 8, 10, 13, 15, 18]  # stacks A-D store 5 slices each; take 2 per stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "cardiac_mito")
    parser.add_argument("--emstellar-only", action="store_true", help="Only (re)write the EM-stellar reference crops.")
    args = parser.parse_args()
    src = args.src
    if args.emstellar_only:
        write_emstellar(src)
        return
    parts = {
        "train": (tifffile.imread(src / "train/raw.tif")[TRAIN_SLICES], tifffile.imread(src / "train/labels.tif")[TRAIN_SLICES]),
        "test": (tifffile.imread(src / "test/raw.tif"), tifffile.imread(src / "test/labels.tif")),
    }
    for split, (raw, labels) in parts.items():
        (DEST / split).mkdir(parents=True, exist_ok=True)
        raw = np.ascontiguousarray(raw[(slice(None), *CROP)])
        labels = np.ascontiguousarray((labels[(slice(None), *CROP)] > 0).astype(np.uint8))
        # minisblack: otherwise tifffile stores a 3- or 4-slice stack as planar RGB(A) samples.
        tifffile.imwrite(DEST / split / "raw.tif", raw, compression="zlib", photometric="minisblack")
        tifffile.imwrite(DEST / split / "labels.tif", labels, compression="zlib", photometric="minisblack")
        print(split, raw.shape, f"foreground {labels.mean():.3f}")
    meta = json.loads((src / "dataset.json").read_text())
    meta.update(
        name="cardiac_mito_sample",
        splits={"train": "8 slices (2 per stack A-D: slices 0 and 3 of each), crop y 128:384, x 0:256",
                "test": "4 slices (stacks A-D, slice 4), same crop"},
        license="MIT (EM-net and EM-stellar repositories)",
        derived_by="benchmarks/make_demo_sample.py",
    )
    meta.pop("emstellar_outputs", None)
    (DEST / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_emstellar(src)


def write_emstellar(src: Path) -> None:
    """Crop EM-stellar's published test predictions (uint8, value/255) like the test split; record their sha256."""
    folder = src / "emstellar_outputs"
    out = DEST / "emstellar"
    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for path in sorted(folder.glob("*.tif")):
        if path.stem == "groundtruth_uint8":
            continue
        prob = tifffile.imread(path)
        crop = np.ascontiguousarray(prob[(slice(None), *CROP)])
        tifffile.imwrite(out / path.name, crop, compression="zlib", photometric="minisblack")
        record[path.stem] = {"file": f"emstellar/{path.name}",
                             "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                             "source": f"github CellSMB/EM-stellar Images/ (MIT): {path.name}, uint8 = p * 255"}
        print("emstellar", path.stem, crop.shape, crop.dtype)
    meta = json.loads((DEST / "dataset.json").read_text())
    meta["emstellar_outputs"] = {"crop": "test slices, y 128:384, x 0:256", "networks": record}
    (DEST / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
