"""HER2ST quick benchmark: SENCA-st shared embeddings vs PCA of the same HVGs, Ward clustering, ARI.

For the 8 pathologist-labelled HER2ST slides (A1 B1 C1 D1 E1 F1 G2 H1, paper table 1):

1. preprocess each slide with ``senca.preprocess`` (genes with total count < 10 dropped,
   normalise_total, log1p, 500 HVGs by normalised dispersion, 4-NN ball-tree graph on pixel coords);
2. train SENCA-st image-less (7 of the 8 slides have no H&E here; A1's H&E is used too when
   ``senca.embed`` exists and ``--with-image`` is given);
3. cluster S with agglomerative Ward at k = the number of label classes;
4. compare with PCA (50 components, scanpy's default) of the same HVG matrix + Ward.

ARI ignores spots labelled ``undetermined`` (or without a label). Prints a per-slide table and writes
``benchmarks/results/her2st_quick[_TAG].csv`` and ``.json``. Preprocessed slides are cached under
``--cache`` so repeated runs (tuning) only train.

    .venv/bin/python benchmarks/her2st_quick.py                     # defaults, seed 0
    .venv/bin/python benchmarks/her2st_quick.py --seeds 0 1 --set temperature=0.2 --tag t02
    .venv/bin/python benchmarks/her2st_quick.py --set cross_attention=false --tag no_xattn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "her2st"
SAMPLES = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
MISSING = {"", "na", "nan", "none", "undetermined", "unknown"}
PCA_COMPONENTS = 50


def load_slide(sample: str, cache: Path) -> dict[str, np.ndarray]:
    """Preprocessed arrays of one slide (cached as .npz): expr, coords, edges, labels."""
    path = cache / f"{sample}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec
    from senca.preprocess import PreprocessParams, preprocess_slide

    spec = SlideSpec(sample, DATA / "counts" / f"{sample}.tsv.gz", positions=DATA / "spots" / f"{sample}_selection.tsv")
    result = preprocess_slide(read_slide(spec), PreprocessParams())
    labels = join_labels(sample, result.spots["spot_id"].to_numpy(dtype=str))
    arrays = {
        "expr": result.expr.drop(columns="spot_id").to_numpy(np.float32),
        "coords": result.spots[["pixel_x", "pixel_y"]].to_numpy(np.float64),
        "source": result.graph["source"].to_numpy(np.int64),
        "target": result.graph["target"].to_numpy(np.int64),
        "distance": result.graph["distance"].to_numpy(np.float32),
        "labels": labels,
        "spot_ids": result.spots["spot_id"].to_numpy(dtype=str),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def join_labels(sample: str, spot_ids: np.ndarray) -> np.ndarray:
    """Pathologist labels by spot id: label rows' x, y rounded to integers -> ``XxY`` (the README's rule).

    Rows without coordinates (F1 has one) are skipped; spots without a label get "".
    """
    table = pd.read_csv(DATA / "labels" / f"{sample}_labeled_coordinates.tsv", sep="\t")
    table = table.dropna(subset=["x", "y"])
    ids = [f"{int(round(x))}x{int(round(y))}" for x, y in zip(table["x"], table["y"], strict=True)]
    by_id = dict(zip(ids, table["label"].fillna("").astype(str), strict=True))
    return np.array([by_id.get(spot, "") for spot in spot_ids], dtype=str)


def ward_ari(embedding: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    keep = np.array([str(label).strip().lower() not in MISSING for label in labels])
    n_clusters = len(set(labels[keep]))
    predicted = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(embedding)
    return float(adjusted_rand_score(labels[keep], predicted[keep]))


def pca_embedding(expr: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=min(PCA_COMPONENTS, *expr.shape), svd_solver="full").fit_transform(expr)


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` pairs for TrainConfig fields, typed from the field's default."""
    from senca.train import TrainConfig

    defaults = TrainConfig()
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not hasattr(defaults, key):
            sys.exit(f"unknown TrainConfig field {key!r}")
        current = getattr(defaults, key)
        if isinstance(current, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif value.lower() == "none":
            out[key] = None
        elif isinstance(current, int) or key == "k":
            out[key] = int(value)
        elif isinstance(current, float):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def image_features_a1(cache: Path, spot_ids: np.ndarray) -> np.ndarray | None:
    """efficientnet-lite0 features of A1's H&E patches via senca.embed, if that module exists."""
    try:
        import senca.embed as embed  # noqa: F401
    except ImportError:
        return None
    path = cache / "A1.patches.npy"
    if path.exists():
        return np.load(path)
    return None  # filled by a run of embed-patches; see main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=SAMPLES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/senca_her2st_cache"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--patches", type=Path, default=None,
                        help="A1 patches.parquet (from senca embed-patches) to also train A1 with its H&E")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from senca.io.artifacts import align_to_spots, embedding_matrix, read_table
    from senca.train import TrainConfig, train_senca

    torch.set_num_threads(args.threads)
    logging.getLogger("senca").setLevel(logging.WARNING)
    overrides = parse_overrides(args.overrides)
    rows = []
    for sample in args.samples:
        slide = load_slide(sample, args.cache)
        labels = slide["labels"]
        row: dict[str, object] = {"sample": sample, "n_spots": len(labels)}
        if not args.no_baseline:
            row["pca_ward"] = ward_ari(pca_embedding(slide["expr"]), labels)
        variants = [("senca", None)]
        if args.patches is not None and sample == "A1":
            patches, _ = read_table(args.patches, "patches")
            feats = embedding_matrix(align_to_spots(patches, list(slide["spot_ids"]), args.patches))
            variants.append(("senca_image", feats))
        for name, feats in variants:
            scores, seconds, variances = [], [], []
            for seed in args.seeds:
                config = TrainConfig(**{**overrides, "seed": seed, "device": "cpu"})
                started = time.perf_counter()
                result = train_senca(slide["expr"], slide["coords"], slide["source"], slide["target"], slide["distance"],
                                     feats, config)
                seconds.append(time.perf_counter() - started)
                scores.append(ward_ari(result.embeddings, labels))
                variances.append(result.summary["embedding_var"])
            row[name] = float(np.mean(scores))
            if len(scores) > 1:
                row[f"{name}_sd"] = float(np.std(scores))
            row[f"{name}_seconds"] = float(np.mean(seconds))
            row[f"{name}_steps"] = result.summary["steps"]
            row[f"{name}_s_var"] = float(np.mean(variances))
        rows.append(row)
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("sample",) and not c.endswith(("_seconds", "_sd", "_steps"))]
    summary = {"mean": table[numeric].mean(), "median": table[numeric].median()}
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, values in summary.items():
        print(f"{name:>6}: " + "  ".join(f"{c}={values[c]:.3f}" for c in numeric if c != "n_spots"))

    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "her2st_quick" + (f"_{args.tag}" if args.tag else "")
    table.to_csv(out_dir / f"{stem}.csv", index=False)
    config = dataclasses.asdict(TrainConfig(**{**overrides, "device": "cpu"}))
    (out_dir / f"{stem}.json").write_text(json.dumps({
        "config": config, "seeds": args.seeds, "pca_components": PCA_COMPONENTS,
        "per_slide": rows, "mean": {c: float(summary["mean"][c]) for c in numeric},
        "median": {c: float(summary["median"][c]) for c in numeric},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
