"""The artifact layer: schema checks, provenance, format versioning and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from senca.errors import SencaError
from senca.io import artifacts
from senca.io.artifacts import (
    Provenance,
    atomic_path,
    embedding_frame,
    embedding_matrix,
    is_complete,
    read_table,
    write_matrix_table,
    write_table,
)


def emb_table(n: int = 5, d: int = 3) -> pd.DataFrame:
    return embedding_frame([f"s{i}" for i in range(n)], np.arange(n * d, dtype=np.float32).reshape(n, d))


def test_round_trip_keeps_values_and_provenance(tmp_path):
    prov = Provenance("embeddings", "A", "train-senca", {"lr": 5e-4, "path": tmp_path}, {"expr": "ab"}, {"image": "none"})
    write_table(emb_table(), tmp_path / "A.embeddings.parquet", prov)
    df, meta = read_table(tmp_path / "A.embeddings.parquet", "embeddings")
    assert embedding_matrix(df).tolist() == emb_table()[["emb_0", "emb_1", "emb_2"]].to_numpy().tolist()
    assert meta["params"]["path"] == str(tmp_path) and meta["image"] == "none" and meta["inputs"] == {"expr": "ab"}
    assert is_complete(tmp_path / "A.embeddings.parquet", "embeddings", {"expr": "ab"})
    assert not is_complete(tmp_path / "A.embeddings.parquet", "embeddings", {"expr": "changed"})


def test_wide_tables_stream_in_row_groups_and_read_back_as_one_matrix(tmp_path, monkeypatch):
    """write_matrix_table (dense or sparse input) == write_table, read back through one float matrix."""
    import scipy.sparse as sp

    monkeypatch.setattr(artifacts, "MATRIX_GROUP_VALUES", 700)  # 10 rows per row group here
    rng = np.random.default_rng(0)
    n, d = 95, 70  # > WIDE_TABLE_COLUMNS: the wide read path
    matrix = rng.normal(size=(n, d)).astype(np.float32)
    matrix[matrix < 0.5] = 0
    ids = [f"s{i}" for i in range(n)]
    prov = Provenance("patches", "A", "embed-patches", {}, {"spots": "ab"})
    for name, given in (("dense", matrix), ("sparse", sp.csr_matrix(matrix))):
        path = write_matrix_table(ids, [f"emb_{i}" for i in range(d)], given, tmp_path / f"{name}.parquet", prov)
        assert pq.ParquetFile(path).num_row_groups == 10
        df, meta = read_table(path, "patches")
        assert df["spot_id"].tolist() == ids and meta["inputs"] == {"spots": "ab"}
        assert np.array_equal(embedding_matrix(df), matrix) and df.drop(columns="spot_id").to_numpy().dtype == np.float32
    write_table(embedding_frame(ids, matrix), tmp_path / "plain.parquet", prov)
    plain, _ = read_table(tmp_path / "plain.parquet", "patches")
    assert plain.equals(df)
    with pytest.raises(SencaError, match="duplicated spot id 's0'"):
        write_matrix_table(["s0"] * n, [f"emb_{i}" for i in range(d)], matrix, tmp_path / "dup.parquet", prov)
    assert not (tmp_path / "dup.parquet").exists()


@pytest.mark.parametrize(("df", "kind", "needle"), [
    (pd.DataFrame({"spot_id": ["a"], "pixel_x": [1.0]}), "spots", "missing required column 'pixel_y'"),
    (pd.DataFrame({"spot_id": ["a"], "emb_1": [1.0]}), "embeddings", "not emb_0..emb_0"),
    (pd.DataFrame({"spot_id": ["a", "a"], "emb_0": [1.0, 2.0]}), "embeddings", "duplicated spot id 'a'"),
    (pd.DataFrame({"source": ["x"], "target": [1], "distance": [1.0]}), "graph", "column 'source' has type string"),
    (pd.DataFrame({"spot_id": ["a"], "emb_0": [1.0], "view_1": [1.0]}), "embeddings", "not view_0..view_0"),
    (pd.DataFrame({"spot_id": ["a"], "emb_0": [1.0], "view_0": ["x"]}), "embeddings", "view column 'view_0' is not float"),
    (pd.DataFrame({"spot_id": ["a"], "emb_0": [1.0], "view_0": [1.0]}), "patches", "only embeddings may"),
])
def test_schema_errors_name_the_column(tmp_path, df, kind, needle):
    """Each malformed table is refused on write with the column named, and nothing is left behind."""
    with pytest.raises(SencaError, match=needle):
        write_table(df, tmp_path / "x.parquet", Provenance(kind, "x", "test"))
    assert not (tmp_path / "x.parquet").exists()


def test_reader_refuses_foreign_wrong_kind_and_old_format(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"spot_id": ["a"]}), plain)
    with pytest.raises(SencaError, match="not a senca artifact"):
        read_table(plain, "spots")
    write_table(emb_table(), tmp_path / "e.parquet", Provenance("embeddings", "x", "t"))
    with pytest.raises(SencaError, match="expected a patches artifact, found 'embeddings'"):
        read_table(tmp_path / "e.parquet", "patches")
    table = pq.read_table(tmp_path / "e.parquet")
    meta = json.loads(table.schema.metadata[b"senca"]) | {"format": "0", "senca_version": "0.0.1"}
    pq.write_table(table.replace_schema_metadata({b"senca": json.dumps(meta).encode()}), tmp_path / "old.parquet")
    with pytest.raises(SencaError, match="written by senca 0.0.1 in artifact format '0'.*rerun the stage"):
        read_table(tmp_path / "old.parquet", "embeddings")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SencaError, match="junk.parquet: not a readable Parquet file"):
        read_table(tmp_path / "junk.parquet", "spots")
    with pytest.raises(SencaError, match="missing.parquet: file not found"):
        read_table(tmp_path / "missing.parquet", "spots")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_checksum_of_a_folder_changes_with_its_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    before = artifacts.file_checksum(tmp_path / "d")
    (tmp_path / "d" / "a").write_text("2")
    assert artifacts.file_checksum(tmp_path / "d") != before


def test_h5ad_is_written_gzip_level_1_and_reads_back(tmp_path):
    """The h5ad's matrices are gzip at H5AD_GZIP_LEVEL (any HDF5 reader opens them), values unchanged."""
    import anndata as ad
    import h5py
    import scipy.sparse as sp

    counts = sp.random(50, 40, density=0.2, format="csr", random_state=0, dtype=np.float32)
    adata = ad.AnnData(X=counts, layers={"counts": counts.copy()})
    path = artifacts.write_h5ad(adata, tmp_path / "x.h5ad")
    with h5py.File(path) as handle:
        data = handle["X"]["data"]
        assert (data.compression, data.compression_opts) == ("gzip", artifacts.H5AD_GZIP_LEVEL)
    back = ad.read_h5ad(path)
    assert abs(back.X - counts).max() == 0 and abs(back.layers["counts"] - counts).max() == 0
