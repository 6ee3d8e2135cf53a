"""Property-based tests (hypothesis): the samplesheet parser and the artifact readers on generated input.

What must hold for *any* input, not just the cases someone thought of:

* the samplesheet parser returns slides or raises :class:`SencaError`, never anything else (whatever the
  bytes), and accepts every valid sheet, whatever the column order, quoting, spaces, unicode names,
  relative or absolute paths;
* an artifact written with :func:`write_table` reads back exactly (spot ids, float32 bits, provenance);
* the artifact readers turn any damaged or foreign file into a :class:`SencaError` naming it.

Runs are bounded (``max_examples`` <= 80, no deadline) so the module stays well under half a minute.
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from senca.errors import SencaError
from senca.io.artifacts import (
    Provenance,
    embedding_frame,
    embedding_matrix,
    load_torch,
    read_meta,
    read_table,
    write_table,
)
from senca.io.samplesheet import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, read_samplesheet

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def fresh(workdir: Path) -> Path:
    """A new empty folder per hypothesis example (function-scoped tmp_path does not reset between examples)."""
    folder = workdir / f"ex{next(_counter)}"
    folder.mkdir()
    return folder


def parse_or_senca_error(path: Path) -> list | None:
    """read_samplesheet's result, None for a SencaError; any other exception fails the test."""
    try:
        return read_samplesheet(path)
    except SencaError as exc:
        assert "\n" not in str(exc)  # one line, always
        return None


# ----------------------------------------------------------------------------- samplesheet: anything in
@BOUNDED
@given(data=st.binary(max_size=2000))
def test_samplesheet_arbitrary_bytes_raise_only_senca_errors(workdir, data):
    sheet = fresh(workdir) / "sheet.csv"
    sheet.write_bytes(data)
    parse_or_senca_error(sheet)


_cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "~", "~nosuchuser_senca/x.tsv", "..", "/", "a" * 300, "x.h5ad", "s.tsv.gz", "3", "1",
                     "-2", "1e3", '"', "a,b", "\x00", "\u00e9t\u00e9.png", "../../etc/passwd"]),
)
_columns = st.lists(st.sampled_from([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "colour", " sample ", ""]), min_size=0,
                    max_size=7)


@BOUNDED
@given(header=_columns, rows=st.lists(st.lists(_cell, max_size=8), max_size=6), bom=st.booleans(),
       crlf=st.booleans())
def test_samplesheet_csv_shaped_text_raises_only_senca_errors(workdir, header, rows, bom, crlf):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    writer.writerows(rows)
    sheet = fresh(workdir) / "sheet.csv"
    sheet.write_bytes(("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8", "surrogatepass"))
    parse_or_senca_error(sheet)


# ----------------------------------------------------------------------------- samplesheet: valid sheets
_name_chars = st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters=" _-.()&,'\u00e9\u00fc")
_file_stem = st.text(_name_chars, min_size=1, max_size=12).filter(lambda s: s.strip(" .") == s and s not in (".", ".."))
_sample = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z")


@st.composite
def valid_sheet(draw):
    """Rows of distinct valid slides: (rows as dicts, files to create, expected (sample, data, n_clusters))."""
    samples = draw(st.lists(_sample, min_size=1, max_size=4, unique=True))
    stems = draw(st.lists(_file_stem, min_size=len(samples), max_size=len(samples), unique_by=str.lower))
    rows, files, expected = [], [], []
    for sample, stem in zip(samples, stems, strict=True):
        kind = draw(st.sampled_from(["st", "h5ad"]))
        sub = draw(st.sampled_from(["", "data/", "my data/"]))
        data = f"{sub}{stem}.tsv.gz" if kind == "st" else f"{sub}{stem}.h5ad"
        row = {"sample": sample, "data": data}
        files.append(data)
        if kind == "st":
            row["positions"] = f"{sub}{stem}_spots.tsv"
            files.append(row["positions"])
        if draw(st.booleans()):
            row["image"] = f"{sub}{stem}.{draw(st.sampled_from(['jpg', 'png', 'TIF', 'tiff']))}"
            files.append(row["image"])
        if draw(st.booleans()):
            row["labels"] = f"{sub}{stem} labels.csv"
            files.append(row["labels"])
        k = draw(st.one_of(st.none(), st.integers(2, 40)))
        if k is not None:
            row["n_clusters"] = str(k)
        rows.append(row)
        expected.append((sample, data, k))
    columns = draw(st.permutations([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]))
    return rows, files, expected, list(columns)


@BOUNDED
@given(sheet=valid_sheet(), absolute=st.booleans(), padded=st.booleans(), bom=st.booleans(),
       blank_lines=st.booleans())
def test_samplesheet_accepts_every_valid_sheet(workdir, sheet, absolute, padded, bom, blank_lines):
    rows, files, expected, columns = sheet
    root = fresh(workdir)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f" {c} " if padded else c for c in columns])
    for row in rows:
        values = [row.get(c, "") for c in columns]
        if absolute:
            values = [str(root / v) if c in ("data", "image", "positions", "labels") and v else v
                      for c, v in zip(columns, values, strict=True)]
        writer.writerow([f"  {v} " if padded and v else v for v in values])
        if blank_lines:
            writer.writerow([""] * len(columns))
    sheet_path = root / "sheet.csv"
    sheet_path.write_bytes(("\ufeff" if bom else "").encode() + buffer.getvalue().encode())
    specs = read_samplesheet(sheet_path)
    assert [(s.sample, s.data, s.n_clusters) for s in specs] == [
        (sample, (root / data).resolve(), k) for sample, data, k in expected]
    for spec, row in zip(specs, rows, strict=True):
        for column in ("image", "positions", "labels"):
            got = getattr(spec, column)
            assert got == ((root / row[column]).resolve() if column in row else None)


# ----------------------------------------------------------------------------- artifacts: round trip
_spot_ids = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), min_size=0, max_size=40,
                     unique=True)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=10),
                       st.floats(allow_nan=False, allow_infinity=False))
_params = st.dictionaries(st.text(max_size=8), st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8), max_size=5)


@BOUNDED
@given(ids=_spot_ids, dim=st.integers(1, 9), data=st.data(), params=_params,
       sample=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10))
def test_embedding_artifact_round_trip_is_exact(workdir, ids, dim, data, params, sample):
    matrix = data.draw(hnp.arrays(np.float32, (len(ids), dim), elements=st.floats(width=32)))
    path = fresh(workdir) / "x.embeddings.parquet"
    inputs = {"spots": "ab" * 32}
    write_table(embedding_frame(ids, matrix), path, Provenance("embeddings", sample, "test", params, inputs))
    df, meta = read_table(path, "embeddings")
    assert df["spot_id"].tolist() == ids
    back = embedding_matrix(df)
    assert back.dtype == np.float32 and back.shape == matrix.shape
    nan = np.isnan(matrix)
    assert np.array_equal(np.isnan(back), nan)  # NaN is stored as a Parquet null and read back as NaN
    assert np.array_equal(back[~nan].view(np.uint32), matrix[~nan].view(np.uint32))  # bit for bit (-0.0, inf)
    assert (meta["sample"], meta["kind"], meta["params"], meta["inputs"]) == (sample, "embeddings", params, inputs)


@BOUNDED
@given(ids=_spot_ids.filter(len), data=st.data())
def test_spots_artifact_round_trip_keeps_missing_labels(workdir, ids, data):
    n = len(ids)
    xy = data.draw(hnp.arrays(np.float64, (n, 2), elements=st.floats(allow_nan=False, width=64)))
    labels = data.draw(st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=n, max_size=n))
    frame = pd.DataFrame({"spot_id": pd.Series(ids, dtype=str), "pixel_x": xy[:, 0], "pixel_y": xy[:, 1],
                          "array_row": np.arange(n, dtype=float), "array_col": np.zeros(n),
                          "label": pd.array(labels, dtype="string")})
    path = fresh(workdir) / "x.spots.parquet"
    write_table(frame, path, Provenance("spots", "s", "test"))
    df, _ = read_table(path, "spots")
    assert df["spot_id"].tolist() == ids
    assert np.array_equal(df[["pixel_x", "pixel_y"]].to_numpy(), xy)
    assert [None if pd.isna(v) else v for v in df["label"]] == labels


# ----------------------------------------------------------------------------- artifacts: anything in
VALID_IDS = [f"{i}x{j}" for i in range(6) for j in range(5)]
VALID_MATRIX = np.random.default_rng(0).normal(size=(len(VALID_IDS), 4)).astype(np.float32)


@pytest.fixture(scope="module")
def valid_artifact(workdir) -> tuple[bytes, dict]:
    path = workdir / "valid.embeddings.parquet"
    write_table(embedding_frame(VALID_IDS, VALID_MATRIX), path,
                Provenance("embeddings", "s", "t", {"lr": 5e-4}, {"spots": "0" * 64}))
    return path.read_bytes(), read_meta(path)


def assert_refused_or_identical(path: Path, meta: dict) -> None:
    """The reader raises a SencaError naming the file, or returns exactly what was written: never other data."""
    try:
        df, got = read_table(path, "embeddings")
    except SencaError as exc:
        assert str(path) in str(exc)
        return
    assert got == meta
    assert df["spot_id"].tolist() == VALID_IDS
    assert np.array_equal(embedding_matrix(df).view(np.uint32), VALID_MATRIX.view(np.uint32))


@BOUNDED
@given(data=st.binary(max_size=3000), kind=st.sampled_from(["spots", "embeddings", "clusters", "graph"]))
def test_readers_turn_garbage_bytes_into_senca_errors(workdir, data, kind):
    path = fresh(workdir) / f"x.{kind}.parquet"
    path.write_bytes(data)
    with pytest.raises(SencaError, match="x\\."):
        read_table(path, kind)
    with pytest.raises(SencaError):
        load_torch(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_readers_turn_damaged_artifacts_into_senca_errors(workdir, valid_artifact, data):
    """Truncations, byte flips and splices anywhere (data pages, footer, metadata JSON) of a real artifact:
    refused with a SencaError, or (a flip in bytes nothing reads) read back unchanged; never other values."""
    original, meta = valid_artifact
    damaged = bytearray(original)
    how = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if how == "truncate":
        damaged = damaged[: data.draw(st.integers(0, len(damaged) - 1))]
    elif how == "flip":
        for at in data.draw(st.lists(st.integers(0, len(damaged) - 1), min_size=1, max_size=4)):
            damaged[at] ^= data.draw(st.integers(1, 255))
    else:
        start = data.draw(st.integers(0, len(damaged) - 1))
        damaged[start:start + 16] = data.draw(st.binary(min_size=1, max_size=16))
    assume(bytes(damaged) != original)
    path = fresh(workdir) / "x.embeddings.parquet"
    path.write_bytes(bytes(damaged))
    assert_refused_or_identical(path, meta)


def test_metadata_that_is_not_json_is_refused(workdir):
    """A byte flip inside the metadata JSON keeps the Parquet footer valid: still a SencaError, not a ValueError."""
    import pyarrow.parquet as pq

    path = workdir / "j.embeddings.parquet"
    write_table(embedding_frame(["a", "b"], np.ones((2, 2))), path, Provenance("embeddings", "s", "t"))
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"senca": b"{not json"}), path)
    with pytest.raises(SencaError, match="damaged senca metadata"):
        read_meta(path)

