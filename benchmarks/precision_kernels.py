"""Print where this machine's low-precision convolutions are wrong: single ops over a shape grid, then zoo entries.

Part 1 runs single ``Conv*D`` / ``Conv*DTranspose`` layers in bfloat16 and float32 on the same (bfloat16-exact)
numbers (:func:`emzoo.training.precision.compare_with_float32`) and counts the shapes whose output or kernel gradient
is off by more than :data:`emzoo.training.precision.TOLERANCE` (relative L2). Part 2 builds each entry under ``mixed_bfloat16`` and
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
from emzoo.training.precision import (
    TOLERANCE,
    compare_with_float32,
    low_precision_faults,
    smaller_than_kernel,
)
from emzoo.training.recipes import default_recipe

OPS = [  # (dims, kernel, stride, transposed)
    (2, 3, 1, False), (2, 3, 2, False), (2, 2, 2, True),
    (3, 1, 1, False), (3, 3, 1, False), (3, 3, 2, False), (3, 5, 1, False), (3, 2, 2, True),
]
DEPTHS, SIDES, CHANNELS = (1, 2, 3, 4, 5, 8, 16), (1, 2, 3, 4, 8, 16), (8, 32, 64)
CHILD_TIMEOUT_S = 180  # one op's whole grid takes about a minute


def _layer(dims: int, kernel: int, stride: int, transposed: bool, shape: tuple[int, ...],
           channels: int) -> keras.layers.Layer:
    name = f"Conv{dims}D{'Transpose' if transposed else ''}"
    layer = getattr(keras.layers, name)(channels, kernel, strides=stride, padding="same", dtype="mixed_bfloat16")
    layer.build((1, *shape, channels))
    return layer


def _grid_shapes(dims: int) -> list[tuple[tuple[int, ...], int]]:
    shapes = list(itertools.product(SIDES, repeat=2)) if dims == 2 else [(d, s, s) for d in DEPTHS for s in SIDES]
    return list(itertools.product(shapes, CHANNELS))


def _cases(index: int, start: int) -> None:
    """Print ``case k e_out e_grad`` for one op's grid cases from ``start`` on (a child process: the faulty kernels
    write out of bounds and have crashed it)."""
    dims, kernel, stride, transposed = OPS[index]
    rng = np.random.default_rng([index, start])
    for k, (shape, channels) in enumerate(_grid_shapes(dims)[start:], start):
        errors = compare_with_float32(_layer(dims, kernel, stride, transposed, shape, channels),
                                      (1, *shape, channels), rng)
        print("case", k, errors["output"], errors["kernel gradient"], flush=True)


def grid() -> None:
    print(f"Part 1: single ops, bfloat16 against float32 (fault: relative L2 error > {TOLERANCE}); batch 1, "
          "'same' padding; a case that crashed or hung counts as a kernel-gradient fault")
    print("| op | shapes | output faults | kernel-gradient faults | of them outside the rule | crashes or hangs | faulty shapes "
          "(spatial x channels) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for index, (dims, kernel, stride, transposed) in enumerate(OPS):
        cases = _grid_shapes(dims)
        errors: dict[int, tuple[float, float]] = {}
        crashed: list[int] = []
        while len(errors) + len(crashed) < len(cases):
            start = len(errors) + len(crashed)
            try:
                run = subprocess.run([sys.executable, __file__, "--op", str(index), "--start", str(start)],
                                     capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
                output, failed = run.stdout, run.returncode != 0
            except subprocess.TimeoutExpired as hung:  # a corrupted kernel can also spin forever
                output, failed = hung.stdout or "", True
                output = output.decode() if isinstance(output, bytes) else output
            for line in output.splitlines():
                if line.startswith("case "):
                    _, k, e_out, e_grad = line.split()
                    errors[int(k)] = (float(e_out), float(e_grad))
            if failed:
                crashed.append(len(errors) + len(crashed))
        faulty = sorted([k for k, (_, e) in errors.items() if not e <= TOLERANCE] + crashed)
        out_bad = sum(not e <= TOLERANCE for e, _ in errors.values())
        outside_rule = sum(not smaller_than_kernel(_layer(dims, kernel, stride, transposed, *cases[k]),
                                                   (1, *cases[k][0], cases[k][1])) for k in faulty)
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
