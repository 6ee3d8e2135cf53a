"""``senca evaluate``: ARI/NMI against ground-truth labels per slide; cohort summary and HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from senca.commands.common import log, outdir_option, quiet_option, setup_logging, user_errors
from senca.errors import SencaError
from senca.evaluate import evaluate_cohort, write_evaluation


@click.command("evaluate")
@click.argument("clusters", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--versions", type=click.Path(dir_okay=False), default=None,
              help="YAML of software versions (collected by the Nextflow pipeline) to show in the report.")
@outdir_option
@quiet_option
@user_errors
def evaluate(clusters, versions, outdir, quiet):
    """Score each slide's CLUSTERS.parquet against its labels (spots labelled undetermined/NA excluded).

    Writes {s}.metrics.parquet per labelled slide, and summary.csv, summary.parquet, summary.json and a
    self-contained report.html for the cohort into --outdir. Figures and markers found beside each
    clusters file ({s}.clusters.png, {s}.umap.png, {s}.dendrogram.png, {s}.markers.png/.parquet,
    {s}.patches_qc.png) are embedded in the report.
    """
    setup_logging(quiet)
    evaluation = evaluate_cohort([Path(c) for c in clusters])
    if versions is not None:
        if not Path(versions).is_file():
            raise SencaError("versions file not found", versions)
        evaluation.versions = Path(versions).read_text(encoding="utf-8", errors="replace")
    paths = write_evaluation(evaluation, Path(outdir))
    log.info("evaluated %d slide(s); report: %s", len(evaluation.slides), paths["report.html"])
