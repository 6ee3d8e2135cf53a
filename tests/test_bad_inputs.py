"""The bad-input catalogue: every kind of broken file users send, driven through the real CLI.

Each case runs ``senca preprocess`` / ``senca embed-patches`` / ``senca run`` end to end on a slide with one
thing broken and checks what a user sees: a non-zero exit, exactly one ``Error:`` line that names the file
and the column / spot / row at fault, no traceback, and an output folder holding no partial file (no
``*.tmp*``, no artifact of the stage that failed). Reader- and parser-level unit tests live beside their
modules (test_readers.py, test_samplesheet.py, test_embed_patches.py); this module is the user's view.
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from senca.io.artifacts import Provenance, embedding_frame, read_table, write_table
from senca.synthetic import SyntheticSlide, make_synthetic_slide, write_samplesheet

from helpers import run_cli

PREPROCESS_OUTPUTS = ("bad.spots.parquet", "bad.expr.parquet", "bad.graph.parquet", "bad.h5ad")


# ----------------------------------------------------------------------------- helpers
def one_error_line(result, *needles: str, exit_code: int = 2) -> str:
    """Exit ``exit_code``, exactly one ``Error:`` line on stderr containing every needle, no traceback."""
    assert result.exit_code == exit_code, f"exit {result.exit_code}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    """Temporary files of atomic writes (``.<name>.<random>.tmp<suffix>``) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name) if folder.exists() else []


def assert_nothing_written(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), sorted(p.name for p in folder.iterdir())


def slide_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> SyntheticSlide:
    """A small legacy-ST slide (8 x 8 spots, 60 genes, image, labels) that every case breaks a copy of."""
    return make_synthetic_slide(tmp_path_factory.mktemp("bad_src"), sample="bad", n_rows=8, n_cols=8, n_genes=60,
                                n_regions=2, seed=3)


@pytest.fixture(scope="module")
def counts(slide) -> pd.DataFrame:
    return pd.read_csv(slide.data, sep="\t", index_col=0)


def preprocess(slide: SyntheticSlide, out: Path, *, quiet: bool = True, **replace: Path | None):
    """``senca preprocess`` of ``slide`` with some of its files replaced (``data=``, ``image=``, ...)."""
    files = {"data": slide.data, "positions": slide.positions, "labels": slide.labels, "image": slide.image} | replace
    args = [x for name, path in files.items() if path is not None for x in (f"--{name}", path)]
    return run_cli("preprocess", "--sample", "bad", *args, "--n-hvg", "50", "--outdir", out,
                   *(["-q"] if quiet else []), expect=None)


def write_counts(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, sep="\t")
    return path


# ----------------------------------------------------------------------------- counts tables
def _truncated_gzip(counts: pd.DataFrame, slide: SyntheticSlide, d: Path) -> Path:
    data = slide.data.read_bytes()
    (d / "bad.tsv.gz").write_bytes(data[: len(data) // 2])
    return d / "bad.tsv.gz"


def _nan_count(counts, slide, d):
    frame = counts.astype(float)
    frame.iloc[5, 7] = np.nan
    return write_counts(frame, d / "bad.tsv.gz")


def _negative_count(counts, slide, d):
    frame = counts.copy()
    frame.iloc[5, 7] = -3
    return write_counts(frame, d / "bad.tsv.gz")


def _duplicated_spot(counts, slide, d):
    frame = counts.copy()
    frame.index = [counts.index[4] if i == 9 else spot for i, spot in enumerate(counts.index)]
    return write_counts(frame, d / "bad.tsv.gz")


def _duplicated_gene(counts, slide, d):
    frame = counts.copy()
    frame.columns = [counts.columns[2] if i == 11 else gene for i, gene in enumerate(counts.columns)]
    return write_counts(frame, d / "bad.tsv.gz")


def _one_gene(counts, slide, d):
    return write_counts(counts[[counts.sum().idxmax()]], d / "bad.tsv.gz")  # a well-expressed gene, alone


def _three_spots(counts, slide, d):
    return write_counts(counts.iloc[:3], d / "bad.tsv.gz")


def _non_numeric(counts, slide, d):
    frame = counts.astype(object)
    frame.iloc[5, 7] = "12x"
    return write_counts(frame, d / "bad.tsv.gz")


CASES: dict[str, tuple[Callable[..., Path], Callable[[pd.DataFrame], list[str]]]] = {
    # case: (write the broken counts file, what the one error line must name)
    "truncated gzip": (_truncated_gzip, lambda c: ["bad.tsv.gz", "cannot read", "EOFError"]),
    "NaN count": (_nan_count, lambda c: ["bad.tsv.gz", "missing (empty or NaN) count", f"spot {c.index[5]!r}",
                                         f"gene {c.columns[7]!r}"]),
    "negative count": (_negative_count, lambda c: ["bad.tsv.gz", "negative count", f"spot {c.index[5]!r}"]),
    "non-numeric count": (_non_numeric, lambda c: ["bad.tsv.gz", "'12x'", f"spot {c.index[5]!r}"]),
    "duplicated spot id": (_duplicated_spot, lambda c: ["bad.tsv.gz", f"duplicated spot id {c.index[4]!r}"]),
    "duplicated gene name": (_duplicated_gene, lambda c: ["bad.tsv.gz", f"duplicated gene name {c.columns[2]!r}"]),
    "one gene": (_one_gene, lambda c: ["bad.tsv.gz", "only 1 gene(s)", "at least 10"]),
    "three spots": (_three_spots, lambda c: ["bad.tsv.gz", "3 spot(s)", "needs at least 5"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_counts_table(case, slide, counts, tmp_path):
    write, needles = CASES[case]
    data = write(counts, slide, tmp_path)
    out = tmp_path / "out"
    result = preprocess(slide, out, data=data)
    one_error_line(result, *needles(counts))
    assert_nothing_written(out)


def _h5ad_slide(tmp_path: Path) -> tuple[SyntheticSlide, ad.AnnData]:
    s = make_synthetic_slide(tmp_path / "src", sample="bad", fmt="h5ad", n_rows=6, n_cols=6, n_genes=40, image=False)
    return s, ad.read_h5ad(s.data)


@pytest.mark.parametrize("case", ["NaN count", "negative count", "duplicated spot id", "duplicated gene name"])
def test_broken_h5ad(case, tmp_path):
    s, adata = _h5ad_slide(tmp_path)
    X = adata.X.toarray().astype(np.float32)
    spot = adata.obs_names[3]
    if case == "NaN count":
        X[3, 5] = np.nan
        needles = ["non-finite count", f"spot {spot!r}"]
    elif case == "negative count":
        X[3, 5] = -1
        needles = ["negative count", f"spot {spot!r}"]
    elif case == "duplicated spot id":
        adata.obs_names = [adata.obs_names[1] if i == 3 else n for i, n in enumerate(adata.obs_names)]
        needles = [f"duplicated spot id {adata.obs_names[1]!r}"]
    else:
        adata.var_names = [adata.var_names[0] if i == 5 else n for i, n in enumerate(adata.var_names)]
        needles = [f"duplicated gene name {adata.var_names[0]!r}"]
    adata.X = X
    broken = tmp_path / "broken slide.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns about the duplicated names we plant on purpose
        adata.write_h5ad(broken)
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "bad", "--data", broken, "--outdir", out, "-q", expect=None)
    one_error_line(result, "broken slide.h5ad", *needles)
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- labels
def test_labels_that_match_no_spot_are_refused(slide, tmp_path):
    labels = pd.read_csv(slide.labels, sep="\t")
    labels[["x", "y"]] += 100  # another slide's labels: no (x, y) of this slide
    labels.to_csv(tmp_path / "other_labels.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    result = preprocess(slide, out, labels=tmp_path / "other_labels.tsv")
    one_error_line(result, "other_labels.tsv", "no label row matches a spot")
    assert_nothing_written(out)


def test_label_rows_for_absent_spots_are_logged_and_ignored(slide, tmp_path):
    """HER2ST has label rows without a spot: the slide still runs, those rows are reported, not used."""
    labels = pd.read_csv(slide.labels, sep="\t")
    ghosts = pd.DataFrame({"x": [50.0, 51.0], "y": [50.0, 50.0], "label": ["tumour", "stroma"]})
    pd.concat([labels, ghosts]).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    result = preprocess(slide, out, quiet=False, labels=tmp_path / "labels.tsv")
    assert result.exit_code == 0, result.stderr
    assert "labels.tsv: 2 label row(s) name spots this slide does not have; ignored" in result.stderr
    spots, meta = read_table(out / "bad.spots.parquet", "spots")
    assert meta["n_labelled"] == len(labels) == spots["label"].notna().sum()
    assert not {"tumour", "stroma"} & set(spots["label"].dropna())


# ----------------------------------------------------------------------------- images
def _truncated(path: Path, d: Path, name: str) -> Path:
    data = path.read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    return d / name


def _as_tiff(slide: SyntheticSlide, d: Path) -> Path:
    Image.open(slide.image).save(d / "scan.tif")
    return d / "scan.tif"


def _header_smashed(path: Path, d: Path, name: str) -> Path:
    data = bytearray(path.read_bytes())
    data[2:400] = b"\xff" * 398  # the markers / IFD Pillow identifies the file by
    (d / name).write_bytes(bytes(data))
    return d / name


@pytest.mark.parametrize("fmt", ["jpg", "tif"])
def test_image_with_a_corrupt_header_fails_in_preprocess(fmt, slide, tmp_path):
    source = slide.image if fmt == "jpg" else _as_tiff(slide, tmp_path)
    broken = _header_smashed(source, tmp_path, f"corrupt scan.{fmt}")
    out = tmp_path / "out"
    result = preprocess(slide, out, image=broken)
    one_error_line(result, f"corrupt scan.{fmt}", "not an image Pillow can read")
    assert_nothing_written(out)


def _run_sheet(slide: SyntheticSlide, folder: Path, **replace: Path) -> Path:
    """A samplesheet in ``folder`` listing ``slide`` (files replaced), paths relative to the sheet."""
    copy = SyntheticSlide(**{**slide.__dict__, **replace})
    return write_samplesheet(folder / "samplesheet.csv", [copy])


@pytest.mark.parametrize("case", ["truncated jpg", "truncated tif", "image of another slide"])
def test_image_that_cannot_serve_the_spots_fails_in_embed_patches(case, slide, tmp_path):
    """The header reads (preprocess succeeds), the pixels do not: ``senca run`` stops the slide at
    embed-patches with one line naming the image (and spot), keeps preprocess's complete outputs and
    writes nothing of embed-patches."""
    if case == "truncated jpg":
        image, needles = _truncated(slide.image, tmp_path, "scan.jpg"), ["scan.jpg", "cannot decode image", "truncated"]
    elif case == "truncated tif":
        image, needles = _truncated(_as_tiff(slide, tmp_path), tmp_path, "half.tif"), ["half.tif", "cannot decode image"]
    else:  # a smaller image (another slide's): most spot centres fall outside it
        Image.open(slide.image).crop((0, 0, 150, 120)).save(tmp_path / "other.jpg")
        image, needles = tmp_path / "other.jpg", ["other.jpg", "spot '", "lies outside this 150 x 120 image"]
    sheet = _run_sheet(slide, tmp_path, image=image)
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0", "--epochs", "1",
                     "-q", expect=None)
    line = one_error_line(result, "1 of 1 slide(s) failed: bad", "embed-patches:", *needles, exit_code=1)
    assert line.count("Error") == 1
    folder = out / "bad"
    assert slide_files(folder) == set(PREPROCESS_OUTPUTS)  # complete preprocess outputs, nothing of embed-patches
    assert {p.name for p in (folder / ".senca").iterdir()} == {"preprocess.json"}
    assert temporaries(out) == []
    assert not (out / "summary").exists()


def test_embed_patches_alone_on_a_truncated_image(slide, tmp_path):
    out = tmp_path / "out"
    assert preprocess(slide, out, image=None).exit_code == 0
    broken = _truncated(slide.image, tmp_path, "cut.jpg")
    result = run_cli("embed-patches", "--spots", out / "bad.spots.parquet", "--image", broken, "--encoder",
                     "efficientnet-lite0", "--outdir", out, "-q", expect=None)
    one_error_line(result, "cut.jpg", "cannot decode image")
    assert slide_files(out) == set(PREPROCESS_OUTPUTS) and temporaries(out) == []


# ----------------------------------------------------------------------------- samplesheets
def test_non_utf8_samplesheet_through_run(slide, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(f"sample,data,positions\nbad,{slide.data},{slide.positions}\ncaf\xe9,x,y\n".encode("latin-1"))
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, expect=None)
    one_error_line(result, "sheet.csv", "not UTF-8", "byte")
    assert not out.exists()


def test_bad_rows_through_run_are_reported_together(slide, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,data,positions,n_clusters\nbad,{slide.data},{slide.positions},1\n"
                     f"bad space,missing.tsv.gz,{slide.positions},\n")
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, expect=None)
    one_error_line(result, "sheet.csv", "row 2, n_clusters", "row 3, sample", "row 3, data: file not found")
    assert not out.exists()


def test_relative_paths_and_spaces_run_end_to_end(slide, tmp_path, monkeypatch):
    """A sheet whose paths are relative to its own folder (not the working directory), every name with spaces."""
    data = tmp_path / "lab A" / "slide data"
    data.mkdir(parents=True)
    names = {"data": "counts table.tsv.gz", "positions": "spot file.tsv", "labels": "ground truth.tsv",
             "image": "H&E scan (1).jpg"}
    for field, name in names.items():
        shutil.copy(getattr(slide, field), data / name)
    sheet = tmp_path / "lab A" / "my sheet.csv"
    rows = {"sample": "bad", **{field: f"slide data/{name}" for field, name in names.items()}}
    pd.DataFrame([rows]).to_csv(sheet, index=False)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the sheet's folder, not to where senca runs
    out = tmp_path / "my results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0",
                     "--epochs", "1", "-q", expect=None)
    assert result.exit_code == 0, result.stderr
    spots, meta = read_table(out / "bad" / "bad.spots.parquet", "spots")
    assert meta["image"]["path"] == str((data / names["image"]).resolve())
    assert spots["label"].notna().all()
    assert (out / "bad" / "bad.markers.parquet").exists() and (out / "summary" / "report.html").exists()
    assert temporaries(out) == [] and not any(elsewhere.iterdir())


# ----------------------------------------------------------------------------- artifacts from elsewhere
@pytest.fixture(scope="module")
def preprocessed(slide, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_pre")
    assert preprocess(slide, out).exit_code == 0
    return out


def _with_format(src: Path, dst: Path, fmt: str) -> Path:
    table = pq.read_table(src)
    meta = json.loads(table.schema.metadata[b"senca"])
    meta.update(format=fmt, senca_version="0.0.1")
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"senca": json.dumps(meta).encode()}), dst)
    return dst


def test_artifact_of_an_incompatible_senca_is_refused(preprocessed, tmp_path):
    old = _with_format(preprocessed / "bad.spots.parquet", tmp_path / "bad.spots.parquet", "0")
    out = tmp_path / "out"
    result = run_cli("train-senca", "--spots", old, "--expr", preprocessed / "bad.expr.parquet", "--graph",
                     preprocessed / "bad.graph.parquet", "--epochs", "1", "--outdir", out, "-q", expect=None)
    one_error_line(result, str(old), "written by senca 0.0.1 in artifact format '0'", "rerun the stage that made it")
    assert_nothing_written(out)


def test_h5ad_of_an_incompatible_senca_is_refused(preprocessed, tmp_path):
    adata = ad.read_h5ad(preprocessed / "bad.h5ad")
    meta = json.loads(adata.uns["senca"])
    adata.uns["senca"] = json.dumps({**meta, "format": "0", "senca_version": "0.0.1"})
    old = tmp_path / "bad.h5ad"
    adata.write_h5ad(old)
    spots, _ = read_table(preprocessed / "bad.spots.parquet", "spots")
    emb = write_table(embedding_frame(spots["spot_id"], np.random.default_rng(0).normal(size=(len(spots), 8))),
                      tmp_path / "bad.embeddings.parquet", Provenance("embeddings", "bad", "train-senca"))
    out = tmp_path / "out"
    result = run_cli("cluster", "--embeddings", emb, "--spots", preprocessed / "bad.spots.parquet", "--h5ad", old,
                     "--n-clusters", "2", "--outdir", out, "-q", expect=None)
    one_error_line(result, str(old), "artifact format '0'")
    assert_nothing_written(out)


def test_gzip_that_is_not_a_table(slide, tmp_path):
    """A gzip of something else (an image exported with the wrong name) is refused, not parsed as numbers."""
    broken = tmp_path / "counts.tsv.gz"
    with gzip.open(broken, "wb") as handle:
        handle.write(slide.image.read_bytes())
    out = tmp_path / "out"
    result = preprocess(slide, out, data=broken)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    one_error_line(result, "counts.tsv.gz")
    assert_nothing_written(out)
