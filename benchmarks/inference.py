"""Inference benchmark (issues 5 and 14): speed against the hardware's limit, memory of blockwise prediction, dask
scaling. Prints its figures.

(a) Against the limit (issue 14). For a small, a medium and a large 2D entry and one 3D entry: the whole image in
    one bare ``model.predict_on_batch`` call (float32, the limit of any tiling) vs ``emzoo.predict`` at its
    defaults (memory-budget window, the preset's measured halo or the exact one, automatic precision), each warmed
    up at the same shape, then timed alternately (best of 2): time, MPix/s (MVox/s), ratio, the max deviation
    beyond the image's border margin (the halo used), achieved GFLOP/s, and the share of this CPU's measured peak.
    The peak is the best of a large matmul and a large 3x3 convolution, in float32 and bfloat16. Bundled presets
    use their trained weights, the others random ones (whose default halo is the exact margin). The 2D image is a
    1536² mosaic of cardiac slices (``--data``), the 3D volume a 20x128x128 crop of the cardiac training stack
    (one timed repeat).
(b) Peak RSS of ``emzoo.predict_blockwise`` on a 1 GiB and an 8 GiB uint8 Zarr volume (same model, same blocks),
    each in a fresh process. Target ratio <= 1.2 (memory must not grow with the volume). The volumes are written
    lazily with dask as constant chunks (they compress to almost nothing on disk) and the output is a uint8 mask,
    so the disk needs little space; the model is a single 3x3 convolution, so I/O and bookkeeping dominate.
(c) ``predict_blockwise`` wall time with 2 dask workers vs 1: the threaded scheduler (2 threads vs 1) and a
    ``dask.distributed`` LocalCluster (2 worker processes vs 1).

Usage::

    .venv/bin/python benchmarks/inference.py [--quick] [--only a,b,c] [--entries emnet_v1_bn] [--workdir DIR]

``--quick`` shrinks everything (a 1024² image and 16x128x128 volume, one timed repeat for (a); 128 MiB vs 1 GiB
for (b); a small volume for (c)); the figures quoted in the README come from the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
NORM = {"method": "minmax", "min": 0, "max": 255}


def _unet(widths: tuple[int, ...]):
    import emzoo

    return emzoo.build("unet", input_shape=(None, None, 1), widths=widths)


# (entry, role) rows of part (a): small / medium / large 2D, and one 3D net.
ROWS = (("emnet_v1_bn", "medium 2D"), ("unet2d_fb", "small 2D"), ("unet3d_fb", "3D"),
        ("emnet_v2_4x", "large 2D"))


def _best(fn, repeats: int) -> float:
    fn()  # warm-up at the same shape: tracing is not part of the throughput
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _best_pair(first, second, repeats: int) -> tuple[float, float]:
    """Best time of each of two calls, alternated (a, b, a, b, ...) so that a change in the machine's load hits
    both alike; each is warmed up first."""
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def peak_gflops(quick: bool) -> dict[str, float]:
    """This CPU's reachable peak per dtype: the better of a large matmul and a large 3x3 convolution (TensorFlow)."""
    import tensorflow as tf

    n, side = (2048, 128) if quick else (4096, 256)
    rng = tf.random.Generator.from_seed(0)
    out = {}
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        a, b = (tf.cast(rng.normal((n, n)), dtype) for _ in range(2))
        x, k = tf.cast(rng.normal((1, side, side, 128)), dtype), tf.cast(rng.normal((3, 3, 128, 128)), dtype)
        # Reduced in full, so no graph optimisation can skip part of the product.
        matmul = tf.function(lambda a=a, b=b: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
        conv = tf.function(lambda x=x, k=k: tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"), tf.float32)))
        t_mm = _best(matmul, 3)
        t_conv = _best(conv, 3)
        out[name] = max(2 * n**3 / t_mm, 2 * side * side * 9 * 128 * 128 / t_conv) / 1e9
    return out


def _mosaic(data: Path, side: int):
    """A ``side``² mosaic of 512² cardiac slices (test slices first, then training ones)."""
    import numpy as np

    from emzoo.io import read

    slices = [np.asarray(read(data / "cardiac_mito" / split / "raw.tif").data) for split in ("test", "train")]
    stack = np.concatenate(slices)
    n = side // 512
    rows = [np.concatenate(list(stack[r * n:(r + 1) * n]), axis=1) for r in range(n)]
    return np.concatenate(rows, axis=0)


def _model(entry: str):
    import emzoo
    from emzoo.inference.predict import resolve_model

    try:
        return resolve_model(entry), "trained"
    except KeyError:  # no published weights: random ones, as the probe
        dims = emzoo.registry.entry_info(entry).dims
        shape = (None, None, None, 1) if dims == "3D" else (None, None, 1)
        return emzoo.load(entry, weights=None, input_shape=shape), "random"


def bench_limit(quick: bool, data: Path, entries: set[str] | None, repeats: int) -> Iterator[dict]:
    """(a) whole image in one call vs emzoo.predict at its defaults, against the CPU's peak."""
    import numpy as np

    from emzoo.inference import predict
    from emzoo.inference.predict import make_runner
    from emzoo.inference.tiling import make_plan
    from emzoo.io import read
    from emzoo.io.normalize import normalize, resolve_normalization
    from emzoo.registry import entry_info

    image = _mosaic(data, 1024 if quick else 1536)
    volume_full = np.asarray(read(data / "cardiac_mito" / "train" / "raw.tif").data)
    # Small: a random-weight 3D net tiles with its exact margin, which multiplies its work many times over.
    volume = volume_full[:16, :128, :128] if quick else volume_full[:20, :128, :128]
    for entry, role in ROWS:
        if entries and entry not in entries:
            continue
        model, weights = _model(entry)
        info = entry_info(entry)
        raw = volume if info.dims == "3D" else image
        runner = make_runner(model, "auto")
        spec = resolve_normalization(raw, runner.metadata.get("normalization") or {"method": "minmax", "min": 0,
                                                                                  "max": 255})
        norm = normalize(raw[..., None], spec)[None]  # (1, *spatial, 1)
        div = runner.divisor[1:] if info.dims != "3D" else runner.divisor
        # Padded at the far end up to the divisor only (a multiple already for the 2D mosaic).
        pads = [(0, 0)] + [(0, -n % d) for n, d in zip(raw.shape, div, strict=True)] + [(0, 0)]
        padded = np.pad(norm, pads, mode="reflect")
        crop = tuple(slice(0, n) for n in raw.shape)
        whole_out = {}

        def whole(model=model, padded=padded, crop=crop, out=whole_out):
            out["y"] = np.asarray(model.predict_on_batch(padded), dtype=np.float32)[0][crop]

        kwargs = dict(normalization=spec, progress=False)
        default_out = {}

        def default(model=model, raw=raw, out=default_out, kwargs=kwargs):
            out["y"] = predict(model, raw, **kwargs)

        reps = 1 if info.dims == "3D" else repeats
        t_whole, t_default = _best_pair(whole, default, reps)
        plan = make_plan(runner, (1, *raw.shape) if raw.ndim == 2 else raw.shape)
        halo = plan.halo if info.dims == "3D" else plan.halo[1:]
        inner = tuple(slice(h, n - h) for h, n in zip(halo, raw.shape, strict=True))
        diff = np.abs(default_out["y"][inner] - whole_out["y"][inner])
        deviation = float(diff.max()) if diff.size else float("nan")  # nan: the border margin covers the image
        ref_shape = info.input_shape[:-1]
        gflop = info.gflops * raw.size / float(np.prod(ref_shape))
        yield {"entry": entry, "role": role, "weights": weights, "shape": "x".join(map(str, raw.shape)),
               "voxels": raw.size, "whole_s": t_whole, "default_s": t_default, "ratio": t_whole / t_default,
               "deviation": deviation, "gflop": gflop, "tile": "x".join(map(str, plan.n_in[3 - raw.ndim:])),
               "halo": halo[-1], "windows": plan.n_tiles, "precision": runner.precision}


def _make_volume(path: Path, gib: float) -> tuple[int, int, int]:
    import dask.array as da

    side = 2048
    z = max(8, int(round(gib * (1 << 30) / side / side / 8)) * 8)
    if not path.exists():
        vol = da.full((z, side, side), 117, dtype="uint8", chunks=(8, 512, 512))
        from emzoo.io import write

        write(path, vol, chunks=(8, 512, 512))
    return (z, side, side)


def _rss_child(volume: str, out: str) -> None:
    """Run in a fresh process: blockwise prediction of ``volume``, then print the peak RSS."""
    import keras

    from emzoo.inference import predict_blockwise

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs))
    start = time.perf_counter()
    predict_blockwise(model, volume, out, block=(8, 512, 512), output="mask", normalization=NORM, progress=False,
                      overwrite=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak_mib, "seconds": seconds}))


def bench_memory(quick: bool, workdir: Path) -> dict[str, float]:
    """(b) peak RSS for a small and an 8x larger volume, each predicted in its own process."""
    sizes = (0.125, 1.0) if quick else (1.0, 8.0)
    results = {}
    for gib in sizes:
        src = workdir / f"const_{gib:g}gib.zarr"
        shape = _make_volume(src, gib)
        out = workdir / f"mask_{gib:g}gib.zarr"
        proc = subprocess.run([sys.executable, __file__, "--rss-child", str(src), str(out)], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["voxels_per_s"] = shape[0] * shape[1] * shape[2] / row["seconds"]
        results[f"{gib:g} GiB {shape}"] = row
    small, large = (results[k]["peak_rss_mib"] for k in results)
    return {**results, "ratio": large / small}


def bench_scaling(quick: bool, workdir: Path) -> dict[str, float]:
    """(c) blockwise wall time with 1 and 2 dask workers (threads, then distributed processes)."""
    import numpy as np

    from emzoo.inference import predict_blockwise
    from emzoo.io import write

    shape = (16, 512, 512) if quick else (32, 1024, 1024)
    src = workdir / f"scaling_{shape[0]}.zarr"
    if not src.exists():
        write(src, (np.random.default_rng(0).random(shape) * 255).astype(np.uint8), chunks=(4, 256, 256))
    model = _unet((8, 16, 32))
    block = (4, 256, 256)
    rows = {}
    predict_blockwise(model, str(src), workdir / "warm.zarr", block=block, normalization=NORM, progress=False,
                      overwrite=True)
    for workers in (1, 2):
        start = time.perf_counter()
        predict_blockwise(model, str(src), workdir / f"threads{workers}.zarr", block=block, normalization=NORM,
                          num_workers=workers, progress=False, overwrite=True)
        rows[f"threads x{workers}"] = time.perf_counter() - start
    from distributed import Client, LocalCluster

    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: None)  # workers are up before the clock starts
            start = time.perf_counter()
            predict_blockwise(model, str(src), workdir / f"dist{workers}.zarr", block=block, normalization=NORM,
                              client=client, progress=False, overwrite=True)
            rows[f"distributed x{workers}"] = time.perf_counter() - start
    rows["speedup threads"] = rows["threads x1"] / rows["threads x2"]
    rows["speedup distributed"] = rows["distributed x1"] / rows["distributed x2"]
    rows["volume"] = "x".join(map(str, shape))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes: the whole run in a few minutes.")
    parser.add_argument("--only", default="a,b,c", help="Which parts to run, e.g. 'a' or 'b,c'.")
    parser.add_argument("--entries", default=None, help="Part (a): only these entries (comma-separated).")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="Dataset root holding cardiac_mito/ (part (a)).")
    parser.add_argument("--workdir", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--rss-child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*args.rss_child)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="emzoo_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    parts = set(args.only.split(","))
    print(f"emzoo inference benchmark ({'quick' if args.quick else 'full'}), {os.cpu_count()} CPUs, "
          f"workdir {workdir}")
    if "a" in parts:
        peak = peak_gflops(args.quick)
        print(f"(a) peak of this CPU (best of a large matmul and a 3x3 convolution): float32 "
              f"{peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s")
        entries = set(args.entries.split(",")) if args.entries else None
        header = (f"{'entry':<13} {'role':<9} {'weights':<7} {'input':<12} {'whole s':>8} {'emzoo s':>8} "
                  f"{'ratio':>6} {'max dev':>8} {'M/s whole':>9} {'M/s emzoo':>9} {'GFLOP/s':>8} {'% peak':>6}  "
                  "default plan")
        print(header)
        for r in bench_limit(args.quick, args.data, entries, 1 if args.quick else 2):
            gflops = r["gflop"] / r["default_s"]
            share = 100 * gflops / peak[r["precision"]]
            print(f"{r['entry']:<13} {r['role']:<9} {r['weights']:<7} {r['shape']:<12} {r['whole_s']:>8.2f} "
                  f"{r['default_s']:>8.2f} {r['ratio']:>6.3f} {r['deviation']:>8.1e} "
                  f"{r['voxels'] / r['whole_s'] / 1e6:>9.3f} {r['voxels'] / r['default_s'] / 1e6:>9.3f} "
                  f"{gflops:>8.1f} {share:>6.1f}  {r['windows']} window(s) of {r['tile']}, halo {r['halo']}, "
                  f"{r['precision']}", flush=True)
    if "b" in parts:
        r = bench_memory(args.quick, workdir)
        for key, row in r.items():
            if key != "ratio":
                print(f"(b) {key}: peak RSS {row['peak_rss_mib']:,.0f} MiB, {row['seconds']:.1f} s "
                      f"({row['voxels_per_s']:,.0f} voxels/s)")
        print(f"(b) peak RSS ratio large/small: {r['ratio']:.3f} (target <= 1.2)")
    if "c" in parts:
        r = bench_scaling(args.quick, workdir)
        print(f"(c) {r['volume']} volume, 2 workers vs 1: threads {r['threads x1']:.1f} s -> {r['threads x2']:.1f} s "
              f"(x{r['speedup threads']:.2f}); distributed {r['distributed x1']:.1f} s -> "
              f"{r['distributed x2']:.1f} s (x{r['speedup distributed']:.2f})")


if __name__ == "__main__":
    main()
