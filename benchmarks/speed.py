"""End-to-end speed: ``senca run`` against SpaGCN (and optionally GraphST) on the same slide, in the same run.

What a user compares on a laptop: the wall time of one fresh ``senca run`` process (every stage, imports
included, nothing resumed) and its peak resident memory, next to the peers' own wall time and peak memory
on the same slide and seed, as ratios. Per-stage seconds come from the stamps ``senca run`` writes
(``OUTDIR/<sample>/.senca/<stage>.json``, key ``seconds``), so they are the stages of that very run.

    .venv/bin/python benchmarks/speed.py                       # H1, DLPFC 151673 image-less and lowres H&E
    .venv/bin/python benchmarks/speed.py --cases H1 --repeats 2 --graphst

Peers run in ``benchmarks/.peers-venv`` (``bash benchmarks/install_peers.sh``); without it their columns
say why. Prints a table and writes ``benchmarks/results/speed.{csv,json,md}``. Timings depend on the
machine and its load: never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tables import markdown  # this folder is on sys.path when the script runs

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
STAGES = ("preprocess", "embed-patches", "train-senca", "cluster", "markers")


@dataclass(frozen=True)
class Case:
    """One slide as the samplesheet row ``senca run`` reads, and how the peers see it."""

    name: str
    sample: str
    row: dict[str, str]
    peer_image: bool  # SpaGCN with the slide's histology


def cases(data: Path) -> dict[str, Case]:
    her2st, dlpfc = data / "her2st", data / "dlpfc" / "151673"
    h1 = {"sample": "H1", "data": str(her2st / "counts" / "H1.tsv.gz"), "image": "",
          "positions": str(her2st / "spots" / "H1_selection.tsv"),
          "labels": str(her2st / "labels" / "H1_labeled_coordinates.tsv")}
    visium = {"sample": "151673", "data": str(dlpfc / "outs"), "positions": "", "labels": str(dlpfc / "labels.csv")}
    return {"H1": Case("H1", "H1", h1, False),
            "151673": Case("151673", "151673", {**visium, "image": "none"}, False),
            "151673_he": Case("151673_he", "151673", {**visium, "image": "lowres"}, True)}


def time_senca(case: Case, work: Path, threads: int, encoder: str) -> dict[str, Any]:
    """One fresh ``senca run`` of the case's slide (no resume) and its stages' seconds from the stamps."""
    sheet = work / f"{case.name}.csv"
    pd.DataFrame([case.row]).to_csv(sheet, index=False)
    outdir = work / f"senca_{case.name}"
    cmd = [str(REPO / ".venv" / "bin" / "senca"), "run", "--samplesheet", str(sheet), "--outdir", str(outdir),
           "--no-resume", "--quiet", "--seed", "0", "--device", "cpu", "--encoder", encoder]
    from scale import run_measured  # wall and peak RSS of the child (os.wait4), its threads capped

    measured = run_measured(cmd, work / f"senca_{case.name}.log", threads)
    wall, peak = measured["wall_s"], measured["peak_rss_mib"]
    if measured["rc"] != 0:
        return {"senca_status": f"failed (exit {measured['rc']}): see {work / f'senca_{case.name}.log'}"}
    stamps = outdir / case.sample / ".senca"
    stages = {s: json.loads((stamps / f"{s}.json").read_text()).get("seconds")
              for s in STAGES if (stamps / f"{s}.json").is_file()}
    summary = pd.read_csv(outdir / "summary" / "summary.csv", dtype={"sample": str}).set_index("sample")
    return {"senca_status": "ok", "senca_wall_s": wall, "senca_peak_mib": peak,
            "senca_ari": float(summary.loc[case.sample, "ari"]),
            **{f"{s}_s": v for s, v in stages.items()},
            "imports_and_evaluate_s": wall - sum(v for v in stages.values() if v is not None)}


def time_peer(method: str, case: Case, work: Path, threads: int) -> dict[str, Any]:
    """One seed-0 run of a peer on the same slide, through benchmarks/peers.py (fresh: no cache)."""
    from peers import PeerError, check_venv, export_peer_input, run_peer

    from senca.evaluate import n_distinct_labels
    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec

    why = check_venv()
    if why:
        return {f"{method}_status": f"not run: {why}"}
    row = case.row  # the reader finds a Space Ranger folder's lowres image itself; SpaGCN uses it only with peer_image
    spec = SlideSpec(case.sample, Path(row["data"]), None, Path(row["positions"]) if row["positions"] else None,
                     Path(row["labels"]))
    peer_input = export_peer_input(read_slide(spec), work / f"peer_{case.name}.h5ad")
    k = n_distinct_labels(peer_input.labels)
    try:
        result = run_peer(method, peer_input.path, k, 0, work / f"{method}_{case.name}.csv",
                          platform=peer_input.platform,
                          image=peer_input.image if case.peer_image and method == "spagcn" else None,
                          image_scale=peer_input.image_scale, clustering="gmm", threads=threads, reuse=False)
    except PeerError as exc:
        return {f"{method}_status": f"failed: {exc}"}
    return {f"{method}_status": "ok", f"{method}_wall_s": result["wall_s"], f"{method}_peak_mib": result["peak_rss_mib"]}


def with_ratios(row: dict[str, Any], peers: list[str]) -> dict[str, Any]:
    """senca / peer for wall time and peak memory (< 1: senca is faster / smaller)."""
    for peer in peers:
        for what in ("wall_s", "peak_mib"):
            ours, theirs = row.get(f"senca_{what}"), row.get(f"{peer}_{what}")
            row[f"senca/{peer} {what.split('_')[0]}"] = ours / theirs if ours and theirs else None
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["H1", "151673", "151673_he"])
    parser.add_argument("--repeats", type=int, default=1, help="fresh runs per case; the best wall of each is kept")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--encoder", default="efficientnet-lite0", help="embed-patches encoder (offline weights)")
    parser.add_argument("--graphst", action="store_true", help="also time GraphST (~25 min per DLPFC slide on 2 cores)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="write speed_TAG.{csv,md,json}, so a run of some cases does not "
                        "overwrite the full table in speed.{csv,md,json}")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"speed.py: no data at {args.data} (../shared/data)")
    known = cases(args.data)
    unknown = [c for c in args.cases if c not in known]
    if unknown:
        raise SystemExit(f"speed.py: unknown case(s) {', '.join(unknown)} (known: {', '.join(known)})")
    peers = ["spagcn", *(["graphst"] if args.graphst else [])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="senca_speed_") as tmp:
        work = Path(tmp)
        for name in args.cases:
            case = known[name]
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.repeats):  # best of N: the least disturbed by the machine's other load
                runs = {"senca": time_senca(case, work, args.threads, args.encoder)}
                for peer in peers:
                    runs[peer] = time_peer(peer, case, work, args.threads)
                for tool, result in runs.items():
                    wall = result.get(f"{tool}_wall_s", float("inf"))
                    if tool not in best or wall < best[tool].get(f"{tool}_wall_s", float("inf")):
                        best[tool] = result
            merged = {key: value for result in best.values() for key, value in result.items()}
            row = with_ratios({"case": name, "threads": args.threads, **merged}, peers)
            rows.append(row)
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    shown = [c for c in ["case", "senca_wall_s", *(f"{s}_s" for s in STAGES), "imports_and_evaluate_s", "senca_peak_mib",
                         "senca_ari", *(f"{p}_{w}" for p in peers for w in ("wall_s", "peak_mib")),
                         *(f"senca/{p} {w}" for p in peers for w in ("wall", "peak"))] if c in table]
    md = (f"# senca speed\n\n`benchmarks/speed.py`, {args.threads} thread(s), CPU, best of {args.repeats}; "
          "senca: one fresh `senca run` process (imports included, --no-resume); peers: their own process on the "
          "same slide and seed.\n\n" + markdown(table[shown], "{:.2f}", "-") + "\n")
    notes = [f"{r['case']}: {k} {v}" for r in rows for k, v in r.items() if k.endswith("_status") and v != "ok"]
    md += "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")
    print("\n" + md)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"speed_{args.tag}" if args.tag else "speed"
    table.to_csv(args.results / f"{stem}.csv", index=False)
    (args.results / f"{stem}.md").write_text(md)
    (args.results / f"{stem}.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": json.loads(table.to_json(orient="records"))},
                                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
