"""GPU check (issue #20): embed-patches and train-senca on the GPU against the CPU, one prepared script.

Run where a CUDA GPU is lent (CI never depends on it). Two slides:

* DLPFC 151673 with its lowres H&E (``../shared/data/dlpfc/151673``): preprocess once, then
  embed-patches, train-senca and cluster on the CPU and on the GPU;
* a synthetic slide of ``--synthetic-spots`` spots (default 10^5, with an H&E-like JPEG): the same,
  the CPU side at ``--cpu-epochs`` (default 2) and the other 8 epochs estimated from the second one's
  time, so the check fits its time box.

For every stage: wall seconds and peak RSS (``os.wait4``) and, on the GPU, the peak CUDA memory
(``torch.cuda.max_memory_allocated``, reported by the stage's own process), and the CPU : GPU ratio.
Agreement: the patch features of the two devices (largest abs difference, and the ARI between k-means
clusterings of each, which must be >= 0.95), and the ARI between the cluster labels of the two runs.

    .venv/bin/python benchmarks/gpu_check.py                         # on the GPU machine, ~5-8 min
    .venv/bin/python benchmarks/gpu_check.py --device cpu --synthetic-spots 2000 --skip-dlpfc   # dry run here

Prints a table and writes ``benchmarks/results/gpu_check.{csv,json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tables import markdown  # this folder is on sys.path when the script runs

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PYTHON = str(REPO / ".venv" / "bin" / "python")
sys.path.insert(0, str(REPO / "benchmarks"))
DEVICE_STAGES = ("embed-patches", "train-senca", "cluster")
MIN_AGREEMENT_ARI = 0.95
TRAIN_EPOCHS = 10  # train-senca's default

# A stage in its own process, reporting its peak CUDA memory: senca run's own in-process call.
STAGE_RUNNER = """
import json, sys, time
from senca.pipeline import invoke
started = time.perf_counter()
invoke(sys.argv[1], sys.argv[3:])
report = {"seconds_in_process": time.perf_counter() - started}
try:
    import torch
    if torch.cuda.is_available():
        report["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
except ImportError:
    pass
open(sys.argv[2], "w").write(json.dumps(report))
"""


def run_stage(stage: str, args: list[str], work: Path, tag: str, threads: int) -> dict[str, Any]:
    """One stage as its own process; wall, peak RSS (MiB) and, when CUDA ran, peak CUDA memory."""
    from scale import run_measured

    report = work / f"{tag}_{stage}.json"
    cmd = [PYTHON, "-c", STAGE_RUNNER, stage, str(report), *args]
    result = run_measured(cmd, work / f"{tag}_{stage}.log", threads)
    if result["rc"] != 0:
        raise SystemExit(f"gpu_check: {tag} {stage} failed (exit {result['rc']}): see {work / f'{tag}_{stage}.log'}")
    return {**result, **json.loads(report.read_text())}


def stage_args(sample: str, prep: Path, folder: Path, device: str, epochs: int | None, encoder: str,
               input_px: int | None) -> dict[str, list[str]]:
    """The device stages' arguments: the CLI of each Nextflow module, inputs from the shared preprocess."""
    spots, o = ["--spots", str(prep / f"{sample}.spots.parquet")], str(folder)
    return {
        "embed-patches": [*spots, "--encoder", encoder, "--device", device, "--outdir", o, "--quiet",
                          *(["--input-px", str(input_px)] if input_px else [])],
        "train-senca": [*spots, "--expr", str(prep / f"{sample}.expr.parquet"), "--graph",
                        str(prep / f"{sample}.graph.parquet"), "--patches", f"{o}/{sample}.patches.parquet",
                        "--device", device, "--outdir", o,
                        # a shortened run shows its epoch progress, whose timing scales it to 10 epochs
                        *(["--epochs", str(epochs)] if epochs else ["--quiet"])],
        "cluster": ["--embeddings", f"{o}/{sample}.embeddings.parquet", *spots, "--h5ad",
                    str(prep / f"{sample}.h5ad"), "--outdir", o, "--quiet"],
    }


def agreement(sample: str, cpu: Path, gpu: Path, compare_clusters: bool) -> dict[str, float]:
    """How far the GPU's patch features (and, when both trained alike, its clusters) are from the CPU's."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from senca.io.artifacts import embedding_matrix, read_table

    features = [embedding_matrix(read_table(folder / f"{sample}.patches.parquet", "patches")[0]) for folder in (cpu, gpu)]
    kmeans = [KMeans(7, n_init=3, random_state=0).fit_predict(f) for f in features]
    result = {"patch_max_abs_diff": float(np.abs(features[0] - features[1]).max()),
              "patch_kmeans_ari": float(adjusted_rand_score(*kmeans))}
    if compare_clusters:
        clusters = [read_table(folder / f"{sample}.clusters.parquet", "clusters")[0]["cluster"].to_numpy()
                    for folder in (cpu, gpu)]
        result["cluster_ari_cpu_vs_device"] = float(adjusted_rand_score(*clusters))
    return result


def check_slide(name: str, preprocess_args: list[str], sample: str, work: Path, args: argparse.Namespace,
                cpu_epochs: int | None, input_px: int | None) -> list[dict[str, Any]]:
    """Preprocess once, then the device stages on the CPU and on ``args.device``; one row per stage."""
    root = work / name
    prep = root / "prep"
    run_stage("preprocess", [*preprocess_args, "--outdir", str(prep), "--quiet"], root, "prep", args.threads)
    timings = {}
    for tag, device, epochs in (("cpu", "cpu", cpu_epochs), ("device", args.device, None)):
        calls = stage_args(sample, prep, root / tag, device, epochs, args.encoder, input_px)
        timings[tag] = {stage: run_stage(stage, calls[stage], root, tag, args.threads) for stage in DEVICE_STAGES}
    rows = []
    for stage in DEVICE_STAGES:
        cpu, dev = timings["cpu"][stage], timings["device"][stage]
        cpu_wall = cpu["wall_s"]
        scaled = stage == "train-senca" and cpu_epochs is not None and cpu_epochs < TRAIN_EPOCHS
        if scaled:  # the epochs not run, at the measured time of one epoch after the first
            per_epoch = cpu.get("epoch_wall_s") or cpu_wall / cpu_epochs
            cpu_wall += (TRAIN_EPOCHS - cpu_epochs) * per_epoch
        rows.append({"slide": name, "stage": stage, "cpu_wall_s": cpu_wall, "cpu_wall_scaled_to_10_epochs": scaled,
                     "device_wall_s": dev["wall_s"], "cpu_to_device": cpu_wall / dev["wall_s"],
                     "cpu_peak_rss_mib": cpu["peak_rss_mib"], "device_peak_rss_mib": dev["peak_rss_mib"],
                     "cuda_peak_mib": dev.get("cuda_peak_mib")})
    both = {"slide": name, "stage": "embed-patches + train-senca"}
    both["cpu_wall_s"] = sum(r["cpu_wall_s"] for r in rows[:2])
    both["device_wall_s"] = sum(r["device_wall_s"] for r in rows[:2])
    both["cpu_to_device"] = both["cpu_wall_s"] / both["device_wall_s"]
    both.update(agreement(sample, root / "cpu", root / "device", compare_clusters=cpu_epochs is None))
    return [*rows, both]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device to check against the CPU (cuda; cpu for a dry run)")
    parser.add_argument("--synthetic-spots", type=int, default=100_000)
    parser.add_argument("--cpu-epochs", type=int, default=2,
                        help="synthetic slide: CPU train-senca epochs, >= 2 (the rest estimated from the later epochs' time)")
    parser.add_argument("--synthetic-input-px", type=int, default=64, help="synthetic slide: embed-patches --input-px")
    parser.add_argument("--skip-dlpfc", action="store_true")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
                             "use --device cpu for a dry run")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="senca_gpu_") as tmp:
        work = Path(tmp)
        if not args.skip_dlpfc:
            root = args.data / "dlpfc" / "151673"
            if not root.is_dir():
                raise SystemExit(f"gpu_check: no DLPFC 151673 at {root} (pass --skip-dlpfc)")
            rows += check_slide("dlpfc_151673_lowres", ["--sample", "151673", "--data", str(root / "outs"),
                                                        "--image", "lowres", "--labels", str(root / "labels.csv")],
                                "151673", work, args, None, None)
        from scale import generate

        files = generate(args.synthetic_spots, work / "synthetic_slide")
        rows += check_slide(f"synthetic_{args.synthetic_spots}",
                            ["--sample", files["sample"], "--data", files["data"], "--image", files["image"],
                             "--labels", files["labels"]], files["sample"], work, args, args.cpu_epochs,
                            args.synthetic_input_px)
    table = pd.DataFrame(rows)
    failed = table[table["patch_kmeans_ari"] < MIN_AGREEMENT_ARI]
    md = (f"# GPU check\n\n`benchmarks/gpu_check.py --device {args.device}`, {args.threads} CPU threads; "
          "train-senca's CPU time on the synthetic slide is measured over --cpu-epochs and completed to 10 epochs at the time of its later epochs.\n\n"
          + markdown(table, "{:.3g}", "-") + "\n")
    print(md)
    args.results.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.results / "gpu_check.csv", index=False)
    (args.results / "gpu_check.md").write_text(md)
    (args.results / "gpu_check.json").write_text(json.dumps(json.loads(table.to_json(orient="records")), indent=1) + "\n")
    if len(failed):
        print(f"gpu_check: patch features disagree between the CPU and {args.device} (k-means ARI < "
              f"{MIN_AGREEMENT_ARI})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
