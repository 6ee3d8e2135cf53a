"""Preprocess one slide (paper 3.1): genes filtered, normalised, log1p, HVGs, spatial kNN graph.

``preprocess_slide`` is the pure work; ``write_preprocess`` writes the four artifacts atomically:
``{s}.spots.parquet`` (coordinates, labels, image choice), ``{s}.expr.parquet`` (HVG matrix, the
model's input), ``{s}.graph.parquet`` (kNN edges) and ``{s}.h5ad`` (all kept genes, for markers);
``{s}.image.png`` when an ``.h5ad`` carries its own image, and on request (``--export-image``)
exactly one more file for runners that stage files between tasks: the image chosen after QC as
``{s}.chosen_image.<ext>``, or the marker ``{s}.chosen_image.none`` when the slide runs image-less.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from senca.errors import OutputError, SencaError, os_error_reason
from senca.graph import default_k, detect_grid_k, knn_edges, median_spot_pitch
from senca.io.artifacts import (
    Provenance,
    atomic_path,
    file_checksum,
    write_h5ad,
    write_matrix_table,
    write_table,
)
from senca.io.readers import RawSlide
from senca.residuals import PearsonResiduals

log = logging.getLogger("senca")

STAGE = "preprocess"
NORMALISE_TARGET = 1e4
MIN_GENES = 10  # fewer genes passing the filter: refused (see _check_slide_size)
# HVGs by platform (docs/method.md, "Preprocess"): the paper's 500 for legacy ST (HER2ST: 3,000 lowers Ward's
# ARI); 3,000 for Visium-like hexagonal grids, whose libraries keep layer markers far below the top 500
# (DLPFC 151673: ARI 0.25 -> 0.32), as SpaGCN and GraphST also use.
PLATFORM_N_HVG = {"st": 500, "visium": 3000}
# HVG flavour by platform (docs/method.md, "Preprocess"): the paper's normalised dispersion ("seurat") for legacy
# ST; Seurat v3's variance-stabilised ranking on the raw counts for Visium, as GraphST does (DLPFC: see method.md).
PLATFORM_HVG_FLAVOR = {"st": "seurat", "visium": "seurat_v3"}
HVG_FLAVORS = ("seurat", "seurat_v3")
# What expr.parquet holds for the HVGs (docs/method.md, round 12): the paper's log1p of counts per 10^4, or the
# analytic Pearson residuals of the HVG counts (senca.residuals), by platform
HVG_VALUES = ("log1p", "pearson_residuals")
PLATFORM_HVG_VALUES = {"st": "log1p", "visium": "pearson_residuals"}


def defaults_platform(platform: str, xy: np.ndarray) -> str:
    """Whose defaults a slide gets: ``st`` or ``visium``; an .h5ad slide is Visium-like on a hexagonal grid.

    Recorded in the spots metadata (``defaults_platform``), so a reader can tell which defaults applied.
    """
    if platform in PLATFORM_N_HVG:
        return platform
    return "visium" if detect_grid_k(xy) == 6 else "st"


@dataclass
class PreprocessParams:
    """The knobs of paper section 3.1 (defaults from section 4.1)."""

    n_hvg: int | None = None  # None: by platform (PLATFORM_N_HVG)
    min_gene_counts: int = 10
    k: int | None = None  # None: 4 for ST, 6 for Visium, detected for .h5ad
    hvg_flavor: str | None = None  # None: by platform (PLATFORM_HVG_FLAVOR); "seurat" is the paper's
    hvg_values: str | None = None  # None: by platform (PLATFORM_HVG_VALUES); "log1p" is the paper's

    def to_json(self) -> dict[str, Any]:
        return {"n_hvg": self.n_hvg, "min_gene_counts": self.min_gene_counts, "k": self.k,
                "normalise_target_sum": NORMALISE_TARGET, "hvg_flavor": self.hvg_flavor,
                "hvg_values": self.hvg_values}


@dataclass
class PreprocessResult:
    """One slide's preprocessed data, not yet written.

    The HVG matrix stays sparse (``hvg_matrix``, spots x ``hvg``) until it is written row group by
    row group: a dense copy of it at 3 x 10^5 spots would be 600 MB per copy.
    """

    sample: str
    spots: pd.DataFrame
    hvg: list[str]
    hvg_matrix: Any  # the HVGs' values (PreprocessResult.extra["hvg_values"]): sparse log1p, or PearsonResiduals
    graph: pd.DataFrame
    adata: Any  # anndata.AnnData
    extra: dict[str, Any] = field(default_factory=dict)
    image_array: np.ndarray | None = None  # an .h5ad-embedded image to write beside the artifacts

    @property
    def expr(self) -> pd.DataFrame:
        """The ``{s}.expr.parquet`` table as a DataFrame (dense: for small slides and inspection)."""
        dense = pd.DataFrame(self.hvg_matrix.toarray().astype(np.float32), columns=self.hvg)
        return pd.concat([self.spots[["spot_id"]], dense], axis=1)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header (no pixels decoded); errors name the file."""
    from senca.images import open_slide

    info = open_slide(path)
    return info.width, info.height


def _check_slide_size(n_spots: int, n_genes: int, k: int, params: PreprocessParams, data: Path | None) -> None:
    """Refuse slides too small to hold regions: fewer spots than a k-neighbour graph needs, or fewer than
    :data:`MIN_GENES` genes passing the filter (a one-column table is a broken export, not a slide)."""
    if n_spots < k + 1:
        raise SencaError(f"slide has {n_spots} spot(s); a {k}-neighbour graph needs at least {k + 1}", data)
    if n_genes < MIN_GENES:
        raise SencaError(f"only {n_genes} gene(s) have a total count >= {params.min_gene_counts}; senca needs at "
                         f"least {MIN_GENES} to find regions (is this the whole counts table?)", data)


def preprocess_slide(raw: RawSlide, params: PreprocessParams, n_clusters: int | None = None) -> PreprocessResult:
    """Filter genes, normalise, log1p, choose HVGs and build the kNN graph for one slide."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(
        X=raw.counts.astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(raw.spot_ids, name="spot_id")),
        var=pd.DataFrame(index=pd.Index(raw.genes, name="gene")),
    )
    n_genes_in = adata.n_vars
    sc.pp.filter_genes(adata, min_counts=params.min_gene_counts)
    if adata.n_vars == 0:
        raise SencaError(f"no gene has a total count >= {params.min_gene_counts}", raw.inputs.get("data"))
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    if (totals == 0).any():
        log.info("%s: %d spot(s) with no counts in kept genes dropped", raw.sample, int((totals == 0).sum()))
        adata = adata[totals > 0].copy()
    spot_ids = list(adata.obs_names)
    coords = raw.coords.loc[spot_ids]
    xy = coords[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    k = params.k or default_k(raw.platform, xy)
    _check_slide_size(len(spot_ids), adata.n_vars, k, params, raw.inputs.get("data") or raw.inputs.get("matrix"))
    adata.layers["counts"] = adata.X.copy()
    if raw.normalised:  # --normalised: the values are log-normalised already; normalising again would lie
        log.info("%s: values already normalised (--normalised): normalize_total and log1p skipped", raw.sample)
    else:
        sc.pp.normalize_total(adata, target_sum=NORMALISE_TARGET)
        sc.pp.log1p(adata)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    platform_defaults = defaults_platform(raw.platform, xy)  # the grid test is a ball-tree query: once
    wanted = params.n_hvg or PLATFORM_N_HVG[platform_defaults]
    n_hvg = min(wanted, adata.n_vars)
    if n_hvg < wanted:
        log.warning("%s: only %d genes pass the filter; using all as HVGs (asked for %d)", raw.sample, n_hvg, wanted)
    # seurat_v3 ranks raw counts: normalised input gets the paper's normalised dispersion unless asked otherwise
    flavor = params.hvg_flavor or ("seurat" if raw.normalised else PLATFORM_HVG_FLAVOR[platform_defaults])
    if n_hvg == adata.n_vars:
        adata.var["highly_variable"] = True
    else:
        flavor = select_hvgs(adata, flavor, n_hvg, raw.inputs.get("data"))
    hvg = adata.var_names[adata.var["highly_variable"].to_numpy()]
    graph = knn_edges(xy, k)

    labels = raw.labels.reindex(spot_ids) if raw.labels is not None else pd.Series(pd.NA, index=spot_ids, dtype="string")
    spots = pd.DataFrame(
        {
            "spot_id": pd.Series(spot_ids, dtype=str),
            "pixel_x": coords["pixel_x"].to_numpy(np.float64),
            "pixel_y": coords["pixel_y"].to_numpy(np.float64),
            "array_row": coords["array_row"].to_numpy(np.float64),
            "array_col": coords["array_col"].to_numpy(np.float64),
            "label": pd.Series(labels.to_numpy(), dtype="string"),
        }
    )
    values = hvg_values(params, raw, platform_defaults)
    if values == "pearson_residuals":
        hvg_matrix: Any = PearsonResiduals(adata[:, hvg].layers["counts"])
    else:
        hvg_matrix = sp.csr_matrix(adata[:, hvg].X, dtype=np.float32)

    adata.obs["label"] = pd.Categorical(labels.to_numpy())
    adata.obsm["spatial"] = xy
    image = dict(raw.image.to_json())
    if raw.image.path is not None:
        image["width"], image["height"] = image_size(raw.image.path)
    elif raw.image.array is not None:
        image["height"], image["width"] = (int(v) for v in raw.image.array.shape[:2])
    else:
        image["width"] = image["height"] = None
    extra = {
        "platform": raw.platform,
        "defaults_platform": platform_defaults,
        "image": image,
        "spot_pitch_px": median_spot_pitch(xy),
        "n_clusters": n_clusters,
        "k": k,
        "n_spots": len(spot_ids),
        "n_genes_in": n_genes_in,
        "n_genes_kept": int(adata.n_vars),
        "n_hvg": len(hvg),
        "hvg_flavor": flavor,
        "hvg_values": values,
        "n_labelled": int(labels.notna().sum()),
        "normalised_input": bool(raw.normalised),
    }
    log.info("%s: %d spots, %d/%d genes kept, %d HVGs, k=%d, %s image, %d labelled",
             raw.sample, len(spot_ids), adata.n_vars, n_genes_in, len(hvg), k, image["source"], extra["n_labelled"])
    return PreprocessResult(raw.sample, spots, list(map(str, hvg)), hvg_matrix, graph, adata, extra, raw.image.array)


def hvg_values(params: PreprocessParams, raw: RawSlide, platform_defaults: str) -> str:
    """What expr.parquet holds: ``params.hvg_values``, else the platform's (PLATFORM_HVG_VALUES).

    Residuals need raw counts: values the user declared normalised (``--normalised``) keep their own
    log1p scale, said once in the log.
    """
    wanted = params.hvg_values or PLATFORM_HVG_VALUES[platform_defaults]
    if wanted not in HVG_VALUES:
        raise SencaError(f"--hvg-values must be one of {', '.join(HVG_VALUES)}, got {wanted!r}")
    if wanted == "pearson_residuals" and raw.normalised:
        if params.hvg_values:
            raise SencaError("--hvg-values pearson_residuals needs raw counts, but the input is declared "
                             "--normalised", raw.inputs.get("data"))
        log.info("%s: normalised input: the HVGs keep their log1p values (Pearson residuals need counts)", raw.sample)
        return "log1p"
    return wanted


def select_hvgs(adata: Any, flavor: str, n_hvg: int, data: Path | None) -> str:
    """Mark ``n_hvg`` highly variable genes in ``adata.var`` by Scanpy's ``flavor``; return the flavour used.

    ``seurat`` ranks normalised dispersion of the log-normalised values (paper 3.1); ``seurat_v3`` ranks the
    variance of the raw counts after a mean-variance loess fit (the ``counts`` layer), which keeps the
    low-mean layer markers of Visium slides (needs scikit-misc, a senca dependency).
    """
    import scanpy as sc

    if flavor not in HVG_FLAVORS:
        raise SencaError(f"--hvg-flavor must be one of {', '.join(HVG_FLAVORS)}, got {flavor!r}")
    if flavor == "seurat":
        sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_hvg, subset=False)
        return flavor
    try:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_hvg, layer="counts", subset=False)
        return flavor
    except ImportError as exc:
        raise SencaError(f"HVG flavour seurat_v3 needs scikit-misc ({exc}); pip install scikit-misc, "
                         "or pass --hvg-flavor seurat", data) from None
    except ValueError as exc:  # the loess fit fails on degenerate panels (e.g. a handful of genes)
        log.warning("seurat_v3 HVG selection failed (%s); falling back to seurat (normalised dispersion)", exc)
        sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_hvg, subset=False)
        return "seurat"


CHOSEN_IMAGE = "chosen_image"  # {s}.chosen_image.<ext>: the image the slide uses, beside the artifacts
NO_IMAGE_SUFFIX = ".none"  # {s}.chosen_image.none: the marker of an image-less slide (one line: why)


def output_paths(outdir: Path, sample: str) -> dict[str, Path]:
    return {kind: outdir / f"{sample}.{kind}.parquet" for kind in ("spots", "expr", "graph")} | {"h5ad": outdir / f"{sample}.h5ad"}


def write_preprocess(result: PreprocessResult, outdir: Path, params: PreprocessParams, inputs: dict[str, Path],
                     export_image: bool = False) -> dict[str, Path]:
    """Write the four artifacts (each atomically) with provenance; return their paths.

    ``export_image``: also write exactly one ``{s}.chosen_image.*`` beside them (path ``chosen_image``):
    the image the slide uses (after QC and any fallback) as ``{s}.chosen_image.<ext>``, a hard link
    where the file system allows, else a copy; or, when the slide runs image-less (no image, ``none``
    chosen, every image rejected by QC), the marker ``{s}.chosen_image.none``, one line saying why. So a
    runner knows each slide's route from its own outputs, without waiting for an absent file. Any other
    ``{s}.chosen_image.*`` left by an earlier run is removed. The spots still record the image's own path.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(outdir, result.sample)
    extra = dict(result.extra)
    if result.image_array is not None:
        image_path = outdir / f"{result.sample}.image.png"
        _write_png(result.image_array, image_path)
        extra["image"] = {**extra["image"], "path": str(image_path.resolve())}
    checksums = {name: file_checksum(path) for name, path in sorted(inputs.items())}
    def provenance(kind: str) -> Provenance:
        return Provenance(kind, result.sample, STAGE, params.to_json(), checksums, extra)

    write_table(result.spots, paths["spots"], provenance("spots"))
    write_matrix_table(result.spots["spot_id"], result.hvg, result.hvg_matrix, paths["expr"], provenance("expr"))
    write_table(result.graph, paths["graph"], provenance("graph"))
    adata = result.adata
    adata.uns["senca"] = json.dumps(Provenance("h5ad", result.sample, STAGE, params.to_json(), checksums, extra).to_json())
    write_h5ad(adata, paths["h5ad"])
    if export_image:
        paths[CHOSEN_IMAGE] = export_chosen_image(extra.get("image") or {}, outdir, result.sample)
    return paths


def export_chosen_image(image: dict[str, Any], outdir: Path, sample: str) -> Path:
    """``{s}.chosen_image.<ext>`` (the image recorded in ``image``, linked or copied) or, when it records
    none, the marker ``{s}.chosen_image.none`` (one line: the recorded reason); written atomically, the
    only ``{s}.chosen_image.*`` left in ``outdir``."""
    chosen = image.get("path")
    if chosen:
        source = Path(chosen)
        suffix = source.suffix.lower()
        if suffix in ("", NO_IMAGE_SUFFIX):  # never named like the marker, and always with an extension
            suffix = ".img"  # readers detect the format from the bytes
        target = link_or_copy(source, outdir / f"{sample}.{CHOSEN_IMAGE}{suffix}")
    else:
        target = outdir / f"{sample}.{CHOSEN_IMAGE}{NO_IMAGE_SUFFIX}"
        reason = " ".join(str(image.get("reason") or "no image given or found").split())
        with atomic_path(target) as tmp:
            tmp.write_text(f"image-less: {reason}\n", encoding="utf-8")
    prefix = f"{sample}.{CHOSEN_IMAGE}."
    for stale in outdir.iterdir():  # an earlier run's other choice: a runner must find exactly one
        if stale.name.startswith(prefix) and stale.name != target.name:
            try:
                stale.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot remove an earlier run's file ({os_error_reason(exc)})", stale) from None
    return target


def link_or_copy(source: Path, target: Path) -> Path:
    """``target`` made the same file as ``source`` (links followed): a hard link, else a copy; atomic.

    A hard link shares the bytes, so an input image of gigabytes costs no space; across file systems
    (or where links are refused) the bytes are copied. The source's permissions are left alone.
    """
    source = source.resolve()
    if target.exists() and os.path.samefile(source, target):
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links refused: copy (unlinked by the finally on failure)
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write ({os_error_reason(exc)}); the partial file was removed", target) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return target


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    data = np.asarray(array)
    if data.dtype != np.uint8:
        data = np.clip(data * (255.0 if data.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(data[..., :3] if data.ndim == 3 else data).save(tmp, format="PNG")
