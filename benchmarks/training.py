"""Training throughput: samples/s of three entries, and the input pipeline's rate against EM-net's step rate.

Measures, on this machine's CPU (or GPU), with the same compile settings as :func:`emzoo.finetune`:

- training samples/s of ``emnet_v1_bn``, ``unet_bn`` and a light entry (``unet2d_fb``), after warm-up steps;
- batches/s of the seeded, augmented patch loader (EM-net recipe: flips, rotation ±140°, zoom 0.2) on
  ``../shared/data/cardiac_mito/train`` (synthetic data when it is absent), with 1 and ``--workers`` threads;
- the ratio loader rate / ``emnet_v1_bn`` step rate (target >= 5: the loader never starves training);
- with ``--precision``: float32 against Keras' ``mixed_bfloat16`` policy (what ``mixed_precision="auto"`` picks on
  a CPU with AMX/AVX512-BF16): training samples/s of each entry, and the test F1 on ``cardiac_mito/test`` of a
  fixed short ``emzoo.finetune`` run (``--f1-steps`` steps of ``emnet_v1_bn``, same seed) in both precisions.

Usage::

    .venv/bin/python benchmarks/training.py [--patch 128] [--batch 4] [--steps 5] [--entries emnet_v1_bn unet_bn]
    .venv/bin/python benchmarks/training.py --precision [--entries emnet_v1_bn emnet_v2_4x] [--f1-steps 300]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import emzoo  # noqa: E402
from emzoo.io.normalize import normalize  # noqa: E402
from emzoo.training.data import PatchDataset, TrainingVolume, load_pairs, prefetch, prepare_labels  # noqa: E402
from emzoo.training.evaluate import PixelF1  # noqa: E402
from emzoo.training.finetune import gpu_available  # noqa: E402
from emzoo.training.losses import PackedLoss  # noqa: E402
from emzoo.training.optimizers import make_optimizer  # noqa: E402
from emzoo.training.recipes import get_recipe  # noqa: E402
from emzoo.training.sampling import UniformSampler  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cardiac_mito"


def _volume() -> tuple[TrainingVolume, str]:
    if (DATA / "train").is_dir():
        vols, _ = load_pairs(DATA)
        vol, where = vols[0], "cardiac_mito/train"
    else:
        rng = np.random.default_rng(0)
        raw = rng.integers(0, 255, (20, 512, 512)).astype(np.uint8)
        vol, where = TrainingVolume(raw, (raw > 128).astype(np.uint8)), "synthetic 20x512x512"
    vol.labels = prepare_labels(vol.labels, 1)
    vol.raw = normalize(vol.raw, {"method": "zscore", "mean": float(vol.raw.mean()), "std": float(vol.raw.std())})
    return vol, where


def _loader(vol: TrainingVolume, patch: int, batch: int, steps: int) -> PatchDataset:
    window = (1, patch, patch)
    return PatchDataset([vol], input_window=window, label_window=window,
                        sampler=UniformSampler().prepare([vol.labels], window), augment=get_recipe("emnet").augment,
                        batch_size=batch, steps=steps, seed=0)


def loader_rate(vol: TrainingVolume, patch: int, batch: int, n: int, workers: int) -> float:
    """Batches per second of the augmented loader (after one warm-up batch)."""
    ds = _loader(vol, patch, batch, n + 1)
    ds[0]
    start = time.perf_counter()
    for _ in prefetch(ds, 1, n + 1, workers=workers):
        pass
    return n / (time.perf_counter() - start)


def train_rate(entry: str, vol: TrainingVolume, patch: int, batch: int, steps: int, warmup: int = 2) -> float:
    """Training steps per second of ``entry`` (compiled like finetune does), after ``warmup`` steps."""
    keras.utils.set_random_seed(0)
    model = emzoo.build(entry, input_shape=(patch, patch, 1))
    jit = False if keras.backend.backend() == "tensorflow" and not gpu_available() else "auto"
    model.compile(optimizer=make_optimizer("radam", learning_rate=1e-3, total_steps=1000, schedule="warmup_linear"),
                  loss=PackedLoss("bce"), metrics=[PixelF1()], jit_compile=jit)
    batches = list(prefetch(_loader(vol, patch, batch, warmup + steps), 0, warmup + steps))
    for x, y in batches[:warmup]:
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        model.train_on_batch(x, y)
    return steps / (time.perf_counter() - start)


def _with_policy(policy: str, fn, *args):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return fn(*args)
    finally:
        keras.config.set_dtype_policy(previous)


def precision_report(entries: list[str], vol: TrainingVolume, patch: int, batch: int, steps: int,
                     f1_steps: int) -> None:
    """float32 vs mixed_bfloat16: samples/s per entry, and test F1 of a fixed short fine-tune of emnet_v1_bn."""
    from emzoo.training.finetune import cpu_has_bf16

    print(f"CPU native bfloat16 (AMX/AVX512-BF16): {cpu_has_bf16()}")
    for entry in entries:
        rates = {p: _with_policy(p, train_rate, entry, vol, patch, batch, steps) * batch
                 for p in ("float32", "mixed_bfloat16")}
        print(f"{entry:>14}: float32 {rates['float32']:.2f} samples/s, mixed_bfloat16 "
              f"{rates['mixed_bfloat16']:.2f} samples/s -> x{rates['mixed_bfloat16'] / rates['float32']:.2f}")
    if f1_steps and (DATA / "test").is_dir():
        for policy in ("float32", "mixed_bfloat16"):
            start = time.perf_counter()
            _, history = emzoo.finetune("emnet_v1_bn", DATA, test=DATA, steps=f1_steps, batch_size=batch,
                                        patch_size=patch, seed=0, progress=False, workers=2,
                                        mixed_precision=policy if policy != "float32" else False)
            print(f"emnet_v1_bn {f1_steps} steps, {policy:>14}: test F1 {history['test_metrics']['f1']:.4f} "
                  f"({time.perf_counter() - start:.0f} s end to end, {history['samples_per_s']:.2f} samples/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=128, help="Patch side (multiple of 16).")
    parser.add_argument("--batch", type=int, default=4, help="Patches per step.")
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps per entry.")
    parser.add_argument("--loader-batches", type=int, default=20, help="Timed loader batches.")
    parser.add_argument("--workers", type=int, default=2, help="Loader threads of the second loader measurement.")
    parser.add_argument("--entries", nargs="+", default=None,
                        help="Default: emnet_v1_bn unet_bn unet2d_fb (emnet_v1_bn emnet_v2_4x with --precision).")
    parser.add_argument("--precision", action="store_true", help="Compare float32 with mixed_bfloat16.")
    parser.add_argument("--f1-steps", type=int, default=300, help="Steps of the fixed F1 run (0: skip).")
    args = parser.parse_args()

    vol, where = _volume()
    if args.precision:
        print(f"backend {keras.backend.backend()}, CPU ({os.cpu_count()} cores); data {where}; patch "
              f"{args.patch}², batch {args.batch}")
        precision_report(args.entries or ["emnet_v1_bn", "emnet_v2_4x"], vol, args.patch, args.batch, args.steps,
                         args.f1_steps)
        return
    args.entries = args.entries or ["emnet_v1_bn", "unet_bn", "unet2d_fb"]
    device = "GPU" if gpu_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"backend {keras.backend.backend()}, {device}; data {where}; patch {args.patch}², batch {args.batch}")
    rates = {}
    for entry in args.entries:
        steps_per_s = train_rate(entry, vol, args.patch, args.batch, args.steps)
        rates[entry] = steps_per_s
        print(f"{entry:>14}: {steps_per_s * args.batch:7.2f} samples/s  ({1 / steps_per_s:.3f} s/step, "
              f"{steps_per_s * args.batch * args.patch ** 2 / 1e6:.3f} Mpx/s)")
    one = loader_rate(vol, args.patch, args.batch, args.loader_batches, 1)
    many = loader_rate(vol, args.patch, args.batch, args.loader_batches, args.workers)
    print(f"{'loader':>14}: {one * args.batch:7.1f} samples/s with 1 thread, {many * args.batch:.1f} with "
          f"{args.workers} (EM-net augmentation)")
    if "emnet_v1_bn" in rates:
        ratio = max(one, many) / rates["emnet_v1_bn"]
        print(f"loader rate / emnet_v1_bn step rate = {ratio:.1f}x (target >= 5x): {'OK' if ratio >= 5 else 'LOW'}")


if __name__ == "__main__":
    main()
