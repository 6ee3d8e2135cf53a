"""Scale benchmark: synthetic slides of 10^3..3x10^5 spots (with an H&E-like JPEG) through every stage.

Why: Visium HD bins give 10^5..10^6 spots per slide; every stage must grow about linearly with the
number of spots and fit a workstation. Each size is a synthetic slide (``senca.synthetic``: planted
Voronoi regions with marker genes, sparse negative-binomial counts, an H&E-like JPEG painted under
the spots) written as an ``.h5ad`` plus a samplesheet JPEG, then run through the same CLI commands
Nextflow runs, one process per stage:

    preprocess -> embed-patches -> train-senca -> cluster -> markers -> evaluate

Each stage's wall time and peak resident memory (``ru_maxrss`` of that stage's process, from
``os.wait4``) are recorded; the growth exponent between consecutive sizes is
``log(t2 / t1) / log(n2 / n1)`` (1 = linear; fixed start-up costs such as imports pull it below 1 at
small sizes, so the 10^4 -> 10^5 step is the one that says how a stage scales).

Fixed settings at every size (so exponents compare like with like): efficientnet-lite0 (offline
ImageNet weights) at ``--input-px 64`` (see docs/scaling.md), ``--epochs 2`` for train-senca (time
per epoch reported; a real run uses 10), the default ``--batch-spots``, 1 thread per stage unless
``--threads``.

    .venv/bin/python benchmarks/scale.py --sizes 1000 10000            # ~2 min
    .venv/bin/python benchmarks/scale.py --sizes 100000 --merge        # ~9 min, adds to earlier rows
    .venv/bin/python benchmarks/scale.py --sizes 300000 --merge        # ~26 min, 5 GB free memory
    .venv/bin/python benchmarks/scale.py input-px --n 10000            # patches/s vs --input-px
    .venv/bin/python benchmarks/scale.py report                        # tables again from scale.json
    .venv/bin/python benchmarks/scale.py --sizes 10000 --stages train-senca   # rerun a stage, keep the rest

Writes ``benchmarks/results/scale.{csv,md,json}`` (and ``scale_input_px.{csv,json}`` for ``input-px``).
Slides and stage outputs go to ``benchmarks/work/scale/<n>/`` (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "scale"
SENCA = str(REPO / ".venv" / "bin" / "senca")
SIZES = (1_000, 10_000, 100_000, 300_000)
STAGES = ("preprocess", "embed-patches", "train-senca", "cluster", "markers", "evaluate")
TARGET_STAGES = ("preprocess", "train-senca", "cluster")  # issue #8: exponent <= 1.1
TARGET_EXPONENT = 1.1
TARGET_PEAK_GIB = 8.0
SLIDE = {"n_regions": 6, "n_genes": 1000, "n_markers": 10, "fold": 4.0, "pitch_px": 16.0, "depth": 0.3}


# ----------------------------------------------------------------------------- running one measured process
def thread_env(threads: int) -> dict[str, str]:
    """Environment that holds BLAS, OpenMP, torch and numba to ``threads`` threads."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env["MPLBACKEND"] = "Agg"
    return env


EPOCH_MARK = re.compile(rb"train-senca:[^\r\n]*?\| *(\d+)/(\d+) \[")  # tqdm's "1/2 [" after each epoch


def run_measured(cmd: list[str], log: Path, threads: int) -> dict[str, Any]:
    """Run ``cmd`` as its own process: wall and CPU seconds and peak RSS (MiB) from ``os.wait4``.

    Its output goes to ``log``; when it shows train-senca's epoch progress, the process's CPU time is
    sampled at every epoch end, so epochs 2.. give a per-epoch CPU time free of start-up costs and of
    other jobs on the machine (``epoch_cpu_s``).
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # the machine is shared: a busy one stretches wall times
    marks: dict[int, tuple[float, float]] = {}
    with open(log, "wb") as handle:
        handle.write((" ".join(cmd) + "\n").encode())
        handle.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=thread_env(threads),
                                cwd=REPO)
        child = psutil.Process(proc.pid)
        tail = b""
        while chunk := proc.stdout.read1(1 << 16):
            handle.write(chunk)
            handle.flush()  # the log can be watched while a long stage runs
            for match in EPOCH_MARK.finditer(tail + chunk):
                epoch = int(match.group(1))
                if epoch not in marks:
                    with contextlib.suppress(psutil.Error):
                        cpu = child.cpu_times()
                        marks[epoch] = (time.perf_counter() - started, cpu.user + cpu.system)
            tail = chunk[-200:]
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    result = {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1),
              "rc": os.waitstatus_to_exitcode(status), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
              "load_1m": round(load, 2)}
    later = sorted(e for e in marks if e >= 1)
    if len(later) >= 2:  # epochs after the first: no set-up inside
        (w0, c0), (w1, c1) = marks[later[0]], marks[later[-1]]
        result["epoch_cpu_s"] = round((c1 - c0) / (later[-1] - later[0]), 2)
        result["epoch_wall_s"] = round((w1 - w0) / (later[-1] - later[0]), 2)
    return result


def grid_shape(n: int) -> tuple[int, int]:
    """Rows x columns of a near-square grid with at least ``n`` spots."""
    rows = max(2, round(math.sqrt(n)))
    return rows, math.ceil(n / rows)


def generate(n: int, folder: Path, seed: int = 0) -> dict[str, str]:
    """Write the synthetic slide of ~``n`` spots into ``folder``; its files for ``senca preprocess``."""
    from senca.synthetic import make_synthetic_slide

    rows, cols = grid_shape(n)
    slide = make_synthetic_slide(folder, sample=f"s{n}", n_rows=rows, n_cols=cols, fmt="h5ad", image_file=True,
                                 seed=seed, **SLIDE)
    files = {"sample": slide.sample, "data": str(slide.data), "image": str(slide.image), "labels": str(slide.labels)}
    (folder / "slide.json").write_text(json.dumps(files))
    return files


def stage_commands(files: dict[str, str], out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    """The CLI command of every stage (what the Nextflow modules run), in pipeline order."""
    s = files["sample"]
    o = str(out)
    return {
        "preprocess": [SENCA, "preprocess", "--sample", s, "--data", files.get("data", ""), "--image", files.get("image", ""),
                       "--labels", files.get("labels", ""), "--outdir", o, "--quiet"],
        "embed-patches": [SENCA, "embed-patches", "--spots", f"{o}/{s}.spots.parquet", "--encoder", args.encoder,
                          "--input-px", str(args.input_px), "--batch-size", "64", "--device", "cpu", "--outdir", o],
        "train-senca": [SENCA, "train-senca", "--spots", f"{o}/{s}.spots.parquet", "--expr", f"{o}/{s}.expr.parquet",
                        "--graph", f"{o}/{s}.graph.parquet", "--patches", f"{o}/{s}.patches.parquet",
                        "--epochs", str(args.epochs), "--device", "cpu", "--outdir", o],
        "cluster": [SENCA, "cluster", "--embeddings", f"{o}/{s}.embeddings.parquet", "--spots",
                    f"{o}/{s}.spots.parquet", "--h5ad", f"{o}/{s}.h5ad", "--outdir", o],
        "markers": [SENCA, "markers", "--clusters", f"{o}/{s}.clusters.parquet", "--h5ad", f"{o}/{s}.h5ad",
                    "--outdir", o, "--quiet"],
        "evaluate": [SENCA, "evaluate", f"{o}/{s}.clusters.parquet", "--outdir", f"{o}/summary", "--quiet"],
    }


def stage_details(stage: str, log: Path, out: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Per-stage numbers beyond time and memory, read from the stage's log and outputs."""
    text = log.read_text(errors="replace")
    if stage == "train-senca":
        match = re.search(r"(\d+) steps on (\S+) in ([\d.]+) s", text)
        if match:
            seconds = float(match.group(3))
            return {"steps": int(match.group(1)), "train_s": seconds, "s_per_epoch": round(seconds / args.epochs, 2)}
    if stage == "evaluate":
        summary = out / "summary" / "summary.csv"
        if summary.exists():
            import pandas as pd

            row = pd.read_csv(summary).iloc[0]
            return {"ari": round(float(row["ari"]), 4), "nmi": round(float(row["nmi"]), 4)}
    return {}


def run_size(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Generate the ~``n``-spot slide and run every stage on it (or only ``--stages``, on the outputs of
    an earlier run of this size); one row per stage run."""
    folder = WORK / str(n)
    data, out, logs = folder / "data", folder / "out", folder / "logs"
    n_spots = grid_shape(n)[0] * grid_shape(n)[1]
    rows: list[dict[str, Any]] = []
    if args.stages:
        if not out.is_dir():
            raise SystemExit(f"--stages reruns stages on an earlier run's outputs: {out} is missing")
        files = json.loads((folder / "slide.json").read_text()) if (folder / "slide.json").exists() \
            else {"sample": f"s{n}"}
        if "preprocess" in args.stages and not Path(files.get("data", "")).exists():
            raise SystemExit(f"the {n}-spot slide's input files are gone (run without --stages, or with --keep)")
    else:
        if folder.exists():
            shutil.rmtree(folder)
        data.mkdir(parents=True)
        gen = run_measured([sys.executable, __file__, "generate", "--n", str(n), "--folder", str(data)],
                           logs / "generate.log", args.threads)
        if gen["rc"] != 0:
            raise SystemExit(f"generating the {n}-spot slide failed: see {logs / 'generate.log'}")
        files = json.loads((data / "slide.json").read_text())
        (folder / "slide.json").write_text(json.dumps(files))
        image_mb = round(Path(files["image"]).stat().st_size / 2**20, 1)
        rows.append({"size": n, "n_spots": n_spots, "stage": "generate (not a stage)", **gen, "image_mib": image_mb})
        print(f"{n_spots:>8} spots  {'generate':<14} {gen['wall_s']:>8.1f} s {gen['peak_rss_mib']:>8.0f} MiB",
              flush=True)
    for stage, cmd in stage_commands(files, out, args).items():
        if args.stages and stage not in args.stages:
            continue
        result = run_measured(cmd, logs / f"{stage}.log", args.threads)
        row = {"size": n, "n_spots": n_spots, "stage": stage, **result,
               **stage_details(stage, logs / f"{stage}.log", out, n, args)}
        if stage == "embed-patches" and result["rc"] == 0:
            row["spots_per_s"] = round(n_spots / result["wall_s"], 1)
        rows.append(row)
        extra = {k: v for k, v in row.items() if k not in ("size", "n_spots", "stage", "wall_s", "peak_rss_mib", "rc",
                                                            "load_1m")}
        print(f"{n_spots:>8} spots  {stage:<14} {result['wall_s']:>8.1f} s {result['peak_rss_mib']:>8.0f} MiB "
              f"{extra if extra else ''}", flush=True)
        if result["rc"] != 0:
            print(f"  {stage} failed (exit {result['rc']}): see {logs / (stage + '.log')}", flush=True)
            break
    if not args.keep and not args.stages:
        shutil.rmtree(data, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- exponents and tables
def exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """log(t2/t1)/log(n2/n1) (and the same for peak RSS) per stage between consecutive measured sizes."""
    out = []
    for stage in STAGES:
        done = sorted((r for r in rows if r["stage"] == stage and r["rc"] == 0), key=lambda r: r["n_spots"])
        for a, b in zip(done, done[1:], strict=False):
            ratio = math.log(b["n_spots"] / a["n_spots"])
            entry = {"stage": stage, "from": a["n_spots"], "to": b["n_spots"],
                     "time_exponent": round(math.log(b["wall_s"] / a["wall_s"]) / ratio, 3),
                     "rss_exponent": round(math.log(b["peak_rss_mib"] / a["peak_rss_mib"]) / ratio, 3)}
            if a.get("cpu_s") and b.get("cpu_s"):
                entry["cpu_exponent"] = round(math.log(b["cpu_s"] / a["cpu_s"]) / ratio, 3)
            key = "epoch_cpu_s" if "epoch_cpu_s" in a and "epoch_cpu_s" in b else "s_per_epoch"
            if key in a and key in b:
                entry["epoch_exponent"] = round(math.log(b[key] / a[key]) / ratio, 3)
                entry["epoch_measure"] = "CPU" if key == "epoch_cpu_s" else "wall"
            out.append(entry)
    return out


def markdown(rows: list[dict[str, Any]], exps: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as markdown: time / peak RSS per stage and size, exponents, target check."""
    sizes = sorted({r["n_spots"] for r in rows})
    stage_names = ["generate (not a stage)", *STAGES]
    lines = [f"# Scale benchmark ({meta['date']})", "",
             f"Machine: {meta['machine']}; {meta['threads']} thread(s) per stage; no GPU. "
             f"Encoder {meta['encoder']} at --input-px {meta['input_px']}; train-senca --epochs {meta['epochs']}.",
             "", "Wall time (s) / peak RSS (MiB) per stage (CPU seconds and the 1-minute load average at the "
             "start of each stage are in scale.csv):", "",
             "| stage | " + " | ".join(f"{n:,} spots" for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for stage in stage_names:
        cells = []
        for n in sizes:
            row = next((r for r in rows if r["stage"] == stage and r["n_spots"] == n), None)
            if row is None:
                cells.append("–")
            elif row["rc"] != 0:
                cells.append(f"failed (exit {row['rc']})")
            else:
                cells.append(f"{row['wall_s']:.1f} s / {row['peak_rss_mib']:,.0f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    total = []
    for n in sizes:
        done = [r for r in rows if r["n_spots"] == n and r["stage"] in STAGES and r["rc"] == 0]
        complete = len(done) == len(STAGES)
        t = sum(r["wall_s"] for r in done)
        peak = max((r["peak_rss_mib"] for r in done), default=float("nan"))
        total.append(f"{t:.1f} s / {peak:,.0f}" + ("" if complete else " (incomplete)"))
    lines.append("| **pipeline (sum / max)** | " + " | ".join(total) + " |")
    lines += ["", "Details:", ""]
    for n in sizes:
        parts = []
        for r in rows:
            if r["n_spots"] != n:
                continue
            if "s_per_epoch" in r:
                cpu = f", {r['epoch_cpu_s']} CPU s for epoch 2" if "epoch_cpu_s" in r else ""
                parts.append(f"train {r['s_per_epoch']} s/epoch wall ({r['steps']} steps){cpu}")
            if "spots_per_s" in r:
                parts.append(f"embed {r['spots_per_s']} spots/s end to end")
            if "ari" in r:
                parts.append(f"ARI {r['ari']}")
            if "image_mib" in r:
                parts.append(f"JPEG {r['image_mib']} MiB")
        lines.append(f"* {n:,} spots: " + "; ".join(parts))
    lines += ["", "Growth exponents log(t2/t1)/log(n2/n1): wall time / CPU time (peak RSS in brackets); "
              "train-senca also per epoch:", "",
              "| stage | " + " | ".join(f"{e['from']:,} → {e['to']:,}" for e in exps if e["stage"] == STAGES[0]) + " |",
              "|---|" + "---:|" * len([e for e in exps if e["stage"] == STAGES[0]])]
    for stage in STAGES:
        cells = [f"{e['time_exponent']:.2f} / {e.get('cpu_exponent', float('nan')):.2f} ({e['rss_exponent']:.2f})"
                 + (f", epoch {e['epoch_exponent']:.2f} ({e['epoch_measure']})" if "epoch_exponent" in e else "")
                 for e in exps if e["stage"] == stage]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", f"Targets (issue #8): 10^5 spots through the pipeline under {TARGET_PEAK_GIB:g} GiB peak; "
              f"exponent <= {TARGET_EXPONENT} for {', '.join(TARGET_STAGES)} (train: per epoch)."]
    lines += [f"* {c}" for c in target_check(rows, exps)]
    return "\n".join(lines) + "\n"


def target_check(rows: list[dict[str, Any]], exps: list[dict[str, Any]]) -> list[str]:
    """Plain-language pass/fail lines for the issue's targets, from the largest step measured."""
    checks = []
    big = [r for r in rows if r["n_spots"] >= 100_000 and r["stage"] in STAGES]
    for n in sorted({r["n_spots"] for r in big}):
        done = [r for r in big if r["n_spots"] == n and r["rc"] == 0]
        peak = max((r["peak_rss_mib"] for r in done), default=float("nan")) / 1024
        ok = len(done) == len(STAGES) and peak < TARGET_PEAK_GIB
        target = "" if n < 200_000 else " (the target is for 10^5 spots)"
        checks.append(f"{n:,} spots: {'PASS' if ok else 'FAIL'}: {len(done)}/{len(STAGES)} stages, peak {peak:.2f} GiB"
                      f"{target}")
    for stage in TARGET_STAGES:
        for step in (e for e in exps if e["stage"] == stage and e["from"] >= 10_000):  # past start-up costs
            measure = "epoch_exponent" if "epoch_exponent" in step else "cpu_exponent" if "cpu_exponent" in step \
                else "time_exponent"
            value = step[measure]
            checks.append(f"{stage} {step['from']:,} → {step['to']:,}: {measure.replace('_', ' ')} {value:.2f} "
                          f"(wall {step['time_exponent']:.2f}) {'PASS' if value <= TARGET_EXPONENT else 'FAIL'}")
    return checks


def machine() -> str:
    import psutil

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()} {platform.release()}")


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    import pandas as pd

    from senca.io.artifacts import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    exps = exponents(rows)
    pd.DataFrame(rows).to_csv(RESULTS / "scale.csv", index=False)
    write_json({"meta": meta, "rows": rows, "exponents": exps, "targets": target_check(rows, exps)},
               RESULTS / "scale.json")
    (RESULTS / "scale.md").write_text(markdown(rows, exps, meta))
    print(markdown(rows, exps, meta))


# ----------------------------------------------------------------------------- patches/s vs --input-px
def input_px_sweep(args: argparse.Namespace) -> None:
    """Encoder throughput (patches/s, after one warm-up batch) at several --input-px on a generated slide."""
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from senca.encoders import encode_batches, load_encoder
    from senca.images import read_working_image
    from senca.io.artifacts import write_json
    from senca.patches import PatchDataset, decode_reduction, patch_corners, patch_geometry

    torch.set_num_threads(args.threads)
    folder = WORK / f"input_px_{args.n}"
    files = generate(args.n, folder)
    import anndata as ad

    xy = np.asarray(ad.read_h5ad(files["data"], backed="r").obsm["spatial"])[: args.patches]
    geometry = patch_geometry(xy)
    loaded = load_encoder(args.encoder)
    rows = []
    for size in args.sizes:
        reduction = decode_reduction(geometry.side_px, size)
        working = read_working_image(files["image"], reduction)
        corners, side = patch_corners(xy, geometry.side_px, reduction)
        dataset = PatchDataset(corners, side, size, pixels=working.pixels)
        loader = DataLoader(dataset, batch_size=64, shuffle=False)
        encode_batches(loaded, [next(iter(loader))], 64 if len(dataset) >= 64 else len(dataset), torch.device("cpu"),
                       quiet=True)  # warm-up: oneDNN picks kernels on the first call
        started, cpu_started = time.perf_counter(), time.process_time()
        encode_batches(loaded, loader, len(dataset), torch.device("cpu"), quiet=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        rows.append({"encoder": args.encoder, "input_px": size, "patch_side_px": geometry.side_px,
                     "decode_reduction": reduction, "patches": len(dataset), "threads": args.threads,
                     "seconds": round(seconds, 2), "patches_per_s": round(len(dataset) / seconds, 1),
                     "patches_per_cpu_s": round(len(dataset) / cpu, 1), "load_1m": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(RESULTS / "scale_input_px.csv", index=False)
    write_json({"machine": machine(), "rows": rows}, RESULTS / "scale_input_px.json")
    shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate", help="(internal) write one synthetic slide")
    gen.add_argument("--n", type=int, required=True)
    gen.add_argument("--folder", type=Path, required=True)
    sub.add_parser("report", help="rewrite scale.{csv,md,json} from scale.json (no runs)")
    sweep = sub.add_parser("input-px", help="patches/s vs --input-px")
    sweep.add_argument("--n", type=int, default=10_000, help="slide to cut patches from")
    sweep.add_argument("--patches", type=int, default=512)
    sweep.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128, 160, 224])
    sweep.add_argument("--encoder", default="efficientnet-lite0")
    sweep.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--threads", type=int, default=1, help="threads per stage (BLAS, torch, numba)")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--input-px", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--merge", action="store_true", help="keep earlier rows (scale.json) of sizes not rerun")
    parser.add_argument("--keep", action="store_true", help="keep the generated slides")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=None,
                        help="rerun only these stages on an earlier run's outputs (implies --merge)")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.n, args.folder)
        return
    if args.command == "input-px":
        input_px_sweep(args)
        return
    if args.command == "report":
        saved = json.loads((RESULTS / "scale.json").read_text())
        write_results(saved["rows"], saved["meta"])
        return
    rows: list[dict[str, Any]] = []
    if (args.merge or args.stages) and (RESULTS / "scale.json").exists():
        rows = [r for r in json.loads((RESULTS / "scale.json").read_text())["rows"]
                if r["size"] not in args.sizes or (args.stages and r["stage"] not in args.stages)]
    for n in args.sizes:
        rows += run_size(n, args)
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": args.threads,
                "encoder": args.encoder, "input_px": args.input_px, "epochs": args.epochs, "slide": SLIDE,
                "python": platform.python_version()}
        order = ["generate (not a stage)", *STAGES]
        write_results(sorted(rows, key=lambda r: (r["size"], order.index(r["stage"]))), meta)


if __name__ == "__main__":
    main()
