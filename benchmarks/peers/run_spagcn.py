"""SpaGCN 1.2.7 on one peer input, as its tutorial runs it; run with ``benchmarks/.peers-venv/bin/python``.

Tutorial steps (SpaGCN 1.2.x README): prefilter genes (min 3 spots, no ERCC/MT-), normalize_per_cell,
log1p; the spot distance matrix from pixel coordinates (with histology: plus the H&E colour of a
``beta``-pixel square around each spot, scaled by ``alpha`` = 1); ``search_l`` for p = 0.5;
``search_res`` for the resolution giving k clusters (20 epochs per try); train 200 epochs; predict;
refine on the array grid (``hexagon`` for Visium, ``square`` for ST). SpaGCN needs a dense X (its PCA
calls ``.A`` on sparse matrices, gone from SciPy).

Coordinates: SpaGCN's ``x`` is the image ROW and ``y`` the column (the tutorial passes
``pxl_row_in_fullres`` as x_pixel), so ``obsm['spatial']`` (x, y) is swapped here. ``beta`` is SpaGCN's
49 px at Visium full resolution, i.e. about half a spot diameter: here half the input's
``uns['spot_diameter_px']`` in image pixels (A1.png ~16 px, DLPFC lowres 2 -> 3 px floor).

    python run_spagcn.py in.h5ad --k 7 --seed 0 --out clusters.csv [--image he.png [--image-scale s]]

Writes spot_id,cluster (refined),cluster_unrefined; stderr ends with ``PEER_INFO {json}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import peer_common as pc

SEARCH = {"p": 0.5, "l_start": 0.01, "l_end": 1000, "res_start": 0.7, "res_step": 0.1, "tol": 5e-3, "lr": 0.05,
          "search_epochs": 20, "train_epochs": 200}


def arguments(argv: list[str] | None):
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=None, help="H&E image: use histology (else coordinates only)")
    p.add_argument("--image-scale", type=float, default=None, help="image pixel per obsm['spatial'] unit")
    p.add_argument("--beta", type=int, default=None, help="colour window in image px [half a spot diameter]")
    p.add_argument("--alpha", type=float, default=1.0, help="histology weight (SpaGCN default 1)")
    return p.parse_args(argv)


def distances(adata, args, info: dict):
    """SpaGCN's spot x spot distance matrix: pixel (row, col), plus the histology axis with an image."""
    import numpy as np
    import SpaGCN as spg

    col, row = adata.obsm["spatial"][:, 0], adata.obsm["spatial"][:, 1]
    if args.image is None:
        info["histology"] = False
        return spg.calculate_adj_matrix(x=row.tolist(), y=col.tolist(), histology=False)
    image = pc.read_rgb(args.image)
    scale = pc.image_scale(adata, args.image_scale)
    x_pixel = np.rint(row * scale).astype(int)
    y_pixel = np.rint(col * scale).astype(int)
    outside = (x_pixel < 0) | (x_pixel >= image.shape[0]) | (y_pixel < 0) | (y_pixel >= image.shape[1])
    if outside.all():
        pc.fail(f"no spot falls inside {args.image} ({image.shape[1]} x {image.shape[0]} px) at scale {scale}")
    diameter = float(adata.uns.get("spot_diameter_px", 98.0))
    beta = args.beta or max(3, int(round(0.5 * diameter * scale)))
    info.update(histology=True, image=str(args.image), image_scale=scale, beta=beta, alpha=args.alpha,
                spots_outside_image=int(outside.sum()), image_shape=list(image.shape))
    return spg.calculate_adj_matrix(x=x_pixel.tolist(), y=y_pixel.tolist(), x_pixel=x_pixel.tolist(),
                                    y_pixel=y_pixel.tolist(), image=image, beta=beta, alpha=args.alpha,
                                    histology=True)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    timer = pc.start(args)
    with timer.step("import"):
        import numpy as np
        import scanpy as sc
        import SpaGCN as spg
    with timer.step("read"):
        adata = pc.read_input(args.input)
        platform = pc.platform_of(adata, args.platform)
        adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
    info: dict = {"method": "SpaGCN", "version": "1.2.7", "k": args.k, "seed": args.seed, "platform": platform,
                  "n_spots": adata.n_obs, **SEARCH}
    with timer.step("preprocess"):
        spg.prefilter_genes(adata, min_cells=3)
        spg.prefilter_specialgenes(adata)
        sc.pp.normalize_per_cell(adata)
        sc.pp.log1p(adata)
        info["n_genes"] = adata.n_vars
    with timer.step("adjacency"):
        adj = distances(adata, args, info)
    with timer.step("search_l"):
        l_value = spg.search_l(SEARCH["p"], adj, start=SEARCH["l_start"], end=SEARCH["l_end"], tol=0.01, max_run=100)
        if l_value is None:
            pc.fail(f"search_l found no l giving p={SEARCH['p']}")
        info["l"] = l_value
    with timer.step("search_res"):
        res = spg.search_res(adata, adj, l_value, args.k, start=SEARCH["res_start"], step=SEARCH["res_step"],
                             tol=SEARCH["tol"], lr=SEARCH["lr"], max_epochs=SEARCH["search_epochs"],
                             r_seed=args.seed, t_seed=args.seed, n_seed=args.seed)
        info["res"] = res
    with timer.step("train"):
        clf = spg.SpaGCN()
        clf.set_l(l_value)
        pc.seed_everything(args.seed)  # the tutorial's r_seed / t_seed / n_seed before training
        clf.train(adata, adj, init_spa=True, init="louvain", res=res, tol=SEARCH["tol"], lr=SEARCH["lr"],
                  max_epochs=SEARCH["train_epochs"])
        pred, _ = clf.predict()
    with timer.step("refine"):
        grid = spg.calculate_adj_matrix(x=adata.obs["array_row"].tolist(), y=adata.obs["array_col"].tolist(),
                                        histology=False)
        shape = "hexagon" if platform == "visium" else "square"
        refined = spg.refine(sample_id=adata.obs_names.tolist(), pred=pred.tolist(), dis=grid, shape=shape)
        info.update(shape=shape, n_clusters=len(set(pred.tolist())), n_clusters_refined=len(set(refined)))
    return pc.finish(args, adata.obs_names, refined, pred, info, timer)


if __name__ == "__main__":
    sys.exit(main())
