"""Build the bundled demo data (python/senca/data/demo) from the real slides in ../shared/data.

Run once by a developer; the output is committed. Kept so the demo's provenance is reproducible:
- HER2ST A1 (legacy ST, with its H&E re-encoded as JPEG) and B1 (legacy ST, no image), unchanged counts;
- DLPFC 151673, a band of array columns 10..33 (782 spots, all seven layers) as a Space Ranger 1.x
  outs/ folder (10x HDF5, headerless tissue_positions_list.csv, scale factors, the lowres image).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import scanpy as sc
from PIL import Image

from senca.synthetic import write_10x_h5

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEMO = REPO / "python" / "senca" / "data" / "demo"


def her2st() -> None:
    src = SHARED / "her2st"
    out = DEMO / "her2st"
    out.mkdir(parents=True, exist_ok=True)
    for slide in ("A1", "B1"):
        shutil.copy(src / "counts" / f"{slide}.tsv.gz", out / f"{slide}.tsv.gz")
        shutil.copy(src / "labels" / f"{slide}_labeled_coordinates.tsv", out / f"{slide}_labeled_coordinates.tsv")
    shutil.copy(src / "A1_he" / "A1_selection.tsv", out / "A1_selection.tsv")  # pixels in A1.png's frame
    shutil.copy(src / "spots" / "B1_selection.tsv", out / "B1_selection.tsv")
    Image.open(src / "A1_he" / "A1.png").convert("RGB").save(out / "A1.jpg", quality=85)


def dlpfc() -> None:
    src = SHARED / "dlpfc" / "151673"
    out = DEMO / "dlpfc_151673_band" / "outs"
    (out / "spatial").mkdir(parents=True, exist_ok=True)
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    positions = pd.read_csv(src / "outs/spatial/tissue_positions_list.csv", header=None, names=cols)
    band = positions[(positions.in_tissue == 1) & positions.array_col.between(10, 33)]
    adata: ad.AnnData = sc.read_10x_h5(src / "outs/filtered_feature_bc_matrix.h5")
    adata = adata[band.barcode.to_numpy()]
    write_10x_h5(out / "filtered_feature_bc_matrix.h5", adata.X, list(adata.obs_names), list(adata.var_names))
    band.to_csv(out / "spatial/tissue_positions_list.csv", header=False, index=False)
    for name in ("scalefactors_json.json", "tissue_lowres_image.png"):
        shutil.copy(src / "outs/spatial" / name, out / "spatial" / name)
    labels = pd.read_csv(src / "labels.csv")
    labels[labels.barcode.isin(band.barcode)].to_csv(DEMO / "dlpfc_151673_band" / "labels.csv", index=False)


if __name__ == "__main__":
    if not SHARED.is_dir():
        sys.exit(f"no real data at {SHARED}")
    her2st()
    dlpfc()
    print(f"demo data written under {DEMO}")
