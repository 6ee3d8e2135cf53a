"""Crash safety, resume, stale-artifact detection and determinism of ``senca run``, with real processes.

* A ``senca run`` killed with SIGKILL in the middle of its work leaves no file that is taken for complete;
  the rerun finishes and every output is byte-identical to an uninterrupted run (same seed, CPU) made in
  another folder.
* Artifacts carry the sha256 of their inputs (and the run's stamps those of inputs and outputs): an input
  changed in content reruns every stage after it; a file only touched reruns nothing; an output replaced
  or written by an incompatible senca is recomputed; standalone stages refuse inputs whose recorded
  provenance does not chain.

See docs/reliability.md.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from senca.io.artifacts import file_checksum, read_meta, read_table
from senca.pipeline import RunOptions, run_samplesheet
from senca.synthetic import make_synthetic_slide, write_samplesheet

from helpers import run_cli

STAGES = ["preprocess", "embed-patches", "train-senca", "cluster", "markers"]
SEED = "0"
RUN_ARGS = ["--encoder", "efficientnet-lite0", "--epochs", "2", "--seed", SEED, "--device", "cpu", "-q"]
OPTIONS = RunOptions(encoder="efficientnet-lite0", epochs=2, seed=0, device="cpu", quiet=True)
# one thread everywhere: the same float sums in every run, and light on a shared machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def senca_run(sheet: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "senca.cli", "run", "--samplesheet", str(sheet), "--outdir", str(out), *RUN_ARGS]


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if ".tmp" in p.name)


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file (not the run's stamps) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".senca" not in p.parts}


def _moment_to_kill(folder: Path) -> str | None:
    """A point inside the run, after its first stage (preprocess) has finished: a write in flight (a
    temporary file exists), or, failing to catch one, the moment embed-patches has finished."""
    slide = folder / "k"
    if not (slide / ".senca" / "preprocess.json").exists():
        return None
    for tmp in temporaries(slide):
        return f"while writing {tmp.name}"
    if (slide / ".senca" / "embed-patches.json").exists():
        return "after embed-patches, during train-senca"
    return None


def kill_mid_run(sheet: Path, out: Path, log: Path) -> str:
    """Start ``senca run``, SIGKILL it at :func:`_moment_to_kill`; return what it was doing."""
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(senca_run(sheet, out), env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                moment = _moment_to_kill(out)
                if moment is not None:
                    os.kill(proc.pid, signal.SIGKILL)
                    assert proc.wait(timeout=60) == -signal.SIGKILL
                    return moment
                if proc.poll() is not None:
                    pytest.fail(f"senca run ended (exit {proc.returncode}) before it could be killed:\n{log.read_text()}")
                time.sleep(0.005)
            pytest.fail("senca run never reached a point to kill it")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same slide run twice, in two folders: once straight through, once killed and resumed."""
    root = tmp_path_factory.mktemp("crash")
    slide = make_synthetic_slide(root / "data", sample="k", n_rows=10, n_cols=10, n_genes=100, n_regions=3, seed=5)
    sheet = write_samplesheet(root / "data" / "samplesheet.csv", [slide])
    straight, resumed = root / "straight", root / "resumed"
    done = subprocess.run(senca_run(sheet, straight), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    moment = kill_mid_run(sheet, resumed, root / "killed.log")
    after_kill = {
        "moment": moment,
        "temporaries": [p.name for p in temporaries(resumed)],
        "stamps": sorted(p.stem for p in (resumed / "k" / ".senca").glob("*.json")),
        "finished": (resumed / "summary" / "report.html").exists(),
        "unreadable": [],
    }
    finals = [p for p in (resumed / "k").glob("k.*.parquet") if ".tmp" not in p.name]
    assert finals, "preprocess had finished: its tables exist"
    for parquet in finals:  # every file under its final name is complete
        try:
            read_meta(parquet)
        except Exception as exc:  # noqa: BLE001 - recorded, asserted on in a test
            after_kill["unreadable"].append(f"{parquet.name}: {exc}")
    for stage in after_kill["stamps"]:  # and a stamp vouches only for outputs that are all there
        recorded = json.loads((resumed / "k" / ".senca" / f"{stage}.json").read_text())
        after_kill["unreadable"] += [f"{stage} stamp: {name}" for name in recorded["outputs"] if not Path(name).is_file()]

    preprocess_stamp = (resumed / "k" / ".senca" / "preprocess.json").stat().st_mtime_ns
    rerun = subprocess.run(senca_run(sheet, resumed), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    after_kill["preprocess_reused"] = (resumed / "k" / ".senca" / "preprocess.json").stat().st_mtime_ns == preprocess_stamp
    return {"root": root, "slide": slide, "sheet": sheet, "straight": straight, "resumed": resumed,
            "after_kill": after_kill, "straight_files": outputs(straight), "resumed_files": outputs(resumed),
            "leftovers": [str(p) for p in temporaries(resumed)]}


def test_a_killed_run_left_only_complete_files(runs):
    after = runs["after_kill"]
    assert not after["finished"], f"the run had already finished when killed ({after['moment']})"
    assert after["unreadable"] == [], after
    assert set(after["stamps"]) == set(STAGES[:len(after["stamps"])]) and len(after["stamps"]) < len(STAGES), after
    assert after["preprocess_reused"], "the finished first stage should have been reused, not rerun"
    # the rerun threw away what the killed writes left, and took none of it for an output
    assert runs["leftovers"] == []
    assert sorted(p.stem for p in (runs["resumed"] / "k" / ".senca").glob("*.json")) == sorted(STAGES)


def test_resumed_run_is_byte_identical_to_an_uninterrupted_one(runs):
    straight, resumed = runs["straight_files"], runs["resumed_files"]
    assert sorted(straight) == sorted(resumed)
    parquet = [name for name in straight if name.endswith(".parquet")]
    assert len(parquet) == 10  # spots expr graph patches embeddings train_log clusters markers, metrics, summary
    differ = [name for name in sorted(straight) if straight[name] != resumed[name]]
    assert differ == [], f"differ after kill + resume ({runs['after_kill']['moment']}): {differ}"


def test_parquet_outputs_carry_no_run_specific_values(runs):
    """What makes byte identity possible: no timestamps, durations, temporary names or output folder in them."""
    for name in runs["straight_files"]:
        if name.endswith(".parquet"):
            meta = read_meta(runs["straight"] / name)
            text = json.dumps(meta)
            assert str(runs["straight"]) not in text and "seconds" not in text and ".tmp" not in text, name


def test_stale_inputs_and_outputs_are_detected_and_recomputed(runs, tmp_path):
    out, slide, sheet = runs["resumed"], runs["slide"], runs["sheet"]
    folder = out / "k"

    # touched, same bytes: nothing reruns
    future = time.time() + 3600
    for path in (slide.data, slide.image, slide.positions, slide.labels):
        os.utime(path, (future, future))
    (result,) = run_samplesheet(sheet, out, OPTIONS)
    assert result.ok and result.ran == [] and result.skipped == STAGES

    # the counts changed: every stage reruns and its outputs change
    old = {kind: shutil.copy(folder / f"k.{kind}", tmp_path / f"k.{kind}")
           for kind in ("spots.parquet", "patches.parquet", "embeddings.parquet", "clusters.parquet")}
    before = outputs(out)
    counts = pd.read_csv(slide.data, sep="\t", index_col=0)
    counts.iloc[: len(counts) // 2] = counts.iloc[: len(counts) // 2] * 2 + 1
    with gzip.open(slide.data, "wt") as handle:
        counts.to_csv(handle, sep="\t")
    (result,) = run_samplesheet(sheet, out, OPTIONS)
    assert result.ok and result.ran == STAGES, result
    after = outputs(out)
    for name in ("spots.parquet", "expr.parquet", "patches.parquet", "embeddings.parquet", "clusters.parquet",
                 "markers.parquet"):
        assert before[f"k/k.{name}"] != after[f"k/k.{name}"], name
    _, spots_meta = read_table(folder / "k.spots.parquet", "spots")
    embeddings_meta = read_meta(folder / "k.embeddings.parquet")
    assert embeddings_meta["inputs"]["spots"] == file_checksum(folder / "k.spots.parquet")
    assert spots_meta["inputs"]["data"] == file_checksum(slide.data)

    # standalone stages refuse inputs whose recorded provenance does not chain
    new = {name: folder / f"k.{name}" for name in ("spots.parquet", "expr.parquet", "graph.parquet", "h5ad",
                                                    "clusters.parquet", "senca.h5ad")}
    refusals = {
        "cluster": (["cluster", "--embeddings", old["embeddings.parquet"], "--spots", new["spots.parquet"],
                     "--h5ad", new["h5ad"]], old["embeddings.parquet"], "another spots file"),
        "train-senca": (["train-senca", "--spots", new["spots.parquet"], "--expr", new["expr.parquet"], "--graph",
                         new["graph.parquet"], "--patches", old["patches.parquet"], "--epochs", "1"],
                        old["patches.parquet"], "another spots file"),
        "markers": (["markers", "--clusters", old["clusters.parquet"], "--h5ad", new["h5ad"]],
                    old["clusters.parquet"], "another h5ad file"),
        "train-senca (old spots)": (["train-senca", "--spots", old["spots.parquet"], "--expr", new["expr.parquet"],
                                     "--graph", new["graph.parquet"], "--epochs", "1"],
                                    new["expr.parquet"], "preprocessed from other input files"),
    }
    for stage, (args, culprit, reason) in refusals.items():
        target = tmp_path / stage.replace(" ", "_")
        result = run_cli(*args, "--outdir", target, "-q", expect=None)
        assert result.exit_code == 2, (stage, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and str(culprit) in lines[0] and reason in lines[0] and "stale" in lines[0], (stage, lines)
        assert not target.exists() or not any(target.iterdir()), stage
    # ...and accept what does chain, including the senca.h5ad the same cluster run wrote
    run_cli("markers", "--clusters", new["clusters.parquet"], "--h5ad", new["senca.h5ad"], "--outdir", tmp_path / "m", "-q")

    # an output replaced behind the run's back is recomputed (and what follows is reused when it comes out the same)
    current = (folder / "k.embeddings.parquet").read_bytes()
    shutil.copy(old["embeddings.parquet"], folder / "k.embeddings.parquet")
    (result,) = run_samplesheet(sheet, out, OPTIONS)
    assert result.ran == ["train-senca"] and (folder / "k.embeddings.parquet").read_bytes() == current

    # an artifact of an incompatible senca format is recomputed, not reused
    table = pq.read_table(folder / "k.markers.parquet")
    meta = json.loads(table.schema.metadata[b"senca"]) | {"format": "0", "senca_version": "0.0.1"}
    pq.write_table(table.replace_schema_metadata({b"senca": json.dumps(meta).encode()}), folder / "k.markers.parquet")
    (result,) = run_samplesheet(sheet, out, OPTIONS)
    assert result.ran == ["markers"] and read_meta(folder / "k.markers.parquet")["format"] != "0"
    assert temporaries(out) == []
