"""Samplesheet parsing: relative paths, and every bad row reported at once with row, column, reason."""

from __future__ import annotations

import pytest

from senca.errors import SencaError
from senca.io.samplesheet import read_samplesheet
from senca.synthetic import make_synthetic_slide, write_samplesheet

from helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return make_synthetic_slide(tmp_path_factory.mktemp("sheet") / "data", sample="A", n_rows=6, n_cols=6, n_genes=60)


def test_relative_paths_resolve_against_the_sheet(slide, tmp_path):
    sheet = write_samplesheet(slide.data.parent.parent / "sheet.csv", [slide])
    assert "data/A.tsv.gz" in sheet.read_text()
    (spec,) = read_samplesheet(sheet)
    assert spec.data == slide.data.resolve() and spec.kind == "st"
    assert spec.image == slide.image.resolve() and spec.labels == slide.labels.resolve()


def test_paths_with_spaces_and_bom(slide, tmp_path):
    folder = tmp_path / "my slides"
    folder.mkdir()
    (folder / "counts file.tsv.gz").write_bytes(slide.data.read_bytes())
    (folder / "spots.tsv").write_bytes(slide.positions.read_bytes())
    sheet = folder / "sheet.csv"
    sheet.write_text("\ufeffsample,data,positions\nA,counts file.tsv.gz,spots.tsv\n", encoding="utf-8")
    (spec,) = read_samplesheet(sheet)
    assert spec.data.name == "counts file.tsv.gz"


def test_every_bad_row_reported_at_once(slide, tmp_path):
    d = slide.data.parent
    sheet = tmp_path / "bad.csv"
    sheet.write_text(
        "sample,data,image,positions,labels,n_clusters\n"
        f"A,{d}/A.tsv.gz,,{d}/A_selection.tsv,,\n"
        f"A,{d}/A.tsv.gz,,{d}/A_selection.tsv,,\n"            # duplicate sample
        f"bad name,{d}/missing.tsv.gz,,,,\n"                   # bad id + missing file
        f"C,{d}/A.tsv.gz,{d}/A_selection.tsv,{d}/A_selection.tsv,,1\n"  # image not an image, n_clusters < 2
        f"D,{d}/A.tsv.gz,,,,\n"                                # ST without positions
    )
    with pytest.raises(SencaError) as err:
        read_samplesheet(sheet)
    message = str(err.value)
    for needle in ("row 3, sample: duplicate of row 2", "row 4, sample: 'bad name'", "row 4, data: file not found",
                   "row 5, image:", "row 5, n_clusters: '1'", "row 6, positions: required"):
        assert needle in message, (needle, message)
    assert "\n" not in message


@pytest.mark.parametrize(("content", "needle"), [
    ("sample,image\nA,x.png\n", "missing required column(s) data"),
    ("sample,data,colour\nA,x,y\n", "unknown column(s) colour"),
    ("sample,data\n", "no slides listed"),
])
def test_sheet_level_errors(tmp_path, content, needle):
    sheet = tmp_path / "s.csv"
    sheet.write_text(content)
    with pytest.raises(SencaError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_samplesheet(sheet)


def test_non_utf8_sheet(tmp_path):
    sheet = tmp_path / "s.csv"
    sheet.write_bytes("sample,data\nA,caf\xe9.tsv\n".encode("latin-1"))
    with pytest.raises(SencaError, match="not UTF-8"):
        read_samplesheet(sheet)


def test_cli_bad_sheet_writes_nothing(slide, tmp_path):
    sheet = tmp_path / "bad.csv"
    sheet.write_text(f"sample,data,positions\nA,{slide.data},{slide.positions}\nA,{slide.data},{slide.positions}\n")
    out = tmp_path / "out"
    result = run_cli("preprocess", "--samplesheet", sheet, "--outdir", out, expect=None)
    assert_one_line_error(result, "bad.csv", "row 3, sample: duplicate of row 2")
    assert not out.exists() or not any(out.iterdir())
