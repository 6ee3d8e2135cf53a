"""End to end: ``senca run`` on synthetic slides with planted regions, resume, and failure isolation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from senca.io.artifacts import read_table
from senca.pipeline import RunOptions, cluster_call, embed_call, run_samplesheet
from senca.synthetic import make_synthetic_slide, write_samplesheet

from helpers import run_cli

PER_SLIDE = ["spots.parquet", "expr.parquet", "graph.parquet", "h5ad", "model.pt", "embeddings.parquet",
             "train_log.parquet", "clusters.parquet", "dendrogram.png", "clusters.png", "umap.png", "senca.h5ad",
             "markers.parquet", "markers.png"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two synthetic slides: one legacy ST with an image, one .h5ad without; run once, shared by tests."""
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    # Planted signal: PCA + Ward of the same expression reaches ARI ~0.87 on the first slide (fold 6, 15 markers).
    with_image = make_synthetic_slide(data, sample="planted", n_rows=18, n_cols=18, n_regions=3, fold=6.0, n_markers=15, seed=1)
    no_image = make_synthetic_slide(data, sample="noimage", fmt="h5ad", n_rows=14, n_cols=14, n_regions=2, fold=6.0,
                                    n_markers=15, image=False, seed=2)
    sheet = write_samplesheet(data / "samplesheet.csv", [with_image, no_image])
    out = root / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0", "--epochs", "10", "-q")
    return {"sheet": sheet, "out": out, "slides": {s.sample: s for s in (with_image, no_image)}, "result": result}


def test_layout_matches_the_pipeline_contract(cohort):
    out = cohort["out"]
    for sample in cohort["slides"]:
        missing = [f"{sample}.{name}" for name in PER_SLIDE if not (out / sample / f"{sample}.{name}").exists()]
        assert not missing, missing
    assert (out / "planted" / "planted.patches.parquet").exists()
    assert not (out / "noimage" / "noimage.patches.parquet").exists()
    for name in ("summary.csv", "summary.parquet", "report.html", "planted.metrics.parquet", "noimage.metrics.parquet"):
        assert (out / "summary" / name).exists(), name


@pytest.mark.parametrize("sample", ["planted", "noimage"])
def test_planted_regions_are_recovered(cohort, sample):
    clusters, _ = read_table(cohort["out"] / sample / f"{sample}.clusters.parquet", "clusters")
    truth = cohort["slides"][sample].truth.reindex(clusters["spot_id"]).to_numpy()
    ari = adjusted_rand_score(truth, clusters["cluster"])
    assert ari > 0.6, f"{sample}: ARI {ari:.3f} against the planted regions"


def test_summary_reports_each_slide(cohort):
    summary = pd.read_csv(cohort["out"] / "summary" / "summary.csv")
    assert set(summary["sample"]) == {"planted", "noimage"}
    html = (cohort["out"] / "summary" / "report.html").read_text()
    assert "planted" in html and "noimage" in html


def test_rerun_resumes_and_changed_input_recomputes(cohort, tmp_path):
    opts = RunOptions(encoder="efficientnet-lite0", epochs=10, quiet=True)
    before = (cohort["out"] / "planted" / "planted.embeddings.parquet").read_bytes()
    results = run_samplesheet(cohort["sheet"], cohort["out"], opts)
    assert all(r.ok and not r.ran for r in results), [(r.sample, r.ran) for r in results]
    # the same seed gives byte-identical outputs when a stage is forced to rerun
    (cohort["out"] / "planted" / ".senca" / "train-senca.json").unlink()
    (planted,) = [r for r in run_samplesheet(cohort["sheet"], cohort["out"], opts) if r.sample == "planted"]
    assert planted.ran == ["train-senca"] and set(planted.skipped) >= {"preprocess", "embed-patches", "cluster", "markers"}
    assert (cohort["out"] / "planted" / "planted.embeddings.parquet").read_bytes() == before


def test_other_senca_code_reruns_the_stages(cohort, monkeypatch):
    """A stamp written by other senca code (an upgrade that changed a default) is not resumed from."""
    from senca import pipeline

    opts = RunOptions(encoder="efficientnet-lite0", epochs=10, quiet=True)
    stamp = json.loads((cohort["out"] / "noimage" / ".senca" / "preprocess.json").read_text())
    assert stamp["code"] == pipeline.code_digest() and len(stamp["code"]) == 64
    monkeypatch.setattr(pipeline, "code_digest", lambda: "0" * 64)
    (noimage,) = [r for r in run_samplesheet(cohort["sheet"], cohort["out"], opts) if r.sample == "noimage"]
    assert noimage.ran == ["preprocess", "train-senca", "cluster", "markers"], noimage.ran
    monkeypatch.undo()  # back to this code's digest: the stamps now name the fake one, so everything reruns once more
    (noimage,) = [r for r in run_samplesheet(cohort["sheet"], cohort["out"], opts) if r.sample == "noimage"]
    assert noimage.ran == ["preprocess", "train-senca", "cluster", "markers"], noimage.ran


def test_a_failed_slide_does_not_stop_the_cohort(cohort, tmp_path):
    good = cohort["slides"]["noimage"]
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,data,positions\nbroken,{broken},{cohort['slides']['planted'].positions}\n"
                     f"fine,{good.data},\n")
    result = run_cli("run", "--samplesheet", sheet, "--outdir", tmp_path / "out", "--epochs", "2", "-q", expect=1)
    assert "1 of 2 slide(s) failed: broken" in result.stderr and "broken.tsv.gz: cannot read" in result.stderr
    assert (tmp_path / "out" / "fine" / "fine.clusters.parquet").exists()


def test_train_args_reach_train_senca(cohort, tmp_path):
    """Ablations through ``senca run --train-args``: the options land in train-senca's recorded params."""
    slide = cohort["slides"]["noimage"]
    sheet = write_samplesheet(tmp_path / "sheet.csv", [slide], relative=False)
    out = tmp_path / "out"
    run_cli("run", "--samplesheet", sheet, "--outdir", out, "--epochs", "1", "-q",
            "--train-args", "--no-cross-attention --combine sum")
    _, meta = read_table(out / "noimage" / "noimage.embeddings.parquet", "embeddings")
    assert meta["params"]["cross_attention"] is False and meta["params"]["combine"] == "sum"


def test_input_px_reaches_embed_patches(cohort, tmp_path):
    """``senca run --input-px`` (for 10^5+ spot slides on a CPU) is what embed-patches resizes patches to."""
    slide = cohort["slides"]["planted"]
    sheet = write_samplesheet(tmp_path / "sheet.csv", [slide], relative=False)
    out = tmp_path / "out"
    run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0", "--input-px", "32",
            "--epochs", "1", "-q")
    _, meta = read_table(out / "planted" / "planted.patches.parquet", "patches")
    assert meta["input_px"] == 32 and meta["params"]["input_px"] == 32 and meta["patch"]["resized_to_px"] == 32
    assert "--input-px" not in embed_call("planted", out / "planted", RunOptions()).args  # default: automatic
    explicit = embed_call("planted", out / "planted", RunOptions(paper=True, input_px=96)).args
    assert explicit.count("--input-px") == 1 and explicit[explicit.index("--input-px") + 1] == "96"  # beats --paper's 224
    weighted = cluster_call("planted", out / "planted", RunOptions(paper=True, view_weight=2.0)).args
    assert weighted.count("--view-weight") == 1 and weighted[weighted.index("--view-weight") + 1] == "2.0"  # beats 0
    assert "--method" in weighted  # the rest of the preset still applies
    assert "--gmm-inits" not in cluster_call("planted", out / "planted", RunOptions()).args  # default: cluster's own
    starts = cluster_call("planted", out / "planted", RunOptions(gmm_inits=200)).args
    assert starts[starts.index("--gmm-inits") + 1] == "200"
    assert "--knn-prior" not in cluster_call("planted", out / "planted", RunOptions()).args  # default: by platform
    prior = cluster_call("planted", out / "planted", RunOptions(knn_prior=0.0)).args
    assert prior[prior.index("--knn-prior") + 1] == "0.0"  # 0 (the mixture's own labels) is a value, passed on


def test_input_px_below_the_encoders_minimum_is_refused_up_front(cohort, tmp_path):
    result = run_cli("run", "--samplesheet", cohort["sheet"], "--outdir", tmp_path / "out", "--input-px", "16",
                     expect=2)
    assert "--input-px" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("train_args, message", [
    ("--seed 3", "--seed is set by senca run itself"),
    ("--no-such-thing", "train-senca has no option --no-such-thing"),
    ("--combine 'sum", "No closing quotation"),
])
def test_bad_train_args_are_refused_up_front(cohort, tmp_path, train_args, message):
    result = run_cli("run", "--samplesheet", cohort["sheet"], "--outdir", tmp_path / "out", "-q",
                     "--train-args", train_args, expect=2)
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_paper_preset_passes_the_papers_settings_to_every_stage(tmp_path):
    """`senca run --paper`: each stage gets the paper's value, through options that stage really has."""
    from senca.cli import main
    from senca.io.samplesheet import SlideSpec
    from senca.pipeline import PAPER_ARGS, preprocess_call, train_call

    spec = SlideSpec("s", tmp_path / "counts.tsv", positions=tmp_path / "pos.tsv")
    paper, default = RunOptions(paper=True), RunOptions()
    calls = {"preprocess": (preprocess_call(spec, tmp_path, paper), preprocess_call(spec, tmp_path, default)),
             "embed-patches": (embed_call("s", tmp_path, paper), embed_call("s", tmp_path, default)),
             "train-senca": (train_call("s", tmp_path, paper, False), train_call("s", tmp_path, default, False)),
             "cluster": (cluster_call("s", tmp_path, paper), cluster_call("s", tmp_path, default))}
    assert set(calls) == set(PAPER_ARGS)
    for stage, (with_paper, without) in calls.items():
        args = PAPER_ARGS[stage]
        joined = " ".join(with_paper.args)
        assert " ".join(args) in joined and " ".join(args) not in " ".join(without.args), stage
        params = main.get_command(None, stage).params
        tokens = list(args)
        while tokens:
            name = tokens.pop(0)
            option = next((p for p in params if name in (*p.opts, *p.secondary_opts)), None)
            assert option is not None, (stage, name)
            if option.is_flag:  # a switch such as --image-only: no value follows
                continue
            value = tokens.pop(0)
            option.type.convert(value, option, None)  # raises for a value the stage would refuse
            if hasattr(option.type, "choices"):
                assert value in option.type.choices, (stage, name, value)


def test_progress_bars_of_a_parallel_worker_name_its_slide(monkeypatch, capsys):
    from senca.commands.common import set_log_tag
    from senca.progress import progress

    set_log_tag("A1")
    try:
        list(progress(range(3), quiet=False, desc="train-senca", mininterval=0))
    finally:
        set_log_tag(None)
    assert "A1: train-senca" in capsys.readouterr().err


def test_each_stamp_records_its_stages_wall_time(cohort):
    """``senca run`` writes each stage's seconds into its stamp (benchmarks/speed.py reads them); resume ignores them."""
    for stage in ("preprocess", "train-senca", "cluster", "markers"):
        stamp = json.loads((cohort["out"] / "noimage" / ".senca" / f"{stage}.json").read_text())
        assert isinstance(stamp["seconds"], float) and stamp["seconds"] >= 0, stage
