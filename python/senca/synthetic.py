"""Synthetic slides with planted regions, written in the real input formats.

Tests, the scale benchmark and the demo need slides whose right answer is known. A synthetic slide
has spatially contiguous regions (Voronoi cells of random centres); each region over-expresses its own
marker genes (``R{r}_M{j}``) on top of negative-binomial background counts, and has its own H&E-like
texture (stain hue, nucleus density and size) in the image. It is written as a legacy-ST slide
(counts ``.tsv.gz`` with ``XxY`` ids + spot file + labels + image), an ``.h5ad``, or a Space Ranger
``outs/`` folder (real 10x HDF5 layout, tissue positions, scale factors, hires image).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

# H&E-like palettes per region: (eosin background RGB, nucleus RGB, nuclei per 1000 px^2, nucleus radius px)
_TEXTURES = [
    ((236, 180, 205), (70, 40, 120), 2.0, 3),
    ((245, 215, 225), (110, 70, 150), 0.5, 2),
    ((220, 150, 190), (50, 20, 100), 4.0, 4),
    ((250, 235, 240), (150, 110, 170), 0.2, 2),
    ((230, 170, 170), (90, 30, 90), 3.0, 2),
    ((210, 190, 220), (60, 50, 140), 1.2, 5),
]
CHUNK_ENTRIES = 1 << 22  # spot x gene entries (or image pixels) simulated at a time: bounded memory at 10^5+ spots


@dataclass
class SyntheticSlide:
    """Where a synthetic slide was written and what was planted in it."""

    sample: str
    data: Path
    image: Path | None
    positions: Path | None
    labels: Path | None
    truth: pd.Series  # spot_id -> region name
    markers: dict[str, list[str]] = field(default_factory=dict)  # region -> planted marker genes
    pitch_px: float = 60.0

    def samplesheet_row(self, base: Path | None = None) -> dict[str, str]:
        def rel(path: Path | None) -> str:
            if path is None:
                return ""
            return str(path.relative_to(base)) if base is not None and path.is_relative_to(base) else str(path)

        return {"sample": self.sample, "data": rel(self.data), "image": rel(self.image),
                "positions": rel(self.positions), "labels": rel(self.labels), "n_clusters": ""}


def grid(n_rows: int, n_cols: int, hexagonal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array rows/cols and unit-pitch physical positions of a square (ST) or hexagonal (Visium) grid."""
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    if hexagonal:
        x = cols + 0.5 * (rows % 2)
        y = rows * np.sqrt(3) / 2
    else:
        x, y = cols.astype(float), rows.astype(float)
    return rows, cols, np.column_stack([x, y])


def plant_regions(xy: np.ndarray, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Contiguous regions: each spot joins the nearest of ``n_regions`` random, well-spread centres."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    candidates = rng.uniform(lo, hi, size=(n_regions * 20, 2))
    centres = [candidates[0]]
    for _ in range(1, n_regions):  # farthest-point sampling keeps regions of similar size
        dist = np.min([np.linalg.norm(candidates - c, axis=1) for c in centres], axis=0)
        centres.append(candidates[int(np.argmax(dist))])
    d = np.stack([np.linalg.norm(xy - c, axis=1) for c in centres], axis=1)
    return np.argmin(d, axis=1)


def simulate_counts(region: np.ndarray, n_genes: int, n_markers: int, fold: float, rng: np.random.Generator,
                    depth: float = 1.0, chunk_entries: int = CHUNK_ENTRIES,
                    ) -> tuple[sp.csr_matrix, list[str], dict[int, list[str]]]:
    """Negative-binomial counts; region r multiplies the mean of its marker genes by ``fold``.

    ``depth`` scales every mean (below 1: sparser counts, like Visium HD bins). Spots are simulated
    in blocks of about ``chunk_entries`` spot x gene entries and kept sparse, so memory grows with the
    non-zero counts, not spots x genes (a slide that fits one block draws exactly as it always has).
    """
    n_regions = int(region.max()) + 1
    markers = {r: [f"R{r}_M{j}" for j in range(n_markers)] for r in range(n_regions)}
    genes = [g for r in range(n_regions) for g in markers[r]]
    genes += [f"GENE{i:04d}" for i in range(n_genes - len(genes))]
    base = rng.gamma(0.6, 1.5, size=len(genes)) * depth
    library = rng.lognormal(0.0, 0.3, size=(len(region), 1))
    dispersion = 2.0  # NB with size 2: realistic over-dispersion
    rows_per_block = max(1, chunk_entries // max(len(genes), 1))
    blocks = []
    for start in range(0, len(region), rows_per_block):
        block = region[start:start + rows_per_block]
        mean = np.tile(base, (len(block), 1))
        for r in markers:
            mean[np.ix_(block == r, np.arange(r * n_markers, (r + 1) * n_markers))] *= fold
        mean = mean * library[start:start + rows_per_block]
        lam = rng.gamma(dispersion, mean / dispersion)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    counts = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
    return counts, genes, markers


def _stamp_nuclei(image: np.ndarray, cy: np.ndarray, cx: np.ndarray, radius: int, colour: tuple[int, int, int]) -> None:
    """Paint a filled disc of ``radius`` px at every (cy, cx), vectorised over nuclei (clipped at the border)."""
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    inside = dy**2 + dx**2 <= radius**2
    ys = cy[:, None] + dy[inside][None, :]
    xs = cx[:, None] + dx[inside][None, :]
    keep = (ys >= 0) & (ys < image.shape[0]) & (xs >= 0) & (xs < image.shape[1])
    image[ys[keep], xs[keep]] = colour


def paint_image(pixel_xy: np.ndarray, region: np.ndarray, pitch: float, shape: tuple[int, int],
                rng: np.random.Generator, strip_pixels: int = CHUNK_ENTRIES) -> np.ndarray:
    """An H&E-like RGB image: each spot's neighbourhood painted with its region's stain and nuclei.

    Painted in horizontal strips of about ``strip_pixels`` pixels (nearest-spot lookup, stain noise
    and nuclei per strip), so a 10^8-pixel slide needs the image itself plus one strip's temporaries.
    Nuclei that reach into the next strip are painted again once that strip is done.
    """
    from sklearn.neighbors import NearestNeighbors

    height, width = shape
    image = np.full((height, width, 3), 248, dtype=np.uint8)  # glass
    tree = NearestNeighbors(n_neighbors=1).fit(pixel_xy)
    rows_per_strip = max(1, strip_pixels // max(width, 1))
    spill: list[tuple[np.ndarray, np.ndarray, int, tuple[int, int, int]]] = []
    for top in range(0, height, rows_per_strip):
        bottom = min(height, top + rows_per_strip)
        yy, xx = np.mgrid[top:bottom, 0:width]
        # Tissue: each pixel takes the region of its nearest spot (within 0.75 pitch of a spot).
        dist, idx = tree.kneighbors(np.column_stack([xx.ravel(), yy.ravel()]))
        on_tissue = dist[:, 0] < 0.75 * pitch
        pixel_region = np.where(on_tissue, region[idx[:, 0]], -1).reshape(bottom - top, width)
        del yy, xx, dist, idx, on_tissue
        strip = image[top:bottom]
        for r in range(int(region.max()) + 1):
            background, nucleus, density, radius = _TEXTURES[r % len(_TEXTURES)]
            mask = pixel_region == r
            noise = rng.normal(0, 6, size=(int(mask.sum()), 3))
            strip[mask] = np.clip(np.array(background) + noise, 0, 255).astype(np.uint8)
            n_nuclei = int(mask.sum() * density / 1000)
            ys, xs = np.nonzero(mask)
            pick = rng.integers(0, len(ys), size=n_nuclei) if len(ys) else np.array([], dtype=int)
            cy, cx = ys[pick] + top, xs[pick]
            _stamp_nuclei(image, cy, cx, radius, nucleus)
            crossing = cy + radius >= bottom
            if bottom < height and crossing.any():
                spill.append((cy[crossing], cx[crossing], radius, nucleus))
    for cy, cx, radius, nucleus in spill:  # the next strip's background covered their lower part
        _stamp_nuclei(image, cy, cx, radius, nucleus)
    return image


def write_10x_h5(path: Path, counts: sp.csr_matrix, barcodes: list[str], genes: list[str]) -> None:
    """Write a matrix in Space Ranger's ``filtered_feature_bc_matrix.h5`` (v3) layout."""
    import h5py

    csr = sp.csr_matrix(counts)  # spots x genes CSR == genes x spots CSC, which is what 10x stores
    with h5py.File(path, "w") as h5:
        group = h5.create_group("matrix")
        group.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        group.create_dataset("data", data=csr.data.astype(np.int32), compression="gzip")
        group.create_dataset("indices", data=csr.indices.astype(np.int64), compression="gzip")
        group.create_dataset("indptr", data=csr.indptr.astype(np.int64), compression="gzip")
        group.create_dataset("shape", data=np.array([len(genes), len(barcodes)], dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        features.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes)))
        features.create_dataset("genome", data=np.array([b"synthetic"] * len(genes)))
        features.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S"))
        features.create_dataset("name", data=np.array(genes, dtype="S"))


def make_synthetic_slide(outdir: str | Path, sample: str = "synthetic", n_rows: int = 16, n_cols: int = 18,
                         n_regions: int = 3, n_genes: int = 300, n_markers: int = 8, fold: float = 4.0,
                         fmt: str = "st", image: bool = True, pitch_px: float = 40.0, seed: int = 0,
                         header: bool = True, depth: float = 1.0, image_file: bool = False) -> SyntheticSlide:
    """Write a synthetic slide with planted regions in format ``fmt`` (st | h5ad | visium).

    ``depth`` scales the expected counts (sparser slides below 1). ``image_file`` (h5ad only) writes
    the image as ``{sample}.jpg`` beside the ``.h5ad`` (a samplesheet image, pixel frame of
    ``obsm['spatial']``) instead of inside ``uns['spatial']``: how the scale benchmark gives a
    10^5-spot slide a JPEG that embed-patches decodes at reduced resolution.
    """
    if image_file and fmt != "h5ad":
        raise ValueError("image_file applies to fmt='h5ad' (st writes a JPEG anyway; visium a hires PNG)")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hexagonal = fmt == "visium"
    rows, cols, unit_xy = grid(n_rows, n_cols, hexagonal)
    region = plant_regions(unit_xy, n_regions, rng)
    counts, genes, markers = simulate_counts(region, n_genes, n_markers, fold, rng, depth=depth)
    margin = 2 * pitch_px
    pixel_xy = unit_xy * pitch_px + margin
    shape = (int(pixel_xy[:, 1].max() + margin), int(pixel_xy[:, 0].max() + margin))
    region_names = np.array([f"region_{r}" for r in range(n_regions)])
    if fmt == "st":
        spot_ids = [f"{c + 1}x{r + 1}" for r, c in zip(rows, cols, strict=True)]
    else:
        spot_ids = [f"{sample.upper()}{i:05d}-1" for i in range(len(rows))]
    truth = pd.Series(region_names[region], index=pd.Index(spot_ids, name="spot_id"), name="region")
    image_array = paint_image(pixel_xy, region, pitch_px, shape, rng) if image else None

    labels_path = outdir / f"{sample}_labels.tsv"
    image_path: Path | None = None
    positions_path: Path | None = None
    if fmt == "st":
        data = outdir / f"{sample}.tsv.gz"
        pd.DataFrame(counts.toarray().astype(int), index=spot_ids, columns=genes).to_csv(data, sep="\t")
        positions_path = outdir / f"{sample}_selection.tsv"
        pd.DataFrame({"x": cols + 1, "y": rows + 1, "new_x": cols + 1.0, "new_y": rows + 1.0,
                      "pixel_x": pixel_xy[:, 0], "pixel_y": pixel_xy[:, 1], "selected": 1}).to_csv(positions_path, sep="\t", index=False)
        pd.DataFrame({"x": cols + 1.0, "y": rows + 1.0, "label": truth.to_numpy()}).to_csv(labels_path, sep="\t", index=False)
        if image_array is not None:
            from PIL import Image

            image_path = outdir / f"{sample}.jpg"
            Image.fromarray(image_array).save(image_path, quality=90)
    elif fmt == "h5ad":
        import anndata as ad

        data = outdir / f"{sample}.h5ad"
        adata = ad.AnnData(X=counts, obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=spot_ids),
                           var=pd.DataFrame(index=genes))
        adata.obsm["spatial"] = pixel_xy
        if image_array is not None and image_file:
            from PIL import Image

            image_path = outdir / f"{sample}.jpg"
            Image.fromarray(image_array).save(image_path, quality=90)
        elif image_array is not None:
            adata.uns["spatial"] = {sample: {"images": {"hires": image_array},
                                             "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": pitch_px * 0.55}}}
        adata.write_h5ad(data)
        pd.DataFrame({"spot_id": spot_ids, "label": truth.to_numpy()}).to_csv(labels_path, index=False)
    elif fmt == "visium":
        data = outdir / sample / "outs"
        spatial = data / "spatial"
        spatial.mkdir(parents=True, exist_ok=True)
        write_10x_h5(data / "filtered_feature_bc_matrix.h5", counts, spot_ids, genes)
        hires_scale = 0.5
        fullres = pixel_xy / hires_scale  # full-resolution pixels; the hires PNG is half that
        positions = pd.DataFrame({"barcode": spot_ids, "in_tissue": 1, "array_row": rows, "array_col": cols,
                                  "pxl_row_in_fullres": np.round(fullres[:, 1]).astype(int),
                                  "pxl_col_in_fullres": np.round(fullres[:, 0]).astype(int)})
        name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
        positions.to_csv(spatial / name, index=False, header=header)
        (spatial / "scalefactors_json.json").write_text(json.dumps({
            "spot_diameter_fullres": pitch_px / hires_scale * 0.55, "tissue_hires_scalef": hires_scale,
            "fiducial_diameter_fullres": pitch_px / hires_scale * 0.8, "tissue_lowres_scalef": hires_scale / 4}))
        if image_array is not None:
            from PIL import Image

            Image.fromarray(image_array).save(spatial / "tissue_hires_image.png")
        pd.DataFrame({"barcode": spot_ids, "label": truth.to_numpy()}).to_csv(labels_path, index=False)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    marker_names = {region_names[r]: names for r, names in markers.items()}
    return SyntheticSlide(sample, data, image_path, positions_path, labels_path, truth, marker_names, pitch_px)


def write_samplesheet(path: str | Path, slides: list[SyntheticSlide], relative: bool = True) -> Path:
    """A samplesheet listing ``slides`` (paths relative to the sheet's folder when possible)."""
    path = Path(path)
    base = path.parent.resolve() if relative else None
    rows = [s.samplesheet_row(base) for s in slides]
    pd.DataFrame(rows, columns=["sample", "data", "image", "positions", "labels", "n_clusters"]).to_csv(path, index=False)
    return path
