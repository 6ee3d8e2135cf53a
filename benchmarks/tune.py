"""Tuning harness: SENCA-st variants, its substitute view and the no-network floor on the development slides.

In-process and fast (no artifacts, no stage start-up), so a default can be decided on >= 5 seeds. For
every slide and seed it reports the ARI of:

* ``floor``: the substitute view alone (expression averaged over spot + graph neighbours ``hops`` times,
  PCA to 32), clustered by the tied GMM: "smoothed PCA + GMM", no network;
* ``senca``: S after training with the given TrainConfig overrides, clustered by Ward and by the tied GMM;
* ``untrained`` (``--untrained``): S of the same network with lr ~0 (1 epoch at lr 1e-12).

The final table in benchmarks/results/benchmark.md comes from benchmarks/benchmark.py; this script is
the quick loop for choosing what that benchmark then runs. Every row starts from the dataset's platform
defaults (train-senca's, Visium for DLPFC, legacy ST for HER2ST); ``--set`` overrides them.

    .venv/bin/python benchmarks/tune.py --dataset dlpfc --seeds 0 1 2 3 4 --tag base
    .venv/bin/python benchmarks/tune.py --dataset her2st --seeds 0 1 2 --set epochs=20 --tag e20
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
SLIDES = {"dlpfc": ["151673", "151674"], "her2st": ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]}
PLATFORM = {"dlpfc": "visium", "her2st": "st"}  # whose train-senca defaults a dataset starts from


def load_slide(dataset: str, sample: str, flavor: str | None, n_hvg: int | None, cache: Path,
               values: str | None = None) -> dict[str, np.ndarray]:
    """Preprocessed arrays of one slide with the product's own readers and preprocess (cached .npz)."""
    path = cache / f"{dataset}_{sample}_{flavor}_{n_hvg}_{values}.npz"  # None: the platform's choice of that release
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from senca.evaluate import valid_label_mask
    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec
    from senca.preprocess import PreprocessParams, preprocess_slide

    if dataset == "dlpfc":
        root = DATA / "dlpfc" / sample
        spec = SlideSpec(sample, root / "outs", labels=root / "labels.csv")
    else:
        root = DATA / "her2st"
        spec = SlideSpec(sample, root / "counts" / f"{sample}.tsv.gz", positions=root / "spots" / f"{sample}_selection.tsv",
                         labels=root / "labels" / f"{sample}_labeled_coordinates.tsv")
    result = preprocess_slide(read_slide(spec), PreprocessParams(n_hvg=n_hvg, hvg_flavor=flavor, hvg_values=values))
    labels = result.spots["label"]
    keep = valid_label_mask(labels)
    arrays = {
        "expr": result.hvg_matrix.toarray().astype(np.float32),
        "coords": result.spots[["pixel_x", "pixel_y"]].to_numpy(np.float64),
        "source": result.graph["source"].to_numpy(np.int64),
        "target": result.graph["target"].to_numpy(np.int64),
        "distance": result.graph["distance"].to_numpy(np.float32),
        "labels": np.where(keep, labels.astype(str).to_numpy(), "").astype(str),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def scores(embedding: np.ndarray, labels: np.ndarray, seed: int, methods: list[str],
           view: np.ndarray | None = None) -> dict[str, float]:
    """ARI of each clustering in ``methods``; ``gmm_view`` is the Visium product's: the tied GMM on
    [S, VIEW_WEIGHT x view] (senca.clustering.beside_view), with the view train-senca writes beside S."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    from senca.cluster import PLATFORM_VIEW_WEIGHT
    from senca.clustering import beside_view, tied_gmm

    keep = labels != ""
    k = len(set(labels[keep]))
    out = {}
    if "ward" in methods:
        predicted = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(embedding)
        out["ward"] = float(adjusted_rand_score(labels[keep], predicted[keep]))
    if "gmm" in methods:
        fit = tied_gmm(embedding, k, seed=seed)
        out["gmm"] = float(adjusted_rand_score(labels[keep], fit.labels[keep]))
        out["gmm_loglik"] = fit.log_likelihood
    if "gmm_view" in methods and view is not None:
        fit = tied_gmm(beside_view(embedding, view, PLATFORM_VIEW_WEIGHT["visium"]), k, seed=seed)
        out["gmm_view"] = float(adjusted_rand_score(labels[keep], fit.labels[keep]))
        out["gmm_view_loglik"] = fit.log_likelihood
    return out


def load_patches(folder: str, sample: str, coords: np.ndarray) -> np.ndarray:
    """Patch features written by ``senca embed-patches`` into ``folder/{sample}/``, in the cached slide's spot order.

    The folder's ``{sample}.spots.parquet`` (same preprocess) must hold the very coordinates of the cache:
    a check that the rows line up, not an assumption.
    """
    from senca.io.artifacts import align_to_spots, embedding_matrix, read_table

    root = Path(folder) / sample
    spots, _ = read_table(root / f"{sample}.spots.parquet", "spots")
    if not np.allclose(spots[["pixel_x", "pixel_y"]].to_numpy(np.float64), coords):
        raise SystemExit(f"{root}: its spots are not the cached slide's (another preprocess?)")
    patches, _ = read_table(root / f"{sample}.patches.parquet", "patches")
    patches = align_to_spots(patches, spots["spot_id"].astype(str).tolist(), root / f"{sample}.patches.parquet")
    return embedding_matrix(patches)


def decoded_views(result, graph) -> dict[str, np.ndarray]:
    """D(S) per spot, and D(S) averaged once over each spot's neighbourhood as the floor's view is
    (GraphST clusters its decoder's output, not its embedding)."""
    import torch

    from senca.model import load_model
    from senca.substitute import neighbourhood_smooth

    model = load_model(result.checkpoint).eval()
    with torch.no_grad():
        decoded = model.decoder(torch.as_tensor(result.embeddings))
    return {"decoded": decoded.numpy(), "decoded_smoothed": neighbourhood_smooth(decoded, graph, 1).numpy()}


def run_one(job: dict) -> list[dict]:
    import torch

    from senca.substitute import image_substitute
    from senca.tiling import build_slide_graph
    from senca.train import TrainConfig, scale_genes, train_senca

    torch.set_num_threads(job["threads"])
    logging.getLogger("senca").setLevel(logging.WARNING)
    slide = load_slide(job["dataset"], job["sample"], job["flavor"], job["n_hvg"], Path(job["cache"]), job["values"])
    expr = scale_genes(slide["expr"].copy(), job["gene_scale"])
    labels, seed = slide["labels"], job["seed"]
    base = {"dataset": job["dataset"], "sample": job["sample"], "seed": seed, "tag": job["tag"]}
    rows = []
    features = load_patches(job["patches"], job["sample"], slide["coords"]) if job["patches"] else None
    config = TrainConfig(**{**job["overrides"], "seed": seed, "device": "cpu"})
    graph = build_slide_graph(slide["source"], slide["target"], len(expr)) if job["floor"] or job["decoded"] else None
    if job["floor"]:
        view, _ = image_substitute(expr, graph, job["floor_hops"], config.substitute_dim)
        rows.append({**base, "what": "floor", **scores(view, labels, seed, ["gmm"])})
    if job["train"]:
        started = time.perf_counter()
        result = train_senca(expr, slide["coords"], slide["source"], slide["target"], slide["distance"], features, config)
        rows.append({**base, "what": "senca", "seconds": time.perf_counter() - started,
                     **scores(result.embeddings, labels, seed, job["methods"], result.view)})
        if job["save"]:
            Path(job["save"]).mkdir(parents=True, exist_ok=True)
            np.save(Path(job["save"]) / f"{job['sample']}_seed{seed}.npy", result.embeddings)
            if result.view is not None:  # the view clustered beside S (gmm_view), for scoring variants after
                np.save(Path(job["save"]) / f"{job['sample']}_seed{seed}_view.npy", result.view)
        if job["decoded"]:
            for what, decoded in decoded_views(result, graph).items():
                rows.append({**base, "what": what, **scores(decoded, labels, seed, ["gmm"])})
    if job["untrained"]:
        cold = TrainConfig(**{**job["overrides"], "seed": seed, "device": "cpu", "epochs": 1, "lr": 1e-12})
        result = train_senca(expr, slide["coords"], slide["source"], slide["target"], slide["distance"], features, cold)
        rows.append({**base, "what": "untrained", **scores(result.embeddings, labels, seed, job["methods"], result.view)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from her2st_quick import parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(SLIDES), required=True)
    parser.add_argument("--slides", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--hvg-flavor", default=None)
    parser.add_argument("--n-hvg", type=int, default=None)
    parser.add_argument("--hvg-values", choices=["log1p", "pearson_residuals"], default=None,
                        help="what the HVG matrix holds (senca preprocess --hvg-values) [default: the platform's]")
    parser.add_argument("--gene-scale", choices=["zscore", "none"], default=None,
                        help="per-gene scaling of the HVGs [default: the platform's, as train-senca's]")
    parser.add_argument("--no-platform-defaults", dest="platform_defaults", action="store_false",
                        help="start from TrainConfig's own (legacy ST, paper) values instead of the dataset's platform defaults")
    parser.add_argument("--methods", default="ward,gmm",
                        help="comma-separated: ward, gmm (on S), gmm_view (Visium's product: [S, 2 x view])")
    parser.add_argument("--no-floor", dest="floor", action="store_false")
    parser.add_argument("--floor-hops", type=int, default=1)
    parser.add_argument("--no-train", dest="train", action="store_false")
    parser.add_argument("--untrained", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--patches", default=None, metavar="DIR",
                        help="train with H&E: DIR/{sample}/{sample}.patches.parquet from senca embed-patches")
    parser.add_argument("--cache", default="/tmp/senca_tune_cache")
    parser.add_argument("--decoded", action="store_true", help="also score D(S) and D(S) averaged over the window")
    parser.add_argument("--save", default=None, metavar="DIR", help="write each trained S to DIR/{sample}_seed{seed}.npy")
    args = parser.parse_args(argv)
    from senca.train import platform_train_defaults

    # the product's defaults for the platform first (train-senca applies them the same way), then --set:
    # a tune row without --set is what `senca run` would train (before this, --gene-scale defaulted to
    # zscore on every dataset, and HER2ST rows needed --gene-scale none to be legacy ST's)
    platform = platform_train_defaults(PLATFORM[args.dataset]) if args.platform_defaults else {}
    platform_gene_scale = platform.pop("gene_scale", "zscore")  # tune scales the genes itself (run_one)
    args.gene_scale = args.gene_scale or platform_gene_scale
    overrides = {**platform, **parse_overrides(args.overrides)}
    jobs = [{"dataset": args.dataset, "sample": s, "seed": seed, "overrides": overrides, "flavor": args.hvg_flavor,
             "values": args.hvg_values, "n_hvg": args.n_hvg, "gene_scale": args.gene_scale, "methods": args.methods.split(","),
             "floor": args.floor, "floor_hops": args.floor_hops, "train": args.train, "untrained": args.untrained,
             "threads": args.threads, "tag": args.tag, "cache": args.cache, "patches": args.patches,
             "save": args.save, "decoded": args.decoded}
            for s in (args.slides or SLIDES[args.dataset]) for seed in args.seeds]
    for s in {j["sample"] for j in jobs}:  # preprocess once, before the pool
        load_slide(args.dataset, s, args.hvg_flavor, args.n_hvg, Path(args.cache), args.hvg_values)
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for part in pool.map(run_one, jobs):
            rows += part
            for r in part:
                print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    table = pd.DataFrame(rows)
    metrics = [c for c in ("ward", "gmm", "gmm_view") if c in table]
    per_seed = table.groupby(["what", "seed"])[metrics].mean()  # dataset mean per seed
    summary = per_seed.groupby("what").agg(["mean", "std"])
    per_slide = table.groupby(["what", "sample"])[metrics].agg(["mean", "std"])
    print(per_slide.round(3).to_string())
    print(summary.round(3).to_string())
    out = REPO / "benchmarks" / "results" / "tune"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.dataset}_{args.tag or 'run'}"
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.json").write_text(json.dumps({"args": vars(args), "overrides": overrides,
                                                  "summary": json.loads(summary.to_json())}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
