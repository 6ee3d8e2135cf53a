"""The cohort's HTML report: one self-contained file a pathologist can open or mail.

Figures are embedded as base64 ``data:`` URIs and the styling is inline CSS, with no scripts and
no external files, so the report survives being copied out of a Nextflow ``publishDir`` or attached
to an e-mail. It shows the metrics table with the cohort mean and median (the paper's table 1
statistics), then per slide its figures (found beside its ``{s}.clusters.parquet``), its top
marker genes (from ``{s}.markers.parquet`` beside it, as in the paper's table 3), whether it had
an image, and the parameters recorded in the artifacts' metadata.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from senca import __version__
from senca.errors import SencaError
from senca.io.artifacts import read_table

if TYPE_CHECKING:
    from senca.evaluate import Evaluation, SlideEvaluation

log = logging.getLogger("senca")

# (file suffix, caption) of the figures looked for beside each clusters file, in display order
FIGURES = [
    ("clusters.png", "Clusters over the H&E (left) and the ground truth (right, when labelled)"),
    ("umap.png", "UMAP of the shared embedding S"),
    ("dendrogram.png", "Ward dendrogram of S (top of the tree; dashed line: the cut)"),
    ("markers.png", "Top marker genes per cluster (Wilcoxon, cluster vs rest)"),
    ("patches_qc.png", "H&E patches around sample spots (embed-patches QC)"),
]
IMAGELESS_CLUSTERS_CAPTION = ("Clusters at the spot positions, no H&E behind them (image-less slide; left) and the "
                              "ground truth (right, when labelled)")
TOP_MARKERS = 5

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}
.muted{color:#777}.stat{font-size:1.05em;margin:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
details{margin:.6em 0}summary{cursor:pointer;color:#335}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
.none{color:#a40}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _anchor(sample: str) -> str:
    return "slide-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in sample)


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(frame: pd.DataFrame, left: set[str], link_sample: bool = False) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{_e(c)}</th>' for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column in frame.columns:
            value = row[column]
            text = _e(_fmt(value))
            if link_sample and column == "sample":
                text = f'<a href="#{_anchor(str(value))}">{text}</a>'
            if column == "image" and str(value) == "none":
                text = '<span class="none">none</span>'
            cells.append(f'<td class="{"l" if column in left else ""}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _stats_block(stats: dict[str, Any], summary: pd.DataFrame | None = None) -> str:
    sparse = [] if summary is None else summary.loc[summary["status"].astype(str).str.startswith("too few labels"),
                                                    "sample"].tolist()
    note = (f'<p class="stat muted">Not scored (ARI/NMI n/a, left out of the mean): {_e(", ".join(sparse))}: too '
            "few labelled spots or classes for a meaningful score (see the status column).</p>") if sparse else ""
    if not stats.get("n_scored"):
        return '<p class="stat muted">No slide has enough ground-truth labels: nothing was scored.</p>' + note
    return note + (f'<p class="stat">ARI over {stats["n_scored"]} labelled slide(s): mean <b>{_fmt(stats["ari_mean"])}</b>, '
            f'median <b>{_fmt(stats["ari_median"])}</b>. NMI: mean <b>{_fmt(stats["nmi_mean"])}</b>, '
            f'median <b>{_fmt(stats["nmi_median"])}</b>.</p>')


def _top_markers(path: Path) -> str:
    """The best ``TOP_MARKERS`` genes of each cluster from a markers file, as an HTML table."""
    try:
        df, meta = read_table(path, "markers")
    except SencaError as exc:
        log.warning("report: markers not shown: %s", exc)
        return f'<p class="muted">markers file unreadable: {_e(exc)}</p>'
    alpha = float((meta.get("params") or {}).get("significance") or 0.05)
    significant = df["significant"] if "significant" in df.columns else (df["pval_adj"] < alpha) & (df["logfoldchange"] > 0)
    kept = df[significant.to_numpy(dtype=bool)].copy()  # a gene with adjusted p 0.97 is no "top marker"
    kept["rank"] = kept.groupby("cluster", sort=False).cumcount() + 1
    top = kept[kept["rank"] <= TOP_MARKERS]
    top = top.sort_values(["cluster", "rank"], key=lambda s: s.astype(int) if s.name == "cluster" else s)
    by_cluster = dict(tuple(top.groupby("cluster", sort=False)))
    clusters = sorted(df["cluster"].astype(str).unique(), key=lambda c: int(c) if c.isdigit() else c)
    none = f"none with adjusted p < {alpha:g}"
    rows = [
        {"cluster": c, "genes (rank order)": ", ".join(by_cluster[c]["gene"]) if c in by_cluster else none,
         "log2FC": ", ".join(f"{v:.2f}" for v in by_cluster[c]["logfoldchange"]) if c in by_cluster else "",
         "adjusted p (BH)": ", ".join(f"{v:.1e}" for v in by_cluster[c]["pval_adj"]) if c in by_cluster else ""}
        for c in clusters
    ]
    html_table = _table(pd.DataFrame(rows), left={"cluster", "genes (rank order)", "log2FC", "adjusted p (BH)"})
    html_table += (f'<p class="muted">Only genes up in the cluster with BH-adjusted p &lt; {alpha:g} are listed; '
                   "the markers file ranks every gene.</p>")
    if meta.get("gene_ids_only"):
        html_table += ('<p class="muted">Gene names are Ensembl IDs: this slide\'s counts carry no gene symbols '
                       "(map them with a GTF or biomart to read the markers).</p>")
    skipped = meta.get("clusters_skipped_single_spot") or []
    if skipped:
        html_table += (f'<p class="muted">Not tested (a single spot, no within-cluster spread): cluster(s) '
                       f'{_e(", ".join(map(str, skipped)))}.</p>')
    return html_table


def _slide_section(slide: SlideEvaluation) -> str:
    s, meta, row = slide.sample, slide.meta, slide.row
    folder = slide.clusters_path.parent
    parts = [f'<h2 id="{_anchor(s)}">{_e(s)}</h2>']
    image = row["image"]
    info = meta.get("image") if isinstance(meta.get("image"), dict) else {}
    image_html = '<span class="none">image: none</span> (image-less slide: the image branch used its documented substitute)' \
        if image == "none" else f"image: {_e(image)} ({_e(info.get('path') or '')})"
    if info.get("reason"):  # why this image (or none): QC rejections and explicit choices are never silent
        image_html += f'<br><span class="muted">image choice: {_e(info["reason"])}</span>'
    parts.append(f"<p>{image_html}</p>")
    metrics = pd.DataFrame([{k: row[k] for k in ("status", "ari", "nmi", "n_spots", "n_scored", "n_excluded",
                                                 "n_labels", "n_clusters", "n_clusters_source")}])
    parts.append(_table(metrics, left={"status", "n_clusters_source"}))
    for suffix, caption in FIGURES:
        path = folder / f"{s}.{suffix}"
        if path.is_file():
            if suffix == "clusters.png" and image == "none":
                caption = IMAGELESS_CLUSTERS_CAPTION
            parts.append(f'<figure><img alt="{_e(s)} {_e(suffix)}" src="{data_uri(path)}">'
                         f"<figcaption>{_e(caption)}</figcaption></figure>")
    markers = folder / f"{s}.markers.parquet"
    if markers.is_file():
        parts.append(f"<h3>Top {TOP_MARKERS} marker genes per cluster</h3>")
        parts.append(_top_markers(markers))
    recorded = {"senca_version": meta.get("senca_version"), "cluster": meta.get("params"),
                "n_clusters": meta.get("n_clusters"), "n_clusters_source": meta.get("n_clusters_source"),
                "n_clusters_auto": meta.get("n_clusters_auto"), "ward": meta.get("ward"),
                "train-senca": meta.get("train_params"), "training": meta.get("train_summary"),
                "inputs": meta.get("inputs")}
    parts.append("<details><summary>Parameters and provenance</summary><pre>"
                 + _e(json.dumps(recorded, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    return "\n".join(parts)


def build_report(evaluation: Evaluation) -> str:
    """The whole report as one HTML string (no external resources, no scripts)."""
    stats = evaluation.stats
    summary = evaluation.summary
    body = [
        "<h1>senca-st cohort report</h1>",
        f'<p class="muted">senca {_e(__version__)} · {stats["n_slides"]} slide(s), {stats["n_scored"]} with labels · '
        "spots labelled undetermined/NA are excluded from ARI/NMI and counted in n_excluded</p>",
        _stats_block(stats, summary),
        "<h2>Metrics</h2>",
        _table(summary, left={"sample", "status", "n_clusters_source", "image"}, link_sample=True),
    ]
    body += [_slide_section(slide) for slide in evaluation.slides]
    if evaluation.versions:
        body += ["<h2>Software versions</h2>", f"<pre>{_e(evaluation.versions)}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>senca-st report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
