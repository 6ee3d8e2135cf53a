"""The evaluate stage: ARI/NMI on a known case, excluded spots, cohort summary, and the HTML report."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from senca.io.artifacts import Provenance, read_table, save_figure, write_table

from helpers import assert_one_line_error, run_cli

# 12 spots: 3 without ground truth (undetermined, NA, null) and one empty label
LABELS = ["tumour", "tumour", "tumour", "stroma", "stroma", "undetermined", "immune", "immune", "NA", None,
          "stroma", ""]
CLUSTERS = [0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 1, 0]


def write_clusters(path: Path, sample: str, clusters, labels=None, image: dict | None = None) -> Path:
    n = len(clusters)
    frame = pd.DataFrame({"spot_id": [f"s{i}" for i in range(n)], "cluster": np.asarray(clusters, dtype=np.int32),
                          "label": pd.array(labels if labels is not None else [None] * n, dtype="string"),
                          "pixel_x": np.arange(n, dtype=float), "pixel_y": np.zeros(n)})
    image = image if image is not None else {"path": None, "source": "none"}
    prov = Provenance("clusters", sample, "cluster", params={"seed": 0},
                      extra={"n_clusters": int(max(clusters)) + 1, "n_clusters_source": "labels", "image": image,
                             "train_params": {"epochs": 10}})
    return write_table(frame, path, prov)


def ari_by_equation_5(truth, pred) -> float:
    """The paper's eq. 5 from the contingency table, independently of sklearn."""
    t_codes, p_codes = pd.factorize(pd.Series(truth))[0], pd.factorize(pd.Series(pred))[0]
    table = np.zeros((t_codes.max() + 1, p_codes.max() + 1), dtype=int)
    np.add.at(table, (t_codes, p_codes), 1)
    index = sum(comb(int(v), 2) for v in table.ravel())
    a = sum(comb(int(v), 2) for v in table.sum(axis=1))
    b = sum(comb(int(v), 2) for v in table.sum(axis=0))
    expected = a * b / comb(int(table.sum()), 2)
    return (index - expected) / (0.5 * (a + b) - expected)


def test_ari_equals_sklearn_and_excluded_spots_are_counted(tmp_path):
    path = write_clusters(tmp_path / "known.clusters.parquet", "known", CLUSTERS, LABELS)
    run_cli("evaluate", path, "--outdir", tmp_path / "out", "-q")
    metrics, meta = read_table(tmp_path / "out" / "known.metrics.parquet", "metrics")
    keep = [i for i, lab in enumerate(LABELS) if lab not in ("undetermined", "NA", None, "")]
    truth = [LABELS[i] for i in keep]
    pred = [CLUSTERS[i] for i in keep]
    row = metrics.iloc[0]
    assert row["ari"] == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-12)
    assert row["ari"] == pytest.approx(ari_by_equation_5(truth, pred), abs=1e-12)
    assert row["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-12)
    # scoring every spot (undetermined as a class) would give another number: the exclusion matters
    assert row["ari"] != pytest.approx(adjusted_rand_score([str(x) for x in LABELS], CLUSTERS))
    assert (row["n_spots"], row["n_excluded"], row["n_scored"], row["n_labels"]) == (12, 4, 8, 3)
    assert row["sample"] == "known" and row["image"] == "none" and meta["stage"] == "evaluate"


def test_label_exclusion_is_case_insensitive():
    from senca.evaluate import valid_label_mask

    mask = valid_label_mask(pd.Series(["Undetermined", " na ", "NaN", "", None, "tumour", "NAS"], dtype="object"))
    assert mask.tolist() == [False, False, False, False, False, True, True]


def _figure(path: Path, text: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.text(0.1, 0.5, text)
    save_figure(fig, path)


@pytest.fixture
def cohort(tmp_path):
    """Three slides in run-layout folders: two labelled (one with an image), one without labels or image."""
    rng = np.random.default_rng(0)
    paths = []
    for sample, labelled, image in (("B1", True, True), ("A1", True, False), ("C3", False, False)):
        folder = tmp_path / sample
        folder.mkdir()
        clusters = rng.integers(0, 3, size=40)
        labels = list(np.where(clusters == 0, "x", "y")) if labelled else None
        info = {"path": str(folder / "he.jpg"), "source": "samplesheet"} if image else {"path": None, "source": "none"}
        paths.append(write_clusters(folder / f"{sample}.clusters.parquet", sample, clusters, labels, info))
        _figure(folder / f"{sample}.clusters.png", sample)
        _figure(folder / f"{sample}.umap.png", sample)
    markers = pd.DataFrame({"cluster": ["0"] * 3 + ["1"] * 3, "rank": [1, 2, 3] * 2, "gene": list("ABCDEF"),
                            "score": [3.0, 2, 1, 3, 2, 1], "logfoldchange": [1.0] * 6, "pval": [1e-5] * 6,
                            "pval_adj": [1e-4] * 6, "pct_in": [0.5] * 6, "pct_out": [0.1] * 6})
    write_table(markers, tmp_path / "B1" / "B1.markers.parquet", Provenance("markers", "B1", "markers"))
    return paths


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "link":
            self.hrefs.append(attrs.get("href", ""))

    def handle_data(self, data):
        self.text.append(data)


def test_cohort_summary_and_self_contained_report(cohort, tmp_path):
    out = tmp_path / "summary"
    run_cli("evaluate", *cohort, "--outdir", out, "-q")
    summary = pd.read_csv(out / "summary.csv")
    table, _ = read_table(out / "summary.parquet", "summary")
    assert list(summary["sample"]) == ["A1", "B1", "C3"] == list(table["sample"])  # one row per slide, nothing else
    c3 = summary.set_index("sample").loc["C3"]
    assert c3["status"] == "no labels" and np.isnan(c3["ari"]) and np.isnan(c3["nmi"])
    assert (out / "A1.metrics.parquet").exists() and (out / "B1.metrics.parquet").exists()
    assert not (out / "C3.metrics.parquet").exists()
    stats = json.loads((out / "summary.json").read_text())
    scored = summary[summary["status"] == "ok"]
    assert stats["n_slides"] == 3 and stats["n_scored"] == 2
    assert stats["ari_mean"] == pytest.approx(scored["ari"].mean()) and stats["ari_median"] == pytest.approx(scored["ari"].median())
    assert summary.set_index("sample").loc["B1", "image"] == "samplesheet"

    parser = _Collector()
    page = (out / "report.html").read_text(encoding="utf-8")
    parser.feed(page)
    text = " ".join(parser.text)
    for sample in ("A1", "B1", "C3"):
        assert sample in text
    assert len(parser.images) == 6 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert "script" not in parser.tags and all(h.startswith("#") for h in parser.hrefs)  # nothing external
    assert "image: none" in text and "no labels" in text
    assert f"{stats['ari_mean']:.4f}" in text and f"{stats['ari_median']:.4f}" in text
    assert "A, B, C" in text  # B1's top markers table


def test_bad_inputs_are_one_line_errors(cohort, tmp_path):
    assert_one_line_error(run_cli("evaluate", "--outdir", tmp_path, expect=None), "no clusters files")
    assert_one_line_error(run_cli("evaluate", cohort[0], cohort[0], "--outdir", tmp_path, expect=None), "twice")
    missing = tmp_path / "nope.clusters.parquet"
    assert_one_line_error(run_cli("evaluate", missing, "--outdir", tmp_path, expect=None), str(missing))


def test_versions_file_is_shown_in_the_report(tmp_path):
    clusters = write_clusters(tmp_path / "v.clusters.parquet", "v", [0, 0, 1, 1], ["a", "a", "b", "b"])
    versions = tmp_path / "versions.yml"
    versions.write_text('"SENCA:SENCA_TRAIN_SENCA":\n    senca: 0.1.0\n    torch: 2.14.1\n')
    run_cli("evaluate", clusters, "--versions", versions, "--outdir", tmp_path / "o", "-q")
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Software versions" in html and "SENCA_TRAIN_SENCA" in html and "torch: 2.14.1" in html
