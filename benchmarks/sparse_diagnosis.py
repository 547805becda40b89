"""Where a cdeep3m_mito model's errors on val/ come from: threshold, false-positive objects, intensity.

Answers three questions about a preset's prediction on ``cdeep3m_mito/val`` (z 50-59, the sparse acceptance test):

1. Are the false positives unsure (a higher threshold or an FP-averse loss would remove them) or confident? F1,
   precision and recall at thresholds 0.3-0.95.
2. Are they many small specks or a few large structures? The share of false-positive pixels in the 10 largest
   false-positive objects of each slice, and the length of the largest.
3. Is it an intensity shift between train/ and val/? F1 with the preset's stored normalisation (fitted on train/),
   with the same method refitted on val/, and with val/ histogram-matched to train/.

Usage::

    .venv/bin/python benchmarks/acceptance_sparse.py unet2d_fb --steps 600 --out /tmp/unet_sparse
    .venv/bin/python benchmarks/sparse_diagnosis.py /tmp/unet_sparse

Any preset folder or zoo name works (a zoo run's ``run/`` folder, for instance).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdeep3m_mito"
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def _prf(prob: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    pred = prob > threshold
    tp = float(np.count_nonzero(pred & labels))
    n_pred, n_lab = float(np.count_nonzero(pred)), float(np.count_nonzero(labels))
    f1 = 2 * tp / (n_pred + n_lab) if n_pred + n_lab else float("nan")
    return f1, tp / n_pred if n_pred else float("nan"), tp / n_lab if n_lab else float("nan")


def _predict(model, raw: np.ndarray, **kwargs) -> np.ndarray:
    import emzoo

    # Whole 1024² images in one window: no tiling seams, as the acceptance run scores them.
    prob = emzoo.predict(model, raw, tile=tuple(raw.shape[1:]), halo=0, progress=False, **kwargs)
    return np.asarray(prob[..., -1], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="Preset folder or zoo name of a binary mitochondria model.")
    parser.add_argument("--data", type=Path, default=DATA, help="cdeep3m_mito folder (train/ and val/).")
    args = parser.parse_args()

    import tifffile
    from skimage.exposure import match_histograms
    from skimage.measure import label, regionprops

    import emzoo
    from emzoo.io.normalize import fit_normalization, normalize

    raw = tifffile.imread(args.data / "val" / "raw.tif")
    labels = tifffile.imread(args.data / "val" / "labels.tif") > 0
    model = emzoo.load(args.preset)
    prob = _predict(model, raw)

    print(f"{args.preset} on cdeep3m_mito/val z50-59 ({100 * labels.mean():.2f} % labelled foreground)")
    print("1. threshold   F1      precision  recall")
    for t in THRESHOLDS:
        f1, p, r = _prf(prob, labels, t)
        print(f"   {t:<10.2f}  {f1:.4f}  {p:.4f}     {r:.4f}")

    print("2. slice  FP px   FP objects  share in 10 largest  largest: length px (labelled share)")
    for z in range(raw.shape[0]):
        fp = label((prob[z] > 0.5) & ~labels[z])
        sizes = np.bincount(fp.ravel())[1:]
        if not sizes.size:
            print(f"   {z:<5d}  0")
            continue
        top = np.sort(sizes)[::-1][:10].sum() / sizes.sum()
        objects = label(prob[z] > 0.5)
        biggest = max(regionprops(objects), key=lambda r: r.area)
        on_label = labels[z][objects == biggest.label].mean()
        print(f"   {z:<5d}  {sizes.sum():<6d}  {sizes.size:<10d}  {top:<19.3f}  {biggest.axis_major_length:.0f} "
              f"({on_label:.2f})")

    train_raw = tifffile.imread(args.data / "train" / "raw.tif")
    method = model.emzoo_metadata["normalization"]["method"]
    own = normalize(raw, fit_normalization(raw, method))
    matched = match_histograms(raw, train_raw).astype(np.float32)
    rows = [("stored (fitted on train/)", prob),
            (f"{method} refitted on val/", _predict(model, own, normalization=None)),
            ("val/ histogram-matched to train/", _predict(model, matched))]
    print("3. normalisation                     F1      precision  recall")
    for name, p in rows:
        f1, pr, rc = _prf(p, labels)
        print(f"   {name:<34s}  {f1:.4f}  {pr:.4f}     {rc:.4f}")


if __name__ == "__main__":
    main()
