"""Training memory on big synthetic slides: peak RSS vs the size of one dense N x N float32 matrix.

SENCA-st must never build an N x N matrix (attention is an edge softmax over kNN neighbourhoods,
mini-batches are spatial cells plus halos), so training memory should grow with N x k (the graph and
the expression matrix), not N^2. Each size runs in a fresh process so its peak RSS is its own:

    .venv/bin/python benchmarks/train_memory.py                       # 5k, 20k, 50k spots, 1 epoch
    .venv/bin/python benchmarks/train_memory.py --sizes 50000 --epochs 2

Prints a table and writes ``benchmarks/results/train_memory.csv`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def synthetic_grid(n_spots: int, n_genes: int, seed: int = 0):
    """A square grid of about ``n_spots`` spots, 4 planted quadrant regions, Poisson log-counts, 4-NN edges."""
    import numpy as np

    from senca.graph import knn_edges

    side = int(np.ceil(np.sqrt(n_spots)))
    yy, xx = np.mgrid[0:side, 0:side]
    coords = np.stack([xx.ravel(), yy.ravel()], axis=1)[:n_spots].astype(np.float64) * 100.0
    region = (coords[:, 0] > coords[:, 0].mean()).astype(int) * 2 + (coords[:, 1] > coords[:, 1].mean()).astype(int)
    rng = np.random.default_rng(seed)
    means = rng.gamma(2.0, 1.0, size=(4, n_genes)).astype(np.float32)
    expr = np.log1p(rng.poisson(means[region])).astype(np.float32)
    edges = knn_edges(coords, 4)
    return expr, coords, edges["source"].to_numpy(), edges["target"].to_numpy(), edges["distance"].to_numpy()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(n_spots: int, n_genes: int, epochs: int, batch_spots: int, threads: int) -> dict:
    """Train once on an n_spots slide in this process; report memory and time."""
    import torch

    from senca.train import TrainConfig, train_senca

    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = synthetic_grid(n_spots, n_genes)
    setup_seconds = time.perf_counter() - started
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    result = train_senca(*data, config=TrainConfig(epochs=epochs, batch_spots=batch_spots, device="cpu"))
    seconds = time.perf_counter() - started
    dense_mib = n_spots * n_spots * 4 / 2**20
    peak = peak_rss_mib()
    return {
        "n_spots": n_spots, "n_genes": n_genes, "epochs": epochs, "batch_spots": batch_spots, "threads": threads,
        "steps": result.summary["steps"], "train_seconds": round(seconds, 2), "setup_seconds": round(setup_seconds, 2),
        "peak_rss_mib": round(peak, 1), "rss_before_training_mib": round(rss_before, 1),
        "training_increment_mib": round(peak - rss_before, 1), "dense_nxn_float32_mib": round(dense_mib, 1),
        "peak_over_dense": round(peak / dense_mib, 4), "embedding_var": result.summary["embedding_var"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5000, 20000, 50000])
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-spots", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.single is not None:
        print(json.dumps(measure(args.single, args.genes, args.epochs, args.batch_spots, args.threads)))
        return 0

    rows = []
    for n in args.sizes:
        child = subprocess.run([sys.executable, __file__, "--single", str(n), "--genes", str(args.genes),
                                "--epochs", str(args.epochs), "--batch-spots", str(args.batch_spots),
                                "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{n:>7} spots: {row['steps']} steps in {row['train_seconds']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB "
              f"(training +{row['training_increment_mib']:.0f} MiB) vs dense N x N float32 {row['dense_nxn_float32_mib']:.0f} MiB",
              flush=True)

    import pandas as pd

    table = pd.DataFrame(rows)
    print()
    print(table[["n_spots", "steps", "train_seconds", "peak_rss_mib", "training_increment_mib", "dense_nxn_float32_mib",
                 "peak_over_dense"]].to_string(index=False))
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "train_memory.csv", index=False)
    (out / "train_memory.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
