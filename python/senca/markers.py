"""Marker genes of each SENCA-st cluster: Wilcoxon rank-sum, cluster vs rest, BH-adjusted (paper section 4.2, table 3).

The paper names regions by the genes that separate them from the rest of the slide (KRT2 and FLG
for a keratinised cluster, MMP1/3/9 for the immune-active margin). This stage runs Scanpy's
``rank_genes_groups`` (Wilcoxon, Benjamini-Hochberg) on the log-normalised expression of *all*
genes that passed preprocessing, not only the 500 HVGs the model saw, so a marker the model never
used can still be found. Every gene is written for every cluster (ranked by the Wilcoxon score) so
users filter by p-value or fold change themselves; ``--top-n`` sets the dot plot and the log.

A cluster of a single spot has no within-group variance: the test is undefined there, so that
cluster gets no marker rows (a warning names it) while its spot still counts in every other
cluster's "rest".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from senca.errors import SencaError
from senca.io.artifacts import (
    Provenance,
    check_made_from,
    file_checksum,
    read_h5ad_for_spots,
    read_table,
    save_figure,
    write_table,
)

log = logging.getLogger("senca")

SIGNIFICANCE = 0.05
"""A marker is flagged ``significant`` when its BH-adjusted p is below this and it is up in the cluster:
the rest of the ranked list is kept (users filter themselves) but never shown as a "top marker"."""
ENSEMBL_ID = r"^ENS[A-Z]*G\d{6,}(\.\d+)?$"
MAX_ROWS = 1_000_000  # above this, only the best genes per cluster are written (see markers_table)
GROUP_KEY = "senca_cluster"


@dataclass
class MarkersResult:
    """The markers table, its provenance and the dot plot, not yet written."""

    sample: str
    table: pd.DataFrame
    provenance: Provenance
    figure: Any = field(repr=False)
    skipped: list[str] = field(default_factory=list)


def _written_with(h5ad_meta: dict[str, Any] | None, clusters_meta: dict[str, Any]) -> bool:
    """True for a ``{s}.senca.h5ad`` written by the cluster run that wrote the clusters file (same provenance)."""
    return (h5ad_meta is not None and h5ad_meta.get("kind") == "clusters"
            and h5ad_meta.get("inputs") == clusters_meta.get("inputs"))


def rank_markers(adata: Any, clusters: np.ndarray) -> tuple[list[str], list[str]]:
    """Run Wilcoxon cluster-vs-rest on ``adata.X`` (log-normalised); (tested, skipped) cluster names."""
    import scanpy as sc

    k = int(clusters.max()) + 1
    names = [str(i) for i in range(k)]
    adata.obs[GROUP_KEY] = pd.Categorical([str(c) for c in clusters], categories=names)
    sizes = np.bincount(clusters, minlength=k)
    present = [names[i] for i in range(k) if sizes[i] > 0]
    if len(present) < 2:
        raise SencaError(f"only {len(present)} cluster(s): markers compare a cluster with the rest, need at least 2")
    tested = [names[i] for i in range(k) if sizes[i] >= 2]
    skipped = [names[i] for i in range(k) if sizes[i] == 1]
    if skipped:
        log.warning("cluster(s) %s have a single spot: no Wilcoxon test for them (their spots stay in 'rest')",
                    ", ".join(skipped))
    if not tested:
        raise SencaError("every cluster has a single spot: no cluster can be tested")
    sc.tl.rank_genes_groups(adata, GROUP_KEY, groups=tested, reference="rest", method="wilcoxon",
                            corr_method="benjamini-hochberg", pts=True, use_raw=False, n_genes=adata.n_vars,
                            key_added="rank_genes_groups")
    return tested, skipped


def markers_table(adata: Any, tested: list[str], max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """One row per (cluster, gene), ranked by the Wilcoxon score within the cluster.

    Columns: cluster, rank (1 = strongest), gene, score, logfoldchange (log2, cluster vs rest),
    pval, pval_adj (Benjamini-Hochberg within the cluster), pct_in / pct_out (fraction of spots
    with the gene detected in the cluster / the rest). Capped at ``max_rows`` rows: beyond that
    only the top ``max_rows // n_clusters`` genes of each cluster are kept.
    """
    import scanpy as sc

    df = sc.get.rank_genes_groups_df(adata, group=tested)
    if len(tested) == 1:
        df.insert(0, "group", tested[0])
    df = df.rename(columns={"group": "cluster", "names": "gene", "scores": "score", "logfoldchanges": "logfoldchange",
                            "pvals": "pval", "pvals_adj": "pval_adj", "pct_nz_group": "pct_in",
                            "pct_nz_reference": "pct_out"})
    df["cluster"] = df["cluster"].astype(str)
    # rank_genes_groups_df keeps scanpy's per-group order (score descending); make it explicit and stable
    df["_order"] = df["cluster"].map({c: i for i, c in enumerate(tested)})
    df = df.sort_values(["_order", "score", "gene"], ascending=[True, False, True], kind="mergesort")
    df["rank"] = df.groupby("cluster", sort=False).cumcount().astype(np.int32) + 1
    per_cluster = max_rows // max(len(tested), 1)
    if len(df) > max_rows:
        log.warning("%d marker rows > %d: keeping the top %d genes of each cluster", len(df), max_rows, per_cluster)
        df = df[df["rank"] <= per_cluster]
    columns = ["cluster", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"]
    out = df[columns].reset_index(drop=True)
    out["gene"] = out["gene"].astype(str)
    for column in ("score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"):
        out[column] = out[column].astype(np.float64)
    out["significant"] = (out["pval_adj"] < SIGNIFICANCE) & (out["logfoldchange"] > 0)
    return out


def genes_are_ids_only(genes: pd.Series) -> bool:
    """True when every gene name is an Ensembl ID (counts that carry no symbols, e.g. the DLPFC export)."""
    names = pd.Series(genes, dtype=str)
    return bool(len(names)) and bool(names.str.match(ENSEMBL_ID).all())


def dot_plot(adata: Any, top_n: int, sample: str) -> Any:
    """Scanpy's dot plot of the ``top_n`` markers of each tested cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    n_genes = max(1, min(top_n, adata.n_vars))
    dp = sc.pl.rank_genes_groups_dotplot(adata, n_genes=n_genes, groupby=GROUP_KEY, dendrogram=False,
                                         show=False, return_fig=True, title=f"{sample}: top {n_genes} markers per cluster")
    dp.make_figure()
    return dp.fig


def find_markers(clusters: str | Path, h5ad: str | Path, top_n: int = 10) -> MarkersResult:
    """Markers of every cluster of one slide (reads ``{s}.clusters.parquet`` and an ``.h5ad``)."""
    clusters, h5ad = Path(clusters), Path(h5ad)
    if top_n < 1:
        raise SencaError(f"--top-n is {top_n}: must be at least 1")
    table, meta = read_table(clusters, "clusters")
    sample = str(meta.get("sample"))
    spot_ids = table["spot_id"].astype(str)
    assignment = table["cluster"].to_numpy()
    if len(assignment) == 0:
        raise SencaError("no spots", clusters)
    if assignment.min() < 0:
        raise SencaError(f"negative cluster id {int(assignment.min())}", clusters)
    adata, h5ad_meta = read_h5ad_for_spots(h5ad, spot_ids)
    h5ad_checksum = file_checksum(h5ad)
    if not _written_with(h5ad_meta, meta):  # else: the senca.h5ad this cluster run wrote
        check_made_from(meta, clusters, "h5ad", h5ad, h5ad_checksum)
    tested, skipped = rank_markers(adata, assignment.astype(np.int64))
    df = markers_table(adata, tested)
    for cluster in tested:
        top = df[(df["cluster"] == cluster) & df["significant"]].head(top_n)
        log.info("cluster %s (%d spots): %s", cluster, int((assignment == int(cluster)).sum()),
                 ", ".join(f"{g} (padj {p:.1e})" for g, p in zip(top["gene"], top["pval_adj"], strict=True))
                 or f"no gene up with adjusted p < {SIGNIFICANCE}")
    ids_only = genes_are_ids_only(pd.Series(adata.var_names))
    if ids_only:
        log.info("%s: gene names are Ensembl IDs only (the counts carry no gene symbols)", sample)
    provenance = Provenance(
        "markers", sample, "markers",
        params={"top_n": top_n, "method": "wilcoxon", "corr_method": "benjamini-hochberg", "reference": "rest",
                "expression": "log1p-normalised X, all genes", "significance": SIGNIFICANCE},
        inputs={"clusters": file_checksum(clusters), "h5ad": h5ad_checksum},
        extra={"n_genes": int(adata.n_vars), "clusters_tested": tested, "clusters_skipped_single_spot": skipped,
               "image": meta.get("image"), "n_clusters": meta.get("n_clusters"), "gene_ids_only": ids_only},
    )
    return MarkersResult(sample, df, provenance, dot_plot(adata, top_n, sample), skipped)


def write_markers(result: MarkersResult, outdir: str | Path) -> dict[str, Path]:
    """Write ``{s}.markers.parquet`` and ``{s}.markers.png``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s = result.sample
    return {"markers.parquet": write_table(result.table, outdir / f"{s}.markers.parquet", result.provenance),
            "markers.png": save_figure(result.figure, outdir / f"{s}.markers.png")}
