"""Print where this machine's low-precision convolutions are wrong: single ops over a shape grid, then zoo entries.

Part 1 runs ``keras.ops.conv`` / ``conv_transpose`` in bfloat16 and float32 on the same (bfloat16-exact) numbers and
counts the shapes whose output or kernel gradient is off by more than
:data:`emzoo.training.precision.TOLERANCE` (relative L2). Part 2 builds each entry under ``mixed_bfloat16`` and
runs :func:`emzoo.training.precision.low_precision_faults` at its default recipe's training window, the check that
:func:`emzoo.finetune` runs before it trains. Usage::

    .venv/bin/python benchmarks/precision_kernels.py [--entries unet3d_fb net2d3d ...] [--no-grid]
        [--patch-size 16]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time

import keras
import numpy as np

from emzoo.registry import build, get_entry, list_models
from emzoo.training.config import MODES, patch_window
from emzoo.training.precision import TOLERANCE, low_precision_faults
from emzoo.training.recipes import default_recipe

OPS = [  # (dims, kernel, stride, transposed)
    (2, 3, 1, False), (2, 3, 2, False), (2, 2, 2, True),
    (3, 1, 1, False), (3, 3, 1, False), (3, 3, 2, False), (3, 5, 1, False), (3, 2, 2, True),
]
DEPTHS, SIDES, CHANNELS = (1, 2, 3, 4, 5, 8, 16), (1, 2, 3, 4, 8, 16), (8, 32, 64)


def _op_errors(dims: int, kernel: int, stride: int, transposed: bool, shape: tuple[int, ...], channels: int,
               rng: np.random.Generator) -> tuple[float, float]:
    import tensorflow as tf  # noqa: TID251 - the faults measured are TensorFlow's

    def exact(a: np.ndarray) -> tf.Tensor:
        return tf.cast(tf.cast(a, tf.bfloat16), tf.float32)

    x = exact(rng.normal(size=(1, *shape, channels)).astype(np.float32))
    w = exact(0.1 * rng.normal(size=(*(kernel,) * dims, channels, channels)).astype(np.float32))

    def run(dtype: tf.DType, dy: tf.Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
        wc = tf.cast(w, dtype)
        with tf.GradientTape() as tape:
            tape.watch(wc)
            op = keras.ops.conv_transpose if transposed else keras.ops.conv
            y = tf.cast(op(tf.cast(x, dtype), wc, strides=stride, padding="same"), tf.float32)
            total = tf.reduce_sum(y * (dy if dy is not None else 0.0))
        grad = tape.gradient(total, wc) if dy is not None else None
        return y.numpy(), None if grad is None else tf.cast(grad, tf.float32).numpy()

    y_ref, _ = run(tf.float32, None)
    dy = tf.constant(rng.normal(size=y_ref.shape).astype(np.float32))
    y_ref, g_ref = run(tf.float32, dy)
    y_low, g_low = run(tf.bfloat16, dy)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) if np.isfinite(a).all() else np.inf

    return rel(y_low, y_ref), rel(g_low, g_ref)


def _grid_shapes(dims: int) -> list[tuple[tuple[int, ...], int]]:
    shapes = list(itertools.product(SIDES, repeat=2)) if dims == 2 else [(d, s, s) for d in DEPTHS for s in SIDES]
    return list(itertools.product(shapes, CHANNELS))


def _cases(index: int, start: int) -> None:
    """Print ``case k e_out e_grad`` for one op's grid cases from ``start`` on (a child process: the faulty kernels
    write out of bounds and have crashed it)."""
    dims, kernel, stride, transposed = OPS[index]
    rng = np.random.default_rng([index, start])
    for k, (shape, channels) in enumerate(_grid_shapes(dims)[start:], start):
        print("case", k, *_op_errors(dims, kernel, stride, transposed, shape, channels, rng), flush=True)


def grid() -> None:
    print(f"Part 1: single ops, bfloat16 against float32 (fault: relative L2 error > {TOLERANCE}); batch 1, "
          "'same' padding; a crashed case counts as a kernel-gradient fault")
    print("| op | shapes | output faults | kernel-gradient faults | of them outside the rule | crashes | faulty shapes "
          "(spatial x channels) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for index, (dims, kernel, stride, transposed) in enumerate(OPS):
        cases = _grid_shapes(dims)
        errors: dict[int, tuple[float, float]] = {}
        crashed: list[int] = []
        while len(errors) + len(crashed) < len(cases):
            start = len(errors) + len(crashed)
            run = subprocess.run([sys.executable, __file__, "--op", str(index), "--start", str(start)],
                                 capture_output=True, text=True)
            for line in run.stdout.splitlines():
                if line.startswith("case "):
                    _, k, e_out, e_grad = line.split()
                    errors[int(k)] = (float(e_out), float(e_grad))
            if run.returncode != 0:
                crashed.append(len(errors) + len(crashed))
        faulty = sorted([k for k, (_, e) in errors.items() if not e <= TOLERANCE] + crashed)
        out_bad = sum(not e <= TOLERANCE for e, _ in errors.values())
        outside_rule = 0
        for k in faulty:
            shape, _ = cases[k]
            # low_precision_faults' rule: an input or output side below the kernel (transposed: not applied)
            outside_rule += transposed or min(*shape, *(-(-side // stride) for side in shape)) >= kernel
        names = [f"{'x'.join(map(str, cases[k][0]))}x{cases[k][1]}{' (crash)' if k in crashed else ''}"
                 for k in faulty]
        listed = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
        name = f"Conv{dims}D{'Transpose' if transposed else ''} k{kernel} s{stride}"
        print(f"| {name} | {len(cases)} | {out_bad} | {len(faulty)} | {outside_rule} | {len(crashed)} | {listed} |",
              flush=True)


def entries(names: list[str], patch_size: list[int] | None = None) -> None:
    where = f"a {'x'.join(map(str, patch_size))} patch" if patch_size else "the default recipe's window"
    print(f"\nPart 2: zoo entries under mixed_bfloat16 at {where} (batch 1)")
    print("| entry | window | faulty convolutions | check time (s) | first fault |")
    print("|---|---|---:|---:|---|")
    previous = keras.config.dtype_policy()
    for name in names:
        info = get_entry(name).info
        mode = MODES[info.dims]
        frames = int(info.input_shape[0]) if mode == "multiframe" else 1
        size = (patch_size[0] if len(patch_size) == 1 else tuple(patch_size)) if patch_size else None
        window = patch_window(size or default_recipe(name).patch_size, mode, frames)
        input_shape = (*window[1:], info.input_shape[-1]) if mode == "2d" else (*window, info.input_shape[-1])
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = build(name, input_shape=input_shape)  # as finetune builds it
        finally:
            keras.config.set_dtype_policy(previous)
        started = time.perf_counter()
        faults = low_precision_faults(model, input_shape)
        seconds = time.perf_counter() - started
        first = str(faults[0]) if faults else ""
        layers = len({f.layer for f in faults})
        print(f"| {name} | {'x'.join(map(str, window))} | {layers} | {seconds:.1f} | {first} |", flush=True)
        del model
        keras.backend.clear_session()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", nargs="*", default=None, help="Zoo entries (default: all).")
    parser.add_argument("--no-grid", action="store_true", help="Skip part 1.")
    parser.add_argument("--patch-size", type=int, nargs="+", default=None,
                        help="Check the entries at this patch size instead of their recipe's (e.g. 16).")
    parser.add_argument("--op", type=int, default=None, help=argparse.SUPPRESS)  # part 1's child process
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.op is not None:
        return _cases(args.op, args.start)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("the faults measured are TensorFlow's: run with KERAS_BACKEND=tensorflow (the default).")
    if not args.no_grid:
        grid()
    if args.entries == []:
        return
    entries(args.entries if args.entries is not None else list_models(), args.patch_size)


if __name__ == "__main__":
    main()
