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


@pytest.mark.parametrize("case", ["truncated jpg", "truncated tif"])
def test_truncated_image_fails_in_preprocess(case, slide, tmp_path):
    """The header reads, the pixels do not: preprocess's image QC decodes the image (issue #18), so ``senca run``
    stops the slide there with one line naming the image, before any stage's output is written."""
    if case == "truncated jpg":
        image, needles = _truncated(slide.image, tmp_path, "scan.jpg"), ["scan.jpg", "cannot decode image", "truncated"]
    else:
        image, needles = _truncated(_as_tiff(slide, tmp_path), tmp_path, "half.tif"), ["half.tif", "cannot decode image"]
    sheet = _run_sheet(slide, tmp_path, image=image)
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0", "--epochs", "1",
                     "-q", expect=None)
    line = one_error_line(result, "1 of 1 slide(s) failed: bad", "preprocess:", *needles, exit_code=1)
    assert line.count("Error") == 1
    assert slide_files(out / "bad") == set() and temporaries(out) == []
    assert not (out / "summary").exists()


def test_image_that_cannot_serve_the_spots_fails_in_embed_patches(slide, tmp_path):
    """A smaller image (another slide's): most spot centres fall outside it. ``senca run`` stops the slide at
    embed-patches with one line naming the image and a spot, keeps preprocess's complete outputs and writes
    nothing of embed-patches."""
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


# ----------------------------------------------------------------------------- output folders, full disks
def test_outdir_that_cannot_be_created(slide, tmp_path):
    """An --outdir below a file: one line before any work, exit 2, for a stage and for ``senca run``."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    result = preprocess(slide, blocker / "out")
    one_error_line(result, "--outdir", "cannot be created", "results.txt is a file")
    sheet = _run_sheet(slide, tmp_path)
    result = run_cli("run", "--samplesheet", sheet, "--outdir", blocker / "run", "--encoder", "efficientnet-lite0",
                     expect=None)
    one_error_line(result, "--outdir", "cannot be created", "results.txt is a file")


def test_outdir_that_is_not_writable(slide, tmp_path, monkeypatch):
    """A read-only folder is refused up front (one line, exit 2), not after the first stage's work.

    Tests run as root in CI, where chmod does not stop writes: the probe write is made to fail as a
    read-only mount would make it fail.
    """
    import errno
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir") or "").resolve() == locked.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr("senca.io.artifacts.tempfile.mkstemp", mkstemp)
    result = preprocess(slide, locked)
    one_error_line(result, str(locked), "--outdir", "not writable", "Read-only file system")
    sheet = _run_sheet(slide, tmp_path)
    result = run_cli("run", "--samplesheet", sheet, "--outdir", locked / "results", expect=None)
    one_error_line(result, "--outdir", "cannot be created in", "Read-only file system")
    assert list(locked.iterdir()) == []


def test_disk_full_during_a_run_fails_that_slide_only(slide, tmp_path, monkeypatch):
    """ENOSPC while one slide's artifact is half-written: one line naming the file, exit 1, the temporary
    file removed, none of that stage's outputs left, and the other slide's finished outputs intact."""
    import errno

    import senca.io.artifacts as artifacts

    second = make_synthetic_slide(tmp_path / "src2", sample="full", n_rows=8, n_cols=8, n_genes=60, n_regions=2,
                                  seed=4)
    sheet = write_samplesheet(tmp_path / "sheet.csv", [slide, second])
    real_write = artifacts.pq.write_table

    def write_table(table, where, **kwargs):
        real_write(table, where, **kwargs)  # the bytes are on disk, then the disk is full
        if ".full.graph.parquet." in str(where):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.pq, "write_table", write_table)
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--encoder", "efficientnet-lite0", "--epochs", "1",
                     "-q", expect=None)
    one_error_line(result, "1 of 2 slide(s) failed: full", "full.graph.parquet", "No space left on device",
                   exit_code=1)
    assert temporaries(out) == []
    assert slide_files(out / "full") == set()  # preprocess failed half-way: none of its four files stays
    assert {"bad.markers.parquet", "bad.senca.h5ad"} <= slide_files(out / "bad")
    assert (out / "summary" / "report.html").exists()


def test_disk_full_while_writing_an_h5ad(slide, tmp_path, monkeypatch):
    """HDF5 meeting ENOSPC: one line, exit 1, no temporary file, no h5py tracebacks on stderr."""
    import errno

    def write_h5ad(self, filename, **kwargs):
        Path(filename).write_bytes(b"\x89HDF half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", write_h5ad)
    out = tmp_path / "out"
    result = preprocess(slide, out)
    one_error_line(result, "bad.h5ad", "No space left on device", "partial file was removed", exit_code=1)
    assert temporaries(out) == [] and "bad.h5ad" not in slide_files(out)


# ----------------------------------------------------------------------------- encoder weights, up front
def test_missing_encoder_weights_fail_before_any_stage(slide, tmp_path, monkeypatch):
    """The README's default (--encoder resnet50) on an offline machine: one short line before preprocess,
    naming what is missing and the two ways out, printed once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty torch home"))
    sheet = _run_sheet(slide, tmp_path)
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, expect=None)
    line = one_error_line(result, "no ImageNet weights for --encoder resnet50", "--weights PATH",
                          "--encoder efficientnet-lite0")
    assert len(line) < 400 and result.stderr.count("no ImageNet weights") == 1
    assert not out.exists()  # nothing ran, nothing was made
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--weights", tmp_path / "absent.pth", expect=None)
    one_error_line(result, "absent.pth", "--weights: weights file not found")


def test_image_less_cohort_needs_no_encoder_weights(slide, tmp_path):
    """Only slides that can reach embed-patches need the encoder: an image file, or a folder that carries one,
    and not ``image: none``."""
    from senca.io.samplesheet import read_samplesheet, with_image_choice
    from senca.pipeline import may_use_image

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    without = read_samplesheet(_run_sheet(slide, tmp_path / "a", image=None))
    with_image = read_samplesheet(_run_sheet(slide, tmp_path / "b"))
    assert not any(may_use_image(s) for s in without)
    assert all(may_use_image(s) for s in with_image)
    assert not any(may_use_image(with_image_choice(s, "none")) for s in with_image)


# ----------------------------------------------------------------------------- image QC, fallback, explicit choice
@pytest.fixture(scope="module")
def blank_hires_visium(tmp_path_factory) -> SyntheticSlide:
    """A Space Ranger folder like the one in issue #18: an all-black tissue_hires_image.png beside a good lowres."""
    s = make_synthetic_slide(tmp_path_factory.mktemp("blank_hires"), sample="vis", fmt="visium", n_rows=8, n_cols=8,
                             n_genes=60, n_regions=2, seed=1)
    spatial = s.data / "spatial"
    hires = Image.open(spatial / "tissue_hires_image.png")
    hires.resize((hires.width // 4, hires.height // 4)).save(spatial / "tissue_lowres_image.png")  # lowres_scalef = hires / 4
    Image.new("RGB", hires.size, (0, 0, 0)).save(spatial / "tissue_hires_image.png")
    return s


def _image_meta(out: Path, sample: str = "vis") -> dict:
    return read_table(out / f"{sample}.spots.parquet", "spots")[1]["image"]


def test_blank_hires_falls_back_to_lowres_with_a_warning(blank_hires_visium, tmp_path):
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "vis", "--data", blank_hires_visium.data, "--outdir", out, expect=0)
    warning = [line for line in result.stderr.splitlines() if "tissue_hires_image.png" in line]
    assert len(warning) == 1 and "the image is constant" in warning[0] and "falling back to tissue_lowres_image.png" \
        in warning[0], result.stderr
    image = _image_meta(out)
    assert image["source"] == "lowres" and image["path"].endswith("tissue_lowres_image.png")
    assert image["rejected"][0]["source"] == "hires" and "constant" in image["rejected"][0]["problem"]
    assert "rejected: hires" in image["reason"] and image["qc"]["ok"]


def test_every_image_blank_runs_image_less_and_says_why(blank_hires_visium, tmp_path):
    outs = tmp_path / "outs"
    shutil.copytree(blank_hires_visium.data, outs)
    lowres = Image.open(outs / "spatial" / "tissue_lowres_image.png")
    Image.new("RGB", lowres.size, (255, 255, 255)).save(outs / "spatial" / "tissue_lowres_image.png")
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "vis", "--data", outs, "--outdir", out, expect=0)
    assert "falling back to no image (the slide runs image-less)" in result.stderr
    image = _image_meta(out)
    assert image["path"] is None and image["source"] == "none"
    assert image["reason"].startswith("every image failed QC") and len(image["rejected"]) == 2


@pytest.mark.parametrize("choice", ["lowres", "spatial/tissue_lowres_image.png", "none", "hires"])
def test_image_can_be_chosen_explicitly(choice, blank_hires_visium, tmp_path):
    """``image`` = lowres / hires / none, or the folder's own PNG (resolved in its own frame, not full-res)."""
    value = str(blank_hires_visium.data / choice) if "/" in choice else choice
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "vis", "--data", blank_hires_visium.data, "--image", value,
                     "--outdir", out, expect=0)
    image = _image_meta(out)
    factors = json.loads((blank_hires_visium.data / "spatial" / "scalefactors_json.json").read_text())
    if choice == "none":
        assert image["source"] == "none" and image["path"] is None and image["choice"] == "none"
    elif choice == "hires":  # asked for: used, but never silently
        assert image["source"] == "hires" and "used anyway because image hires was chosen explicitly" in result.stderr
        assert "although QC found" in image["reason"]
    else:
        assert image["source"] == "lowres" and image["scale"] == factors["tissue_lowres_scalef"]
        spots, _ = read_table(out / "vis.spots.parquet", "spots")
        assert spots["pixel_x"].max() < image["width"]  # in the lowres frame


def test_image_choice_of_senca_run_and_the_samplesheet_keyword(blank_hires_visium, tmp_path):
    """``--image-choice none`` runs a Visium folder image-less without copying it; the sheet's keyword wins."""
    from senca.io.samplesheet import read_samplesheet, with_image_choice
    from senca.pipeline import RunOptions, preprocess_call

    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,data,image\nvis,{blank_hires_visium.data},\nvis2,{blank_hires_visium.data},lowres\n",
                     encoding="utf-8")
    specs = read_samplesheet(sheet)
    assert [s.image_choice for s in specs] == ["auto", "lowres"]
    assert [with_image_choice(s, "none").image_choice for s in specs] == ["none", "lowres"]
    call = preprocess_call(specs[0], tmp_path, RunOptions(image_choice="none"))
    assert call.args[call.args.index("--image-choice") + 1] == "none"
    out = tmp_path / "results"
    result = run_cli("run", "--samplesheet", sheet, "--outdir", out, "--image-choice", "none", "--encoder",
                     "efficientnet-lite0", "--epochs", "1", "-q", expect=None)
    assert result.exit_code == 0, result.stderr
    assert _image_meta(out / "vis")["source"] == "none" and _image_meta(out / "vis2", "vis2")["source"] == "lowres"


def test_lowres_keyword_on_a_legacy_st_slide_is_a_sheet_error(slide, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,data,image,positions\nbad,{slide.data},lowres,{slide.positions}\n", encoding="utf-8")
    result = run_cli("run", "--samplesheet", sheet, "--outdir", tmp_path / "results", expect=None)
    one_error_line(result, "sheet.csv", "row 2, image: 'lowres' names a Space Ranger image")


def test_blank_image_of_a_legacy_st_slide_falls_back_to_image_less(slide, tmp_path):
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", Image.open(slide.image).size, (0, 0, 0)).save(blank)
    out = tmp_path / "out"
    result = preprocess(slide, out, quiet=False, image=blank)
    assert result.exit_code == 0 and "blank.jpg: the image is constant" in result.stderr
    image = read_table(out / "bad.spots.parquet", "spots")[1]["image"]
    assert image["path"] is None and "every image failed QC" in image["reason"]


# ----------------------------------------------------------------------------- numbers that would lie
def _clusters_file(path: Path, sample: str, labels: list) -> Path:
    n = len(labels)
    frame = pd.DataFrame({"spot_id": [f"s{i}" for i in range(n)], "cluster": np.arange(n, dtype=np.int32) % 3,
                          "label": pd.array(labels, dtype="string"), "pixel_x": np.arange(n, dtype=float),
                          "pixel_y": np.zeros(n)})
    prov = Provenance("clusters", sample, "cluster", extra={"n_clusters": 3, "n_clusters_source": "auto",
                                                            "image": {"path": None, "source": "none"}})
    return write_table(frame, path, prov)


def test_a_label_file_covering_one_spot_scores_nothing(tmp_path):
    """One labelled spot gives ARI = NMI = 1.0 by arithmetic: reported n/a with the reason, out of the mean."""
    from senca.evaluate import MIN_LABELLED_FRACTION

    sparse = _clusters_file(tmp_path / "sparse.clusters.parquet", "sparse", ["tumour"] + [None] * 59)
    few = _clusters_file(tmp_path / "few.clusters.parquet", "few", ["a", "b"] * 2 + [None] * 56)  # 4 of 60 < 10%
    dense = _clusters_file(tmp_path / "dense.clusters.parquet", "dense", ["a", "b", "c"] * 20)
    out = tmp_path / "summary"
    result = run_cli("evaluate", sparse, few, dense, "--outdir", out, expect=0)
    assert "sparse: ARI/NMI not reported (n/a): too few labels: 1 of 60 spots labelled" in result.stderr
    summary = pd.read_csv(out / "summary.csv").set_index("sample")
    assert summary.loc[["sparse", "few"], "ari"].isna().all() and summary.loc["dense", "ari"] == pytest.approx(1.0)
    assert summary.loc["few", "status"].startswith("too few labels: 4 of 60") and MIN_LABELLED_FRACTION == 0.10
    stats = json.loads((out / "summary.json").read_text())
    assert stats["n_scored"] == 1 and stats["samples_scored"] == ["dense"]
    report = (out / "report.html").read_text()
    assert "n/a" in report and "left out of the mean" in report and "sparse, few" in report.replace("few, sparse",
                                                                                                    "sparse, few")


def _log_normalised(counts: pd.DataFrame) -> pd.DataFrame:
    return np.log1p(counts.div(counts.sum(axis=1), axis=0) * 1e4)


def test_non_integer_counts_are_refused(slide, counts, tmp_path):
    data = write_counts(_log_normalised(counts), tmp_path / "lognorm.tsv.gz")
    out = tmp_path / "out"
    result = preprocess(slide, out, data=data)
    first = next(spot for spot, row in _log_normalised(counts).iterrows() if (row % 1 != 0).any())
    one_error_line(result, "lognorm.tsv.gz", "non-integer count at spot", repr(first), "--normalised")
    assert_nothing_written(out)


def test_non_integer_h5ad_without_a_counts_layer_is_refused(tmp_path):
    s, adata = _h5ad_slide(tmp_path)
    adata.X = np.log1p(adata.X.toarray().astype(np.float32))
    broken = tmp_path / "lognorm.h5ad"
    adata.write_h5ad(broken)
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "bad", "--data", broken, "--outdir", out, "-q", expect=None)
    one_error_line(result, "lognorm.h5ad", "non-integer count at spot", "--normalised", "layers['counts']")
    assert_nothing_written(out)


def test_normalised_option_skips_normalisation_and_says_so(slide, counts, tmp_path):
    """``--normalised``: non-integers accepted, normalisation skipped, recorded in the provenance (or, until
    preprocess learns to skip it, refused rather than normalised twice)."""
    data = write_counts(_log_normalised(counts), tmp_path / "lognorm.tsv.gz")
    out = tmp_path / "out"
    result = run_cli("preprocess", "--sample", "bad", "--data", data, "--positions", slide.positions, "--normalised",
                     "--n-hvg", "50", "--outdir", out, "-q", expect=None)
    if result.exit_code == 2 and "cannot skip normalisation yet" in result.stderr:
        assert_nothing_written(out)
        pytest.skip("senca.preprocess does not honour RawSlide.normalised yet (issue #18 patch pending)")
    assert result.exit_code == 0, result.stderr
    meta = read_table(out / "bad.spots.parquet", "spots")[1]
    assert meta["normalised_input"] is True
    expr, _ = read_table(out / "bad.expr.parquet", "expr")
    lognorm = _log_normalised(counts).loc[expr["spot_id"], expr.columns[1:]]
    assert np.allclose(expr.drop(columns="spot_id").to_numpy(), lognorm.to_numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- smaller things a user notices
def test_scanpy_default_spatial_call_works_on_an_image_less_slide(preprocessed_imageless, tmp_path):
    """``sc.pl.spatial(adata, color='senca_cluster')`` (no img_key) on an image-less slide's .senca.h5ad."""
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    out = preprocessed_imageless
    spots, _ = read_table(out / "bad.spots.parquet", "spots")
    emb = write_table(embedding_frame(spots["spot_id"], np.random.default_rng(0).normal(size=(len(spots), 8))),
                      tmp_path / "bad.embeddings.parquet", Provenance("embeddings", "bad", "train-senca"))
    result = run_cli("cluster", "--embeddings", emb, "--spots", out / "bad.spots.parquet", "--h5ad", out / "bad.h5ad",
                     "--n-clusters", "2", "--outdir", tmp_path, "-q", expect=None)
    assert result.exit_code == 0, result.stderr
    adata = ad.read_h5ad(tmp_path / "bad.senca.h5ad")
    library = adata.uns["spatial"]["bad"]
    assert library["metadata"]["image"] == "none" and library["images"] == {"hires": None}  # no pixels invented
    sc.pl.spatial(adata, color="senca_cluster", show=False)  # raised a bare StopIteration before
    from senca.io.readers import read_h5ad_slide

    assert read_h5ad_slide(tmp_path / "bad.senca.h5ad")[4].source == "none"  # read back: still image-less


@pytest.fixture(scope="module")
def preprocessed_imageless(slide, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_pre_imageless")
    assert preprocess(slide, out, image=None).exit_code == 0
    return out


def test_positions_pointing_at_the_counts_table_lists_few_names(slide, tmp_path):
    result = preprocess(slide, tmp_path / "out", positions=slide.data)
    line = one_error_line(result, slide.data.name, "missing column 'x'", "more)")
    assert len(line) < 400 and len(result.stderr) < 1000


def test_positions_errors_count_rows_as_the_file_has_them(slide, tmp_path):
    spots = pd.read_csv(slide.positions, sep="\t")
    spots["pixel_x"] = spots["pixel_x"].astype(object)
    spots.loc[3, "pixel_x"] = "abc"  # the 4th data row: line 5 of the file (the header is line 1)
    broken = tmp_path / "spots.tsv"
    spots.to_csv(broken, sep="\t", index=False)
    assert broken.read_text().splitlines()[4].split("\t")[spots.columns.get_loc("pixel_x")] == "abc"
    one_error_line(preprocess(slide, tmp_path / "out", positions=broken), "spots.tsv", "'abc'", "(row 5)")


def test_n_clusters_above_the_spot_count_is_refused_before_training(slide, tmp_path):
    result = run_cli("preprocess", "--sample", "bad", "--data", slide.data, "--positions", slide.positions,
                     "--n-clusters", "100", "--outdir", tmp_path / "out", "-q", expect=None)
    one_error_line(result, "n_clusters 100 is more than the slide's 64 spots")
    assert_nothing_written(tmp_path / "out")


def test_positions_of_another_slide_warn_loudly(slide, tmp_path):
    from senca.io.readers import MAX_SILENT_DROP_FRACTION

    spots = pd.read_csv(slide.positions, sep="\t")
    keep = spots[spots["y"] <= 5]  # 40 of 64 spots: 38% dropped, as in issue #18
    keep.to_csv(tmp_path / "other.tsv", sep="\t", index=False)
    result = preprocess(slide, tmp_path / "out", quiet=True, positions=tmp_path / "other.tsv")  # -q keeps warnings
    assert result.exit_code == 0, result.stderr
    assert "24 of 64 spots (38%) have no position in other.tsv and are dropped" in result.stderr
    assert MAX_SILENT_DROP_FRACTION < 24 / 64


def test_parallel_workers_tag_their_log_lines(capsys):
    import logging

    from senca.commands.common import set_log_tag, setup_logging

    set_log_tag("A1")
    try:
        setup_logging(False)
        logging.getLogger("senca").info("preprocess done")
    finally:
        set_log_tag(None)
        setup_logging(True)
    assert "[senca A1] preprocess done" in capsys.readouterr().err


def test_non_significant_genes_are_not_top_markers(tmp_path):
    """A gene with adjusted p ~1 is flagged not significant and never listed as a top marker in the report."""
    from senca.markers import markers_table, rank_markers
    from senca.report import _top_markers

    rng = np.random.default_rng(0)
    clusters = np.repeat([0, 1], 30)
    X = rng.poisson(3.0, size=(60, 12)).astype(np.float32)
    X[clusters == 0, 0] += 20  # gene g0 marks cluster 0; the others are noise
    adata = ad.AnnData(np.log1p(X), var=pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(12)]))
    tested, _ = rank_markers(adata, clusters)
    table = markers_table(adata, tested)
    assert table.loc[(table["cluster"] == "0") & (table["gene"] == "ENSG00000000000"), "significant"].item()
    assert not table.loc[table["pval_adj"] >= 0.05, "significant"].any()
    path = write_table(table, tmp_path / "m.markers.parquet",
                       Provenance("markers", "m", "markers", params={"significance": 0.05},
                                  extra={"gene_ids_only": True}))
    html = _top_markers(path)
    significant = set(table.loc[table["significant"], "gene"])
    listed = {g for g in table["gene"] if g in html}
    assert "ENSG00000000000" in listed and listed <= significant | {"ENSG00000000000"}
    assert "Ensembl IDs" in html


def test_image_less_figure_caption_does_not_claim_an_he(tmp_path):
    from senca.report import IMAGELESS_CLUSTERS_CAPTION

    clusters = _clusters_file(tmp_path / "nohe.clusters.parquet", "nohe", ["a", "b", "c"] * 20)
    Image.new("RGB", (4, 4), (255, 255, 255)).save(tmp_path / "nohe.clusters.png")
    run_cli("evaluate", clusters, "--outdir", tmp_path / "summary", expect=0)
    report = (tmp_path / "summary" / "report.html").read_text()
    assert IMAGELESS_CLUSTERS_CAPTION.split(",")[0] in report and "Clusters over the H&amp;E" not in report
