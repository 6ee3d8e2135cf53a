"""``senca train-senca`` end to end on preprocessed synthetic slides: artifacts, metadata, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from senca.commands.train_senca import train_senca
from senca.errors import SencaError
from senca.io.artifacts import (
    Provenance,
    embedding_frame,
    embedding_matrix,
    read_meta,
    read_table,
    write_table,
)
from senca.model import load_model


def run(args: list[str]):
    return CliRunner().invoke(train_senca, [str(a) for a in args], catch_exceptions=False)


def base_args(prep: dict) -> list:
    return ["--spots", prep["spots"], "--expr", prep["expr"], "--graph", prep["graph"]]


@pytest.fixture(scope="module")
def imageless(synthetic_preprocessed, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_imageless")
    result = run([*base_args(synthetic_preprocessed), "--outdir", out, "--seed", "1", "--quiet"])
    return result, out


@pytest.fixture(scope="module")
def patches_file(synthetic_preprocessed, tmp_path_factory):
    """A patches artifact whose features carry the planted regions (stands in for embed-patches)."""
    spots, meta = read_table(synthetic_preprocessed["spots"], "spots")
    truth = synthetic_preprocessed["slide"].truth.reindex(spots["spot_id"]).to_numpy()
    rng = np.random.default_rng(0)
    centres = {name: rng.normal(size=32) for name in np.unique(truth)}
    features = np.stack([centres[t] for t in truth]) + rng.normal(scale=1.0, size=(len(truth), 32))
    path = tmp_path_factory.mktemp("patches") / f"{meta['sample']}.patches.parquet"
    write_table(embedding_frame(spots["spot_id"], features), path,
                Provenance("patches", meta["sample"], "embed-patches", {"encoder": "test"}))
    return path


def cluster_ari(embeddings_path, prep) -> float:
    emb, _ = read_table(embeddings_path, "embeddings")
    truth = prep["slide"].truth.reindex(emb["spot_id"]).to_numpy()
    predicted = AgglomerativeClustering(n_clusters=3, linkage="ward").fit_predict(embedding_matrix(emb))
    return adjusted_rand_score(truth, predicted)


def test_imageless_run_writes_artifacts_and_recovers_regions(imageless, synthetic_preprocessed):
    result, out = imageless
    assert result.exit_code == 0, result.output
    s = synthetic_preprocessed["slide"].sample
    emb, meta = read_table(out / f"{s}.embeddings.parquet", "embeddings")
    spots, _ = read_table(synthetic_preprocessed["spots"], "spots")
    assert emb["spot_id"].tolist() == spots["spot_id"].tolist()
    assert embedding_matrix(emb).shape == (len(spots), 64)
    assert all(emb[f"emb_{i}"].dtype == np.float32 for i in range(64))
    assert meta["stage"] == "train-senca" and meta["sample"] == s
    assert set(meta["inputs"]) == {"spots", "expr", "graph"}
    assert meta["params"]["epochs"] == 10 and meta["params"]["seed"] == 1
    assert "loss" in meta["final_losses"] and meta["device"] == "cpu"
    assert cluster_ari(out / f"{s}.embeddings.parquet", synthetic_preprocessed) > 0.6


def test_imageless_is_recorded_everywhere(imageless, synthetic_preprocessed):
    result, out = imageless
    s = synthetic_preprocessed["slide"].sample
    for kind in ("embeddings", "train_log"):
        meta = read_meta(out / f"{s}.{kind}.parquet", kind)
        assert meta["image"] == "none"
        assert meta["image_substitute"]["kind"] == "expression_neighbourhood_mean"
    checkpoint = torch.load(out / f"{s}.model.pt", weights_only=True)
    assert checkpoint["config"]["image"]["image"] == "none"
    assert checkpoint["config"]["image"]["image_substitute"]["hops"] >= 1


def test_imageless_is_logged_on_stderr_even_when_quiet(synthetic_preprocessed, tmp_path):
    result = CliRunner().invoke(train_senca, [*map(str, base_args(synthetic_preprocessed)), "--outdir", str(tmp_path),
                                              "--epochs", "1", "--quiet"])
    assert result.exit_code == 0
    assert "image-less" in result.stderr and "image: none" in result.stderr


def test_train_log_has_every_loss_term_per_step(imageless, synthetic_preprocessed):
    _, out = imageless
    log, _ = read_table(out / f"{synthetic_preprocessed['slide'].sample}.train_log.parquet", "train_log")
    for column in ("epoch", "step", "loss", "nt_xent_pooled", "nt_xent_window", "mse", "embedding_var", "lr"):
        assert column in log.columns
    assert log["step"].tolist() == list(range(len(log)))
    assert sorted(log["epoch"].unique()) == list(range(10))
    assert log["epoch"].dtype == np.int64 and log["loss"].dtype == np.float64
    assert np.allclose(log["loss"], log["nt_xent_pooled"].fillna(0) + log["nt_xent_window"] + 40 * log["mse"], rtol=1e-5)
    assert (log["embedding_var"] > 1e-6).all()


def test_checkpoint_rebuilds_the_model(imageless, synthetic_preprocessed):
    _, out = imageless
    s = synthetic_preprocessed["slide"].sample
    checkpoint = torch.load(out / f"{s}.model.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "config", "senca_version"}
    model = load_model(checkpoint)
    assert model.config.shared_dim == 64 and not model.training
    assert set(checkpoint["config"]["inputs"]) == {"spots", "expr", "graph"}


def test_same_seed_same_embeddings_through_the_cli(imageless, synthetic_preprocessed, tmp_path):
    _, out = imageless
    s = synthetic_preprocessed["slide"].sample
    again = run([*base_args(synthetic_preprocessed), "--outdir", tmp_path, "--seed", "1", "--quiet"])
    assert again.exit_code == 0
    a, _ = read_table(out / f"{s}.embeddings.parquet", "embeddings")
    b, _ = read_table(tmp_path / f"{s}.embeddings.parquet", "embeddings")
    pd.testing.assert_frame_equal(a, b)


def test_with_patches(synthetic_preprocessed, patches_file, tmp_path):
    result = run([*base_args(synthetic_preprocessed), "--patches", patches_file, "--outdir", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output
    s = synthetic_preprocessed["slide"].sample
    meta = read_meta(tmp_path / f"{s}.embeddings.parquet", "embeddings")
    assert meta["image"] == "patches" and meta["image_substitute"] is None
    assert set(meta["inputs"]) == {"spots", "expr", "graph", "patches"}
    checkpoint = torch.load(tmp_path / f"{s}.model.pt", weights_only=True)
    assert checkpoint["config"]["model"]["image_dim"] == 32
    assert cluster_ari(tmp_path / f"{s}.embeddings.parquet", synthetic_preprocessed) > 0.6


@pytest.mark.parametrize("flags,param,value", [
    (["--no-cross-attention"], "cross_attention", False),
    (["--no-hierarchical"], "hierarchical", False),
    (["--k", "8"], "k", 8),
    (["--combine", "sum", "--shared-dim", "16"], "combine", "sum"),
])
def test_ablation_flags_are_applied_and_recorded(synthetic_preprocessed, tmp_path, flags, param, value):
    result = run([*base_args(synthetic_preprocessed), *flags, "--epochs", "1", "--outdir", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output
    s = synthetic_preprocessed["slide"].sample
    meta = read_meta(tmp_path / f"{s}.embeddings.parquet", "embeddings")
    assert meta["params"][param] == value
    checkpoint = torch.load(tmp_path / f"{s}.model.pt", weights_only=True)
    if param == "cross_attention":
        assert not any(name.startswith("cross_attention.query") for name in checkpoint["state_dict"])
    if param == "k":
        assert meta["k"] == 8
    if param == "hierarchical":
        log, _ = read_table(tmp_path / f"{s}.train_log.parquet", "train_log")
        assert log["nt_xent_window"].isna().all() and log["nt_xent_spot"].notna().all()


def test_cli_defaults_are_the_training_defaults():
    from senca.commands.train_senca import _Defaults
    from senca.train import TrainConfig

    defaults = TrainConfig()
    for name, value in vars(_Defaults).items():
        if not name.startswith("_"):
            assert getattr(defaults, name) == value, name


# ----------------------------------------------------------------------------- user errors
def expect_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line


def test_missing_input_file(synthetic_preprocessed, tmp_path):
    missing = tmp_path / "nope.expr.parquet"
    result = CliRunner().invoke(train_senca, ["--spots", str(synthetic_preprocessed["spots"]), "--expr", str(missing),
                                              "--graph", str(synthetic_preprocessed["graph"]), "--outdir", str(tmp_path)])
    expect_error(result, "nope.expr.parquet", "not found")


def test_wrong_kind_of_artifact(synthetic_preprocessed, tmp_path):
    result = CliRunner().invoke(train_senca, ["--spots", str(synthetic_preprocessed["spots"]),
                                              "--expr", str(synthetic_preprocessed["graph"]),
                                              "--graph", str(synthetic_preprocessed["graph"]), "--outdir", str(tmp_path)])
    expect_error(result, "graph.parquet", "expected a expr artifact")


def test_graph_pointing_outside_the_slide(synthetic_preprocessed, tmp_path):
    graph, meta = read_table(synthetic_preprocessed["graph"], "graph")
    graph.loc[3, "target"] = 10_000
    bad = tmp_path / "bad.graph.parquet"
    write_table(graph, bad, Provenance("graph", meta["sample"], "preprocess"))
    result = CliRunner().invoke(train_senca, ["--spots", str(synthetic_preprocessed["spots"]),
                                              "--expr", str(synthetic_preprocessed["expr"]), "--graph", str(bad),
                                              "--outdir", str(tmp_path)])
    expect_error(result, "bad.graph.parquet", "'target' row 3", "10000")


def test_patches_missing_a_spot(synthetic_preprocessed, patches_file, tmp_path):
    patches, meta = read_table(patches_file, "patches")
    dropped = patches["spot_id"].iloc[5]
    bad = tmp_path / "bad.patches.parquet"
    write_table(patches.drop(index=5), bad, Provenance("patches", meta["sample"], "embed-patches"))
    result = CliRunner().invoke(train_senca, [*map(str, base_args(synthetic_preprocessed)), "--patches", str(bad),
                                              "--outdir", str(tmp_path)])
    expect_error(result, "bad.patches.parquet", dropped)


def test_patches_from_another_sample(synthetic_preprocessed, patches_file, tmp_path):
    patches, _ = read_table(patches_file, "patches")
    other = tmp_path / "other.patches.parquet"
    write_table(patches, other, Provenance("patches", "another_slide", "embed-patches"))
    result = CliRunner().invoke(train_senca, [*map(str, base_args(synthetic_preprocessed)), "--patches", str(other),
                                              "--outdir", str(tmp_path)])
    expect_error(result, "other.patches.parquet", "another_slide")


def test_non_finite_expression(synthetic_preprocessed, tmp_path):
    expr, meta = read_table(synthetic_preprocessed["expr"], "expr")
    gene = expr.columns[4]
    expr.loc[7, gene] = np.nan
    bad = tmp_path / "bad.expr.parquet"
    write_table(expr, bad, Provenance("expr", meta["sample"], "preprocess"))
    result = CliRunner().invoke(train_senca, ["--spots", str(synthetic_preprocessed["spots"]), "--expr", str(bad),
                                              "--graph", str(synthetic_preprocessed["graph"]), "--outdir", str(tmp_path)])
    expect_error(result, "bad.expr.parquet", expr["spot_id"].iloc[7], gene)


@pytest.mark.parametrize("flags,fragment", [(["--epochs", "0"], "--epochs"), (["--batch-spots", "2"], "--batch-spots"),
                                            (["--temperature", "0"], "--temperature")])
def test_bad_options(synthetic_preprocessed, tmp_path, flags, fragment):
    result = CliRunner().invoke(train_senca, [*map(str, base_args(synthetic_preprocessed)), *flags, "--outdir", str(tmp_path)])
    expect_error(result, fragment)


# ----------------------------------------------------------------------------- real data
def test_her2st_h1_beats_pca_of_the_same_hvgs(shared_data, tmp_path):
    """H1 through the real preprocess and `senca train-senca`: Ward on S beats Ward on PCA(HVGs)."""
    from sklearn.decomposition import PCA

    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec
    from senca.preprocess import PreprocessParams, preprocess_slide, write_preprocess

    her2st = shared_data / "her2st"
    spec = SlideSpec("H1", her2st / "counts" / "H1.tsv.gz", positions=her2st / "spots" / "H1_selection.tsv")
    raw = read_slide(spec)
    paths = write_preprocess(preprocess_slide(raw, PreprocessParams()), tmp_path, PreprocessParams(), raw.inputs)
    result = run([*base_args(paths), "--outdir", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output

    table = pd.read_csv(her2st / "labels" / "H1_labeled_coordinates.tsv", sep="\t").dropna(subset=["x", "y"])
    labels = {f"{round(x)}x{round(y)}": label for x, y, label in zip(table["x"], table["y"], table["label"], strict=True)}
    emb, _ = read_table(tmp_path / "H1.embeddings.parquet", "embeddings")
    expr, _ = read_table(paths["expr"], "expr")
    truth = emb["spot_id"].map(labels)
    keep = (truth.notna() & (truth != "undetermined")).to_numpy()
    k = truth[keep].nunique()

    def ari(matrix: np.ndarray) -> float:
        predicted = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(matrix)
        return adjusted_rand_score(truth[keep], predicted[keep])

    senca = ari(embedding_matrix(emb))
    pca = ari(PCA(n_components=50, svd_solver="full").fit_transform(expr.drop(columns="spot_id").to_numpy()))
    assert senca > pca + 0.1, (senca, pca)


def test_gene_scaling_is_a_per_gene_zscore_and_leaves_the_input_alone():
    from senca.train import scale_genes

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=(50, 6)).astype(np.float32)
    x[:, 3] = 1.5  # a constant gene: centred, not divided by zero
    scaled = scale_genes(x.copy(), "zscore")
    assert np.allclose(scaled.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(np.delete(scaled.std(axis=0), 3), 1, atol=1e-4) and np.all(scaled[:, 3] == 0)
    assert scale_genes(x, "none") is x


def test_gene_scale_default_follows_the_platform(synthetic_preprocessed, tmp_path):
    from test_cluster import rewrite_spots

    visium = rewrite_spots(synthetic_preprocessed["spots"], tmp_path / "syn.spots.parquet", defaults_platform="visium")
    prep = {**synthetic_preprocessed, "spots": visium}
    for name, extra in (("visium", []), ("paper", ["--gene-scale", "none"])):
        result = run([*base_args(prep), "--epochs", "1", "--outdir", tmp_path / name, "--quiet", *extra])
        assert result.exit_code == 0, result.output
    visium_params = read_meta(tmp_path / "visium" / "syn.embeddings.parquet")["params"]
    assert visium_params["gene_scale"] == "zscore" and visium_params["input_pcs"] == 200  # round 12
    assert read_meta(tmp_path / "paper" / "syn.embeddings.parquet")["params"]["gene_scale"] == "none"
    st = run([*base_args(synthetic_preprocessed), "--epochs", "1", "--outdir", tmp_path / "st", "--quiet"])
    st_params = read_meta(tmp_path / "st" / "syn.embeddings.parquet")["params"]
    assert st.exit_code == 0 and st_params["gene_scale"] == "none" and st_params["input_pcs"] == 0
    # --reference-spots (round 27; off by default on every platform, the paper's fixed epochs): a slide smaller than it
    # trains for proportionally more epochs, recorded in the metadata and the log
    assert visium_params["reference_spots"] == 0 and st_params["reference_spots"] == 0
    n = len(pd.read_parquet(synthetic_preprocessed["spots"]))
    scaled = run([*base_args(prep), "--epochs", "1", "--reference-spots", "3600", "--outdir", tmp_path / "scaled", "--quiet"])
    assert scaled.exit_code == 0, scaled.output
    epochs_run = {name: read_meta(tmp_path / name / "syn.embeddings.parquet")["epochs"] for name in ("visium", "st", "scaled")}
    assert epochs_run == {"visium": 1, "st": 1, "scaled": -(-3600 // n)} and n < 3600
    logged = pd.read_parquet(tmp_path / "scaled" / "syn.train_log.parquet")["epoch"]
    assert logged.max() + 1 == epochs_run["scaled"] and logged.min() == 0
    assert read_meta(tmp_path / "scaled" / "syn.embeddings.parquet")["params"]["reference_spots"] == 3600


def test_epochs_follow_the_reference_slide_size():
    from senca.train import TrainConfig, epochs_for

    visium = TrainConfig(reference_spots=3600)
    assert epochs_for(visium, 3639) == 10 and epochs_for(visium, 3600) == 10  # a DLPFC section: the paper's 10
    assert epochs_for(visium, 782) == 47 and epochs_for(visium, 1820) == 20 and epochs_for(visium, 100_000) == 10
    assert epochs_for(TrainConfig(), 782) == 10  # 0: fixed epochs (legacy ST, the paper)
    assert epochs_for(TrainConfig(epochs=3, reference_spots=3600), 900) == 12
    with pytest.raises(SencaError, match="--reference-spots"):
        TrainConfig(reference_spots=-1).validate()


def test_reconstruct_views_decodes_rna_and_the_image_input(synthetic_preprocessed, patches_file, tmp_path):
    result = run([*base_args(synthetic_preprocessed), "--patches", patches_file, "--reconstruct", "views",
                  "--epochs", "2", "--outdir", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(tmp_path / "syn.model.pt", weights_only=True)
    model = load_model(checkpoint)
    assert model.config.reconstruct == "views"
    assert model.decoder[-1].out_features == model.config.rna_dim + 32  # [R_i, standardised patch features]
    log, _ = read_table(tmp_path / "syn.train_log.parquet", "train_log")
    assert np.isfinite(log["mse"]).all() and log["mse"].iloc[-1] < log["mse"].iloc[0]
    assert cluster_ari(tmp_path / "syn.embeddings.parquet", synthetic_preprocessed) > 0.5


@pytest.mark.parametrize("target", ["expression", "smoothed_expression"])
def test_reconstruct_expression_decodes_the_spots_hvgs(synthetic_preprocessed, tmp_path, target):
    result = run([*base_args(synthetic_preprocessed), "--reconstruct", target, "--substitute-hops", "1",
                  "--epochs", "2", "--outdir", tmp_path, "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_model(torch.load(tmp_path / "syn.model.pt", weights_only=True))
    expr, _ = read_table(synthetic_preprocessed["expr"], "expr")
    assert model.config.reconstruct == target
    assert model.decoder[-1].out_features == expr.shape[1] - 1  # every HVG column (spot_id aside)
    meta = read_meta(tmp_path / "syn.embeddings.parquet")
    assert meta["params"]["reconstruct"] == target and meta["params"]["substitute_hops"] == 1
    assert meta["image_substitute"]["hops"] == 1
    log, _ = read_table(tmp_path / "syn.train_log.parquet", "train_log")
    assert np.isfinite(log["mse"]).all() and log["mse"].iloc[-1] < log["mse"].iloc[0]
    assert cluster_ari(tmp_path / "syn.embeddings.parquet", synthetic_preprocessed) > 0.5


def test_image_pcs_and_substitute_shape_the_image_heads_input(synthetic_preprocessed, patches_file, tmp_path):
    widths = {}
    for name, flags in (("raw", ["--image-pcs", "0", "--image-only"]), ("pcs", ["--image-pcs", "8", "--image-only"]),
                        ("both", ["--image-pcs", "8", "--image-with-substitute"])):
        result = run([*base_args(synthetic_preprocessed), "--patches", patches_file, *flags, "--epochs", "1",
                      "--outdir", tmp_path / name, "--quiet"])
        assert result.exit_code == 0, result.output
        model = load_model(torch.load(tmp_path / name / "syn.model.pt", weights_only=True))
        widths[name] = model.config.image_dim
        extra = read_meta(tmp_path / name / "syn.embeddings.parquet")
        assert extra["image"] == "patches" and (extra["image_substitute"] is not None) == (name == "both")
    assert widths == {"raw": 32, "pcs": 8, "both": 32 + 8}  # substitute view: 32 components


def test_image_with_substitute_weighs_both_blocks_equally():
    from senca.tiling import build_slide_graph
    from senca.train import TrainConfig, image_view

    rng = np.random.default_rng(0)
    expr = rng.normal(size=(60, 40)).astype(np.float32)
    source = np.repeat(np.arange(60), 2)
    target = (source + np.tile([1, 2], 60)) % 60
    graph = build_slide_graph(source, target, 60)
    patches = 1000.0 * rng.normal(size=(60, 16)).astype(np.float32)  # the CNN's units: much larger
    view, info = image_view(expr, graph, patches, TrainConfig(image_with_substitute=True, substitute_dim=8))
    assert view.shape == (60, 8 + 16) and info["image_substitute"]["hops"] == TrainConfig().substitute_hops
    rms = [float(block.var(dim=0, unbiased=False).mean().sqrt()) for block in (view[:, :8], view[:, 8:])]
    assert rms == pytest.approx([1.0, 1.0], rel=1e-3)
    half, _ = image_view(expr, graph, patches, TrainConfig(image_with_substitute=True, substitute_dim=8, image_weight=0.5))
    assert [float(b.var(dim=0, unbiased=False).mean().sqrt()) for b in (half[:, :8], half[:, 8:])] == pytest.approx([1.0, 0.5], rel=1e-3)


def test_image_hops_average_the_patch_features_over_the_graph():
    from senca.substitute import neighbourhood_smooth
    from senca.tiling import build_slide_graph
    from senca.train import TrainConfig, image_view

    rng = np.random.default_rng(1)
    expr = rng.normal(size=(50, 20)).astype(np.float32)
    source = np.repeat(np.arange(50), 2)
    graph = build_slide_graph(source, (source + np.tile([1, 2], 50)) % 50, 50)
    patches = rng.normal(size=(50, 12)).astype(np.float32)
    raw, _ = image_view(expr, graph, patches, TrainConfig())
    smoothed, info = image_view(expr, graph, patches, TrainConfig(image_hops=1))
    assert torch.equal(raw, torch.as_tensor(patches)) and info["image_hops"] == 1
    assert torch.allclose(smoothed, neighbourhood_smooth(torch.as_tensor(patches), graph, 1))
    assert not torch.allclose(smoothed, raw)  # the view really changed: each row is now a neighbourhood mean


def test_graph_contrast_is_trained_logged_and_rebuilt(synthetic_preprocessed, tmp_path):
    off = run([*base_args(synthetic_preprocessed), "--outdir", tmp_path / "off", "--epochs", "2", "--quiet"])
    on = run([*base_args(synthetic_preprocessed), "--outdir", tmp_path / "on", "--epochs", "2", "--graph-contrast",
              "1", "--quiet"])
    assert off.exit_code == 0 and on.exit_code == 0, on.output
    log_off, _ = read_table(tmp_path / "off" / "syn.train_log.parquet", "train_log")
    log_on, _ = read_table(tmp_path / "on" / "syn.train_log.parquet", "train_log")
    assert log_off["graph_contrast"].isna().all()  # the paper's loss: no such term
    assert log_on["graph_contrast"].notna().all() and (log_on["graph_contrast"] > 0).all()
    # the term is in the loss: the total is more than eq. 1's terms alone
    eq1 = log_on[["nt_xent_pooled", "nt_xent_window"]].fillna(0).sum(axis=1) + 40.0 * log_on["mse"]
    assert np.allclose(log_on["loss"], eq1 + log_on["graph_contrast"], rtol=1e-4)
    checkpoint = torch.load(tmp_path / "on" / "syn.model.pt", weights_only=True)
    model = load_model(checkpoint)
    assert model.discriminator is not None and checkpoint["config"]["train"]["graph_contrast"] == 1.0
    assert load_model(torch.load(tmp_path / "off" / "syn.model.pt", weights_only=True)).discriminator is None


def test_bad_graph_contrast_and_image_hops(synthetic_preprocessed, tmp_path):
    expect_error(run([*base_args(synthetic_preprocessed), "--outdir", tmp_path, "--graph-contrast", "-1"]), "--graph-contrast")
    expect_error(run([*base_args(synthetic_preprocessed), "--outdir", tmp_path, "--image-hops", "-1"]), "--image-hops")
    expect_error(run([*base_args(synthetic_preprocessed), "--outdir", tmp_path, "--input-pcs", "-1"]), "--input-pcs")


def test_input_pcs_set_what_the_rna_branch_reads(synthetic_preprocessed, tmp_path):
    n_hvg = read_table(synthetic_preprocessed["expr"], "expr")[0].shape[1] - 1  # minus spot_id
    for pcs, width, kind in ((0, n_hvg, "hvg"), (8, 8, "hvg_pca")):
        out = tmp_path / str(pcs)
        result = run([*base_args(synthetic_preprocessed), "--input-pcs", pcs, "--epochs", "1", "--outdir", out, "--quiet"])
        assert result.exit_code == 0, result.output
        checkpoint = torch.load(out / "syn.model.pt", weights_only=True)
        assert load_model(checkpoint).config.n_genes == width
        assert read_meta(out / "syn.embeddings.parquet")["rna_input"] == {"kind": kind, "width": width}
        assert checkpoint["config"]["rna_input"] == {"kind": kind, "width": width}
        # the substitute view is made from the HVGs either way: same width, same image branch input
        assert load_model(checkpoint).config.image_dim == 32


def test_network_input_is_pca_scores_at_unit_root_mean_variance():
    from senca.substitute import pca
    from senca.train import TrainConfig, network_input

    rng = np.random.default_rng(0)
    expr = (rng.normal(size=(200, 5)) @ rng.normal(size=(5, 60)) * 7 + rng.normal(size=(200, 60))).astype(np.float32)
    same, info = network_input(expr, TrainConfig(input_pcs=0))
    assert same is expr and info == {"kind": "hvg", "width": 60}
    assert network_input(expr, TrainConfig(input_pcs=60))[0] is expr  # as wide as the HVGs: nothing to reduce
    scores, info = network_input(expr, TrainConfig(input_pcs=10))
    assert scores.shape == (200, 10) and info == {"kind": "hvg_pca", "width": 10}
    assert float(np.sqrt(scores.var(axis=0).mean())) == pytest.approx(1.0, rel=1e-4)
    reference = pca(expr, 10)  # one global scale: the components' relative variances are kept
    np.testing.assert_allclose(scores * np.sqrt(reference.var(axis=0).mean()), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_components", [16, 60])  # 16: Lanczos (eigsh); 60 > 300 / 40: LAPACK syevr subset
def test_substitute_pca_by_partial_eigensolver_matches_the_full_eigendecomposition(n_components):
    """The PCA's partial eigensolvers (above EIGSH_MIN_WIDTH genes) give eigh's components and scores."""
    import senca.substitute as substitute

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 300)) * np.linspace(3, 1, 12).repeat(25)[:300]
    x = (signal + rng.normal(scale=0.5, size=(400, 300))).astype(np.float32)
    covariance = np.cov(x.astype(np.float64), rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    top = vectors[:, np.argsort(values)[::-1][:n_components]]
    partial = substitute.leading_eigenvectors(covariance, n_components)
    assert np.allclose(np.abs((top * partial).sum(axis=0)), 1.0, atol=1e-8)  # the same directions, same order
    fast = substitute.pca(x, n_components)
    full_width = substitute.EIGSH_MIN_WIDTH
    try:
        substitute.EIGSH_MIN_WIDTH = 10**9  # force the full eigendecomposition
        full = substitute.pca(x, n_components)
    finally:
        substitute.EIGSH_MIN_WIDTH = full_width
    assert np.allclose(fast, full, atol=1e-4 * np.abs(full).max())  # signs fixed the same way


def test_optimiser_is_the_fused_adam_and_takes_the_per_tensor_step():
    """The fused kernel (issue #20: docs/scaling.md) must do the update torch's per-tensor Adam does."""
    from senca.train import make_optimiser

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(40, 16), torch.nn.ELU(), torch.nn.Linear(16, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimiser(models[0], 1e-2, torch.device("cpu"))
    plain = torch.optim.Adam(models[1].parameters(), lr=1e-2)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x = torch.randn(64, 40)
    for _ in range(20):
        for model, optimiser in ((models[0], fused), (models[1], plain)):
            optimiser.zero_grad()
            model(x).square().mean().backward()
            optimiser.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert make_optimiser(models[0], 1e-2, torch.device("meta")).defaults["fused"] is None


def test_clustering_view_is_the_expressions_substitute_with_or_without_patches():
    """The view written beside S (view_* columns, for senca cluster --view-weight) is the expression's
    substitute view: the image head's input image-less, and its first block (not the patches) with H&E."""
    from senca.blocks import unit_root_mean_variance
    from senca.substitute import image_substitute
    from senca.tiling import build_slide_graph
    from senca.train import TrainConfig, clustering_view, image_view

    rng = np.random.default_rng(2)
    expr = rng.normal(size=(60, 40)).astype(np.float32)
    source = np.repeat(np.arange(60), 2)
    graph = build_slide_graph(source, (source + np.tile([1, 2], 60)) % 60, 60)
    config = TrainConfig(substitute_dim=8)
    substitute, _ = image_substitute(expr, graph, config.substitute_hops, 8)
    features, info = image_view(expr, graph, None, config)  # image-less: the substitute itself
    assert np.array_equal(clustering_view(expr, graph, features, info, config), substitute)
    patches = 1000.0 * rng.normal(size=(60, 16)).astype(np.float32)
    with_image = TrainConfig(substitute_dim=8, image_with_substitute=True, image_pcs=0)
    features, info = image_view(expr, graph, patches, with_image)
    view = clustering_view(expr, graph, features, info, with_image)
    assert view.shape == (60, 8)
    np.testing.assert_allclose(view, unit_root_mean_variance(substitute), rtol=1e-4, atol=1e-5)
    only_patches = TrainConfig(substitute_dim=8, image_pcs=0)  # the paper's image head: the view is recomputed
    features, info = image_view(expr, graph, patches, only_patches)
    assert np.array_equal(clustering_view(expr, graph, features, info, only_patches), substitute)


def test_embeddings_carry_the_substitute_view(imageless, synthetic_preprocessed):
    """train-senca writes view_0..view_31 beside emb_*; embedding_matrix still reads S alone."""
    _, out = imageless
    emb, _ = read_table(out / f"{synthetic_preprocessed['slide'].sample}.embeddings.parquet", "embeddings")
    assert embedding_matrix(emb).shape[1] == 64
    view = embedding_matrix(emb, "view_")
    assert view.shape == (len(emb), 32) and view.dtype == np.float32 and np.isfinite(view).all()
    assert view.std(axis=0).min() > 0
