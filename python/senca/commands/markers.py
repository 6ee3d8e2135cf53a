"""``senca markers``: marker genes per cluster (Wilcoxon rank-sum vs rest, BH-adjusted) and a dot plot."""

from __future__ import annotations

from pathlib import Path

import click

from senca.commands.common import log, outdir_option, quiet_option, setup_logging, user_errors
from senca.markers import find_markers, write_markers


@click.command("markers")
@click.option("--clusters", required=True, type=click.Path(dir_okay=False), help="{s}.clusters.parquet from cluster.")
@click.option("--h5ad", required=True, type=click.Path(dir_okay=False),
              help="{s}.h5ad from preprocess (or {s}.senca.h5ad): all genes, log-normalised X.")
@click.option("--top-n", type=int, default=10, show_default=True, help="Markers per cluster in the dot plot and the log.")
@outdir_option
@quiet_option
@user_errors
def markers(clusters, h5ad, top_n, outdir, quiet):
    """Rank every gene for every cluster against the rest of the slide (Scanpy's rank_genes_groups).

    Writes {s}.markers.parquet (all genes, ranked, with BH-adjusted p-values and log2 fold changes)
    and {s}.markers.png (dot plot of the top --top-n genes per cluster) into --outdir.
    """
    setup_logging(quiet)
    result = find_markers(Path(clusters), Path(h5ad), top_n=top_n)
    paths = write_markers(result, Path(outdir))
    log.info("%s: markers for %d cluster(s); wrote %s", result.sample, result.table["cluster"].nunique(),
             ", ".join(p.name for p in paths.values()))
