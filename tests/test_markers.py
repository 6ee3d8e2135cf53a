"""The markers stage: planted marker genes found, BH correctness, all genes ranked, single-spot clusters, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from senca.io.artifacts import Provenance, read_table, write_table

from helpers import assert_one_line_error, run_cli


def write_clusters(path: Path, spot_ids, clusters, sample: str = "syn", labels=None) -> Path:
    """A clusters artifact as ``senca cluster`` writes it (here: clusters given directly)."""
    n = len(spot_ids)
    frame = pd.DataFrame({"spot_id": pd.Series(list(spot_ids), dtype=str),
                          "cluster": np.asarray(clusters, dtype=np.int32),
                          "label": pd.array(labels if labels is not None else [None] * n, dtype="string"),
                          "pixel_x": np.arange(n, dtype=float), "pixel_y": np.zeros(n)})
    k = int(np.max(clusters)) + 1
    return write_table(frame, path, Provenance("clusters", sample, "cluster", extra={"n_clusters": k,
                                                                                    "n_clusters_source": "option"}))


@pytest.fixture(scope="module")
def planted(synthetic_preprocessed, tmp_path_factory):
    """Clusters = the planted regions, and the markers stage run on them through the CLI."""
    spots, _ = read_table(synthetic_preprocessed["spots"], "spots")
    slide = synthetic_preprocessed["slide"]
    regions = sorted(slide.markers)  # region_0, region_1, ...
    truth = slide.truth.reindex(spots["spot_id"]).to_numpy()
    clusters = np.array([regions.index(t) for t in truth])
    out = tmp_path_factory.mktemp("markers")
    cl = write_clusters(out / "syn.clusters.parquet", spots["spot_id"], clusters)
    run_cli("markers", "--clusters", cl, "--h5ad", synthetic_preprocessed["h5ad"], "--top-n", "5", "--outdir", out, "-q")
    table, meta = read_table(out / "syn.markers.parquet", "markers")
    return {"table": table, "meta": meta, "out": out, "regions": regions, "planted": slide.markers,
            "h5ad": synthetic_preprocessed["h5ad"], "spots": spots, "clusters": clusters}


def test_planted_genes_are_top_markers_of_their_region(planted):
    table = planted["table"]
    for index, region in enumerate(planted["regions"]):
        top = table[table["cluster"] == str(index)].sort_values("rank").head(10)
        planted_genes = set(planted["planted"][region])
        found = planted_genes & set(top["gene"])
        assert len(found) >= 6, (region, list(top["gene"]))
        assert top["gene"].iloc[0] in planted_genes
        assert (top.loc[top["gene"].isin(planted_genes), "logfoldchange"] > 0).all()
        others = {g for r, genes in planted["planted"].items() if r != region for g in genes}
        assert not (others & set(top["gene"].head(5)))


def test_every_gene_ranked_for_every_cluster(planted):
    import anndata as ad

    table = planted["table"]
    n_genes = ad.read_h5ad(planted["h5ad"], backed="r").n_vars
    assert list(table.columns) == ["cluster", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj",
                                   "pct_in", "pct_out", "significant"]
    assert len(table) == 3 * n_genes
    for _, group in table.groupby("cluster"):
        assert list(group["rank"]) == list(range(1, n_genes + 1))
        assert group["gene"].is_unique and (np.diff(group["score"].to_numpy()) <= 0).all()
    assert table[["pct_in", "pct_out"]].apply(lambda c: c.between(0, 1).all()).all()
    assert planted["meta"]["params"]["method"] == "wilcoxon" and planted["meta"]["clusters_skipped_single_spot"] == []
    assert (planted["out"] / "syn.markers.png").stat().st_size > 0


def test_pvalues_are_benjamini_hochberg(planted):
    table = planted["table"]
    assert (table["pval_adj"] >= table["pval"] - 1e-15).all()
    for _, group in table.groupby("cluster"):
        p = group["pval"].to_numpy()
        order = np.argsort(p, kind="mergesort")
        m = len(p)
        bh = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
        expected = np.empty(m)
        expected[order] = np.minimum(bh, 1.0)
        assert np.allclose(group["pval_adj"].to_numpy(), expected, rtol=1e-6, atol=1e-300)
        assert (np.diff(group["pval_adj"].to_numpy()[order]) >= -1e-12).all()  # monotone in p


def test_single_spot_cluster_is_skipped_with_a_warning(planted, tmp_path, caplog):
    from senca.markers import find_markers

    clusters = planted["clusters"].copy()
    clusters[0] = 3  # a cluster of one spot
    path = write_clusters(tmp_path / "syn.clusters.parquet", planted["spots"]["spot_id"], clusters)
    with caplog.at_level("WARNING", logger="senca"):
        result = find_markers(path, planted["h5ad"], top_n=3)
    assert result.skipped == ["3"] and "single spot" in caplog.text
    assert sorted(result.table["cluster"].unique()) == ["0", "1", "2"]
    assert result.provenance.extra["clusters_skipped_single_spot"] == ["3"]


def test_spot_missing_from_h5ad_is_a_one_line_error(planted, tmp_path):
    ids = planted["spots"]["spot_id"].copy()
    ids.iloc[3] = "ghost_spot"
    path = write_clusters(tmp_path / "syn.clusters.parquet", ids, planted["clusters"])
    result = run_cli("markers", "--clusters", path, "--h5ad", planted["h5ad"], "--outdir", tmp_path, expect=None)
    assert_one_line_error(result, "ghost_spot")
    result = run_cli("markers", "--clusters", path, "--h5ad", planted["h5ad"], "--top-n", "0", "--outdir", tmp_path,
                     expect=None)
    assert_one_line_error(result, "--top-n")
