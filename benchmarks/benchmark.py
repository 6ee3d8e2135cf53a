"""Benchmark: the real ``senca run`` pipeline on labelled slides, against peers, over seeds.

What runs (every SENCA-st number comes from the pipeline's own stages and ``senca evaluate``):

* HER2ST A1 B1 C1 D1 E1 F1 G2 H1 image-less (legacy ST counts + spot file + pathologist labels);
* HER2ST A1 with its H&E (``A1_he/A1.png``, sample ``A1_image``);
* DLPFC 151673 and 151674 (Space Ranger ``outs/``) with the lowres H&E (samples ``151673``, ``151674``)
  and image-less (samples ``<slide>_noimage``: a scratch copy of ``outs/`` under the work folder whose files are symlinks
  to the real matrix, positions and scale factors, with no PNG, so the reader finds no image).

Per variant a samplesheet is written to ``WORK/sheets/``; every seed gets its own outdir
``WORK/runs/<variant>/seed<N>/``. Each slide's stages are the pipeline's own ``StageCall``s run through
``senca.pipeline.run_stage`` (the function ``senca run`` uses, stamps and all) one by one, timed, in a fresh
spawned process per slide and seed so that ``ru_maxrss`` is that slide's peak memory. Then
``senca.pipeline.run_samplesheet`` is called on the same sheet and outdir: it resumes (every stage is
skipped, which the script checks) and runs ``senca evaluate``, whose ``summary.csv`` gives ARI/NMI.
Seeds > first reuse the first seed's preprocess and embed-patches outputs: the files and their stamps
are copied into the seed's slide folder (stamp paths rewritten), so the pipeline's resume skips them.

Peers, scored on the same spots with ``senca.evaluate.score_clusters`` (undetermined/NA excluded):

* ``PCA+Ward``: PCA (50 components, fewer when fewer genes/spots) of the same HVG matrix
  (``{s}.expr.parquet``) + Ward (sklearn AgglomerativeClustering) at the k senca's cluster stage used
  (``n_clusters`` in the clusters metadata). Deterministic: computed once per slide (seed column empty).
* SpaGCN / GraphST: not rerun here (see ``REPORTED``); add them to ``PEERS`` (same signature).

Writes ``benchmarks/results/benchmark.{csv,md,json,png}``; prints the tables.

    .venv/bin/python benchmarks/benchmark.py                       # everything, seeds 0 1 2
    .venv/bin/python benchmarks/benchmark.py --only her2st --seeds 0 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from peers_bench import DLPFC_SLIDES, HER2ST_SLIDES, pm  # this folder is on sys.path when the script runs
from tables import markdown

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
PCA_COMPONENTS = 50
SENCA = "SENCA-st"
REUSED_STAGES = ("preprocess", "embed-patches")  # seed-independent: computed once, copied to later seeds

# Paper, table 1 (HER2ST, 8 labelled slides, each with its full-resolution H&E): ARI mean, median.
PAPER = {"SENCA-st": (0.304, 0.320), "ConGcR": (0.268, 0.258), "DeepST": (0.237, 0.257),
         "SpaGCN": (0.195, 0.230)}
# Measured on this machine by earlier sessions (project issue), not rerun by this script.
REPORTED = [
    {"dataset": "her2st", "variant": "image-less", "method": "GraphST", "ari_mean": 0.211, "ari_median": 0.204},
    {"dataset": "her2st", "variant": "image-less", "method": "SpaGCN (refined)", "ari_mean": 0.193,
     "ari_median": 0.209},
    {"dataset": "dlpfc", "variant": "as reported", "method": "GraphST", "ari_mean": 0.61, "ari_median": 0.61},
    {"dataset": "dlpfc", "variant": "as reported", "method": "SpaGCN", "ari_mean": "0.50-0.53",
     "ari_median": "0.50-0.53"},
]


@dataclass(frozen=True)
class Variant:
    """One samplesheet: a dataset's slides with or without their image."""

    name: str  # her2st_imageless, her2st_image, dlpfc_image, dlpfc_imageless, <base>__<ablation>
    dataset: str  # her2st | dlpfc
    label: str  # "image-less" | "H&E" | "lowres H&E"
    rows: list[dict[str, Any]]  # samplesheet rows; row["slide"] is the slide name shown in tables
    config: str = "default"  # "default", or the ablation's name (paper tables 4-5)
    train_args: tuple[str, ...] = ()  # passed to train-senca through `senca run --train-args`
    reuse: str | None = None  # variant whose preprocess/embed-patches outputs (same seed folder) are reused


# Paper tables 4-5: components and neighbour counts. k ablations skip the platform's own default k.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no cross-attention": ("--no-cross-attention",),
    "no hierarchical": ("--no-hierarchical",),
    "combine=sum": ("--combine", "sum"),
    "k=4": ("--k", "4"),
    "k=8": ("--k", "8"),
    "k=16": ("--k", "16"),
}
ABLATION_BASE = {"her2st": "her2st_imageless", "dlpfc": "dlpfc_image"}
DEFAULT_K = {"her2st": 4, "dlpfc": 6}


def ablation_variants(base: Variant, names: list[str]) -> list[Variant]:
    """One variant per ablation of ``base``: same slides, same preprocess/embed outputs, other train args."""
    out = []
    for name in names:
        if name == f"k={DEFAULT_K[base.dataset]}":
            continue  # the default run already is this ablation
        slug = name.replace(" ", "_").replace("=", "")
        out.append(Variant(f"{base.name}__{slug}", base.dataset, base.label, base.rows, name, ABLATIONS[name],
                           reuse=base.name))
    return out


# ----------------------------------------------------------------------------- inputs
def her2st_variants(data: Path) -> list[Variant]:
    root = data / "her2st"
    imageless = [{"slide": s, "sample": s, "data": root / "counts" / f"{s}.tsv.gz",
                  "positions": root / "spots" / f"{s}_selection.tsv",
                  "labels": root / "labels" / f"{s}_labeled_coordinates.tsv"} for s in HER2ST_SLIDES]
    image = [{"slide": "A1", "sample": "A1_image", "data": root / "counts" / "A1.tsv.gz",
              "image": root / "A1_he" / "A1.png", "positions": root / "A1_he" / "A1_selection.tsv",
              "labels": root / "labels" / "A1_labeled_coordinates.tsv"}]
    return [Variant("her2st_imageless", "her2st", "image-less", imageless),
            Variant("her2st_image", "her2st", "H&E", image)]


def imageless_outs(outs: Path, scratch: Path) -> Path:
    """A copy of a Space Ranger ``outs/`` without its PNGs (symlinks to the matrix, positions, factors).

    Space Ranger folders carry their own lowres image, which the reader uses when present; the
    image-less variant must therefore hide it, not just leave the samplesheet's image column empty.
    """
    copy = scratch / "outs"
    (copy / "spatial").mkdir(parents=True, exist_ok=True)
    links = {"filtered_feature_bc_matrix.h5": outs / "filtered_feature_bc_matrix.h5"}
    links.update({f"spatial/{p.name}": p for p in (outs / "spatial").iterdir() if p.suffix.lower() != ".png"})
    for name, target in links.items():
        link = copy / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return copy


def dlpfc_variants(data: Path, work: Path) -> list[Variant]:
    """DLPFC 151673 and 151674, each with its lowres H&E and image-less (the folder without its PNG)."""
    image, imageless = [], []
    for slide in DLPFC_SLIDES:
        root = data / "dlpfc" / slide
        if not root.is_dir():
            continue
        labels = root / "labels.csv"
        image.append({"slide": slide, "sample": slide, "data": root / "outs", "labels": labels})
        noimage = imageless_outs(root / "outs", work / "data" / f"{slide}_noimage")
        imageless.append({"slide": slide, "sample": f"{slide}_noimage", "data": noimage, "labels": labels})
    return [Variant("dlpfc_image", "dlpfc", "lowres H&E", image),
            Variant("dlpfc_imageless", "dlpfc", "image-less", imageless)]


def write_samplesheet(variant: Variant, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["sample", "data", "image", "positions", "labels"]
    sheet = pd.DataFrame([{c: str(row[c]) if row.get(c) is not None else "" for c in columns}
                          for row in variant.rows], columns=columns)
    path = folder / f"{variant.name}.csv"
    sheet.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- one slide, one seed
def _stage_in_fresh_process(call: Any, slide_dir: str, resume: bool, quiet: bool, threads: int | None) -> dict[str, Any]:
    """One stage through ``senca.pipeline.run_stage`` (stamps and all), in this spawned process.

    The process is fresh for every stage, so ``ru_maxrss`` is that stage's own peak resident memory.
    """
    from senca.commands.common import setup_logging
    from senca.pipeline import run_stage

    setup_logging(quiet)
    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    ran = run_stage(call, Path(slide_dir), resume, quiet)
    seconds = time.perf_counter() - started
    rss_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"seconds": seconds, "ran": ran, "peak_rss_mib": rss_kib / 1024}


def run_slide_timed(sheet: str, sample: str, outdir: str, opts_dict: dict[str, Any]) -> dict[str, Any]:
    """Every stage of one slide, in the order ``senca.pipeline.run_slide`` runs them, each measured alone."""
    from senca.io.artifacts import read_meta
    from senca.io.samplesheet import read_samplesheet
    from senca.pipeline import (
        RunOptions,
        cluster_call,
        embed_call,
        markers_call,
        preprocess_call,
        remove_stale_temporaries,
        train_call,
    )

    opts = RunOptions(**opts_dict)
    spec = next(s for s in read_samplesheet(sheet) if s.sample == sample)
    slide_dir = Path(outdir) / sample
    remove_stale_temporaries(slide_dir)
    seconds: dict[str, float] = {}
    peak: dict[str, float] = {}
    ran: list[str] = []

    def measured(call: Any) -> None:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            result = pool.submit(_stage_in_fresh_process, call, str(slide_dir), opts.resume, opts.quiet,
                                 opts.torch_threads).result()
        seconds[call.stage], peak[call.stage] = result["seconds"], result["peak_rss_mib"]
        if result["ran"]:
            ran.append(call.stage)

    measured(preprocess_call(spec, slide_dir, opts))
    image = (read_meta(slide_dir / f"{sample}.spots.parquet", "spots").get("image") or {}).get("path") is not None
    if image:
        measured(embed_call(sample, slide_dir, opts))
    measured(train_call(sample, slide_dir, opts, image))
    measured(cluster_call(sample, slide_dir, opts))
    measured(markers_call(sample, slide_dir))
    return {"seconds": seconds, "peak_rss_mib_by_stage": peak, "ran": ran, "image": image,
            "peak_rss_mib": max(peak.values())}


def reuse_first_seed(first: Path, target: Path) -> list[str]:
    """Copy the first seed's preprocess/embed-patches outputs and stamps into ``target`` (same sample).

    Stamps record absolute paths (arguments, inputs, outputs), so the first seed's folder is replaced
    by the target's in them; the content checksums stay valid because the bytes are identical.
    """
    from senca.io.artifacts import file_checksum

    reused = []
    for stage in REUSED_STAGES:
        stamp = first / ".senca" / f"{stage}.json"
        if not stamp.is_file():
            continue
        recorded = json.loads(stamp.read_text())
        (target / ".senca").mkdir(parents=True, exist_ok=True)
        for output, checksum in recorded["outputs"].items():
            source = Path(output)
            destination = target / source.relative_to(first)
            # a file left by an earlier run of other code (same name, other bytes) is replaced, or the
            # stamp would not match it and the stage would be recomputed for nothing
            if not destination.exists() or file_checksum(destination) != checksum:
                shutil.copy2(source, destination)
        text = stamp.read_text().replace(str(first), str(target))
        (target / ".senca" / f"{stage}.json").write_text(text)
        reused.append(stage)
    return reused


def run_variant_seed(variant: Variant, sheet: Path, outdir: Path, first_outdir: Path | None,
                     opts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All slides of a variant for one seed (one process per slide), then the pipeline's own run + evaluate."""
    from senca.pipeline import RunOptions, run_samplesheet

    timings: dict[str, dict[str, Any]] = {}
    for row in variant.rows:
        sample = row["sample"]
        slide_dir = outdir / sample
        timing_file = slide_dir / "benchmark_timing.json"
        reused = reuse_first_seed(first_outdir / sample, slide_dir) if first_outdir else []
        result = run_slide_timed(str(sheet), sample, str(outdir), opts)
        if not result["ran"] and timing_file.exists():  # nothing recomputed: keep the measured run's timing
            result = json.loads(timing_file.read_text())
        else:
            result["reused"] = reused
            timing_file.write_text(json.dumps(result, indent=1))
        timings[sample] = result
        print(f"  {variant.name} {sample} seed={opts['seed']}: "
              + " ".join(f"{k}={v:.1f}s" for k, v in result["seconds"].items())
              + f" peak={result['peak_rss_mib']:.0f}MiB ran={','.join(result['ran']) or '-'}", flush=True)
    results = run_samplesheet(sheet, outdir, RunOptions(**opts), jobs=1)
    for r in results:
        if not r.ok:
            raise SystemExit(f"senca run failed on {r.sample}: {r.error}")
        if r.ran:
            print(f"  warning: senca run recomputed {r.ran} for {r.sample} (expected a full resume)", file=sys.stderr)
    return timings


def run_ablation_seed(variant: Variant, sheet: Path, outdir: Path, reuse_from: Path, opts: dict[str, Any],
                      jobs: int) -> dict[str, dict[str, Any]]:
    """An ablation's slides through ``senca run`` itself (``jobs`` slides at once), reusing the base run's
    preprocess/embed-patches outputs. Only totals are measured: per-stage costs are the default run's."""
    from senca.pipeline import RunOptions, run_samplesheet

    for row in variant.rows:
        reuse_first_seed(reuse_from / row["sample"], outdir / row["sample"])
    threads = max(1, (opts["torch_threads"] or 1) // jobs)
    started = time.perf_counter()
    results = run_samplesheet(sheet, outdir, RunOptions(**{**opts, "torch_threads": threads}), jobs=jobs)
    seconds = time.perf_counter() - started
    failed = [f"{r.sample}: {r.error}" for r in results if not r.ok]
    if failed:
        raise SystemExit(f"senca run failed ({variant.name}): {'; '.join(failed)}")
    return {r.sample: {"seconds": {"total": seconds / len(results)}, "peak_rss_mib": float("nan"),
                       "reused": list(REUSED_STAGES)} for r in results}


# ----------------------------------------------------------------------------- peers
FLOOR_HOPS = 1  # the floor's smoothing: one hop of spot + 6-NN (Visium) / 4-NN (ST) averaging
# The floor's GMM needs far more inits than S to reach its own optimum (151674: 50 inits mostly stop at a
# basin 0.09 ARI lower; 500 find the best likelihood from every seed; docs/method.md, round 7). A fair floor
# is one fitted to its optimum, so it gets 500 (label-free: best likelihood wins).
FLOOR_GMM_INITS = 500

def pca_ward(slide_dir: Path, sample: str, k: int, seed: int) -> np.ndarray:
    """PCA of the slide's HVG matrix + Ward at k clusters (deterministic: ``seed`` unused)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA

    from senca.io.artifacts import read_table

    expr, _ = read_table(slide_dir / f"{sample}.expr.parquet", "expr")
    X = expr.drop(columns="spot_id").to_numpy(np.float64)
    pcs = PCA(n_components=min(PCA_COMPONENTS, *X.shape), svd_solver="full").fit_transform(X)
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(pcs)


def smoothed_pca_gmm(slide_dir: Path, sample: str, k: int, seed: int) -> np.ndarray:
    """The no-network floor: senca's own substitute view clustered directly, no training.

    The slide's HVGs (z-scored where the platform's defaults scale genes), averaged over spot + graph
    neighbours once (FLOOR_HOPS), PCA to the substitute's width, then the tied GMM (senca.clustering) on its
    PCA 20, best of FLOOR_GMM_INITS seeded initialisations by likelihood: "ten lines of smoothing + a
    Gaussian mixture", fitted to its optimum.
    """
    from senca.clustering import tied_gmm

    view, _ = smoothed_view(slide_dir, sample)
    return tied_gmm(view, k, seed=seed, n_init=FLOOR_GMM_INITS).labels


def smoothed_view(slide_dir: Path, sample: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The floor's features: the slide's HVGs (scaled as the platform scales them) averaged over FLOOR_HOPS, PCA 32;
    and the spots' metadata they were read with (the platform's defaults)."""
    from senca.io.artifacts import read_table
    from senca.substitute import image_substitute
    from senca.tiling import build_slide_graph
    from senca.train import TrainConfig, platform_train_defaults, scale_genes

    expr, _ = read_table(slide_dir / f"{sample}.expr.parquet", "expr")
    graph, _ = read_table(slide_dir / f"{sample}.graph.parquet", "graph")
    _, spots_meta = read_table(slide_dir / f"{sample}.spots.parquet", "spots")
    how = platform_train_defaults(spots_meta.get("defaults_platform"))["gene_scale"]
    X = scale_genes(np.ascontiguousarray(expr.drop(columns="spot_id").to_numpy(np.float32)), how)
    edges = graph[graph["source"] != graph["target"]]
    slide_graph = build_slide_graph(edges["source"].to_numpy(np.int64), edges["target"].to_numpy(np.int64), len(X))
    view, _ = image_substitute(X, slide_graph, FLOOR_HOPS, TrainConfig().substitute_dim)
    return view, spots_meta


def smoothed_pca_gmm_prior(slide_dir: Path, sample: str, k: int, seed: int) -> np.ndarray:
    """The floor clustered as senca's mixture is on the slide's platform: the same view and search, then the
    platform's kNN prior (senca.knn_prior; none on legacy ST). Beside the plain floor it shows what the
    clustering adds to any representation, so "training adds over the floor" is still read against this row."""
    from senca.cluster import resolve_knn_prior
    from senca.clustering import tied_gmm

    view, spots_meta = smoothed_view(slide_dir, sample)
    prior, _ = resolve_knn_prior(None, spots_meta)
    return tied_gmm(view, k, seed=seed, n_init=FLOOR_GMM_INITS, knn_prior=prior).labels


def senca_untrained(slide_dir: Path, sample: str, k: int, seed: int) -> np.ndarray:
    """The same network with the platform's defaults but untrained (1 epoch at lr 1e-12), clustered as senca is
    (the platform's method, beside the substitute view at the platform's --view-weight).

    Beside SENCA-st and the floor it gives "what training adds": trained S vs the untrained S vs the
    substitute view alone. Uses the slide's patches when the run made them (``{s}.patches.parquet``).
    """
    from sklearn.cluster import AgglomerativeClustering

    from senca.cluster import resolve_knn_prior, resolve_method, resolve_view_weight
    from senca.clustering import beside_view, tied_gmm
    from senca.train import TrainConfig, platform_train_defaults, read_training_inputs, train_senca

    patches = slide_dir / f"{sample}.patches.parquet"
    inputs = read_training_inputs(slide_dir / f"{sample}.spots.parquet", slide_dir / f"{sample}.expr.parquet",
                                  slide_dir / f"{sample}.graph.parquet", patches if patches.exists() else None)
    config = TrainConfig(**platform_train_defaults(inputs.defaults_platform), epochs=1, lr=1e-12, seed=seed, device="cpu")
    result = train_senca(inputs.expr, inputs.coords, inputs.source, inputs.target, inputs.distance,
                         inputs.image_features, config)
    platform = {"defaults_platform": inputs.defaults_platform}
    weight, _ = resolve_view_weight(None, platform, result.view is not None, slide_dir / f"{sample}.embeddings.parquet")
    S = beside_view(result.embeddings, result.view, weight)
    if resolve_method(None, platform) == "gmm":
        return tied_gmm(S, k, seed=seed, knn_prior=resolve_knn_prior(None, platform)[0]).labels
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(S)


@dataclass(frozen=True)
class Peer:
    name: str
    fn: Callable[[Path, str, int, int], np.ndarray]
    seeded: bool  # False: deterministic, computed once per slide


FLOOR = "smoothed PCA + GMM"
FLOOR_PRIOR = "smoothed PCA + GMM + kNN prior"  # the floor clustered as senca is (its platform's kNN prior)
UNTRAINED = "SENCA-st untrained"


# the floor is fitted once per slide (GMM seed 0, FLOOR_GMM_INITS): with the batched search (senca.gmm_search)
# its ARI is the same to 3 decimals over GMM seeds 0-4 on both DLPFC slides (method.md, round 25; with
# scikit-learn's sequential starts seed 2 had stopped in a lower-likelihood basin on 151673, round 12)
PEERS = [Peer("PCA+Ward", pca_ward, seeded=False), Peer(FLOOR, smoothed_pca_gmm, seeded=False),
         Peer(FLOOR_PRIOR, smoothed_pca_gmm_prior, seeded=False), Peer(UNTRAINED, senca_untrained, seeded=True)]


def score_peer(peer: Peer, slide_dir: Path, sample: str, seed: int) -> dict[str, Any]:
    from senca.evaluate import score_clusters
    from senca.io.artifacts import read_table

    clusters, meta = read_table(slide_dir / f"{sample}.clusters.parquet", "clusters")
    spots, _ = read_table(slide_dir / f"{sample}.spots.parquet", "spots")
    if list(spots["spot_id"]) != list(clusters["spot_id"]):
        raise SystemExit(f"{sample}: clusters and spots are not in the same spot order")
    k = int(meta["n_clusters"])
    started = time.perf_counter()
    predicted = peer.fn(slide_dir, sample, k, seed)
    seconds = time.perf_counter() - started
    score = score_clusters(predicted, clusters["label"])
    return {"ari": score["ari"], "nmi": score["nmi"], "n_clusters": k, "n_spots": score["n_spots"],
            "n_scored": score["n_scored"], "total_s": seconds}


def external_peer_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """SpaGCN and GraphST from their own venv (``benchmarks/peers_bench.py``'s jobs, its cache reused).

    Same slides and labels; a peer that cannot run gives rows whose ``status`` says why.
    """
    import peers_bench
    from peers import export_peer_input

    argv = ["--data", str(args.data), "--seeds", *map(str, args.seeds), "--dlpfc-graphst-seeds",
            *map(str, args.dlpfc_graphst_seeds), "--dlpfc-graphst", *args.dlpfc_graphst,
            "--her2st-graphst", *args.her2st_graphst]
    if args.only:
        argv += ["--only", args.only]
    if args.slides:
        argv += ["--slides", *args.slides]
    peer_args = peers_bench.arguments(argv)
    specs = {**peers_bench.her2st_specs(args.data), **peers_bench.dlpfc_specs(args.data)}
    work = peer_args.work.resolve()
    rows, inputs = [], {}
    for job in peers_bench.jobs_for(peer_args):
        if job.sample not in inputs:
            inputs[job.sample] = export_peer_input(specs[job.sample], work / "inputs" / f"{job.sample}.h5ad")
        for seed in job.seeds:
            r = peers_bench.run_one(job, inputs[job.sample], seed, work, peer_args.timeout)
            print(f"  peer {job.name} {job.sample} {job.variant} seed={seed}: "
                  + (f"ARI {r['ari']:.3f} {r['wall_s']:.0f}s" if r["status"] == "ok" else r["status"]), flush=True)
            rows.append({"dataset": r["dataset"], "slide": r["slide"], "variant": r["variant"], "config": "default",
                         "sample": r["sample"], "method": r["method"], "seed": seed, "ari": r.get("ari"),
                         "nmi": r.get("nmi"), "n_clusters": r["k"], "n_spots": r["n_spots"],
                         "n_scored": r.get("n_scored"), "total_s": r.get("wall_s"),
                         "peak_rss_mib": r.get("peak_rss_mib"), "status": r["status"]})
    return rows


# ----------------------------------------------------------------------------- tables
def per_slide_table(long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, variant, slide, method), everything in long.groupby(["dataset", "variant", "slide", "method"],
                                                                      sort=False):
        g = everything[everything["status"] == "ok"]
        failed = everything[everything["status"] != "ok"]
        if g.empty:
            g = everything.iloc[:1]
        seeds = g["seed"].dropna()
        rows.append({"dataset": dataset, "slide": slide, "variant": variant, "method": method,
                     "n_spots": int(g["n_spots"].iloc[0]), "k": int(g["n_clusters"].iloc[0]),
                     "ARI": pm(g["ari"]), "NMI": pm(g["nmi"]),
                     "seeds": " ".join(str(int(s)) for s in seeds) if len(seeds) else "deterministic",
                     "ari_mean": g["ari"].mean(), "ari_sd": g["ari"].std(ddof=1) if len(g) > 1 else 0.0,
                     "wall_s": g["total_s"].mean(), "first_seed_wall_s": g["total_s"].iloc[0],
                     "peak_rss_mib": g["peak_rss_mib"].max() if "peak_rss_mib" in g else np.nan,
                     "status": "ok" if failed.empty else "; ".join(failed["status"].unique())})
    return pd.DataFrame(rows)


def dataset_table(per_slide: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """Mean and median over slides of each slide's seed-mean ARI/NMI, then the paper and reported rows."""
    rows = []
    ok = long[long["status"] == "ok"]
    for (dataset, variant, method), g in ok.groupby(["dataset", "variant", "method"], sort=False):
        by_slide = g.groupby("slide")[["ari", "nmi"]].mean()
        rows.append({"dataset": dataset, "variant": variant, "method": method, "slides": len(by_slide),
                     "ARI mean": f"{by_slide['ari'].mean():.3f}", "ARI median": f"{by_slide['ari'].median():.3f}",
                     "NMI mean": f"{by_slide['nmi'].mean():.3f}", "NMI median": f"{by_slide['nmi'].median():.3f}",
                     "wall s/slide": f"{g.groupby('slide')['total_s'].max().mean():.1f}",
                     "source": "measured here"})
    for method, (mean, median) in PAPER.items():
        rows.append({"dataset": "her2st", "variant": "full-res H&E", "method": method, "slides": 8,
                     "ARI mean": f"{mean:.3f}", "ARI median": f"{median:.3f}", "NMI mean": "-", "NMI median": "-",
                     "wall s/slide": "-", "source": "paper (table 1)"})
    def fmt(v: float | str) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    for r in REPORTED:
        rows.append({"dataset": r["dataset"], "variant": r["variant"], "method": r["method"],
                     "slides": 8 if r["dataset"] == "her2st" else 1, "ARI mean": fmt(r["ari_mean"]),
                     "ARI median": fmt(r["ari_median"]), "NMI mean": "-", "NMI median": "-",
                     "wall s/slide": "-", "source": "reported in the issue, not rerun"})
    return pd.DataFrame(rows)


def ablation_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and config: ARI/NMI mean over slides for each seed, then mean ± sd over seeds."""
    senca = long[long["method"] == SENCA]
    rows = []
    for (dataset, variant), g in senca.groupby(["dataset", "variant"], sort=False):
        if set(g["config"]) == {"default"}:
            continue
        for config, c in g.groupby("config", sort=False):
            per_seed = c.groupby("seed")[["ari", "nmi"]].mean()
            rows.append({"dataset": dataset, "variant": variant, "config": config, "slides": c["slide"].nunique(),
                         "seeds": " ".join(str(int(s)) for s in per_seed.index),
                         "ARI": pm(per_seed["ari"]), "NMI": pm(per_seed["nmi"]),
                         "ARI median over slides": f"{c.groupby('slide')['ari'].mean().median():.3f}"})
    return pd.DataFrame(rows)


def training_adds_table(long: pd.DataFrame) -> pd.DataFrame:
    """What training adds, per dataset and variant: SENCA-st's S vs the same network untrained vs its floor.

    Per seed: the mean over slides of each method's ARI; then SENCA-st's mean ± sd over seeds and the
    paired differences (SENCA-st - untrained, SENCA-st - floor), mean ± sd over seeds. An effect counts
    when it exceeds 2 sd (docs/method.md).
    """
    ok = long[(long["status"] == "ok") & (long["config"] == "default")]
    rows = []
    for (dataset, variant), g in ok.groupby(["dataset", "variant"], sort=False):
        seeded = g[g["seed"].notna()]
        per_seed = seeded.pivot_table(index="seed", columns="method", values="ari", aggfunc="mean")
        if SENCA not in per_seed:
            continue
        # a deterministic row (fitted once per slide, seed empty: the floor at its optimum) pairs with every seed
        for method, once in g[g["seed"].isna()].groupby("method"):
            if method not in per_seed and set(once["slide"]) == set(seeded["slide"]):
                per_seed[method] = once["ari"].mean()
        row = {"dataset": dataset, "variant": variant, "slides": g["slide"].nunique(), "seeds": len(per_seed),
               "SENCA-st": pm(per_seed[SENCA])}
        for name, other in (("untrained", UNTRAINED), ("floor", FLOOR), ("floor + kNN prior", FLOOR_PRIOR)):
            row[name] = pm(per_seed[other]) if other in per_seed else "-"
            row[f"training adds over {name}"] = pm(per_seed[SENCA] - per_seed[other]) if other in per_seed else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def stage_table(long: pd.DataFrame) -> pd.DataFrame:
    """Wall time and peak RSS of every stage, per slide (default config, first seed: nothing reused)."""
    senca = long[(long["method"] == SENCA) & (long["config"] == "default")]
    rows = []
    for (dataset, variant, slide), g in senca.groupby(["dataset", "variant", "slide"], sort=False):
        first = g.sort_values("seed").iloc[0]
        row: dict[str, Any] = {"dataset": dataset, "slide": slide, "variant": variant, "n_spots": int(first["n_spots"])}
        for stage in ("preprocess", "embed-patches", "train-senca", "cluster", "markers"):
            seconds, peak = first.get(f"{stage}_s"), first.get(f"{stage}_peak_mib")
            row[stage] = "-" if pd.isna(seconds) else f"{seconds:.1f} s / {peak:.0f} MiB"
        row["total_s"] = float(first["total_s"])
        rows.append(row)
    return pd.DataFrame(rows)


def plot(per_slide: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_slide = per_slide.assign(group=per_slide["slide"] + "\n" + per_slide["variant"])
    groups = list(dict.fromkeys(per_slide["group"]))
    methods = list(dict.fromkeys(per_slide["method"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4))
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        sub = per_slide[per_slide["method"] == method].set_index("group").reindex(groups)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, sub["ari_mean"], width, yerr=sub["ari_sd"].fillna(0),
               capsize=2, label=method)
    ax.set_xticks(x, groups, fontsize=7)
    ax.set_ylabel("ARI (mean ± sd over seeds)")
    ax.set_title("senca benchmark: per-slide ARI by method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder [../shared/data]")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="train-senca epochs [the stage default, 10]")
    parser.add_argument("--only", choices=["her2st", "dlpfc"], default=None)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per stage [2]")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--slides", nargs="+", default=None, help="only these slides (e.g. A1 B1; for quick checks)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="only these variants (her2st_imageless her2st_image dlpfc_image dlpfc_imageless)")
    parser.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS), metavar="NAME",
                        help=f"paper tables 4-5 ablations to run ({', '.join(ABLATIONS)}) [all]; none: --ablations")
    parser.add_argument("--her2st-ablation-seeds", nargs="+", type=int, default=None,
                        help="seeds for the HER2ST ablations [--seeds]")
    parser.add_argument("--dlpfc-ablation-seeds", nargs="+", type=int, default=[0],
                        help="seeds for the DLPFC ablations [0]")
    parser.add_argument("--jobs", type=int, default=2, help="slides at once in ablation runs [2]")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip SpaGCN/GraphST (they run from benchmarks/.peers-venv: benchmarks/install_peers.sh)")
    parser.add_argument("--dlpfc-graphst-seeds", nargs="+", type=int, default=[0],
                        help="GraphST seeds on DLPFC [0]: each run takes 15-20 min here")
    parser.add_argument("--dlpfc-graphst", nargs="*", choices=["gmm", "leiden"], default=["gmm", "leiden"],
                        help="GraphST clusterings on DLPFC [gmm leiden]")
    parser.add_argument("--her2st-graphst", nargs="*", choices=["gmm", "leiden"], default=["leiden", "gmm"],
                        help="GraphST clusterings on HER2ST [leiden gmm]")
    args = parser.parse_args(argv)

    if not (args.data / "her2st").is_dir() and not (args.data / "dlpfc").is_dir():
        parser.error(f"data folder {args.data} not found (or has no her2st/ or dlpfc/): pass --data")
    work = args.work.resolve()
    variants: list[Variant] = []
    if args.only in (None, "her2st"):
        variants += her2st_variants(args.data.resolve())
    if args.only in (None, "dlpfc"):
        variants += dlpfc_variants(args.data.resolve(), work)

    if args.variants:
        variants = [v for v in variants if v.name in args.variants]
    if args.slides:
        variants = [Variant(v.name, v.dataset, v.label, [r for r in v.rows if r["slide"] in args.slides])
                    for v in variants]
        variants = [v for v in variants if v.rows]
    if args.ablations:
        by_name = {v.name: v for v in variants}
        variants += [a for dataset, base in ABLATION_BASE.items() if base in by_name
                     for a in ablation_variants(by_name[base], args.ablations)]
    rows: list[dict[str, Any]] = []
    for variant in variants:
        sheet = write_samplesheet(variant, work / "sheets")
        first_outdir: Path | None = None
        ablation = variant.config != "default"
        seeds = args.seeds if not ablation else (args.dlpfc_ablation_seeds if variant.dataset == "dlpfc"
                                                 else args.her2st_ablation_seeds or args.seeds)
        for seed in seeds:
            outdir = work / "runs" / variant.name / f"seed{seed}"
            reuse_from = work / "runs" / variant.reuse / f"seed{seed}" if variant.reuse else first_outdir
            opts = {"encoder": args.encoder, "epochs": args.epochs, "device": "cpu", "seed": seed,
                    "quiet": True, "torch_threads": args.threads, "train_args": variant.train_args}
            started = time.perf_counter()
            if ablation:
                timings = run_ablation_seed(variant, sheet, outdir, reuse_from, opts, args.jobs)
            else:
                timings = run_variant_seed(variant, sheet, outdir, reuse_from, opts)
            print(f"{variant.name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
            summary = pd.read_csv(outdir / "summary" / "summary.csv", dtype={"sample": str}).set_index("sample")
            for row in variant.rows:
                sample, t = row["sample"], timings[row["sample"]]
                s = summary.loc[sample]
                rows.append({"dataset": variant.dataset, "slide": row["slide"], "variant": variant.label,
                             "config": variant.config, "sample": sample, "method": SENCA, "seed": seed,
                             "ari": float(s["ari"]), "nmi": float(s["nmi"]), "n_clusters": int(s["n_clusters"]),
                             "n_spots": int(s["n_spots"]), "n_scored": int(s["n_scored"]), "image": s["image"],
                             "total_s": sum(t["seconds"].values()), "peak_rss_mib": t["peak_rss_mib"],
                             "reused": ",".join(t.get("reused", [])),
                             **{f"{stage}_s": v for stage, v in t["seconds"].items()},
                             **{f"{stage}_peak_mib": v for stage, v in t.get("peak_rss_mib_by_stage", {}).items()}})
                if variant.config != "default":
                    continue
                for peer in PEERS:
                    if peer.seeded or first_outdir is None:
                        score = score_peer(peer, outdir / sample, sample, seed)
                        rows.append({"dataset": variant.dataset, "slide": row["slide"], "variant": variant.label,
                                     "config": "default", "sample": sample, "method": peer.name,
                                     "seed": seed if peer.seeded else None, **score})
            first_outdir = first_outdir or outdir

    if args.peers:
        rows += external_peer_rows(args)
    long = pd.DataFrame(rows).astype({"seed": "Int64"})
    if "status" not in long:
        long["status"] = "ok"
    long["status"] = long["status"].fillna("ok")
    default = long[long["config"] == "default"]
    per_slide = per_slide_table(default)
    datasets = dataset_table(per_slide, default)
    ablations = ablation_table(long)
    stages = stage_table(long)
    adds = training_adds_table(long)
    shown = per_slide[["dataset", "slide", "variant", "method", "n_spots", "k", "ARI", "NMI", "seeds",
                       "wall_s", "first_seed_wall_s", "peak_rss_mib", "status"]]
    args.results.mkdir(parents=True, exist_ok=True)
    md = (f"# senca benchmark\n\nseeds {' '.join(map(str, args.seeds))}; epochs {args.epochs or 'default'}; "
          f"encoder {args.encoder}; {args.threads} torch thread(s); CPU; {os.cpu_count()} cores.\n"
          "wall_s: mean over seeds of the slide's stage times (later seeds reuse preprocess/embed-patches); "
          "first_seed_wall_s: the first seed, every stage computed; peers: their own wall time.\n\n"
          "## Per slide\n\n" + markdown(shown) + "\n\n## Per dataset (mean and median over slides of the seed-mean)\n\n"
          + markdown(datasets) + "\n\n## What training adds (mean over slides per seed; ± sd over seeds; "
          "differences paired by seed)\n\n" + markdown(adds) + "\n\n## Ablations (paper tables 4-5; SENCA-st, mean over slides, ± sd over seeds)\n\n"
          + markdown(ablations) + "\n\n## Wall time and peak memory per stage (first seed, each stage its own process)\n\n"
          + markdown(stages) + "\n")
    print("\n" + md)
    long.to_csv(args.results / "benchmark.csv", index=False)
    (args.results / "benchmark.md").write_text(md)
    (args.results / "benchmark.json").write_text(json.dumps({
        "seeds": args.seeds, "epochs": args.epochs, "encoder": args.encoder, "threads": args.threads,
        "pca_components": PCA_COMPONENTS, "per_slide": json.loads(per_slide.to_json(orient="records")),
        "per_dataset": datasets.to_dict(orient="records"), "training_adds": adds.to_dict(orient="records"), "ablations": ablations.to_dict(orient="records"),
        "stages": json.loads(stages.to_json(orient="records")), "paper": PAPER,
    }, indent=1) + "\n")
    plot(per_slide, args.results / "benchmark.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
