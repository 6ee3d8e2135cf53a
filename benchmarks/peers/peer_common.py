"""What the peer scripts share: arguments, seeding, thread caps, the input's image, the output CSV.

Runs inside ``benchmarks/.peers-venv`` (imported by ``run_spagcn.py`` / ``run_graphst.py``, which sit
beside it); it imports nothing of senca. The input is the .h5ad ``benchmarks/peers.py`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # GraphST's 600-epoch progress bar would fill the log
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every peer script takes (``benchmarks/peers.py`` builds this command line)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("input", type=Path, help="peer input .h5ad (benchmarks/peers.py export_peer_input)")
    p.add_argument("--k", type=int, required=True, help="number of clusters to reach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="CSV to write: spot_id,cluster[,cluster_unrefined]")
    p.add_argument("--platform", choices=["st", "visium"], default=None, help="[the input's uns['platform']]")
    p.add_argument("--threads", type=int, default=1, help="torch threads (BLAS/OpenMP: set by the caller's env)")
    return p


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs; each peer also reseeds where its tutorial does."""
    import numpy as np
    import torch

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def start(args: argparse.Namespace) -> Timer:
    """What every peer run does first: cap torch's threads, seed every RNG, start the step timer."""
    set_threads(args.threads)
    seed_everything(args.seed)
    return Timer()


def finish(args: argparse.Namespace, spot_ids: Any, clusters: Any, unrefined: Any, info: dict[str, Any],
           timer: Timer) -> int:
    """What every peer run does last: write the labels, then the ``PEER_INFO`` line with the step timings."""
    write_clusters(args.out, spot_ids, clusters, unrefined)
    info["seconds"] = timer.seconds
    report(info)
    return 0


def read_input(path: Path) -> Any:
    """The peer input AnnData; exits with a clear message when it lacks what the peers need."""
    import anndata as ad

    adata = ad.read_h5ad(path)
    for key in ("array_row", "array_col"):
        if key not in adata.obs:
            fail(f"{path}: obs[{key!r}] missing")
    if "spatial" not in adata.obsm:
        fail(f"{path}: obsm['spatial'] missing")
    adata.var_names_make_unique()
    return adata


def platform_of(adata: Any, given: str | None) -> str:
    platform = given or str(adata.uns.get("platform", ""))
    if platform not in ("st", "visium"):
        fail("platform unknown: pass --platform st|visium")
    return platform


def image_scale(adata: Any, given: float | None) -> float:
    """Image pixel per ``obsm['spatial']`` unit: the flag, else the input's ``uns['image']['scale']``, else 1."""
    if given is not None:
        return float(given)
    image = adata.uns.get("image")
    return float(image["scale"]) if isinstance(image, dict) and "scale" in image else 1.0


def read_rgb(path: Path) -> Any:
    """An H&E image as an H x W x 3 uint8 array (alpha and palettes dropped)."""
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # full-resolution H&E images exceed PIL's decompression-bomb guard
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def write_clusters(path: Path, spot_ids: Any, clusters: Any, unrefined: Any | None = None) -> None:
    """``spot_id,cluster[,cluster_unrefined]``, written atomically (temp file, then rename)."""
    import pandas as pd

    table = pd.DataFrame({"spot_id": list(map(str, spot_ids)), "cluster": list(map(str, clusters))})
    if unrefined is not None:
        table["cluster_unrefined"] = list(map(str, unrefined))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def fail(message: str) -> None:
    """One line the caller (``benchmarks/peers.py``) reports as the reason, then exit 2."""
    print(f"PEER_ERROR {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def report(info: dict[str, Any]) -> None:
    """The last line of stderr: ``PEER_INFO {json}`` (parameters found, step timings)."""
    print("PEER_INFO " + json.dumps(info, default=float), file=sys.stderr, flush=True)


class Timer:
    """Step timings, printed to stderr as they end and kept for ``PEER_INFO``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        print(f"[time] {name}: {self.seconds[name]:.1f} s", file=sys.stderr, flush=True)
