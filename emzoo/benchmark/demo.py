"""The built-in demo: the harness on the cardiac mitochondria sample shipped inside the package.

With bundled weights (the normal case) the demo scores every bundled 2D binary preset as published (no
fine-tuning), the average ensemble of those trained on the sample's source data, and EM-stellar's own published
predictions of the same crops as reference rows; it writes the leaderboard, plots and an overlay of the best
model. Without any weights it falls back to fine-tuning the two lightest entries.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from emzoo.benchmark.data import demo_dataset_path, load_dataset
from emzoo.benchmark.harness import benchmark

__all__ = ["demo_models", "run_demo", "emstellar_references", "plot_overlay"]

DEFAULT_STEPS = 300
# CPU-sized fine-tuning: small patches and batches keep the whole demo within about 3 minutes on 2 cores.
DEMO_FINETUNE = {"batch_size": 4, "patch_size": 128}


def _gflops_per_megapixel(name: str) -> float:
    from emzoo.registry import entry_info

    meta = entry_info(name)
    return meta.gflops / (math.prod(meta.flops_input[1:-1]) / 1e6)


def demo_models(count: int = 2) -> tuple[list[str], bool]:
    """Entries the demo scores: those with published 2D binary weights, else the ``count`` lightest 2D binary entries.

    Returns
    -------
    (names, pretrained) : (list of str, bool)
    """
    from emzoo.catalog import info
    from emzoo.registry import list_models

    candidates = [n for n in list_models() if info(n).dims == "2D" and info(n).num_classes == 1]
    pretrained = [n for n in candidates if info(n).weights]
    if len(pretrained) >= 2:
        return pretrained, True
    return sorted(candidates, key=_gflops_per_megapixel)[:count], False


def emstellar_references(folder: str | Path | None = None) -> dict[str, tuple[np.ndarray, str]]:
    """EM-stellar's published predictions cropped into the sample: ``{"EM-stellar <net>": (probs, source)}``."""
    import tifffile

    folder = Path(folder) if folder is not None else demo_dataset_path()
    meta = json.loads((folder / "dataset.json").read_text()).get("emstellar_outputs", {})
    out = {}
    for name, rec in meta.get("networks", {}).items():
        prob = tifffile.imread(folder / rec["file"]).astype(np.float32) / 255.0
        out[f"EM-stellar {name}"] = (prob, f"{rec['source']} (sha256 {rec['source_sha256']}), {meta['crop']}")
    return out


def plot_overlay(raw: np.ndarray, labels: np.ndarray, prob: np.ndarray, path: str | Path, *, title: str) -> Path:
    """The test slices side by side, each drawn by :func:`emzoo.viz.overlay_rgb` with its F1, written atomically.

    The ground truth is outlined in yellow; false positives (prediction > 0.5 outside it) are filled vermillion and
    false negatives blue, as in ``emzoo benchmark``'s per-item overlays.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from emzoo.benchmark.overlays import item_scores
    from emzoo.benchmark.report import _atomic
    from emzoo.viz import legend_text, overlay_rgb

    raw, labels, prob = (np.asarray(a) if np.ndim(a) == 3 else np.asarray(a)[None] for a in (raw, labels, prob))
    n = raw.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(overlay_rgb(raw[i], prob[i], labels[i]), interpolation="antialiased")
        ax.set_axis_off()
        scores = item_scores(labels[i], prob[i])
        ax.set_title(f"test slice {i}: F1 {scores['f1']:.3f}, Jaccard {scores['jaccard']:.3f}", fontsize=8)
    fig.suptitle(f"{title}\n{legend_text(True)}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def run_demo(out: str | Path = "demo_out", *, steps: int = DEFAULT_STEPS, progress: bool = True) -> pd.DataFrame:
    """Run the harness on the packaged sample and write the leaderboard, plots and ``overlay.png`` to ``out``.

    With bundled weights the demo scores them (no fine-tuning) beside EM-stellar's published predictions;
    otherwise it fine-tunes the two lightest entries for ``steps`` steps and scores them and their ensemble.
    """
    from emzoo.hub.manifest import resolve_weights

    names, pretrained = demo_models()
    dataset = load_dataset(demo_dataset_path())
    source = dataset.meta.get("name", "").removesuffix("_sample")
    if pretrained:
        # Ensemble the presets trained on the sample's source data (chosen from their metadata, not the scores).
        same = [n for n in names if (resolve_weights(n).trained_on or {}).get("name") == source]
        members = same if len(same) >= 2 else names
    else:
        members = names[:3]
    probs: dict[str, np.ndarray] = {}
    board = benchmark(
        names,
        dataset,
        ensembles=[f"avg:{'+'.join(members)}"],
        finetune=None if pretrained else steps,
        finetune_kwargs=None if pretrained else DEMO_FINETUNE,
        out=out,
        progress=progress,
        predictions=emstellar_references() if pretrained else None,
        keep_probabilities=probs,
        # Each 256² crop in one window (the bundled presets take any size): no tiling, and a halo would only add
        # mirrored context that the crop does not have.
        **({"tile": tuple(dataset.test.raw.shape[1:]), "halo": 0} if pretrained else {}),
    )
    ok = board[(board["status"] == "ok") & board["model"].isin(list(probs))]
    if len(ok):
        best = ok.iloc[0]["model"]  # the board is sorted by VRand
        path = plot_overlay(dataset.test.raw, dataset.test.labels, probs[best], Path(out) / "overlay.png",
                            title=f"{best} on the cardiac sample")
        if progress:
            print(f"wrote {path}", flush=True)
    return board
