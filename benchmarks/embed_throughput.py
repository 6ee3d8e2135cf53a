"""Patch-embedding throughput of `senca embed-patches`: patches per second vs batch size and DataLoader
workers, with peak memory, on a synthetic 10,000 x 10,000 px H&E-like JPEG.

Why: the image branch's frozen CNN is the only step whose cost grows with image size and encoder
depth; this says which ``--batch-size``/``--workers`` to use on a machine and what memory to ask a
scheduler for. Encoders: ``efficientnet-lite0`` (offline ImageNet weights, what the demo/CI use) and
``resnet50`` with ``--weights random`` (ImageNet ResNet-50 weights are not available offline here;
random weights cost exactly the same FLOPs, and the results say ``weights=random``).

Each configuration runs in a fresh process (so peak RSS is its own: torch import + model + slide
decode + batches) and the encode loop's memory is also sampled as the PSS of the process and its
DataLoader workers together (shared pages counted once). Each run goes through the
library's own steps: header check, patch geometry, decode at the working resolution, PatchDataset +
DataLoader, ``encode_batches``. Throughput = patches / time of the cut-resize-encode loop after one
warm-up batch (oneDNN picks kernels on the first call); decode and model-load times are reported
apart. CPU rows always; CUDA rows too when a GPU is visible.

    .venv/bin/python benchmarks/embed_throughput.py                      # ~3 min on 2 busy cores
    .venv/bin/python benchmarks/embed_throughput.py --batch-sizes 16 64 --workers 0 2 4 --patches 256

Writes ``benchmarks/results/embed_throughput.csv`` and ``.json`` (rows + machine description).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIDE = 10_000  # px: a full-resolution ST/Visium H&E is ~10^4 px square (HER2ST B4: 9,272 x 9,923)
PITCH = 300.0  # px between spots (HER2ST B4: 273 px) -> patch side 1,800 px, decoded at 1/8


def make_slide(folder: Path, side: int = SIDE, pitch: float = PITCH) -> tuple[Path, np.ndarray]:
    """A 10^4 px square H&E-like JPEG (stain + nuclei texture painted at 1/8 and upsampled) and its spot grid."""
    from PIL import Image

    rng = np.random.default_rng(0)
    small = side // 8
    base = np.empty((small, small, 3), dtype=np.float32)
    base[:] = (236, 180, 205)
    yy, xx = np.mgrid[0:small, 0:small]
    tissue = (xx - small / 2) ** 2 / (0.42 * small) ** 2 + (yy - small / 2) ** 2 / (0.45 * small) ** 2 < 1
    base[~tissue] = (248, 248, 248)
    nuclei = tissue & (rng.random((small, small)) < np.where(xx < small / 2, 0.05, 0.3))
    base[nuclei] = (80, 40, 130)
    base += rng.normal(0, 6, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    path = folder / "large_slide.jpg"
    Image.MAX_IMAGE_PIXELS = None  # our own synthetic file
    image.save(path, quality=90)
    image.close()
    ticks = np.arange(pitch, side - pitch, pitch)
    xs, ys = np.meshgrid(ticks, ticks)
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    centre = np.argsort(((xy - side / 2) ** 2).sum(axis=1), kind="stable")
    return path, xy[centre]  # nearest the slide centre first: a run on N spots embeds tissue


class TreeMemory:
    """Peak proportional set size (PSS) of this process plus its children (DataLoader workers), sampled.

    PSS splits shared pages (the copy-on-write model, the memory-mapped slide) between the processes
    that share them, so the sum is the real footprint; ``ru_maxrss`` of the children would count
    every fork+exec helper at its parent's size. Needs psutil (Linux); otherwise reports None.
    """

    def __init__(self, interval: float = 0.2):
        import threading

        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeMemory:
        try:
            import psutil  # noqa: F401
        except ImportError:
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def peak_rss_mb() -> int:
    """This process's own peak resident set size (MB).

    Linux's ``ru_maxrss`` survives ``exec``: a child started from a big parent reports at least the
    parent's size at fork. ``VmHWM`` belongs to the new address space, so it is read first.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def child(config: dict) -> dict:
    """One configuration, measured in this (fresh) process."""
    import torch
    from torch.utils.data import DataLoader

    torch_rss_mb = peak_rss_mb()  # the floor: torch itself
    from senca.encoders import encode_batches, load_encoder
    from senca.images import open_slide, read_working_image
    from senca.patches import PatchDataset, decode_reduction, patch_corners, patch_geometry

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    xy = np.asarray(config["xy"], dtype=np.float64)
    start = time.perf_counter()
    encoder = load_encoder(config["encoder"], config["weights"])
    model_s = time.perf_counter() - start

    start = time.perf_counter()
    info = open_slide(config["image"])
    geometry = patch_geometry(xy, config["pitch"], 3.0)
    reduction = decode_reduction(geometry.side_px, encoder.spec.input_px)
    working = read_working_image(info.path, reduction)
    decode_s = time.perf_counter() - start

    corners, side = patch_corners(xy, geometry.side_px, reduction)
    with tempfile.TemporaryDirectory() as tmp:
        if config["workers"] > 0:  # as senca.embed does: workers memory-map the working image
            np.save(Path(tmp) / "w.npy", working.pixels)
            dataset = PatchDataset(corners, side, encoder.spec.input_px, pixels_file=Path(tmp) / "w.npy")
        else:
            dataset = PatchDataset(corners, side, encoder.spec.input_px, pixels=working.pixels)
        batch = config["batch_size"]
        warm = torch.stack([dataset[i % len(dataset)] for i in range(batch)])
        encode_batches(encoder, [warm], batch, device, quiet=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        loader = DataLoader(dataset, batch_size=batch, num_workers=config["workers"],
                            pin_memory=device.type == "cuda")
        with TreeMemory() as memory:
            start = time.perf_counter()
            features, precision = encode_batches(encoder, loader, len(dataset), device, quiet=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            encode_s = time.perf_counter() - start
    return {
        "encoder": config["encoder"], "weights": encoder.weights, "device": str(device), "precision": precision,
        "batch_size": batch, "workers": config["workers"], "threads": torch.get_num_threads(),
        "n_patches": len(dataset), "patches_per_s": round(len(dataset) / encode_s, 2),
        "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2), "model_load_s": round(model_s, 2),
        "decode_reduction": reduction, "patch_side_px": geometry.side_px,
        "working_image_px": list(working.pixels.shape[:2]), "embedding_dim": int(features.shape[1]),
        "torch_import_rss_mb": torch_rss_mb,
        "peak_rss_mb": peak_rss_mb(),
        "loop_peak_pss_mb": None if memory.peak_mb is None else round(memory.peak_mb),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def run_config(config: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {config['encoder']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--patches", type=int, default=64, help="patches per run for efficientnet-lite0")
    parser.add_argument("--resnet-patches", type=int, default=32, help="patches per run for resnet50")
    parser.add_argument("--resnet-batch-sizes", type=int, nargs="+", default=[32], help="CPU batch sizes for resnet50")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--extra-threads", type=int, nargs="*", default=[1],
                        help="also run these thread counts (CPU, workers 0, --extra-threads-batch)")
    parser.add_argument("--extra-threads-batch", type=int, default=32)
    parser.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument("--tag", default="", help="suffix for the result file names")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="senca-bench-") as tmp:
        t0 = time.perf_counter()
        image, xy = make_slide(Path(tmp))
        print(f"synthetic slide {SIDE} x {SIDE} px JPEG ({image.stat().st_size / 1e6:.1f} MB, {len(xy)} spots) "
              f"written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for device in devices:
            batch_sizes = args.batch_sizes if device == "cpu" else sorted({*args.batch_sizes, 256})
            for encoder in args.encoders:
                n = args.patches if encoder != "resnet50" else args.resnet_patches
                n = n * 8 if device == "cuda" else n
                weights = "random" if encoder.startswith("resnet") else None
                if encoder == "resnet50" and device == "cpu":
                    batch_sizes = args.resnet_batch_sizes
                grid = [(b, w, args.threads) for b in batch_sizes for w in args.workers]
                if device == "cpu":  # oversubscribed CPUs: fewer intra-op threads can be faster
                    grid += [(args.extra_threads_batch, 0, t) for t in args.extra_threads if t != args.threads]
                for batch, workers, threads in grid:
                    config = {"encoder": encoder, "weights": weights, "device": device, "batch_size": batch,
                              "workers": workers, "threads": threads, "image": str(image),
                              "pitch": PITCH, "xy": xy[:n].tolist()}
                    row = run_config(config)
                    rows.append(row)
                    print(f"{row['encoder']:>18} {row['device']:>4} batch {batch:>3} workers {workers} threads "
                          f"{row['threads']}: {row['patches_per_s']:7.1f} patches/s, peak RSS {row['peak_rss_mb']} MB",
                          file=sys.stderr)

    import pandas as pd

    table = pd.DataFrame(rows)
    columns = ["encoder", "weights", "device", "batch_size", "workers", "threads", "n_patches", "patches_per_s",
               "encode_s", "decode_s", "model_load_s", "torch_import_rss_mb", "peak_rss_mb", "loop_peak_pss_mb", "load_avg_1min"]
    print(table[columns].to_string(index=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"embed_throughput{'_' + args.tag if args.tag else ''}"
    table.drop(columns=["working_image_px"]).to_csv(stem.with_suffix(".csv"), index=False)
    machine = {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "platform": platform.platform(),
               "python": platform.python_version(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "slide_px": [SIDE, SIDE], "spot_pitch_px": PITCH, "total_s": round(time.perf_counter() - started, 1)}
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {stem}.csv and .json ({machine['total_s']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
