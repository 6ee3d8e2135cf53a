"""Agreement of SENCA-st clusters with ground-truth labels (paper section 4.1: ARI, eq. 5) and the cohort summary.

Spots labelled undetermined / NA carry no ground truth: they are left out of the scores and
counted (``n_excluded``) so a reader sees how much of a slide was scored. Slides without labels
still appear in the summary (metrics NaN, status ``no labels``) so the cohort table lists every
slide that was run. The paper reports the mean and median ARI over slides (its table 1); both go
in ``summary.json`` and the HTML report, never as extra rows of the per-slide table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from senca import __version__
from senca.errors import SencaError
from senca.io.artifacts import Provenance, atomic_path, file_checksum, read_table, write_json, write_table

log = logging.getLogger("senca")

# Labels that mean "no ground truth here" (compared after strip + lower-case; nulls too).
EXCLUDED_LABELS = frozenset({"undetermined", "na", "nan", ""})

# Fewer labelled spots or classes than this and ARI/NMI say nothing about the slide: one labelled spot
# scores a perfect 1.0. Such a slide is reported "n/a" with the reason and left out of the cohort mean.
MIN_LABEL_CLASSES = 2
MIN_LABELLED_FRACTION = 0.10

SUMMARY_COLUMNS = ["sample", "status", "ari", "nmi", "n_spots", "n_scored", "n_excluded", "n_clusters",
                   "n_labels", "n_clusters_source", "image"]


def valid_label_mask(labels: pd.Series | Sequence[Any] | None) -> np.ndarray:
    """True where a spot has a usable ground-truth label (not null, not undetermined/NA/nan/empty)."""
    if labels is None:
        return np.zeros(0, dtype=bool)
    text = pd.Series(labels, dtype="object").astype("string").fillna("").str.strip().str.lower()
    return ~text.isin(EXCLUDED_LABELS).to_numpy(dtype=bool)


def n_distinct_labels(labels: pd.Series | None) -> int:
    """Number of distinct usable labels (0 when there are none)."""
    if labels is None or len(labels) == 0:
        return 0
    mask = valid_label_mask(labels)
    return int(pd.Series(labels)[mask].astype(str).nunique())


def image_text(meta: dict[str, Any]) -> str:
    """How a slide's image is described in tables: its source, or ``none`` for an image-less slide."""
    image = meta.get("image") or {}
    if not isinstance(image, dict) or not image.get("path") or image.get("source") in (None, "none"):
        return "none"
    return str(image.get("source"))


# ----------------------------------------------------------------------------- scoring
def score_clusters(clusters: Sequence[int], labels: Sequence[Any] | None) -> dict[str, Any]:
    """ARI and NMI of ``clusters`` against ``labels`` over the spots with a usable label.

    Returns ari, nmi (NaN when no spot is scored), n_spots, n_scored, n_excluded, n_labels, status.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters = np.asarray(clusters)
    n = len(clusters)
    if labels is None or pd.Series(labels, dtype="object").isna().all():
        return {"ari": math.nan, "nmi": math.nan, "n_spots": n, "n_scored": 0, "n_excluded": 0,
                "n_labels": 0, "status": "no labels"}
    mask = valid_label_mask(labels)
    truth = pd.Series(labels, dtype="object")[mask].astype(str).to_numpy()
    pred = clusters[mask]
    n_scored = int(mask.sum())
    base = {"n_spots": n, "n_scored": n_scored, "n_excluded": n - n_scored,
            "n_labels": int(len(set(truth)))}
    if n_scored == 0:
        return {"ari": math.nan, "nmi": math.nan, **base, "status": "no valid labels"}
    if base["n_labels"] < MIN_LABEL_CLASSES or n_scored < MIN_LABELLED_FRACTION * n:
        reason = (f"too few labels: {n_scored} of {n} spots labelled ({n_scored / max(n, 1):.0%}) in "
                  f"{base['n_labels']} class(es); ARI/NMI need >= {MIN_LABEL_CLASSES} classes and >= "
                  f"{MIN_LABELLED_FRACTION:.0%} of spots")
        return {"ari": math.nan, "nmi": math.nan, **base, "status": reason}
    return {"ari": float(adjusted_rand_score(truth, pred)), "nmi": float(normalized_mutual_info_score(truth, pred)),
            **base, "status": "ok"}


@dataclass
class SlideEvaluation:
    """One slide's scores plus what the report needs to show it."""

    sample: str
    clusters_path: Path
    row: dict[str, Any]
    meta: dict[str, Any]
    clusters: pd.DataFrame = field(repr=False)

    @property
    def has_labels(self) -> bool:
        return self.row["status"] != "no labels"


@dataclass
class Evaluation:
    """A cohort's evaluation: per-slide rows (sorted by sample) and the mean / median over scored slides."""

    slides: list[SlideEvaluation]
    summary: pd.DataFrame
    stats: dict[str, Any]
    versions: str | None = None  # software versions collected by the Nextflow pipeline (YAML text)


def evaluate_slide(path: str | Path) -> SlideEvaluation:
    """Score one ``{s}.clusters.parquet`` against the labels it carries."""
    path = Path(path)
    df, meta = read_table(path, "clusters")
    sample = str(meta.get("sample"))
    labels = df["label"] if "label" in df.columns else None
    row = score_clusters(df["cluster"].to_numpy(), labels)
    row = {"sample": sample, **row,
           "n_clusters": int(meta.get("n_clusters") or df["cluster"].nunique()),
           "n_clusters_source": str(meta.get("n_clusters_source", "")),
           "image": image_text(meta)}
    if row["status"] == "ok":
        log.info("%s: ARI %.4f, NMI %.4f over %d spots (%d excluded: undetermined/NA)", sample, row["ari"],
                 row["nmi"], row["n_scored"], row["n_excluded"])
    elif row["status"].startswith("too few labels"):
        log.warning("%s: ARI/NMI not reported (n/a): %s", sample, row["status"])
    else:
        log.info("%s: %s, not scored", sample, row["status"])
    return SlideEvaluation(sample, path, row, meta, df)


def cohort_stats(summary: pd.DataFrame) -> dict[str, Any]:
    """Mean and median ARI/NMI over the slides that were scored (the paper's table 1 statistics)."""
    scored = summary[summary["status"] == "ok"]

    def stat(column: str, how: str) -> float | None:
        if scored.empty:
            return None
        return float(getattr(scored[column], how)())

    return {"n_slides": int(len(summary)), "n_scored": int(len(scored)),
            "ari_mean": stat("ari", "mean"), "ari_median": stat("ari", "median"),
            "nmi_mean": stat("nmi", "mean"), "nmi_median": stat("nmi", "median"),
            "samples_scored": scored["sample"].tolist(),
            "samples_without_labels": summary.loc[summary["status"] != "ok", "sample"].tolist(),
            "senca_version": __version__}


def evaluate_cohort(paths: Sequence[str | Path]) -> Evaluation:
    """Score every slide's clusters file; one row per slide (sorted by sample), plus cohort statistics."""
    if not paths:
        raise SencaError("no clusters files given (usage: senca evaluate CLUSTERS.parquet...)")
    slides = [evaluate_slide(p) for p in paths]
    seen: dict[str, Path] = {}
    for slide in slides:
        if slide.sample in seen:
            raise SencaError(f"sample {slide.sample!r} appears twice (also in {seen[slide.sample]})",
                             slide.clusters_path)
        seen[slide.sample] = slide.clusters_path
    slides.sort(key=lambda s: s.sample)
    summary = pd.DataFrame([s.row for s in slides], columns=SUMMARY_COLUMNS)
    summary = summary.astype({"ari": "float64", "nmi": "float64", "n_spots": "int64", "n_scored": "int64",
                              "n_excluded": "int64", "n_clusters": "int64", "n_labels": "int64"})
    stats = cohort_stats(summary)
    if stats["n_scored"]:
        log.info("cohort: %d slide(s) scored, ARI mean %.4f median %.4f; NMI mean %.4f median %.4f",
                 stats["n_scored"], stats["ari_mean"], stats["ari_median"], stats["nmi_mean"], stats["nmi_median"])
    else:
        log.warning("no slide has ground-truth labels: nothing scored (the report still shows every slide)")
    return Evaluation(slides, summary, stats)


# ----------------------------------------------------------------------------- writing
def write_evaluation(evaluation: Evaluation, outdir: str | Path) -> dict[str, Path]:
    """Write ``{s}.metrics.parquet`` per labelled slide, ``summary.{csv,parquet,json}`` and ``report.html``."""
    from senca.report import build_report

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    inputs = {}
    for slide in evaluation.slides:
        checksum = file_checksum(slide.clusters_path)
        inputs[slide.sample] = checksum
        if not slide.has_labels:
            continue
        row = {k: slide.row[k] for k in ("sample", "ari", "nmi", "n_spots", "n_scored", "n_excluded",
                                           "n_clusters", "n_labels", "image", "status")}
        frame = pd.DataFrame([row]).astype({"ari": "float64", "nmi": "float64", "n_spots": "int64",
                                            "n_scored": "int64", "n_excluded": "int64", "n_clusters": "int64",
                                            "n_labels": "int64"})
        prov = Provenance("metrics", slide.sample, "evaluate", params={"excluded_labels": sorted(EXCLUDED_LABELS)},
                          inputs={"clusters": checksum}, extra={"image": slide.meta.get("image")})
        written[f"{slide.sample}.metrics"] = write_table(frame, outdir / f"{slide.sample}.metrics.parquet", prov)
    prov = Provenance("summary", "cohort", "evaluate", params={"excluded_labels": sorted(EXCLUDED_LABELS)},
                      inputs=inputs, extra={"stats": evaluation.stats})
    written["summary.parquet"] = write_table(evaluation.summary, outdir / "summary.parquet", prov)
    with atomic_path(outdir / "summary.csv") as tmp:
        evaluation.summary.to_csv(tmp, index=False)
    written["summary.csv"] = outdir / "summary.csv"
    written["summary.json"] = write_json(evaluation.stats, outdir / "summary.json")
    with atomic_path(outdir / "report.html") as tmp:
        tmp.write_text(build_report(evaluation), encoding="utf-8")
    written["report.html"] = outdir / "report.html"
    return written
