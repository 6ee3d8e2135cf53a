"""Readers for the three kinds of slide users have, into one in-memory shape (:class:`RawSlide`).

* Space Ranger ``outs/``: ``filtered_feature_bc_matrix.h5`` (scanpy's 10x reader),
  ``spatial/tissue_positions.parquet|.csv`` (Space Ranger >= 2, header) or ``tissue_positions_list.csv``
  (1.x, no header), ``scalefactors_json.json`` and the hires/lowres PNGs;
* an ``.h5ad`` with ``obsm['spatial']`` (and optionally ``uns['spatial']`` images);
* a legacy ST slide: a spots x genes counts table whose spot ids are ``XxY`` array coordinates, and a
  spot file with ``x``, ``y``, ``pixel_x``, ``pixel_y``.

Every reader checks what it reads and raises :class:`SencaError` naming the file and the column or spot.
Pixel coordinates are always returned in the frame of the image the slide will use (see
:func:`choose_image`), so later stages never rescale.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from senca.errors import SencaError
from senca.io.samplesheet import SlideSpec

log = logging.getLogger("senca")

_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


@dataclass
class ImageInfo:
    """Which H&E image the slide uses, how its pixel coordinates were scaled into it, and why it was chosen.

    ``choice`` is what was asked (``auto``, ``hires``, ``lowres``, ``none``), ``reason`` one sentence on
    why this image (or none) is used, ``qc`` what image QC measured on it, ``rejected`` the images
    passed over and what QC found on each: all recorded in every artifact and shown in the report.
    """

    path: Path | None = None
    source: str = "none"  # samplesheet | fullres | hires | lowres | h5ad:<key> | none
    scale: float = 1.0  # pixel = original coordinate * scale
    array: np.ndarray | None = None  # an image held inside an .h5ad (written out by preprocess)
    choice: str = "auto"
    reason: str = "no image given or found"
    qc: dict[str, Any] | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "source": self.source, "scale": self.scale,
                "choice": self.choice, "reason": self.reason, "qc": self.qc, "rejected": list(self.rejected)}


@dataclass
class RawSlide:
    """A slide as read: raw counts (spots x genes), coordinates, image choice and optional labels."""

    sample: str
    platform: str  # st | visium | h5ad
    counts: sp.csr_matrix
    spot_ids: list[str]
    genes: list[str]
    coords: pd.DataFrame  # index spot_id; pixel_x, pixel_y, array_row, array_col
    image: ImageInfo = field(default_factory=ImageInfo)
    labels: pd.Series | None = None  # index spot_id; NaN where unlabelled
    inputs: dict[str, Path] = field(default_factory=dict)  # name -> file, for checksums
    normalised: bool = False  # the user said the values are already log-normalised: preprocess must not redo it

    @property
    def n_spots(self) -> int:
        return self.counts.shape[0]


# ----------------------------------------------------------------------------- helpers
def _read_table(path: Path, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV/TSV (optionally gzipped), sniffing the separator; errors name the file."""
    name = path.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else None
    try:
        if sep is None:
            with _open_text(path) as handle:
                first = handle.readline()
            sep = "\t" if "\t" in first else ("," if "," in first else r"\s+")
        if sep == r"\s+":
            return pd.read_csv(path, sep=sep, engine="python", **kwargs)
        # low_memory=False: one pass over whole columns instead of chunks whose dtypes are merged after;
        # the same values, and a 15,000-gene legacy-ST counts table (613 spots) reads in 1.0 s, not 1.9 s
        return pd.read_csv(path, sep=sep, engine="c", low_memory=False, **kwargs)
    except (EOFError, OSError, UnicodeDecodeError) as exc:
        raise SencaError(f"cannot read ({type(exc).__name__}: {exc})", path) from None
    except pd.errors.EmptyDataError:
        raise SencaError("file is empty", path) from None
    except pd.errors.ParserError as exc:
        raise SencaError(f"malformed table ({str(exc).splitlines()[0]})", path) from None


def _open_text(path: Path):
    import gzip

    return gzip.open(path, "rt") if path.name.endswith(".gz") else open(path, encoding="utf-8", errors="replace")


def _raw_header(path: Path) -> list[str]:
    """Column names exactly as written (pandas would rename a duplicate ``G`` to ``G.1``)."""
    with _open_text(path) as handle:
        first = handle.readline().rstrip("\r\n")
    sep = "\t" if "\t" in first else ("," if "," in first else None)
    return [name.strip().strip('"') for name in first.split(sep)]


MAX_LISTED_COLUMNS = 8  # an error lists at most this many column names (a counts table has 10^4)


def column_list(columns: Any) -> str:
    """Column names for an error message, capped: pointing ``positions`` at a counts table must not
    print its 15,000 gene names."""
    names = list(map(str, columns))
    shown = ", ".join(names[:MAX_LISTED_COLUMNS])
    return shown + (f", ... ({len(names) - MAX_LISTED_COLUMNS} more)" if len(names) > MAX_LISTED_COLUMNS else "")


def _numeric_column(df: pd.DataFrame, column: str, path: Path, header_lines: int = 1) -> np.ndarray:
    """``df[column]`` as floats; a bad value is named with the file's own row number.

    Rows are counted as the samplesheet's errors count them: the file's line number (the header is
    line 1), so "row 5" is what a user sees on line 5 in an editor. Tables indexed by spot (barcode)
    name the spot instead.
    """
    if column not in df.columns:
        raise SencaError(f"missing column {column!r} (has: {column_list(df.columns)})", path)
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any() or values.isna().any():
        first = df.index[(bad | values.isna()).to_numpy()][0]
        where = (f"row {int(first) + 1 + header_lines}" if pd.api.types.is_integer_dtype(df.index)
                 else f"spot {first!r}")
        raise SencaError(f"column {column!r} has a non-numeric value {df.loc[first, column]!r} ({where})", path)
    return values.to_numpy(dtype=np.float64)


def _check_counts(counts: sp.csr_matrix, spot_ids: list[str], genes: list[str], path: Path,
                  normalised: bool = False) -> None:
    """Refuse empty matrices, NaN/negative or non-integer counts and duplicated spot or gene names.

    Non-integer values are refused because senca normalises and log-transforms the counts itself:
    already normalised values would be normalised twice (auto k then lands at the top of its range)
    and no error would say so. ``normalised`` (the user's ``--normalised``) accepts them, and
    preprocess then skips its normalisation and records that it did.
    """
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise SencaError(f"empty count matrix ({counts.shape[0]} spots x {counts.shape[1]} genes)", path)
    data = counts.data

    def spot_of(bad: np.ndarray) -> str:
        row = int(np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))[bad][0])
        column = int(counts.indices[bad][0])
        return f"spot {spot_ids[row]!r}, gene {genes[column]!r}" if column < len(genes) else f"spot {spot_ids[row]!r}"

    if data.size and not np.all(np.isfinite(data)):
        raise SencaError(f"non-finite count at {spot_of(~np.isfinite(data))}", path)
    if data.size and data.min() < 0:
        what = ("negative value (senca needs log-normalised values, not scaled ones)" if normalised
                else "negative count")
        raise SencaError(f"{what} at {spot_of(data < 0)} ({data[data < 0][0]:g})", path)
    if data.size and not normalised:
        fractional = data != np.round(data)
        if fractional.any():
            raise SencaError(f"non-integer count at {spot_of(fractional)} ({data[fractional][0]:g}): senca needs "
                             "raw counts (it normalises them itself); if the data are already normalised, pass "
                             "--normalised", path)
    ids = pd.Index(spot_ids)
    if ids.has_duplicates:
        raise SencaError(f"duplicated spot id {ids[ids.duplicated()][0]!r}", path)
    gene_index = pd.Index(genes)
    if gene_index.has_duplicates:
        raise SencaError(f"duplicated gene name {gene_index[gene_index.duplicated()][0]!r}", path)


# ----------------------------------------------------------------------------- legacy ST
MAX_SILENT_DROP_FRACTION = 0.05
"""Counts spots without a position above this fraction are dropped with a warning, not an info line:
HER2ST's spot files leave out a few spots by design; dropping a third means another slide's file."""

def st_spot_id(x: Any, y: Any) -> pd.Index:
    """Legacy-ST spot ids ``XxY`` from (possibly refined, fractional) array coordinates."""
    xs = np.rint(np.asarray(x, dtype=float)).astype(int)
    ys = np.rint(np.asarray(y, dtype=float)).astype(int)
    return pd.Index([f"{a}x{b}" for a, b in zip(xs, ys, strict=True)])


def read_legacy_st(counts_path: Path, positions_path: Path, normalised: bool = False,
                   ) -> tuple[sp.csr_matrix, list[str], list[str], pd.DataFrame]:
    """Counts (spots x genes, ``XxY`` ids) joined to the spot file's pixel coordinates."""
    table = _read_table(counts_path, index_col=0)
    table.index = table.index.astype(str)
    genes = _raw_header(counts_path)[-table.shape[1]:] if table.shape[1] else []  # pandas renames duplicates
    # a column-by-column to_numeric costs 1.6 s on a 15,000-gene slide: only for columns pandas did not parse as numbers
    has_text_columns = any(dtype.kind not in "biuf" for dtype in table.dtypes)
    values = table.apply(pd.to_numeric, errors="coerce") if has_text_columns else table
    if values.isna().to_numpy().any():
        r, c = np.argwhere(values.isna().to_numpy())[0]
        value = table.iat[r, c]
        what = "missing (empty or NaN) count" if pd.isna(value) else f"non-numeric count {value!r}"
        raise SencaError(f"{what} at spot {table.index[r]!r}, gene {genes[c]!r}", counts_path)
    counts = sp.csr_matrix(values.to_numpy(dtype=np.float32))
    spot_ids = list(table.index)
    _check_counts(counts, spot_ids, genes, counts_path, normalised)

    spots = _read_table(positions_path)
    for column in ("x", "y", "pixel_x", "pixel_y"):
        _numeric_column(spots, column, positions_path)
    if "selected" in spots.columns:
        spots = spots[pd.to_numeric(spots["selected"], errors="coerce").fillna(0) > 0]
    spots = spots.copy()
    spots.index = st_spot_id(spots["x"], spots["y"])
    if spots.index.has_duplicates:
        raise SencaError(f"two spots share array position {spots.index[spots.index.duplicated()][0]!r}", positions_path)
    common = pd.Index(spot_ids).intersection(spots.index, sort=False)
    if len(common) == 0:
        raise SencaError(
            f"no spot in common with the counts {counts_path.name} (counts ids like {spot_ids[0]!r}, "
            f"positions give {spots.index[0] if len(spots) else 'none'!r})",
            positions_path,
        )
    dropped = len(spot_ids) - len(common)
    if dropped > MAX_SILENT_DROP_FRACTION * len(spot_ids):
        log.warning("%s: %d of %d spots (%.0f%%) have no position in %s and are dropped: is this the slide's own "
                    "spot file?", counts_path.name, dropped, len(spot_ids), 100 * dropped / len(spot_ids),
                    positions_path.name)
    elif dropped:
        log.info("%s: %d spot(s) without a position dropped", counts_path.name, dropped)
    rows = pd.Index(spot_ids).get_indexer(common)
    coords = pd.DataFrame(
        {
            "pixel_x": spots.loc[common, "pixel_x"].astype(float).to_numpy(),
            "pixel_y": spots.loc[common, "pixel_y"].astype(float).to_numpy(),
            "array_row": spots.loc[common, "y"].astype(float).to_numpy(),
            "array_col": spots.loc[common, "x"].astype(float).to_numpy(),
        },
        index=common,
    )
    return counts[rows], list(common), genes, coords


# ----------------------------------------------------------------------------- Space Ranger
def _positions_file(spatial: Path) -> Path:
    for name in ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv"):
        if (spatial / name).exists():
            return spatial / name
    raise SencaError("no tissue_positions.parquet, tissue_positions.csv or tissue_positions_list.csv", spatial)


def read_tissue_positions(path: Path) -> pd.DataFrame:
    """Space Ranger spot positions, with or without header (1.x), CSV or Parquet; index barcode."""
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as exc:
            raise SencaError(f"cannot read ({type(exc).__name__})", path) from None
    else:
        with _open_text(path) as handle:
            first = handle.readline()
        has_header = first.lower().startswith("barcode")
        table = _read_table(path, header=0 if has_header else None)
        if not has_header:
            if table.shape[1] != len(_POSITION_COLUMNS):
                raise SencaError(f"expected {len(_POSITION_COLUMNS)} columns {_POSITION_COLUMNS}, found {table.shape[1]}", path)
            table.columns = _POSITION_COLUMNS
    missing = [c for c in _POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise SencaError(f"missing column(s) {', '.join(missing)}", path)
    table["barcode"] = table["barcode"].astype(str)
    table = table.set_index("barcode")
    for column in _POSITION_COLUMNS[1:]:
        table[column] = _numeric_column(table, column, path)
    return table


def _scalefactors(spatial: Path) -> dict[str, float]:
    path = spatial / "scalefactors_json.json"
    if not path.exists():
        return {}
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError) as exc:
        raise SencaError(f"not valid scale-factor JSON ({exc})", path) from None


VISIUM_IMAGES = {"hires": ("tissue_hires_image.png", "tissue_hires_scalef"),
                 "lowres": ("tissue_lowres_image.png", "tissue_lowres_scalef")}


def visium_image_candidates(spatial: Path, image: Path | None, factors: dict[str, float],
                            choice: str = "auto") -> list[ImageInfo]:
    """The images a Space Ranger folder offers, best first: the samplesheet's (full-res) > hires > lowres.

    A samplesheet ``image`` that *is* one of the folder's own PNGs is that image, in its own frame
    (scaled by its scale factor), not a full-resolution image. ``choice`` ``hires`` / ``lowres`` keeps
    only that one (an error when the folder lacks it); ``none`` keeps none.
    """
    if choice == "none":
        return []
    if image is not None:
        for source, (name, _) in VISIUM_IMAGES.items():
            if image.name == name and image.resolve().parent == spatial.resolve():
                choice = source  # the folder's own PNG: its frame is the PNG's, not full resolution
                break
        else:
            return [ImageInfo(image, "samplesheet", 1.0, choice=choice)]
    found = []
    for source, (name, key) in VISIUM_IMAGES.items():
        if choice not in ("auto", source):
            continue
        if not (spatial / name).exists():
            if choice == source:
                raise SencaError(f"image {source} was asked for, but this Space Ranger folder has no {name}", spatial)
            continue
        if key not in factors:
            raise SencaError(f"{name} present but {key} missing", spatial / "scalefactors_json.json")
        found.append(ImageInfo(spatial / name, source, factors[key], choice=choice))
    return found


def choose_visium_image(spatial: Path, image: Path | None, factors: dict[str, float], choice: str = "auto") -> ImageInfo:
    """The folder's preferred image before QC (samplesheet > hires > lowres > none): the order main.nf
    stages images in. The image a slide really uses also passes QC: see :func:`choose_image`."""
    candidates = visium_image_candidates(spatial, image, factors, choice)
    return candidates[0] if candidates else ImageInfo(choice=choice)


def choose_image(candidates: list[ImageInfo], xy_fullres: np.ndarray, choice: str, where: Path) -> ImageInfo:
    """The first candidate image that passes image QC (:func:`senca.images.image_qc`), else image-less.

    Each image QC rejects gets one warning naming the file and what was found, and is recorded with
    the reason in ``rejected``; the choice and its reason go into every artifact. An image chosen
    explicitly (``hires`` / ``lowres``) is used even when QC objects, with the warning: the user asked.
    """
    from senca.graph import median_spot_pitch
    from senca.images import image_qc, qc_thumbnail

    if choice == "none":
        return ImageInfo(choice="none", reason="image: none was chosen (the slide runs image-less)")
    rejected: list[dict[str, Any]] = []
    finite = xy_fullres[np.isfinite(xy_fullres).all(axis=1)]
    pitch_full = median_spot_pitch(finite) if len(finite) > 1 else None
    for info in candidates:
        if info.array is not None:
            pixels = np.asarray(info.array)
            if pixels.dtype != np.uint8:
                pixels = np.clip(pixels * (255.0 if pixels.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            size = (pixels.shape[1], pixels.shape[0])
        else:
            assert info.path is not None
            pixels, size = qc_thumbnail(info.path)
        qc = image_qc(pixels, xy_fullres * info.scale, None if pitch_full is None else pitch_full * info.scale, size)
        info.qc = qc.to_json()
        name = info.path.name if info.path is not None else info.source
        explicit = info.choice != "auto"
        if qc.ok:
            info.reason = (f"{info.source} image chosen explicitly" if explicit else
                           f"best image that passed QC ({info.source})")
            if rejected:
                info.reason += "; rejected: " + "; ".join(f"{r['source']} ({r['problem']})" for r in rejected)
            info.rejected = rejected
            return info
        if explicit:
            log.warning("%s: %s; used anyway because image %s was chosen explicitly", info.path or where,
                        qc.problem, info.choice)
            info.reason = f"{info.source} image chosen explicitly although QC found: {qc.problem}"
            return info
        rejected.append({"path": None if info.path is None else str(info.path), "source": info.source,
                         "problem": qc.problem})
        following = candidates[candidates.index(info) + 1:]
        fallback = (following[0].path.name if following[0].path is not None else following[0].source) if following \
            else "no image (the slide runs image-less)"
        log.warning("%s: %s; falling back to %s", info.path or f"{where} ({name})", qc.problem, fallback)
    if not rejected:
        return ImageInfo(choice=choice)
    reason = "every image failed QC: " + "; ".join(f"{r['source']} ({r['problem']})" for r in rejected)
    return ImageInfo(choice=choice, reason=reason, rejected=rejected)


def read_spaceranger(outs: Path, image: Path | None = None, image_choice: str = "auto", normalised: bool = False,
                     ) -> tuple[sp.csr_matrix, list[str], list[str], pd.DataFrame, ImageInfo, dict[str, Path]]:
    """A Space Ranger ``outs/`` folder: in-tissue spots with counts and coordinates."""
    import scanpy as sc

    matrix = outs / "filtered_feature_bc_matrix.h5"
    if not matrix.exists():
        raise SencaError("no filtered_feature_bc_matrix.h5 in this Space Ranger outs/ folder", outs)
    try:
        adata = sc.read_10x_h5(matrix)
    except Exception as exc:
        raise SencaError(f"not a readable 10x HDF5 matrix ({type(exc).__name__}: {exc})", matrix) from None
    adata.var_names_make_unique()  # 10x symbol duplicates are expected; Space Ranger's own convention
    spatial = outs / "spatial"
    positions_path = _positions_file(spatial)
    positions = read_tissue_positions(positions_path)
    positions = positions[positions["in_tissue"] > 0]
    common = adata.obs_names.intersection(positions.index, sort=False)
    if len(common) == 0:
        raise SencaError(f"no barcode in common with {matrix.name}", positions_path)
    adata = adata[common]
    factors = _scalefactors(spatial)
    pos = positions.loc[common]
    fullres = np.column_stack([pos["pxl_col_in_fullres"].to_numpy(float), pos["pxl_row_in_fullres"].to_numpy(float)])
    info = choose_image(visium_image_candidates(spatial, image, factors, image_choice), fullres, image_choice, outs)
    if info.source == "lowres" and info.choice == "auto" and not info.rejected:
        log.warning("%s: no full-resolution or hires image; using the lowres image (%s)", spatial, info.path.name)
    coords = pd.DataFrame(
        {
            "pixel_x": pos["pxl_col_in_fullres"].to_numpy(float) * info.scale,
            "pixel_y": pos["pxl_row_in_fullres"].to_numpy(float) * info.scale,
            "array_row": pos["array_row"].to_numpy(float),
            "array_col": pos["array_col"].to_numpy(float),
        },
        index=common,
    )
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    spot_ids, genes = list(map(str, common)), list(map(str, adata.var_names))
    _check_counts(counts, spot_ids, genes, matrix, normalised)
    return counts, spot_ids, genes, coords, info, {"matrix": matrix, "positions": positions_path}


# ----------------------------------------------------------------------------- h5ad
def read_h5ad_slide(path: Path, image: Path | None = None, image_choice: str = "auto", normalised: bool = False,
                    ) -> tuple[sp.csr_matrix, list[str], list[str], pd.DataFrame, ImageInfo]:
    """An ``.h5ad`` with ``obsm['spatial']``; raw counts from ``layers['counts']`` when present, else X."""
    import anndata as ad

    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:
        raise SencaError(f"not a readable .h5ad ({type(exc).__name__}: {exc})", path) from None
    if "spatial" not in adata.obsm:
        raise SencaError("no obsm['spatial'] coordinates", path)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise SencaError(f"obsm['spatial'] must be spots x 2, found shape {xy.shape}", path)
    if not np.all(np.isfinite(xy[:, :2])):
        bad = int(np.where(~np.isfinite(xy[:, :2]).all(axis=1))[0][0])
        raise SencaError(f"obsm['spatial'] has a non-finite coordinate at spot {adata.obs_names[bad]!r}", path)
    # raw counts live in layers['counts'] when present; --normalised: the log-normalised values in X
    x = adata.X if normalised else adata.layers.get("counts", adata.X)
    counts = sp.csr_matrix(x, dtype=np.float32)
    spot_ids, genes = list(map(str, adata.obs_names)), list(map(str, adata.var_names))
    try:
        _check_counts(counts, spot_ids, genes, path, normalised)
    except SencaError as exc:
        if "non-integer" in str(exc) and "counts" not in adata.layers:
            raise SencaError(f"{exc} (or put the raw counts in layers['counts'])") from None
        raise
    if image_choice == "none":
        candidates: list[ImageInfo] = []
    elif image is not None:
        candidates = [ImageInfo(image, "samplesheet", 1.0, choice=image_choice)]
    else:
        candidates = _h5ad_images(adata, image_choice, path)
    info = choose_image(candidates, xy[:, :2], image_choice, path)
    obs = adata.obs
    coords = pd.DataFrame(
        {
            "pixel_x": xy[:, 0] * info.scale,
            "pixel_y": xy[:, 1] * info.scale,
            "array_row": pd.to_numeric(obs["array_row"], errors="coerce").to_numpy(float) if "array_row" in obs else np.nan,
            "array_col": pd.to_numeric(obs["array_col"], errors="coerce").to_numpy(float) if "array_col" in obs else np.nan,
        },
        index=pd.Index(spot_ids),
    )
    return counts, spot_ids, genes, coords, info


def _h5ad_images(adata: Any, choice: str, path: Path) -> list[ImageInfo]:
    """The images Squidpy/Scanpy keep in ``uns['spatial'][library]``, best first (hires > lowres)."""
    libraries = adata.uns.get("spatial", {}) if isinstance(adata.uns.get("spatial"), dict) else {}
    found = []
    for library in libraries.values():
        images = library.get("images", {}) or {}
        factors = library.get("scalefactors", {}) or {}
        for key in ("hires", "lowres"):
            # a None entry is senca's own image-less .senca.h5ad (a key for Scanpy, no pixels): not an image
            if choice in ("auto", key) and images.get(key) is not None and f"tissue_{key}_scalef" in factors:
                found.append(ImageInfo(None, f"h5ad:{key}", float(factors[f"tissue_{key}_scalef"]),
                                       np.asarray(images[key]), choice=choice))
        if found:
            break
    if not found and choice in ("hires", "lowres"):
        raise SencaError(f"image {choice} was asked for, but uns['spatial'] holds no {choice} image with its "
                         f"tissue_{choice}_scalef", path)
    return found


# ----------------------------------------------------------------------------- labels
def read_labels(path: Path, spot_ids: list[str], coords: pd.DataFrame) -> pd.Series:
    """Ground-truth labels keyed by spot id (``barcode``/``spot_id``/first column) or by array x, y.

    Legacy-ST label files (``x``, ``y``, ``label``) join by rounding x, y to ``XxY`` ids; their pixel
    columns are in another image's frame and are never used. Rows for spots that do not exist are
    counted and logged; a file that matches no spot at all is an error (the wrong slide's labels).
    Labels such as ``undetermined``/``NA`` are kept as given; evaluation excludes them.
    """
    table = _read_table(path)
    columns = {c.lower(): c for c in map(str, table.columns)}
    label_column = columns.get("label") or columns.get("labels") or columns.get("ground_truth")
    if label_column is None:
        if table.shape[1] == 2:
            label_column = table.columns[1]
        else:
            raise SencaError("no 'label' column", path)
    if "x" in columns and "y" in columns:
        blank = table[columns["x"]].isna() | table[columns["y"]].isna()
        if blank.any():  # HER2ST F1/G2 have rows without coordinates: nothing to join them to
            log.info("%s: %d label row(s) without x/y coordinates ignored", path.name, int(blank.sum()))
            table = table[~blank]
        x = _numeric_column(table, columns["x"], path)
        y = _numeric_column(table, columns["y"], path)
        ids = st_spot_id(x, y)
    else:
        id_column = columns.get("barcode") or columns.get("spot_id") or columns.get("spot") or table.columns[0]
        ids = pd.Index(table[id_column].astype(str))
    labels = pd.Series(table[label_column].to_numpy(), index=ids).astype("string")
    if labels.index.has_duplicates:
        raise SencaError(f"spot {labels.index[labels.index.duplicated()][0]!r} is labelled twice", path)
    known = pd.Index(spot_ids)
    matched = labels.index.intersection(known)
    if len(matched) == 0:
        raise SencaError(f"no label row matches a spot of this slide (labels ids like {labels.index[0]!r}, spots like {spot_ids[0]!r})", path)
    extra = len(labels) - len(matched)
    if extra:
        log.info("%s: %d label row(s) name spots this slide does not have; ignored", path.name, extra)
    return labels.reindex(known)


# ----------------------------------------------------------------------------- dispatch
def read_slide(spec: SlideSpec) -> RawSlide:
    """Read the slide a samplesheet row describes, whatever its kind."""
    inputs: dict[str, Path] = {"data": spec.data}
    kind = spec.kind
    if kind == "st":
        assert spec.positions is not None
        counts, spot_ids, genes, coords = read_legacy_st(spec.data, spec.positions, spec.normalised)
        if spec.image_choice in ("hires", "lowres"):
            raise SencaError(f"image {spec.image_choice}: a legacy ST slide has no Space Ranger images; give the "
                             "H&E file, or none", spec.data)
        candidates = [ImageInfo(spec.image, "samplesheet", 1.0)] if spec.image is not None else []
        image = choose_image(candidates, coords[["pixel_x", "pixel_y"]].to_numpy(float), spec.image_choice,
                             spec.data)
        inputs["positions"] = spec.positions
        platform = "st"
    elif kind == "visium":
        counts, spot_ids, genes, coords, image, files = read_spaceranger(spec.data, spec.image, spec.image_choice, spec.normalised)
        inputs = files
        platform = "visium"
    else:
        counts, spot_ids, genes, coords, image = read_h5ad_slide(spec.data, spec.image, spec.image_choice, spec.normalised)
        platform = "h5ad"
    if image.path is not None:
        inputs["image"] = image.path
    n_spots = counts.shape[0]
    if spec.n_clusters is not None and spec.n_clusters > n_spots:  # caught here, not after training
        raise SencaError(f"n_clusters {spec.n_clusters} is more than the slide's {n_spots} spots", spec.data)
    labels = None
    if spec.labels is not None:
        labels = read_labels(spec.labels, spot_ids, coords)
        inputs["labels"] = spec.labels
    return RawSlide(spec.sample, platform, counts, spot_ids, genes, coords, image, labels, inputs, spec.normalised)
