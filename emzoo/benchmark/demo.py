"""The built-in demo: the harness on the cardiac mitochondria sample shipped inside the package."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from emzoo.benchmark.data import demo_dataset_path, load_dataset
from emzoo.benchmark.harness import benchmark

__all__ = ["demo_models", "run_demo"]

DEFAULT_STEPS = 300
# CPU-sized fine-tuning: small patches and batches keep the whole demo within about 3 minutes on 2 cores.
DEMO_FINETUNE = {"batch_size": 4, "patch_size": 128}


def _gflops_per_megapixel(name: str) -> float:
    from emzoo.registry import info

    meta = info(name)
    return meta.gflops / (math.prod(meta.flops_input[1:-1]) / 1e6)


def demo_models(count: int = 2) -> tuple[list[str], bool]:
    """Entries the demo scores: those with published 2D binary weights, else the ``count`` lightest 2D binary entries.

    Returns
    -------
    (names, pretrained) : (list of str, bool)
    """
    from emzoo.registry import info, list_models

    candidates = [n for n in list_models() if info(n).dims == "2D" and info(n).num_classes == 1]
    pretrained = [n for n in candidates if info(n).weights]
    if len(pretrained) >= 2:
        return pretrained, True
    return sorted(candidates, key=_gflops_per_megapixel)[:count], False


def run_demo(out: str | Path = "demo_out", *, steps: int = DEFAULT_STEPS, progress: bool = True) -> pd.DataFrame:
    """Run the harness on the packaged sample and write the leaderboard and plots to ``out``.

    With published weights the demo scores them; otherwise it fine-tunes the two lightest entries for ``steps``
    steps (about 3 minutes on 2 CPU cores at the default) and scores them and their average ensemble.
    """
    names, pretrained = demo_models()
    dataset = load_dataset(demo_dataset_path())
    ensemble = f"avg:{'+'.join(names[:3])}"
    return benchmark(
        names,
        dataset,
        ensembles=[ensemble],
        finetune=None if pretrained else steps,
        finetune_kwargs=None if pretrained else DEMO_FINETUNE,
        out=out,
        progress=progress,
    )
