"""Peers side by side: SpaGCN and GraphST on the benchmark's slides and labels, over seeds.

Runs in the main venv; each peer runs in ``benchmarks/.peers-venv`` (``bash benchmarks/install_peers.sh``)
through :mod:`peers`. Slides are read by senca's own readers, so spot ids, spots and labels are the
benchmark's; k = number of distinct usable labels (``undetermined``/NA excluded); ARI/NMI by
``senca.evaluate.score_clusters`` on the labelled spots.

* HER2ST A1 B1 C1 D1 E1 F1 G2 H1, image-less: SpaGCN (coordinates only) and GraphST (leiden and gmm), each seed;
  A1 with its H&E (``her2st/A1_he``): SpaGCN with histology.
* DLPFC 151673 and 151674: SpaGCN with its lowres H&E and without; GraphST gmm and GraphST leiden (GraphST
  uses no image), run last (each ~800-1,800 s on 2 cores).

Both peers' scores are of their refined labels (SpaGCN ``refine``, GraphST ``refine_label`` radius 50);
the unrefined ARI is in the CSV and the per-dataset table. A peer that fails gets a row whose status
says why. Work files: ``benchmarks/work/peers/`` (inputs, per-run CSV + JSON + log; reused when the
inputs, arguments and peer script are unchanged). Writes ``benchmarks/results/peers.{csv,md,json}``.

    .venv/bin/python benchmarks/peers_bench.py                        # everything, seeds 0 1 2
    .venv/bin/python benchmarks/peers_bench.py --only her2st --methods spagcn --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PeerError, PeerInput, check_venv, export_peer_input, run_peer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
HER2ST_SLIDES = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
DLPFC_SLIDES = ["151673", "151674"]
METHOD_NAMES = {("spagcn", "leiden"): "SpaGCN", ("graphst", "leiden"): "GraphST (leiden)",
                ("graphst", "gmm"): "GraphST (gmm)"}


@dataclass(frozen=True)
class Job:
    """One peer on one slide variant, for some seeds."""

    dataset: str  # her2st | dlpfc
    slide: str
    variant: str  # image-less | H&E | lowres H&E
    sample: str  # the exported input's name
    method: str  # spagcn | graphst
    clustering: str  # leiden | gmm (GraphST only)
    use_image: bool
    seeds: tuple[int, ...]
    threads: int
    heavy: bool = False  # run after every light job (DLPFC GraphST)

    @property
    def name(self) -> str:
        return METHOD_NAMES[(self.method, self.clustering)]


# ----------------------------------------------------------------------------- inputs
def her2st_specs(data: Path) -> dict[str, Any]:
    from senca.io.samplesheet import SlideSpec

    root = data / "her2st"
    specs = {s: SlideSpec(s, root / "counts" / f"{s}.tsv.gz", None, root / "spots" / f"{s}_selection.tsv",
                          root / "labels" / f"{s}_labeled_coordinates.tsv") for s in HER2ST_SLIDES}
    specs["A1_image"] = SlideSpec("A1_image", root / "counts" / "A1.tsv.gz", root / "A1_he" / "A1.png",
                                  root / "A1_he" / "A1_selection.tsv", root / "labels" / "A1_labeled_coordinates.tsv")
    return specs


def dlpfc_specs(data: Path) -> dict[str, Any]:
    """151673 and 151674 as Space Ranger outs/: the reader picks each one's lowres H&E (the only image there)."""
    from senca.io.samplesheet import SlideSpec

    return {slide: SlideSpec(slide, data / "dlpfc" / slide / "outs", None, None, data / "dlpfc" / slide / "labels.csv")
            for slide in DLPFC_SLIDES}


def selected(slides: list[str], wanted: list[str] | None) -> list[str]:
    """``slides`` in their order, only those in ``wanted`` (``--slides``; None: all)."""
    return [s for s in slides if not wanted or s in wanted]


def jobs_for(args: argparse.Namespace) -> list[Job]:
    """The runs the issue asks for, light ones first, DLPFC GraphST last."""
    seeds = tuple(args.seeds)
    jobs: list[Job] = []
    if args.only in (None, "her2st"):
        for slide in selected(HER2ST_SLIDES, args.slides):
            if "spagcn" in args.methods:
                jobs.append(Job("her2st", slide, "image-less", slide, "spagcn", "leiden", False, seeds, args.threads))
            if "graphst" in args.methods:
                for clustering in args.her2st_graphst:
                    jobs.append(Job("her2st", slide, "image-less", slide, "graphst", clustering, False, seeds,
                                    args.threads))
        if "spagcn" in args.methods and selected(["A1"], args.slides):
            jobs.append(Job("her2st", "A1", "H&E", "A1_image", "spagcn", "leiden", True, seeds, args.threads))
    if args.only in (None, "dlpfc"):
        for slide in selected(DLPFC_SLIDES, args.slides):
            if "spagcn" in args.methods:
                jobs.append(Job("dlpfc", slide, "lowres H&E", slide, "spagcn", "leiden", True, seeds, args.threads))
                jobs.append(Job("dlpfc", slide, "image-less", slide, "spagcn", "leiden", False, seeds, args.threads))
            if "graphst" in args.methods:
                for clustering in args.dlpfc_graphst:
                    jobs.append(Job("dlpfc", slide, "image-less", slide, "graphst", clustering, False,
                                    tuple(args.dlpfc_graphst_seeds), args.heavy_threads, heavy=True))
    return sorted(jobs, key=lambda j: j.heavy)  # stable: the order above within light and heavy


# ----------------------------------------------------------------------------- one run
def run_one(job: Job, peer_input: PeerInput, seed: int, work: Path, timeout_s: float | None) -> dict[str, Any]:
    """One seed of one job, scored; a failed peer becomes a row with the reason in ``status``."""
    from senca.evaluate import n_distinct_labels, score_clusters

    k = n_distinct_labels(peer_input.labels)
    tag = f"{job.method}_{job.clustering}" if job.method == "graphst" else f"spagcn_{'image' if job.use_image else 'noimage'}"
    out_csv = work / "runs" / job.sample / f"{tag}_seed{seed}.csv"
    row: dict[str, Any] = {"dataset": job.dataset, "slide": job.slide, "variant": job.variant, "sample": job.sample,
                           "method": job.name, "seed": seed, "k": k, "n_spots": peer_input.n_spots,
                           "threads": job.threads, "image": str(peer_input.image) if job.use_image else "none"}
    try:
        result = run_peer(job.method, peer_input.path, k, seed, out_csv, platform=peer_input.platform,
                          image=peer_input.image if job.use_image else None, image_scale=peer_input.image_scale,
                          clustering=job.clustering, threads=job.threads, timeout_s=timeout_s)
    except PeerError as exc:
        return {**row, "status": f"failed: {exc}"}
    labels = peer_input.labels
    predicted = result["labels"].reindex(labels.index)
    if predicted.isna().any():
        return {**row, "status": f"failed: peer output lacks spot {predicted.index[predicted.isna()][0]!r}"}
    score = score_clusters(predicted.to_numpy(), labels)
    unrefined = pd.read_csv(out_csv, dtype=str).set_index("spot_id")["cluster_unrefined"].reindex(labels.index)
    raw_score = score_clusters(unrefined.to_numpy(), labels)
    info = result.get("info", {})
    return {**row, "status": "ok", "ari": score["ari"], "nmi": score["nmi"], "ari_unrefined": raw_score["ari"],
            "nmi_unrefined": raw_score["nmi"], "n_scored": score["n_scored"],
            "n_clusters": info.get("n_clusters_refined"), "n_clusters_unrefined": info.get("n_clusters"),
            "wall_s": result["wall_s"], "peak_rss_mib": result["peak_rss_mib"], "cached": result["cached"],
            "resolution": info.get("res", info.get("resolution")), "l": info.get("l"), "beta": info.get("beta"),
            "step_seconds": json.dumps(info.get("seconds", {}))}


# ----------------------------------------------------------------------------- tables
def pm(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def per_slide_table(long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, slide, variant, method), g in long.groupby(["dataset", "slide", "variant", "method"], sort=False):
        ok = g[g["status"] == "ok"]
        failed = g[g["status"] != "ok"]
        rows.append({"dataset": dataset, "slide": slide, "variant": variant, "method": method,
                     "n_spots": int(g["n_spots"].iloc[0]), "k": int(g["k"].iloc[0]),
                     "ARI": pm(ok["ari"]) if len(ok) else "-", "NMI": pm(ok["nmi"]) if len(ok) else "-",
                     "ARI unrefined": pm(ok["ari_unrefined"]) if len(ok) else "-",
                     "seeds": " ".join(str(int(s)) for s in ok["seed"]),
                     "wall_s": ok["wall_s"].mean() if len(ok) else float("nan"),
                     "peak_rss_mib": ok["peak_rss_mib"].max() if len(ok) else float("nan"),
                     "status": "ok" if failed.empty else "; ".join(failed["status"].unique())})
    return pd.DataFrame(rows)


def dataset_table(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and median over slides of each slide's seed-mean (refined; unrefined mean beside)."""
    rows = []
    ok = long[long["status"] == "ok"]
    for (dataset, variant, method), g in ok.groupby(["dataset", "variant", "method"], sort=False):
        by_slide = g.groupby("slide")[["ari", "nmi", "ari_unrefined", "wall_s"]].mean()
        rows.append({"dataset": dataset, "variant": variant, "method": method, "slides": len(by_slide),
                     "seeds": g["seed"].nunique(), "ARI mean": round(by_slide["ari"].mean(), 3),
                     "ARI median": round(by_slide["ari"].median(), 3), "NMI mean": round(by_slide["nmi"].mean(), 3),
                     "NMI median": round(by_slide["nmi"].median(), 3),
                     "ARI unrefined mean": round(by_slide["ari_unrefined"].mean(), 3),
                     "wall_s per slide": round(by_slide["wall_s"].mean(), 1),
                     "peak_rss_mib max": round(g["peak_rss_mib"].max(), 0)})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_results(long: pd.DataFrame, results: Path, meta: dict[str, Any]) -> str:
    per_slide, datasets = per_slide_table(long), dataset_table(long)
    md = ("# Peers: SpaGCN 1.2.7 and GraphST 1.1.1 on the benchmark slides\n\n"
          f"seeds {meta['seeds']} (DLPFC GraphST: {meta['dlpfc_graphst_seeds']}); CPU, {os.cpu_count()} cores; "
          f"{meta['threads']} thread(s) per run ({meta['heavy_threads']} for DLPFC GraphST). ARI/NMI of the refined "
          "labels (SpaGCN refine, GraphST refine_label radius 50) on labelled spots; k = distinct labels. "
          "GraphST (leiden): its own resolution search to reach k (its default mclust needs R). GraphST (gmm): "
          "tied-covariance Gaussian mixture on PCA(20) of its embedding, a stand-in for mclust EEE. "
          "wall_s: mean over seeds of the peer process's wall time; peak_rss_mib: its peak resident memory.\n\n"
          "## Per slide (mean ± sd over seeds)\n\n" + markdown(per_slide)
          + "\n\n## Per dataset (mean and median over slides of the seed-mean)\n\n" + markdown(datasets) + "\n")
    results.mkdir(parents=True, exist_ok=True)
    long.to_csv(results / "peers.csv", index=False)
    (results / "peers.md").write_text(md)
    (results / "peers.json").write_text(json.dumps({
        **meta, "per_slide": json.loads(per_slide.to_json(orient="records")),
        "per_dataset": json.loads(datasets.to_json(orient="records"))}, indent=1) + "\n")
    return md


# ----------------------------------------------------------------------------- main
def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder [../shared/data]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--dlpfc-graphst-seeds", nargs="+", type=int, default=[0], help="[0]: each run is ~15 min")
    p.add_argument("--dlpfc-graphst", nargs="*", choices=["gmm", "leiden"], default=["gmm", "leiden"],
                   help="GraphST clusterings on DLPFC [gmm leiden]; none to skip")
    p.add_argument("--her2st-graphst", nargs="*", choices=["gmm", "leiden"], default=["leiden", "gmm"],
                   help="GraphST clusterings on HER2ST [leiden gmm]; none to skip")
    p.add_argument("--only", choices=["her2st", "dlpfc"], default=None)
    p.add_argument("--methods", nargs="+", choices=["spagcn", "graphst"], default=["spagcn", "graphst"])
    p.add_argument("--slides", nargs="+", default=None, help="only these slides (HER2ST or DLPFC names)")
    p.add_argument("--threads", type=int, default=1, help="threads per peer run [1]")
    p.add_argument("--heavy-threads", type=int, default=2, help="threads for DLPFC GraphST [2]")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a peer run is killed [none]")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "peers")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / "her2st").is_dir() and not (args.data / "dlpfc").is_dir():
        raise SystemExit(f"data folder {args.data} not found (or has no her2st/ or dlpfc/): pass --data")
    unusable = check_venv()
    if unusable:
        print(f"warning: {unusable}; every peer row will say so", file=sys.stderr)
    specs = {**her2st_specs(args.data), **dlpfc_specs(args.data)}
    work = args.work.resolve()
    inputs: dict[str, PeerInput] = {}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for job in jobs_for(args):
        if job.sample not in inputs:
            inputs[job.sample] = export_peer_input(specs[job.sample], work / "inputs" / f"{job.sample}.h5ad")
        for seed in job.seeds:
            row = run_one(job, inputs[job.sample], seed, work, args.timeout)
            rows.append(row)
            score = f"ARI={row['ari']:.3f} (unrefined {row['ari_unrefined']:.3f}) NMI={row['nmi']:.3f} " \
                    f"{row['wall_s']:.0f}s {row['peak_rss_mib']:.0f}MiB{' cached' if row['cached'] else ''}" \
                if row["status"] == "ok" else row["status"]
            print(f"{job.dataset} {job.sample} {job.variant} {job.name} seed={seed} k={row['k']}: {score}", flush=True)
    long = pd.DataFrame(rows)
    meta = {"seeds": args.seeds, "dlpfc_graphst_seeds": args.dlpfc_graphst_seeds, "threads": args.threads,
            "heavy_threads": args.heavy_threads, "versions": {"SpaGCN": "1.2.7", "GraphST": "1.1.1"},
            "total_s": round(time.perf_counter() - started, 1)}
    print("\n" + write_results(long, args.results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
