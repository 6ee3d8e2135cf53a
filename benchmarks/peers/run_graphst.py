"""GraphST 1.1.1 on one peer input, its standard pipeline on CPU; run with ``benchmarks/.peers-venv/bin/python``.

GraphST's own steps: ``GraphST.GraphST(adata, device=cpu, random_seed=seed)`` (its preprocess: 3,000
seurat_v3 HVGs of the raw counts, normalize_total, log1p, scale; a 3-nearest-neighbour spot graph on
``obsm['spatial']``; 600 epochs) and ``train()`` -> ``obsm['emb']``. Clustering (``--clustering``):

* ``leiden``: GraphST's ``clustering(method='leiden', start=0.1, end=2.0, increment=0.01)`` (its tutorial's
  range): PCA(20) of the embedding, leiden resolutions searched downwards until k clusters. Its default
  mclust (EEE) needs R, which these machines do not have.
* ``gmm``: a stand-in for mclust EEE: sklearn ``GaussianMixture(k, covariance_type='tied')`` (EEE = one
  shared full covariance) on the same PCA(20) of the embedding (GraphST's PCA, ``random_state=42``).

Both then get GraphST's refinement (``refine_label``, radius 50 = the 50 nearest spots vote, as in its
tutorial). Writes spot_id,cluster (refined),cluster_unrefined; stderr ends with ``PEER_INFO {json}``.

    python run_graphst.py in.h5ad --k 7 --seed 0 --out clusters.csv --clustering leiden|gmm
"""

from __future__ import annotations

import sys

import peer_common as pc

RADIUS = 50  # GraphST tutorial's refinement radius (number of neighbouring spots that vote)
LEIDEN = {"start": 0.1, "end": 2.0, "increment": 0.01}
PCA_COMPONENTS = 20  # GraphST's clustering() PCA


def arguments(argv: list[str] | None):
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--clustering", choices=["leiden", "gmm"], default="leiden")
    p.add_argument("--epochs", type=int, default=600, help="GraphST training epochs (its default 600)")
    return p.parse_args(argv)


def leiden_domains(adata, k: int, info: dict):
    """GraphST's own leiden clustering with its resolution search (no refinement yet)."""
    from GraphST.utils import clustering

    try:
        clustering(adata, n_clusters=k, radius=RADIUS, method="leiden", refinement=False, **LEIDEN)
    except AssertionError:
        pc.fail(f"GraphST leiden: no resolution in [{LEIDEN['start']}, {LEIDEN['end']}) step "
                f"{LEIDEN['increment']} gives {k} clusters")
    info["resolution"] = float(adata.uns["leiden"]["params"]["resolution"])
    return adata.obs["domain"].astype(str).to_numpy()


def gmm_domains(adata, k: int, seed: int, info: dict):
    """Tied-covariance Gaussian mixture on GraphST's PCA(20) of the embedding (mclust EEE stand-in)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    embedding = PCA(n_components=PCA_COMPONENTS, random_state=42).fit_transform(adata.obsm["emb"].copy())
    adata.obsm["emb_pca"] = embedding
    gmm = GaussianMixture(n_components=k, covariance_type="tied", random_state=seed).fit(embedding)
    info.update(gmm_converged=bool(gmm.converged_), gmm_iterations=int(gmm.n_iter_))
    return gmm.predict(embedding).astype(str)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    timer = pc.start(args)
    with timer.step("import"):
        import torch
        from GraphST import GraphST
        from GraphST.utils import refine_label
    with timer.step("read"):
        adata = pc.read_input(args.input)
        platform = pc.platform_of(adata, args.platform)
    info: dict = {"method": "GraphST", "version": "1.1.1", "k": args.k, "seed": args.seed, "platform": platform,
                  "clustering": args.clustering, "epochs": args.epochs, "radius": RADIUS, "n_spots": adata.n_obs}
    with timer.step("train"):
        model = GraphST.GraphST(adata, device=torch.device("cpu"), random_seed=args.seed, epochs=args.epochs)
        adata = model.train()
    with timer.step(f"cluster_{args.clustering}"):
        if args.clustering == "leiden":
            domains = leiden_domains(adata, args.k, info)
        else:
            domains = gmm_domains(adata, args.k, args.seed, info)
    with timer.step("refine"):
        adata.obs["domain"] = domains
        refined = refine_label(adata, RADIUS, key="domain")
        info.update(n_clusters=len(set(domains)), n_clusters_refined=len(set(refined)))
    return pc.finish(args, adata.obs_names, refined, domains, info, timer)


if __name__ == "__main__":
    sys.exit(main())
