"""senca's artifacts: Parquet tables (and a few other files) that stages pass to each other.

Every stage reads and writes through this module, so no stage parses another's files by hand:

* tables are Parquet with a ``senca`` key in the schema metadata holding JSON provenance
  (artifact format, senca version, kind, sample, stage, parameters, input checksums, extras);
* each kind has a schema (required columns and their types) checked on write and on read, and a
  reader says exactly which file and column is wrong;
* every write goes to a temporary file in the destination folder and is renamed into place, so a
  crash or a killed job never leaves a half-written artifact that ``-resume`` would trust.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from senca import ARTIFACT_FORMAT, __version__
from senca.errors import OutputError, SencaError, os_error_reason

META_KEY = b"senca"
META_DIGEST_KEY = b"senca_sha256"  # over the META_KEY JSON and the column names: the footer has no checksum
EMB_PREFIX = "emb_"
VIEW_PREFIX = "view_"  # embeddings only, optional: the substitute view written beside S (senca cluster --view-weight)

# kind -> {column: type family}; "emb" means "one or more float columns emb_0..emb_{d-1}" (embeddings may
# also carry float columns view_0..view_{m-1}, the substitute view beside S),
# "genes" means "one or more float columns (gene names)". Families: str, float, int.
SCHEMAS: dict[str, dict[str, str]] = {
    "spots": {"spot_id": "str", "pixel_x": "float", "pixel_y": "float", "array_row": "float",
              "array_col": "float", "label": "str?"},
    "expr": {"spot_id": "str", "*": "genes"},
    "graph": {"source": "int", "target": "int", "distance": "float"},
    "patches": {"spot_id": "str", "*": "emb"},
    "embeddings": {"spot_id": "str", "*": "emb"},
    "train_log": {"epoch": "int", "step": "int", "loss": "float"},
    "clusters": {"spot_id": "str", "cluster": "int", "label": "str?"},
    "markers": {"cluster": "str", "rank": "int", "gene": "str", "score": "float",
                "logfoldchange": "float", "pval": "float", "pval_adj": "float"},
    "metrics": {"sample": "str", "ari": "float", "nmi": "float", "n_spots": "int", "n_excluded": "int"},
    "summary": {"sample": "str"},
}

ROW_GROUP_SIZE = 65_536  # bounded memory when a reader streams a big slide's table
MATRIX_GROUP_VALUES = 1 << 23  # values per row group of a wide float table (32 MiB of float32)
WIDE_TABLE_COLUMNS = 64  # more columns than this: read with one pandas block per column (see read_table)
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_page_checksum": True}
H5AD_GZIP_LEVEL = 1  # h5py's default is 4: on DLPFC's 3,639 x 7,802 h5ad 1.14 s vs 1.84 s a write, 4 % larger


@dataclass
class Provenance:
    """Who made an artifact, from what, and how: stored in every artifact's metadata."""

    kind: str
    sample: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "senca_version": __version__,
            "kind": self.kind,
            "sample": self.sample,
            "stage": self.stage,
            "params": _jsonable(self.params),
            "inputs": dict(self.inputs),
            **_jsonable(self.extra),
        }


def _jsonable(value: Any) -> Any:
    """Make parameters JSON-safe (paths, numpy scalars, tuples) so metadata never fails to write."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------- atomic writes
def _written_file(exc: OSError, tmp: Path, path: Path) -> Path:
    """The file an OSError is about: the artifact being written unless the error names another file."""
    name = getattr(exc, "filename", None)
    if name and Path(str(name)) != tmp and Path(str(name)) != path:
        return Path(str(name))
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary file keeps ``path``'s suffix so libraries that infer a format from it still work.
    An OS error on the way (no space left, a read-only or vanished folder) removes the temporary file
    and becomes one :class:`OutputError` line naming ``path``: a half-written file never gets the
    real name, and the user reads "no space left" instead of a library's traceback.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write ({os_error_reason(exc)})", path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared like any output
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write ({os_error_reason(exc)}); the partial file was removed",
                          _written_file(exc, tmp, path)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def check_output_dir(path: str | Path, option: str = "--outdir") -> Path:
    """Refuse an output folder that cannot be made or written, before any work starts.

    Nothing is created: an absent folder is judged by its nearest existing parent (it must be a
    folder senca can write into), an existing one by writing and removing a probe file. The probe
    is a real write, not ``os.access``, so read-only mounts and full disks (a zero-byte probe still
    succeeds there; the writes themselves report ENOSPC) are judged as the stages will meet them.
    """
    path = Path(path).expanduser()
    target = path
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    try:
        if target.exists() and not target.is_dir():
            what = "is a file" if target == path else f"cannot be created: {target} is a file"
            raise SencaError(f"{option}: {what}", path)
        fd, probe = tempfile.mkstemp(prefix=".senca-write-probe.", dir=target)
        os.close(fd)
        os.unlink(probe)
    except SencaError:
        raise
    except OSError as exc:
        verb = "is not writable" if target == path else f"cannot be created in {target}"
        raise SencaError(f"{option}: the output folder {verb} ({os_error_reason(exc)})", path) from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_checksum(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted) for Space Ranger outs/."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- schema checks
def _family(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_dictionary(arrow_type):
        return "str"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _check_schema(schema: pa.Schema, kind: str, where: str | Path) -> None:
    if kind not in SCHEMAS:
        raise SencaError(f"unknown artifact kind {kind!r}", where)
    spec = SCHEMAS[kind]
    names = schema.names
    for column, family in spec.items():
        if column == "*":
            continue
        optional = family.endswith("?")
        if column not in names:
            if optional:
                continue
            raise SencaError(f"{kind} artifact is missing required column {column!r}", where)
        found = _family(schema.field(column).type)
        want = family.rstrip("?")
        if found != want and not (optional and found == "null") and not (want == "float" and found == "int"):
            raise SencaError(f"column {column!r} has type {schema.field(column).type}, expected {want}", where)
    rest = spec.get("*")
    if rest == "emb":
        emb = [n for n in names if n.startswith(EMB_PREFIX)]
        if not emb:
            raise SencaError(f"{kind} artifact has no {EMB_PREFIX}* columns", where)
        expected = [f"{EMB_PREFIX}{i}" for i in range(len(emb))]
        if emb != expected:
            raise SencaError(f"{kind} artifact's embedding columns are not {EMB_PREFIX}0..{EMB_PREFIX}{len(emb) - 1}", where)
        bad = [n for n in emb if _family(schema.field(n).type) != "float"]
        if bad:
            raise SencaError(f"embedding column {bad[0]!r} is not float", where)
        view = [n for n in names if n.startswith(VIEW_PREFIX)]
        if view and kind != "embeddings":
            raise SencaError(f"{kind} artifact has {VIEW_PREFIX}* columns (only embeddings may)", where)
        if view != [f"{VIEW_PREFIX}{i}" for i in range(len(view))]:
            raise SencaError(f"{kind} artifact's view columns are not {VIEW_PREFIX}0..{VIEW_PREFIX}{len(view) - 1}", where)
        bad = [n for n in view if _family(schema.field(n).type) != "float"]
        if bad:
            raise SencaError(f"view column {bad[0]!r} is not float", where)
    elif rest == "genes":
        genes = [n for n in names if n != "spot_id"]
        if not genes:
            raise SencaError(f"{kind} artifact has no gene columns", where)
        bad = [n for n in genes if _family(schema.field(n).type) != "float"]
        if bad:
            raise SencaError(f"gene column {bad[0]!r} is not float", where)


# ----------------------------------------------------------------------------- tables
def write_table(df: pd.DataFrame, path: str | Path, provenance: Provenance) -> Path:
    """Check ``df`` against its kind's schema and write it atomically with provenance metadata."""
    path = Path(path)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if "spot_id" in table.schema.names and pa.types.is_null(table.schema.field("spot_id").type):
        # an empty object column has no type to infer: spot ids are strings, even when there are none
        table = table.set_column(table.schema.get_field_index("spot_id"), "spot_id", table["spot_id"].cast(pa.string()))
    _check_schema(table.schema, provenance.kind, path)
    if "spot_id" in table.schema.names:
        ids = df["spot_id"]
        if ids.isna().any():
            raise SencaError("spot_id has missing values", path)
        if provenance.kind not in ("markers",) and ids.duplicated().any():
            raise SencaError(f"duplicated spot id {ids[ids.duplicated()].iloc[0]!r}", path)
    table = table.replace_schema_metadata(_with_provenance(table.schema, provenance))
    with atomic_path(path) as tmp:
        # page CRCs: a flipped bit in the data is refused on read instead of read back as another number
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, **_PARQUET_OPTIONS)
    return path


def _with_provenance(schema: pa.Schema, provenance: Provenance) -> dict[bytes, bytes]:
    """``schema``'s metadata plus senca's provenance JSON and its footer digest."""
    metadata = dict(schema.metadata or {})
    metadata[META_KEY] = json.dumps(provenance.to_json(), sort_keys=True).encode()
    metadata[META_DIGEST_KEY] = _footer_digest(metadata[META_KEY], schema.names)
    return metadata


def matrix_row_group(n_columns: int) -> int:
    """Rows per row group of a wide float table: ~``MATRIX_GROUP_VALUES`` values, at most ``ROW_GROUP_SIZE`` rows."""
    return int(max(1, min(ROW_GROUP_SIZE, MATRIX_GROUP_VALUES // max(n_columns, 1))))


def write_matrix_table(spot_ids: Sequence[str], columns: Sequence[str], matrix: Any, path: str | Path,
                       provenance: Provenance) -> Path:
    """Write ``spot_id`` + one float32 column per matrix column, one row group at a time, atomically.

    Why not :func:`write_table`: a 10^5-spot slide's patch features (1280 columns) or HVG matrix
    would exist three times over (the matrix, a DataFrame, an Arrow table). Here only ``matrix``
    (a dense array, or a scipy sparse matrix densified one row group at a time) and one row group
    of ~``MATRIX_GROUP_VALUES`` values exist at once. The file reads back with :func:`read_table`
    like any other (schema, provenance and duplicate spot ids are checked the same way).
    """
    path = Path(path)
    ids = pd.Series(list(spot_ids), dtype=object)
    if ids.isna().any():
        raise SencaError("spot_id has missing values", path)
    if ids.duplicated().any():
        raise SencaError(f"duplicated spot id {ids[ids.duplicated()].iloc[0]!r}", path)
    columns = [str(c) for c in columns]
    if matrix.shape != (len(ids), len(columns)):
        raise ValueError(f"matrix is {matrix.shape}, expected {len(ids)} spots x {len(columns)} columns")
    schema = pa.schema([pa.field("spot_id", pa.string())] + [pa.field(c, pa.float32()) for c in columns])
    _check_schema(schema, provenance.kind, path)
    schema = schema.with_metadata(_with_provenance(schema, provenance))
    step = matrix_row_group(len(columns))
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, **_PARQUET_OPTIONS) as writer:
        for start in range(0, max(len(ids), 1), step):
            block = matrix[start:start + step]
            block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
            by_column = np.ascontiguousarray(block.T, dtype=np.float32)  # one contiguous row per column
            arrays = [pa.array(ids.iloc[start:start + step], type=pa.string())]
            arrays += [pa.array(by_column[i]) for i in range(len(columns))]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=step)
    return path


def _footer_digest(meta_json: bytes, names: Sequence[str]) -> bytes:
    """sha256 of the provenance JSON and the column names: what page CRCs do not cover in the footer."""
    digest = hashlib.sha256(meta_json)
    for name in names:
        digest.update(b"\0" + name.encode("utf-8", "surrogatepass"))
    return digest.hexdigest().encode()


def read_meta(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Provenance of an artifact, refusing files senca did not write or an incompatible format."""
    path = Path(path)
    if not path.exists():
        raise SencaError("file not found", path)
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise SencaError(f"not a readable Parquet file ({type(exc).__name__}: {exc})", path) from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise SencaError("not a senca artifact (no senca metadata)", path)
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise SencaError("damaged senca metadata (not a JSON object)", path)
    check_format(meta, path)
    digest = (schema.metadata or {}).get(META_DIGEST_KEY)
    if digest is not None and digest != _footer_digest(raw, schema.names):
        raise SencaError("damaged file footer (senca metadata or column names do not match their sha256)", path)
    if kind is not None and meta.get("kind") != kind:
        raise SencaError(f"expected a {kind} artifact, found {meta.get('kind')!r}", path)
    return meta


def check_format(meta: Mapping[str, Any], path: str | Path) -> None:
    """Refuse artifacts written in another artifact format (an incompatible senca version)."""
    if str(meta.get("format")) != ARTIFACT_FORMAT:
        raise SencaError(
            f"written by senca {meta.get('senca_version', '?')} in artifact format {meta.get('format')!r}; "
            f"this senca {__version__} reads format {ARTIFACT_FORMAT!r}: rerun the stage that made it",
            path,
        )


def h5ad_provenance(adata: Any, path: str | Path) -> dict[str, Any] | None:
    """The senca provenance an ``.h5ad`` carries in ``uns['senca']`` (None if it has none), format-checked,
    so an ``.h5ad`` written by an incompatible senca is refused like any other artifact."""
    raw = adata.uns.get("senca")
    try:
        meta = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        return None
    check_format(meta, path)
    return meta


def read_h5ad_for_spots(path: str | Path, spot_ids: Sequence[str]) -> tuple[Any, dict[str, Any] | None]:
    """An ``.h5ad`` restricted to (and ordered as) ``spot_ids``, with its senca provenance (or None).

    Refuses a missing or unreadable file, an ``.h5ad`` written by an incompatible senca, spots absent
    from ``obs`` (naming one) and a matrix with no genes.
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise SencaError("file not found", path)
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a bad file
        raise SencaError(f"not a readable .h5ad ({type(exc).__name__}: {exc})", path) from None
    meta = h5ad_provenance(adata, path)
    wanted = pd.Index([str(s) for s in spot_ids])
    missing = wanted.difference(adata.obs_names, sort=False)
    if len(missing):
        raise SencaError(f"{len(missing)} spot(s) are not in obs, e.g. spot {missing[0]!r}", path)
    adata = adata[wanted.to_numpy()].copy()
    if adata.n_vars == 0:
        raise SencaError("no genes", path)
    return adata, meta


def read_table(path: str | Path, kind: str, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read an artifact of ``kind``: (DataFrame, provenance), with schema and format checked.

    Wide float tables (patch features, the HVG matrix: more than ``WIDE_TABLE_COLUMNS`` columns) are
    read row group by row group into one float matrix that backs the DataFrame (see
    :func:`_read_wide`), so a 10^5-spot slide's features are held once, not three times.
    """
    path = Path(path)
    meta = read_meta(path, kind)
    if columns is None and SCHEMAS.get(kind, {}).get("*") in ("emb", "genes"):
        schema = pq.read_schema(path)
        if len(schema.names) > WIDE_TABLE_COLUMNS:
            _check_schema(schema, kind, path)
            return _read_wide(path, schema), meta
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None,
                              page_checksum_verification=True)
    except Exception as exc:
        raise SencaError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
    if columns is None:
        _check_schema(table.schema, kind, path)
    try:
        frame = table.to_pandas()
    except Exception as exc:  # damaged pandas metadata (JSON, keys) in the footer
        raise SencaError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
    if list(map(str, frame.columns)) != table.column_names:  # pandas metadata renamed a column
        raise SencaError("damaged file footer (pandas metadata does not match the columns)", path)
    return frame, meta


def _read_wide(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """``spot_id`` plus float columns, filled row group by row group into one (columns x rows) array.

    The DataFrame's float columns are views of that one array (a single pandas block), so
    ``frame.drop(columns="spot_id").to_numpy()`` needs no further copy. Arrow's memory pool only
    ever holds one row group.
    """
    names = [n for n in schema.names if n != "spot_id"]
    wide = np.float32 if all(pa.types.is_float32(schema.field(n).type) for n in names) else np.float64
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        n_rows = parquet.metadata.num_rows
        values = np.empty((len(names), n_rows), dtype=wide)
        ids = np.empty(n_rows, dtype=object)
        row = 0
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            size = table.num_rows
            if "spot_id" in schema.names:
                ids[row:row + size] = table.column("spot_id").to_numpy(zero_copy_only=False)
            for j, name in enumerate(names):
                values[j, row:row + size] = table.column(name).to_numpy(zero_copy_only=False)
            row += size
            del table
    except Exception as exc:  # pyarrow raises several types for a damaged page
        raise SencaError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
    frame = pd.DataFrame(values.T, columns=pd.Index(names, dtype=object), copy=False)
    if "spot_id" in schema.names:
        frame.insert(schema.names.index("spot_id"), "spot_id", ids)
    return frame


def is_complete(path: str | Path, kind: str, inputs: Mapping[str, str] | None = None) -> bool:
    """True when ``path`` is a valid artifact of ``kind`` made from exactly ``inputs`` (for resume)."""
    try:
        meta = read_meta(path, kind)
    except SencaError:
        return False
    return inputs is None or meta.get("inputs") == dict(inputs)


def check_made_from(meta: Mapping[str, Any], artifact: str | Path, name: str, path: str | Path,
                    checksum: str | None = None) -> None:
    """Refuse ``artifact`` when its provenance records a different ``name`` input than the file ``path``.

    Stages run standalone (Nextflow, by hand) are handed files that must chain: embeddings made from
    this spots file, patches from this spots file, clusters from this ``.h5ad``. A recorded sha256 that
    differs from the file given means one of them is stale (left from an earlier run, or another
    slide's); mixing them would silently give wrong results. Artifacts that record no checksum for
    ``name`` (made outside senca's stages) are not checked. ``checksum`` saves re-hashing ``path``.
    """
    recorded = (meta.get("inputs") or {}).get(name)
    if recorded is None:
        return
    actual = checksum or file_checksum(path)
    if recorded != actual:
        raise SencaError(
            f"was made from another {name} file than {path} (recorded sha256 {recorded[:12]}..., given "
            f"{actual[:12]}...): one of them is stale; rerun the stages after the one that wrote {Path(path).name}",
            artifact,
        )


# ----------------------------------------------------------------------------- embeddings
def embedding_frame(spot_ids: Sequence[str], matrix: np.ndarray, view: np.ndarray | None = None) -> pd.DataFrame:
    """A table of ``spot_id`` plus float32 columns ``emb_0..emb_{d-1}`` (and ``view_0..view_{m-1}`` when given)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    columns = {f"{EMB_PREFIX}{i}": matrix[:, i] for i in range(matrix.shape[1])}
    if view is not None:
        view = np.asarray(view, dtype=np.float32)
        if view.shape[0] != matrix.shape[0]:
            raise ValueError(f"view has {view.shape[0]} rows for {matrix.shape[0]} spots")
        columns.update({f"{VIEW_PREFIX}{i}": view[:, i] for i in range(view.shape[1])})
    return pd.DataFrame({"spot_id": pd.Series(list(spot_ids), dtype=str), **columns})


def embedding_matrix(df: pd.DataFrame, prefix: str = EMB_PREFIX) -> np.ndarray:
    """The ``{prefix}*`` columns (``emb_*``, or ``view_*``) of a table as a float32 (spots x d) matrix, in column order.

    Filled column by column, so no intermediate DataFrame of the selected columns is made.
    """
    names = [c for c in df.columns if c.startswith(prefix)]
    names.sort(key=lambda c: int(c[len(prefix):]))
    out = np.empty((len(df), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = df[name].to_numpy()
    return out


def align_to_spots(df: pd.DataFrame, spot_ids: Sequence[str], where: str | Path) -> pd.DataFrame:
    """Reorder ``df`` to ``spot_ids``; a spot missing from ``df`` is an error that names it.

    Already in that order (what senca's own stages write): ``df`` itself, no copy.
    """
    if len(df) == len(spot_ids) and df["spot_id"].astype(str).tolist() == [str(s) for s in spot_ids]:
        return df
    indexed = df.set_index("spot_id")
    missing = pd.Index(spot_ids).difference(indexed.index)
    if len(missing):
        raise SencaError(f"{len(missing)} spot(s) missing, e.g. spot {missing[0]!r}", where)
    return indexed.loc[list(spot_ids)].reset_index()


# ----------------------------------------------------------------------------- other files
def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (tensors, dicts and plain values only: loadable with weights_only).

    torch names the zip's root folder after the file it writes to (here a random temporary name);
    saving through a file handle makes it the constant ``archive``, so identical models give identical
    bytes.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as exc:  # torch's zip writer turns a failed write (ENOSPC) into a RuntimeError
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            if "write" not in str(exc).lower():
                raise
            raise OSError(f"torch.save failed: {str(exc).splitlines()[0]}") from None
    return Path(path)


def load_torch(path: str | Path) -> Any:
    import torch

    path = Path(path)
    if not path.exists():
        raise SencaError("file not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SencaError(f"not a loadable PyTorch file ({type(exc).__name__}: {exc})", path) from None


def write_h5ad(adata: Any, path: str | Path) -> Path:
    """Write an AnnData atomically (gzip-compressed), with senca provenance in ``uns['senca']``.

    Why gzip level 1: any HDF5 reader (h5py, R's rhdf5, anndataR) opens it like scanpy's own gzip files,
    and level 1 keeps 96 % of level 4's saving at 60 % of its time (docs/scaling.md, session 22).
    """
    with atomic_path(path) as tmp, _h5py_teardown_quiet():
        try:
            adata.write_h5ad(tmp, compression="gzip", compression_opts=H5AD_GZIP_LEVEL)
        except (OSError, RuntimeError) as exc:
            # h5py's objects of the failed file live on in the traceback's frames; released later they
            # print one "Exception ignored" traceback each (and HDF5 may crash on them): free them now,
            # while the hook below keeps them quiet
            reason = os_error_reason(exc)
            traceback.clear_frames(exc.__traceback__)
            del exc
            _close_h5py_files(tmp)
            raise OSError(errno.ENOSPC if "No space" in reason else errno.EIO, reason) from None
    return Path(path)


def _close_h5py_files(path: Path) -> None:
    """Close every HDF5 handle still open on ``path`` (a write that failed half-way leaves them open;
    left to interpreter shutdown, HDF5 tries to flush them to the full disk and may crash)."""
    import h5py

    gc.collect()
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        with contextlib.suppress(Exception):
            if Path(fid.name.decode() if isinstance(fid.name, bytes) else fid.name) == path:
                h5py.File(fid).close()
    gc.collect()


@contextlib.contextmanager
def _h5py_teardown_quiet() -> Iterator[None]:
    """Silence h5py's reports while a failed file's objects are released.

    Cython prints an error raised in ``ObjectID.__dealloc__`` twice: the traceback through
    ``sys.excepthook``, then "Exception ignored in ..." through ``sys.unraisablehook``. Both hooks
    drop reports that come from h5py (and pass any other on) for the duration of the write.
    """
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def from_h5py(*parts: Any) -> bool:
        tb = parts[-1]
        while tb is not None:
            if "h5py" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        return any("h5py" in repr(part) for part in parts[:-1])

    def unraisable(report: Any) -> None:
        if not from_h5py(report.object, report.exc_value, report.exc_traceback):
            previous_unraisable(report)

    def excepthook(kind: Any, value: Any, tb: Any) -> None:
        if not from_h5py(kind, value, tb):
            previous_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    try:
        yield
    except BaseException:
        gc.collect()  # release the failed file's objects while the hooks still drop their reports
        raise
    finally:  # a write that succeeded leaves nothing to release: no collection (#20; ~0.1 s per file)
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically and close it (PNG metadata stripped for reproducibility)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png",
                    metadata={"Software": None} if str(path).endswith(".png") else None)
    plt.close(fig)
    return Path(path)
