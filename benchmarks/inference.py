"""Inference benchmark (issue 5): tiling overhead, memory of blockwise prediction, dask scaling. Prints its figures.

(a) Throughput of ``emzoo.predict`` (tiled, spline-blended, halo = receptive margin) divided by the throughput of
    bare ``model.predict`` on the very same windows, pre-cut in memory: the cost of cutting, mirroring,
    normalising and blending. Target >= 0.95.
(b) Peak RSS of ``emzoo.predict_blockwise`` on a 1 GiB and an 8 GiB uint8 Zarr volume (same model, same blocks),
    each in a fresh process. Target ratio <= 1.2 (memory must not grow with the volume). The volumes are written
    lazily with dask as constant chunks (they compress to almost nothing on disk) and the output is a uint8 mask,
    so the disk needs little space; the model is a single 3x3 convolution, so I/O and bookkeeping dominate.
(c) ``predict_blockwise`` wall time with 2 dask workers vs 1: the threaded scheduler (2 threads vs 1) and a
    ``dask.distributed`` LocalCluster (2 worker processes vs 1).

Usage::

    .venv/bin/python benchmarks/inference.py [--quick] [--only a,b,c] [--workdir DIR]

``--quick`` shrinks everything (a 1024² image and a smaller U-Net for (a); 128 MiB vs 1 GiB for (b); a small
volume for (c)) so the whole run takes a few minutes; the figures quoted in the README come from the full run.
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
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
NORM = {"method": "minmax", "min": 0, "max": 255}


def _unet(widths: tuple[int, ...]):
    import emzoo

    return emzoo.build("unet", input_shape=(None, None, 1), widths=widths)


def bench_overhead(quick: bool) -> dict[str, float]:
    """(a) tiled + blended predict vs bare model.predict on the same windows."""
    import numpy as np

    from emzoo.inference import predict
    from emzoo.inference.predict import default_batch_size, make_runner
    from emzoo.inference.tiling import Source, make_plan

    widths = (8, 16, 32, 64, 128) if quick else (16, 32, 64, 128, 256)
    side = 1024 if quick else 2048
    model = _unet(widths)
    image = (np.random.default_rng(0).random((side, side)) * 255).astype(np.uint8)
    runner = make_runner(model)
    plan = make_plan(runner, (1, side, side), tile=512, blend="spline")
    batch = default_batch_size(plan)
    source = Source(image, has_z=False, has_c=False, spec=NORM)
    windows = plan.windows([(0, 1), (0, side), (0, side)])
    tiles = np.stack([source.read([(plan.axes[a].in_start(w[a]), plan.axes[a].in_start(w[a]) + plan.axes[a].n_in)
                                   for a in range(3)])[0] for w in windows])
    kwargs = dict(tile=512, blend="spline", normalization=NORM, batch_size=batch, progress=False)
    predict(model, image[:512, :512], **kwargs)  # trace both code paths once
    model.predict(tiles[:batch], batch_size=batch, verbose=0)
    timings = {"tiled": [], "bare": []}
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        predict(model, image, **kwargs)
        timings["tiled"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(tiles, batch_size=batch, verbose=0)
        timings["bare"].append(time.perf_counter() - start)
    tiled, bare = min(timings["tiled"]), min(timings["bare"])
    voxels = side * side
    return {"image": side, "tile": plan.n_in[1], "halo": plan.halo[1], "windows": len(windows), "batch": batch,
            "params": model.count_params(), "tiled_s": tiled, "bare_s": bare,
            "tiled_voxels_per_s": voxels / tiled, "ratio": bare / tiled}


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
        r = bench_overhead(args.quick)
        print(f"(a) tiled+spline predict vs bare model.predict on the same {r['windows']} windows "
              f"({r['image']}² image, U-Net {r['params']:,} params, tile {r['tile']}, halo {r['halo']}, batch "
              f"{r['batch']}): {r['tiled_s']:.2f} s vs {r['bare_s']:.2f} s -> ratio {r['ratio']:.3f} "
              f"(target >= 0.95); {r['tiled_voxels_per_s']:,.0f} voxels/s")
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
