"""Print the README's weights table from the bundled presets' own records (``emzoo/weights/*/*/emzoo.json``).

Every number comes from the preset's ``emzoo.json``, written by ``emzoo train-zoo`` when it scored the preset on
its held-out test split; rerun a card with the command in its ``training.command`` to reproduce it. Usage::

    .venv/bin/python benchmarks/zoo_table.py [--curve]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "emzoo" / "weights"


def _fmt(values: dict, key: str) -> str:
    return f"{values[key]:.4f}" if key in values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curve", action="store_true", help="Also print each preset's learning curve.")
    args = parser.parse_args()
    metas = [json.loads(p.read_text()) for p in sorted(ROOT.glob("*/*/emzoo.json"))]
    keys = ("f1", "jaccard", "vrand", "vinfo")
    print("| preset | trained on -> scored on | weights | " + " | ".join(
        f"{k} (no TTA / TTA)" for k in ("F1", "Jaccard", "VRand", "VInfo")) + " | paper F1 / VRand | training (wall, 1 thread, shared CPU) | size |")
    print("|---|---|---|" + "---:|" * 4 + "---|---:|---:|")
    total = 0
    for meta in metas:
        card = meta["zoo_card"]
        folder = ROOT / card["name"].replace(".", "/")
        size = sum(p.stat().st_size for p in folder.iterdir())
        total += size
        plain = meta["metrics"]["values"]
        tta_name, tta = next(iter(meta["metrics_tta"].items()), ("-", {}))
        ref = meta.get("reference", {})
        paper = f"{ref['f1']:.4f} / {ref['vrand']:.4f}" if "f1" in ref else "-"
        split = meta["metrics"]["test_split"].split(" (")[0]
        train = card["train"]
        where = f"{card['dataset']}/{train['split'] or train['labels']}" + (
            f" z {train['z'][0]}-{train['z'][1] - 1}" if train["z"] else "")
        cells = [f"{_fmt(plain, k)} / {_fmt(tta, k)}" for k in keys]
        t = meta["training"]
        print(f"| `{card['name']}` | {where} -> {split} | {meta['weights_encoding']['name']} | " + " | ".join(cells)
              + f" | {paper} | {t['steps']} steps, {t['train_s'] / 60:.0f} min | {size / 2**20:.1f} MiB |")
        if args.curve:
            curve = ", ".join(f"{s}: {p['f1']:.4f}" for s, p in sorted(meta["learning_curve"].items(),
                                                                       key=lambda kv: int(kv[0])))
            print(f"|   learning curve of `{card['name']}` (step: test F1, no TTA) | {curve} |")
    print(f"\nbundled in all: {total / 2**20:.1f} MiB (budget 52 MiB)")


if __name__ == "__main__":
    main()
