"""The cluster stage: planted regions recovered, k precedence, automatic k, determinism, the .h5ad, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from senca.io.artifacts import Provenance, embedding_frame, read_table, write_table

from helpers import assert_one_line_error, run_cli

CORE_KEYS = {"format", "senca_version", "kind", "sample", "stage", "params", "inputs"}


def separable_embeddings(spot_ids: pd.Series, groups: np.ndarray, seed: int = 0, dim: int = 64,
                         spread: float = 4.0) -> np.ndarray:
    """S where each group is a tight blob around its own random centre (well separated)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(int(groups.max()) + 1, dim))
    return (centres[groups] + rng.normal(size=(len(spot_ids), dim))).astype(np.float32)


def write_embeddings(path: Path, spot_ids: pd.Series, S: np.ndarray, sample: str, shuffle: bool = True,
                     view: np.ndarray | None = None) -> Path:
    """An embeddings artifact as train-senca writes it (rows shuffled: cluster must align by spot_id)."""
    order = np.random.default_rng(1).permutation(len(spot_ids)) if shuffle else np.arange(len(spot_ids))
    frame = embedding_frame(spot_ids.to_numpy()[order], S[order], None if view is None else view[order])
    return write_table(frame, path, Provenance("embeddings", sample, "train-senca", params={"epochs": 10}))


def rewrite_spots(src: Path, dst: Path, **changes) -> Path:
    """A copy of a spots artifact with metadata extras changed (``label=None`` drops the labels)."""
    df, meta = read_table(src, "spots")
    if changes.pop("drop_labels", False):
        df["label"] = pd.array([None] * len(df), dtype="string")
    extra = {k: v for k, v in meta.items() if k not in CORE_KEYS}
    extra.update(changes)
    prov = Provenance("spots", meta["sample"], meta["stage"], meta["params"], meta["inputs"], extra)
    return write_table(df, dst, prov)


@pytest.fixture(scope="module")
def slide(synthetic_preprocessed, tmp_path_factory):
    """The synthetic slide's preprocess outputs plus separable embeddings of its planted regions."""
    paths = synthetic_preprocessed
    spots, meta = read_table(paths["spots"], "spots")
    truth = paths["slide"].truth.reindex(spots["spot_id"]).to_numpy()
    regions = pd.factorize(truth, sort=True)[0]
    folder = tmp_path_factory.mktemp("cluster_inputs")
    emb = write_embeddings(folder / "syn.embeddings.parquet", spots["spot_id"], separable_embeddings(spots["spot_id"], regions), "syn")
    return {"spots": paths["spots"], "h5ad": paths["h5ad"], "embeddings": emb, "truth": truth, "regions": regions,
            "folder": folder, "n": len(spots)}


def cluster_args(slide, outdir, *extra):
    return ["cluster", "--embeddings", slide["embeddings"], "--spots", slide["spots"], "--h5ad", slide["h5ad"],
            "--outdir", outdir, "-q", *extra]


@pytest.fixture(scope="module")
def clustered(slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("clustered")
    run_cli(*cluster_args(slide, out))
    return out


def test_recovers_planted_regions_and_writes_every_output(slide, clustered):
    for name in ("clusters.parquet", "dendrogram.png", "clusters.png", "umap.png", "senca.h5ad"):
        assert (clustered / f"syn.{name}").stat().st_size > 0, name
    df, meta = read_table(clustered / "syn.clusters.parquet", "clusters")
    assert list(df.columns) == ["spot_id", "cluster", "label", "pixel_x", "pixel_y"]
    assert df["cluster"].dtype == np.int32
    spots, _ = read_table(slide["spots"], "spots")
    assert list(df["spot_id"]) == list(spots["spot_id"])  # the spots' order, not the embeddings' shuffled one
    assert (df["label"].to_numpy() == slide["truth"]).all()
    assert np.allclose(df[["pixel_x", "pixel_y"]], spots[["pixel_x", "pixel_y"]])
    assert adjusted_rand_score(slide["truth"], df["cluster"]) > 0.9
    # k from the labels (no samplesheet n_clusters), recorded with its source
    assert meta["n_clusters"] == 3 and meta["n_clusters_source"] == "labels"
    assert meta["stage"] == "cluster" and set(meta["inputs"]) == {"embeddings", "spots", "h5ad"}
    assert meta["image"]["source"] == "samplesheet" and meta["image"]["path"]
    # ids 0..k-1, largest cluster first
    sizes = df["cluster"].value_counts().sort_index().to_numpy()
    assert list(range(3)) == sorted(df["cluster"].unique()) and (np.diff(sizes) <= 0).all()


def test_n_clusters_precedence():
    from senca.cluster import resolve_n_clusters

    labels = pd.Series(["a", "b", "c", "undetermined", None, "a"], dtype="string")
    assert resolve_n_clusters(5, 4, labels, 100) == (5, "option")
    assert resolve_n_clusters(None, 4, labels, 100) == (4, "samplesheet")
    assert resolve_n_clusters(None, None, labels, 100) == (3, "labels")  # undetermined / null not counted
    assert resolve_n_clusters(None, None, None, 100) == (None, "auto:silhouette")
    assert resolve_n_clusters(None, None, pd.Series([None, "NA"], dtype="string"), 100) == (None, "auto:silhouette")


def test_option_beats_samplesheet_beats_labels(slide, tmp_path):
    spots = rewrite_spots(slide["spots"], tmp_path / "syn.spots.parquet", n_clusters=4)
    args = ["cluster", "--embeddings", slide["embeddings"], "--spots", spots, "--h5ad", slide["h5ad"], "-q"]
    run_cli(*args, "--outdir", tmp_path / "sheet")
    _, meta = read_table(tmp_path / "sheet" / "syn.clusters.parquet", "clusters")
    assert (meta["n_clusters"], meta["n_clusters_source"]) == (4, "samplesheet")
    run_cli(*args, "--n-clusters", "5", "--outdir", tmp_path / "opt")
    df, meta = read_table(tmp_path / "opt" / "syn.clusters.parquet", "clusters")
    assert (meta["n_clusters"], meta["n_clusters_source"]) == (5, "option") and df["cluster"].nunique() == 5


def test_automatic_choice_finds_planted_k_without_labels(slide, tmp_path):
    spots, _ = read_table(slide["spots"], "spots")
    groups = np.arange(len(spots)) % 5  # 5 embedding groups, unrelated to the 3 regions
    emb = write_embeddings(tmp_path / "e.parquet", spots["spot_id"], separable_embeddings(spots["spot_id"], groups, seed=3), "syn")
    unlabelled = rewrite_spots(slide["spots"], tmp_path / "syn.spots.parquet", drop_labels=True)
    run_cli("cluster", "--embeddings", emb, "--spots", unlabelled, "--h5ad", slide["h5ad"], "-q", "--outdir", tmp_path / "o")
    df, meta = read_table(tmp_path / "o" / "syn.clusters.parquet", "clusters")
    assert meta["n_clusters_source"] == "auto:silhouette" and meta["n_clusters"] == 5
    assert adjusted_rand_score(groups, df["cluster"]) == 1.0
    scores = meta["n_clusters_auto"]["scores"]
    assert set(scores) == {str(k) for k in range(2, 16)} and max(scores, key=scores.get) == "5"
    assert df["label"].isna().all()


def test_outputs_are_byte_identical_on_rerun(slide, clustered, tmp_path):
    run_cli(*cluster_args(slide, tmp_path))
    for name in ("clusters.parquet", "dendrogram.png", "clusters.png", "umap.png", "senca.h5ad"):
        assert (tmp_path / f"syn.{name}").read_bytes() == (clustered / f"syn.{name}").read_bytes(), name


def test_h5ad_works_with_scanpy_spatial(slide, clustered, tmp_path):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    adata = ad.read_h5ad(clustered / "syn.senca.h5ad")
    df, _ = read_table(clustered / "syn.clusters.parquet", "clusters")
    assert list(adata.obs_names) == list(df["spot_id"])
    assert (adata.obs["senca_cluster"].astype(int).to_numpy() == df["cluster"].to_numpy()).all()
    assert list(adata.obs["senca_cluster"].cat.categories) == ["0", "1", "2"]
    assert adata.obsm["X_senca"].shape == (slide["n"], 64) and adata.obsm["X_umap"].shape == (slide["n"], 2)
    assert "counts" in adata.layers and adata.obsm["spatial"].shape == (slide["n"], 2)
    library = adata.uns["spatial"]["syn"]
    hires = library["images"]["hires"]
    assert hires.dtype == np.uint8 and hires.ndim == 3 and max(hires.shape[:2]) <= 2000
    assert library["scalefactors"]["spot_diameter_fullres"] == pytest.approx(0.55 * slide_pitch(slide))
    fig = sc.pl.spatial(adata, color="senca_cluster", library_id="syn", show=False, return_fig=True)
    fig.savefig(tmp_path / "spatial.png")
    assert (tmp_path / "spatial.png").stat().st_size > 0


def slide_pitch(slide) -> float:
    _, meta = read_table(slide["spots"], "spots")
    return float(meta["spot_pitch_px"])


def test_imageless_slide(slide, tmp_path):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    spots = rewrite_spots(slide["spots"], tmp_path / "syn.spots.parquet",
                          image={"path": None, "source": "none", "scale": 1.0, "width": None, "height": None})
    run_cli("cluster", "--embeddings", slide["embeddings"], "--spots", spots, "--h5ad", slide["h5ad"], "-q",
            "--outdir", tmp_path / "o")
    _, meta = read_table(tmp_path / "o" / "syn.clusters.parquet", "clusters")
    assert meta["image"]["source"] == "none" and meta["image"]["path"] is None
    adata = ad.read_h5ad(tmp_path / "o" / "syn.senca.h5ad")
    assert dict(adata.uns["spatial"]["syn"]["images"]) == {"hires": None}  # no pixels invented
    sc.pl.spatial(adata, color="senca_cluster", show=False)  # Scanpy's default call
    assert (tmp_path / "o" / "syn.clusters.png").stat().st_size > 0


def test_unreachable_recorded_image_and_image_option(slide, synthetic_preprocessed, tmp_path, caplog):
    from senca.cluster import cluster_slide

    spots = rewrite_spots(slide["spots"], tmp_path / "syn.spots.parquet",
                          image={"path": "/nonexistent/moved.jpg", "source": "samplesheet", "scale": 1.0})
    with caplog.at_level("WARNING", logger="senca"):
        result = cluster_slide(slide["embeddings"], spots, slide["h5ad"])
    assert "not reachable" in caplog.text and "images" in result.adata.uns["spatial"]["syn"]
    assert dict(result.adata.uns["spatial"]["syn"]["images"]) == {}
    image = Path(synthetic_preprocessed["image"])
    result = cluster_slide(slide["embeddings"], spots, slide["h5ad"], image=image)
    assert result.provenance.extra["image"]["path"] == str(image.resolve())
    assert result.adata.uns["spatial"]["syn"]["images"]["hires"].ndim == 3
    import matplotlib.pyplot as plt

    plt.close("all")


def test_large_slide_path_uses_two_level_ward(slide, monkeypatch):
    from senca import cluster

    monkeypatch.setattr(cluster, "EXACT_WARD_MAX_SPOTS", 100)
    monkeypatch.setattr(cluster, "UMAP_SPECTRAL_MAX_SPOTS", 100)
    result = cluster.cluster_slide(slide["embeddings"], slide["spots"], slide["h5ad"], seed=0)
    assert result.provenance.extra["ward"] == "two-level"
    # micro-clusters asked for: n / 2 here; mini-batch k-means may leave a few empty (those are dropped)
    assert 0.8 * slide["n"] // 2 < result.provenance.params["micro_clusters"] <= cluster.micro_cluster_count(slide["n"], 3)
    assert adjusted_rand_score(slide["truth"], result.clusters["cluster"]) > 0.9
    assert np.isfinite(result.adata.obsm["X_umap"]).all() and "X_senca_pca2" not in result.adata.obsm
    for fig in result.figures.values():
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_cut_tree_and_weighted_ward_match_scipy():
    from scipy.cluster.hierarchy import fcluster, linkage

    from senca.cluster import cut_tree, order_by_size, ward_tree, weighted_ward

    # cluster ids: largest first, ties by the cluster's first spot
    assert order_by_size(np.array([5, 5, 1, 1, 1, 9])).tolist() == [1, 1, 0, 0, 0, 2]
    assert order_by_size(np.array([7, 7, 3, 3])).tolist() == [0, 0, 1, 1]

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    tree = ward_tree(X)
    Z = linkage(X, method="ward")
    for k in (2, 5, 11):
        ours = cut_tree(tree, k)
        assert adjusted_rand_score(fcluster(Z, k, criterion="maxclust"), ours) == 1.0
        assert len(np.unique(ours)) == k
    # weighted Ward with unit weights is scipy's Ward, merge for merge
    children, heights = weighted_ward(X, np.ones(len(X)))
    assert np.allclose(heights, Z[:, 2])
    assert (np.sort(children, axis=1) == np.sort(Z[:, :2].astype(int), axis=1)).all()


def test_two_level_ward_tree_is_complete_and_never_splits_a_micro_cluster():
    from senca.cluster import cut_tree, micro_cluster_count, two_level_ward_tree

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 1500)
    S = rng.normal(size=(4, 12))[truth] * 5 + rng.normal(size=(1500, 12))
    tree = two_level_ward_tree(S, 60, seed=0)
    n = len(S)
    used = np.sort(tree.children.ravel())
    assert (used == np.arange(2 * n - 2)).all()  # every node but the root merged exactly once
    assert (tree.children < n + np.arange(n - 1)[:, None]).all()  # merges only use earlier nodes
    assert tree.counts[-1] == n and tree.method == "two-level"
    assert adjusted_rand_score(truth, cut_tree(tree, 4)) == 1.0
    fine = cut_tree(tree, 60)
    assert len(np.unique(fine)) == 60 and (tree.heights[: n - 60] == 0).all()
    assert micro_cluster_count(10**5, 6) == 1000 and micro_cluster_count(10**5, 300) == 3000
    assert micro_cluster_count(288, 3) == 144


def test_embeddings_of_other_spots_is_a_one_line_error(slide, tmp_path):
    spots, _ = read_table(slide["spots"], "spots")
    ids = spots["spot_id"].copy()
    ids.iloc[7] = "999x999"
    emb = write_embeddings(tmp_path / "e.parquet", ids, separable_embeddings(ids, slide["regions"]), "syn")
    result = run_cli("cluster", "--embeddings", emb, "--spots", slide["spots"], "--h5ad", slide["h5ad"],
                     "--outdir", tmp_path / "o", "-q", expect=None)
    assert_one_line_error(result, spots["spot_id"].iloc[7], "e.parquet")
    assert not (tmp_path / "o" / "syn.clusters.parquet").exists()


def test_too_many_clusters_is_a_one_line_error(slide, tmp_path):
    result = run_cli(*cluster_args(slide, tmp_path, "--n-clusters", str(slide["n"] + 1)), expect=None)
    assert_one_line_error(result, "--n-clusters", str(slide["n"] + 1), "spots")
    result = run_cli(*cluster_args(slide, tmp_path, "--n-clusters", "1"), expect=None)
    assert_one_line_error(result, "--n-clusters", "at least 2")
    result = run_cli(*cluster_args(slide, tmp_path, "--image", tmp_path / "missing.jpg"), expect=None)
    assert_one_line_error(result, "missing.jpg", "not found")


def test_umap_kernels_are_cached_and_the_layout_is_unchanged(tmp_path, monkeypatch):
    """numba's on-disk cache for UMAP's kernels (docs/scaling.md): the same layout as a plain compile."""
    import anndata as ad
    import scanpy as sc

    from senca.cluster import cache_umap_kernels

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    rng = np.random.default_rng(0)
    S = np.concatenate([rng.normal(loc, 0.3, size=(40, 6)) for loc in (0.0, 3.0)]).astype(np.float32)

    def layout() -> np.ndarray:
        adata = ad.AnnData(np.zeros((len(S), 1), np.float32))
        adata.obsm["X_senca"] = S
        sc.pp.neighbors(adata, use_rep="X_senca", n_neighbors=10, random_state=0, transformer="sklearn")
        sc.tl.umap(adata, random_state=0)
        return adata.obsm["X_umap"]

    plain = layout()
    assert cache_umap_kernels() > 0
    assert np.array_equal(layout(), plain)


@pytest.fixture(scope="module")
def view_slide(slide):
    """Embeddings whose S is noise and whose substitute view holds the planted regions."""
    spot_ids = read_table(slide["spots"], "spots")[0]["spot_id"]
    noise = np.random.default_rng(5).normal(size=(slide["n"], 16)).astype(np.float32)
    view = separable_embeddings(spot_ids, slide["regions"], seed=3, dim=8)
    path = write_embeddings(slide["folder"] / "view" / "syn.embeddings.parquet", spot_ids, noise, "syn", view=view)
    return {**slide, "embeddings": path, "view": view}


def test_view_weight_clusters_s_beside_the_view(view_slide, tmp_path):
    """--view-weight 2 clusters [S, 2 x view]: the view's regions are found; S alone (weight 0) is noise."""
    import anndata as ad

    for weight, out in (("2", tmp_path / "with"), ("0", tmp_path / "without")):
        run_cli(*cluster_args(view_slide, out, "--view-weight", weight, "--method", "gmm"))
    with_view, meta = read_table(tmp_path / "with" / "syn.clusters.parquet", "clusters")
    alone, meta0 = read_table(tmp_path / "without" / "syn.clusters.parquet", "clusters")
    assert adjusted_rand_score(view_slide["truth"], with_view["cluster"]) > 0.9
    assert adjusted_rand_score(view_slide["truth"], alone["cluster"]) < 0.2
    assert meta["clustered"] == {"on": "[S, 2 x view]", "view_weight": 2.0, "view_weight_source": "option",
                                 "view_dim": 8, "dim": 24}
    assert meta0["clustered"]["on"] == "S" and meta0["clustered"]["dim"] == 16
    adata = ad.read_h5ad(tmp_path / "with" / "syn.senca.h5ad")
    spots = read_table(view_slide["spots"], "spots")[0]
    assert adata.obsm["X_senca"].shape == (view_slide["n"], 16)
    assert np.array_equal(adata.obsm["X_senca_view"], view_slide["view"])  # the spots' order, as written
    joint = adata.obsm["X_senca_clustered"]
    rms = [np.sqrt(joint[:, cols].var(axis=0).mean()) for cols in (slice(0, 16), slice(16, 24))]
    assert np.allclose(rms, [1.0, 2.0], rtol=1e-4)
    assert list(adata.obs_names) == list(spots["spot_id"])
    assert "X_senca_view" not in ad.read_h5ad(tmp_path / "without" / "syn.senca.h5ad").obsm


def test_view_weight_platform_default(view_slide, slide, tmp_path, caplog):
    """Visium's default weight is 2 (legacy ST's 0); embeddings without a view fall back to S alone, recorded."""
    visium = rewrite_spots(slide["spots"], tmp_path / "visium" / "syn.spots.parquet", defaults_platform="visium")
    st = rewrite_spots(slide["spots"], tmp_path / "st" / "syn.spots.parquet", defaults_platform="st")
    from senca.cluster import cluster_slide

    assert cluster_slide(view_slide["embeddings"], visium, slide["h5ad"]).provenance.extra["clustered"][
        "view_weight"] == 2.0
    assert cluster_slide(view_slide["embeddings"], st, slide["h5ad"]).provenance.extra["clustered"]["on"] == "S"
    # an older train-senca's embeddings (no view_* columns): S alone, with a warning and the reason recorded
    with caplog.at_level("WARNING", logger="senca"):
        old = cluster_slide(slide["embeddings"], visium, slide["h5ad"]).provenance.extra["clustered"]
    assert old["view_weight"] == 0.0 and "no view" in old["view_weight_source"]
    assert "no substitute view" in caplog.text


def test_view_weight_without_view_is_a_one_line_error(slide, tmp_path):
    """An explicit weight > 0 on embeddings without the view names the file; a negative weight is refused."""
    result = run_cli(*cluster_args(slide, tmp_path / "out", "--view-weight", "2"), expect=None)
    assert_one_line_error(result, "syn.embeddings.parquet")
    assert "view_* columns" in result.stderr and not (tmp_path / "out" / "syn.clusters.parquet").exists()
    result = run_cli(*cluster_args(slide, tmp_path / "out", "--view-weight", "-1"), expect=None)
    assert result.exit_code == 2 and "-1" in result.stderr


def test_gmm_inits_reach_the_mixture(view_slide, tmp_path):
    """--gmm-inits sets the mixture's starts (recorded); with Ward it changes nothing and says so; 0 is refused."""
    out = tmp_path / "many"
    run_cli(*cluster_args(view_slide, out, "--view-weight", "2", "--method", "gmm", "--gmm-inits", "7"))
    table, meta = read_table(out / "syn.clusters.parquet", "clusters")
    assert meta["gmm"]["n_init"] == 7 and meta["params"]["gmm_inits"] == 7
    assert adjusted_rand_score(view_slide["truth"], table["cluster"]) > 0.9
    run_cli(*cluster_args(view_slide, tmp_path / "default", "--view-weight", "2", "--method", "gmm"))
    _, default = read_table(tmp_path / "default" / "syn.clusters.parquet", "clusters")
    assert default["gmm"]["n_init"] == 400 and default["params"]["gmm_inits"] is None
    ward = run_cli(*cluster_args(view_slide, tmp_path / "ward", "--method", "ward", "--gmm-inits", "7"))
    assert "--gmm-inits 7 has no effect" in ward.stderr
    assert read_table(tmp_path / "ward" / "syn.clusters.parquet", "clusters")[1]["gmm"] is None
    result = run_cli(*cluster_args(view_slide, tmp_path / "zero", "--method", "gmm", "--gmm-inits", "0"), expect=None)
    assert result.exit_code == 2 and "--gmm-inits" in result.stderr
    assert not (tmp_path / "zero" / "syn.clusters.parquet").exists()


def test_knn_prior_after_the_mixture(view_slide, slide, tmp_path):
    """Visium's default refits the mixture's labels with the kNN prior (beta 16 over one neighbour per 120 spots,
    recorded with the spots it moved); --knn-prior 0 gives the mixture's own labels, legacy ST's default; Ward says
    it ignores it."""
    from senca.cluster import cluster_slide
    from senca.knn_prior import default_neighbours

    visium = rewrite_spots(slide["spots"], tmp_path / "visium" / "syn.spots.parquet", defaults_platform="visium")
    st = rewrite_spots(slide["spots"], tmp_path / "st" / "syn.spots.parquet", defaults_platform="st")
    default = cluster_slide(view_slide["embeddings"], visium, slide["h5ad"])
    prior = default.provenance.extra["gmm"]["knn_prior"]
    assert prior["beta"] == 16.0 and prior["source"] == "platform default"
    assert prior["neighbours"] == default_neighbours(view_slide["n"]) and prior["iterations"] == 10
    assert prior["spots_moved"] >= 0
    assert adjusted_rand_score(view_slide["truth"], default.clusters["cluster"]) > 0.9
    off = cluster_slide(view_slide["embeddings"], visium, slide["h5ad"], knn_prior=0.0)
    legacy = cluster_slide(view_slide["embeddings"], st, slide["h5ad"], method="gmm", view_weight=2.0)
    assert off.provenance.extra["gmm"]["knn_prior"] == {"beta": 0.0, "source": "option", "neighbours": 0,
                                                        "iterations": 0, "spots_moved": 0}
    assert legacy.provenance.extra["gmm"]["knn_prior"]["source"] == "platform default"
    assert np.array_equal(off.clusters["cluster"], legacy.clusters["cluster"])  # the mixture's own labels
    ward = run_cli(*cluster_args(view_slide, tmp_path / "ward", "--method", "ward", "--knn-prior", "4"))
    assert "--knn-prior 4 has no effect" in ward.stderr
    result = run_cli(*cluster_args(view_slide, tmp_path / "bad", "--method", "gmm", "--knn-prior", "-1"), expect=None)
    assert result.exit_code == 2 and "--knn-prior" in result.stderr
    assert not (tmp_path / "bad" / "syn.clusters.parquet").exists()
