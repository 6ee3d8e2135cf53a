"""Agglomerative (Ward) clustering of the shared embedding S into tissue regions (paper sections 3.5, 4.5).

The paper clusters S with agglomerative clustering because its dendrogram shows sub-structure a
fixed k hides (section 4.5), so this stage keeps the whole Ward tree, cuts it at k and draws its top.

* k: ``--n-clusters`` > the samplesheet's ``n_clusters`` > the number of distinct ground-truth
  labels > an automatic choice (the k in 2..15 with the largest silhouette of S), recorded as
  ``n_clusters_source`` in every output.
* Exact Ward (scipy) up to ``EXACT_WARD_MAX_SPOTS`` spots: it needs the n(n-1)/2 pairwise distances
  (400 MB at 10,000 spots), which covers every legacy-ST and Visium slide (<= 4,992 spots). Above
  that (Visium HD, Slide-seq) Ward runs in two levels: mini-batch k-means splits S into
  ``MICRO_CLUSTERS`` micro-clusters, then exact Ward merges their size-weighted centroids (Ward's
  method started from that partition). Time and memory grow linearly with the spots (a kNN-graph
  constrained Ward grew as n^1.45 and needed the kNN graph); clusters are still groups of similar
  S. The kNN graph of S is then only UMAP's (exact up to ``EXACT_KNN_MAX_SPOTS``, NN-descent above);
  UMAP starts from the first two principal components of S above ``UMAP_SPECTRAL_MAX_SPOTS``
  (the spectral start's eigensolver grows faster than linearly).
* Cluster ids are 0..k-1 by size (largest first, ties by the first spot), so reruns and
  Nextflow ``-resume`` give identical bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from senca.clustering import CLUSTER_METHODS, beside_view, tied_gmm
from senca.errors import SencaError
from senca.evaluate import n_distinct_labels, score_clusters, valid_label_mask
from senca.graph import median_spot_pitch
from senca.io.artifacts import (
    VIEW_PREFIX,
    Provenance,
    check_made_from,
    embedding_matrix,
    file_checksum,
    read_h5ad_for_spots,
    read_table,
    save_figure,
    write_h5ad,
    write_table,
)
from senca.knn_prior import KNN_PRIOR_ITERATIONS

log = logging.getLogger("senca")

EXACT_WARD_MAX_SPOTS = 10_000
AUTO_K_RANGE = (2, 15)
SILHOUETTE_MAX_SPOTS = 4_000  # silhouette on a seeded sample above this (pairwise distances: 64 MB)
UMAP_NEIGHBORS = 15
# Flat clusters by platform (docs/method.md, "Clustering"): the paper's Ward for legacy ST, where the two tie;
# the tied GMM for Visium, where it is more accurate on the same S. The Ward tree is kept either way.
PLATFORM_CLUSTER_METHOD = {"st": "ward", "visium": "gmm"}
# The substitute view's weight beside S (--view-weight; docs/method.md, round 17): on Visium clustering
# [S, 2 x view] gained +0.020 +- 0.007 ARI over S alone (DLPFC, 5 seeds); on legacy ST it tied, so S alone (the paper).
PLATFORM_VIEW_WEIGHT = {"st": 0.0, "visium": 2.0}
# The kNN Potts prior after the mixture (--knn-prior; senca.knn_prior, docs/method.md round 26): on Visium +0.022
# ARI on DLPFC (beta 16 over 30 neighbours there, every one of ten seeds); legacy ST clusters by Ward, so none.
PLATFORM_KNN_PRIOR = {"st": 0.0, "visium": 16.0}
MICRO_CLUSTERS = 1_000  # level 1 of Ward above EXACT_WARD_MAX_SPOTS (10^5 spots: 4 s, same ARI as constrained Ward)
MICRO_BATCH = 4_096  # mini-batch k-means batch size
UMAP_SPECTRAL_MAX_SPOTS = EXACT_WARD_MAX_SPOTS  # above: UMAP starts from PCA(2) of S
EXACT_KNN_MAX_SPOTS = 100_000  # kNN of S by brute force up to here, approximate (pynndescent) above


# ----------------------------------------------------------------------------- the Ward tree
@dataclass
class WardTree:
    """A complete merge tree over n leaves in scipy's linkage layout.

    ``children[i]`` are the two nodes merged at step i (leaves 0..n-1, merge i creates node n+i),
    ``heights[i]`` the Ward distance of that merge, ``counts[i]`` the leaves under node n+i.
    """

    children: np.ndarray
    heights: np.ndarray
    counts: np.ndarray
    method: str  # "exact" | "two-level"
    n_micro: int | None = None  # two-level: the micro-clusters under the Ward tree

    @property
    def n_leaves(self) -> int:
        return len(self.children) + 1

    def linkage(self) -> np.ndarray:
        """scipy linkage matrix; heights made monotone for drawing (a constrained tree may invert)."""
        heights = np.maximum.accumulate(self.heights)
        return np.column_stack([self.children.astype(np.float64), heights, self.counts.astype(np.float64)])


def ward_tree(S: np.ndarray) -> WardTree:
    """The exact Ward tree of the rows of S (scipy; O(n^2) memory: up to ``EXACT_WARD_MAX_SPOTS``)."""
    from scipy.cluster.hierarchy import linkage

    Z = linkage(np.asarray(S, dtype=np.float64), method="ward")
    return WardTree(Z[:, :2].astype(np.int64), Z[:, 2].copy(), Z[:, 3].astype(np.int64), "exact")


def _subtree_counts(children: np.ndarray, n: int) -> np.ndarray:
    """Leaves under each merge node n..2n-2 (merges only ever use earlier nodes)."""
    counts = np.ones(2 * n - 1, dtype=np.int64)
    for i, (a, b) in enumerate(children):
        counts[n + i] = counts[a] + counts[b]
    return counts[n:]


def weighted_ward(centroids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Ward merges of m weighted points (cluster centroids and their sizes), greedy by merge cost.

    Returns ``children`` (m-1, 2) in scipy's node numbering (points 0..m-1, merge i makes node m+i)
    and ``heights`` in scipy's Ward distance, sqrt(2 w_a w_b / (w_a + w_b)) |c_a - c_b|. With unit
    weights this is scipy's ``linkage(method="ward")``. O(m^2) memory and O(m^2) work per merge
    (vectorised): meant for the ~10^3 micro-clusters of :func:`two_level_ward_tree`.
    """
    from scipy.spatial.distance import cdist

    c = np.asarray(centroids, dtype=np.float64).copy()
    w = np.asarray(weights, dtype=np.float64).copy()
    m = len(c)
    cost = cdist(c, c, "sqeuclidean") * (np.outer(w, w) / (w[:, None] + w[None, :]))
    np.fill_diagonal(cost, np.inf)
    node = np.arange(m)
    active = np.ones(m, dtype=bool)
    children = np.empty((max(m - 1, 0), 2), dtype=np.int64)
    heights = np.empty(max(m - 1, 0), dtype=np.float64)
    for step in range(m - 1):
        a, b = sorted(divmod(int(np.argmin(cost)), m))
        children[step] = sorted((node[a], node[b]))
        heights[step] = np.sqrt(2.0 * cost[a, b])
        c[a] = (w[a] * c[a] + w[b] * c[b]) / (w[a] + w[b])
        w[a] += w[b]
        node[a] = m + step
        active[b] = False
        cost[b, :] = cost[:, b] = np.inf
        others = np.flatnonzero(active & (np.arange(m) != a))
        row = ((c[others] - c[a]) ** 2).sum(axis=1) * (w[a] * w[others] / (w[a] + w[others]))
        cost[a, others] = cost[others, a] = row
    return children, heights


def two_level_ward_tree(S: np.ndarray, n_micro: int, seed: int = 0) -> WardTree:
    """Ward over k-means micro-clusters: a complete tree over the spots, linear in their number.

    Level 1: mini-batch k-means (seeded) splits S into ``n_micro`` micro-clusters; inside
    each, spots are merged at height 0 (in spot order). Level 2: exact Ward on the micro-clusters'
    centroids weighted by their sizes (:func:`weighted_ward`), which is exactly Ward's method
    started from that partition. Cuts into k << ``n_micro`` clusters never split a micro-cluster.
    """
    from sklearn.cluster import MiniBatchKMeans

    n = S.shape[0]
    n_micro = min(n_micro, n)
    km = MiniBatchKMeans(n_clusters=n_micro, batch_size=max(MICRO_BATCH, 3 * n_micro), n_init=3,
                         random_state=seed).fit(S)
    _, micro = np.unique(km.labels_, return_inverse=True)  # drop empty micro-clusters, if any
    m = int(micro.max()) + 1
    order = np.argsort(micro, kind="stable")  # spots grouped by micro-cluster, in spot order within
    group = micro[order]
    first = np.r_[True, group[1:] != group[:-1]]
    # chain merges inside each micro-cluster: position i (not a group's first) is merge i - (group + 1)
    pos = np.flatnonzero(~first)
    merge = pos - (group[pos] + 1)
    left = np.where(first[pos - 1], order[pos - 1], n + merge - 1)
    chain = np.column_stack([left, order[pos]])
    last = np.r_[np.flatnonzero(first)[1:] - 1, n - 1]  # each group's last position
    top = np.where(first[last], order[last], n + (last - (group[last] + 1)))  # the node of a whole micro-cluster
    sizes = np.bincount(micro, minlength=m)
    centroids = np.zeros((m, S.shape[1]))
    np.add.at(centroids, micro, S)
    centroids /= sizes[:, None]
    upper, upper_heights = weighted_ward(centroids, sizes)
    base = n + len(chain)  # first node id of the upper tree
    mapped = np.where(upper < m, top[np.minimum(upper, m - 1)], upper - m + base)
    children = np.vstack([chain, mapped]).astype(np.int64)
    heights = np.concatenate([np.zeros(len(chain)), upper_heights])
    return WardTree(children, heights, _subtree_counts(children, n), "two-level", n_micro=m)


def _forest_components(tree: WardTree, k: int) -> np.ndarray:
    """Component of every node (leaves and merges) after applying the first n-k merges."""
    from scipy.sparse.csgraph import connected_components

    n = tree.n_leaves
    m = n - k
    parents = n + np.arange(m)
    rows = np.concatenate([tree.children[:m, 0], tree.children[:m, 1]])
    cols = np.concatenate([parents, parents])
    graph = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(2 * n - 1, 2 * n - 1))
    _, comp = connected_components(graph, directed=False)
    return comp


def cut_tree(tree: WardTree, k: int) -> np.ndarray:
    """Leaf labels for k clusters, numbered 0..k-1 by size (largest first, ties by first spot)."""
    n = tree.n_leaves
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} leaves into {k} clusters")
    comp = _forest_components(tree, k)[:n]
    return order_by_size(comp)


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1: larger clusters first, ties broken by the cluster's first spot."""
    uniq, first, inverse, sizes = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -sizes))  # primary: size descending; secondary: first index
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return rank[inverse].astype(np.int32)


def node_clusters(tree: WardTree, labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster of every node of the tree, -1 for the k-1 merges above the cut (for colouring)."""
    n = tree.n_leaves
    comp = _forest_components(tree, k)
    comp_to_cluster = np.full(comp.max() + 1, -1, dtype=np.int64)
    comp_to_cluster[comp[:n]] = labels
    out = comp_to_cluster[comp]
    out[n + (n - k):] = -1
    return out


def cut_height(tree: WardTree, k: int) -> float:
    """A height between the last merge below the cut and the first above it (for the dendrogram line)."""
    heights = tree.linkage()[:, 2]
    n = tree.n_leaves
    below = heights[n - k - 1] if n - k - 1 >= 0 else 0.0
    above = heights[n - k] if n - k < len(heights) else below
    return float((below + above) / 2)


# ----------------------------------------------------------------------------- kNN of S (UMAP)
class _NNDescentCSR:
    """pynndescent's kNN transformer returning a ``scipy.sparse.csr_matrix``.

    Scanpy uses pynndescent above 8,192 spots and then calls ``.getnnz()`` on its output, which
    newer SciPy only offers on ``csr_matrix``, not on the ``csr_array`` pynndescent returns; this
    adapter keeps the approximate kNN (the only one that scales to 10^5-10^6 spots) working.
    """

    def __init__(self, **kwds: Any):
        from pynndescent import PyNNDescentTransformer

        self._inner = PyNNDescentTransformer(**kwds)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return self._inner.get_params(deep)

    def fit(self, X: np.ndarray) -> _NNDescentCSR:
        self._inner.fit(X)
        return self

    def transform(self, X: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix(self._inner.transform(X))

    def fit_transform(self, X: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix(self._inner.fit_transform(X))


def _knn_transformer(n: int, n_neighbors: int, seed: int) -> _NNDescentCSR | str:
    """Exact brute-force kNN up to ``EXACT_KNN_MAX_SPOTS`` (30,000 spots: 7 s), NN-descent above.

    NN-descent pays ~1 minute of numba compilation per process, which only pays off where brute
    force (quadratic) gets slower than that.
    """
    if n <= EXACT_KNN_MAX_SPOTS:
        return "sklearn"
    return _NNDescentCSR(n_neighbors=n_neighbors, metric="euclidean", random_state=seed, n_jobs=1,
                         n_trees=min(64, 5 + round(n**0.5 / 20.0)), n_iters=max(5, round(np.log2(n))))


def micro_cluster_count(n: int, k: int | None) -> int:
    """Level-1 micro-clusters for ``n`` spots: ``MICRO_CLUSTERS``, at least 10 per cluster asked for, at most n / 2."""
    wanted = max(MICRO_CLUSTERS, 10 * (k or AUTO_K_RANGE[1]))
    return int(max(min(wanted, n // 2), min(k or AUTO_K_RANGE[1], n)))


def cache_umap_kernels() -> int:
    """Let numba keep UMAP's compiled kernels on disk, so only a machine's first cluster stage compiles them.

    Why: umap-learn jit-compiles its kernels (fuzzy simplicial set, layout optimisation) without
    ``cache=True``, so every fresh process paid ~6 s of compilation on a 613-spot slide, more than the
    clustering itself (docs/scaling.md). Numba's own on-disk cache stores the machine code per function
    (``NUMBA_CACHE_DIR`` when set, else beside the package or in the user's cache folder); the results are
    the same numbers. Where no cache folder can be written, the kernels are compiled as before. Returns
    how many kernels will be cached.
    """
    try:
        import umap.layouts
        import umap.spectral
        import umap.umap_
        import umap.utils
        from numba.core.registry import CPUDispatcher
    except ImportError:  # no umap: scanpy will say so itself
        return 0
    cached = 0
    for module in (umap.umap_, umap.layouts, umap.spectral, umap.utils):
        for kernel in vars(module).values():
            if isinstance(kernel, CPUDispatcher):
                try:
                    kernel.enable_caching()
                    cached += 1
                except Exception as exc:  # noqa: BLE001 - e.g. no writable cache location: compile as before
                    log.debug("numba cannot cache %s: %s", getattr(kernel, "__name__", kernel), exc)
    return cached


def run_umap(adata: Any, S: np.ndarray, seed: int) -> None:
    """``sc.tl.umap`` on the kNN graph already in ``adata``; above ``UMAP_SPECTRAL_MAX_SPOTS`` it starts
    from PCA(2) of S instead of the spectral layout, whose eigensolver dominates at 10^5+ spots."""
    import scanpy as sc

    if adata.n_obs <= UMAP_SPECTRAL_MAX_SPOTS:
        sc.tl.umap(adata, random_state=seed)
        return
    from sklearn.decomposition import PCA

    adata.obsm["X_senca_pca2"] = PCA(n_components=2, random_state=seed).fit_transform(S.astype(np.float64))
    sc.tl.umap(adata, random_state=seed, init_pos="X_senca_pca2")
    del adata.obsm["X_senca_pca2"]


# ----------------------------------------------------------------------------- choosing k
def auto_n_clusters(tree: WardTree, S: np.ndarray, seed: int) -> tuple[int, dict[int, float]]:
    """The k in 2..15 (at most n-1) whose Ward cut has the largest mean silhouette of S (ties: smaller k).

    Silhouette (Rousseeuw 1987) rewards compact, well separated clusters and needs no labels. Above
    ``SILHOUETTE_MAX_SPOTS`` it is computed on a seeded sample of spots (the same sample for every k).
    """
    from sklearn.metrics import pairwise_distances, silhouette_score

    n = S.shape[0]
    lo, hi = AUTO_K_RANGE[0], min(AUTO_K_RANGE[1], n - 1)
    if hi < lo:
        raise SencaError(f"only {n} spot(s): at least 3 are needed to choose the number of clusters")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, SILHOUETTE_MAX_SPOTS, replace=False)) if n > SILHOUETTE_MAX_SPOTS else np.arange(n)
    dist = pairwise_distances(S[sample].astype(np.float64))
    scores: dict[int, float] = {}
    for k in range(lo, hi + 1):
        labels = cut_tree(tree, k)[sample]
        n_lab = len(np.unique(labels))
        scores[k] = float(silhouette_score(dist, labels, metric="precomputed")) if 2 <= n_lab < len(sample) else -1.0
    best = max(scores, key=lambda k: (round(scores[k], 12), -k))
    return best, scores


def resolve_n_clusters(option: int | None, samplesheet: int | None, labels: pd.Series | None,
                       n_spots: int) -> tuple[int | None, str]:
    """k and where it came from: option > samplesheet > number of labels > auto (k None: choose later)."""
    for value, source in ((option, "option"), (samplesheet, "samplesheet")):
        if value is None:
            continue
        value = int(value)
        where = "--n-clusters" if source == "option" else "the samplesheet's n_clusters"
        if value < 2:
            raise SencaError(f"{where} is {value}: at least 2 clusters are needed")
        if value > n_spots:
            raise SencaError(f"{where} is {value} but the slide has only {n_spots} spots")
        return value, source
    n_labels = n_distinct_labels(labels)
    if n_labels >= 2:
        return min(n_labels, n_spots), "labels"
    if n_labels == 1:
        log.warning("the ground truth has a single label: choosing the number of clusters automatically")
    return None, "auto:silhouette"


# ----------------------------------------------------------------------------- reading inputs
def _aligned_embeddings(emb: pd.DataFrame, spot_ids: pd.Series, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """S and the substitute view (None when train-senca wrote none) in the spots' row order.

    A spot missing on either side, or a non-finite value, is named in the error.
    """
    emb_ids = emb["spot_id"].astype(str)
    wanted = pd.Index(spot_ids.astype(str))
    missing = wanted.difference(pd.Index(emb_ids), sort=False)
    if len(missing):
        raise SencaError(f"{len(missing)} spot(s) of the spots file have no embedding, e.g. spot {missing[0]!r}", path)
    extra = pd.Index(emb_ids).difference(wanted, sort=False)
    if len(extra):
        raise SencaError(f"{len(extra)} embedded spot(s) are not in the spots file, e.g. spot {extra[0]!r}", path)
    if emb_ids.duplicated().any():
        raise SencaError(f"duplicated spot id {emb_ids[emb_ids.duplicated()].iloc[0]!r}", path)
    order = pd.Series(np.arange(len(emb_ids)), index=emb_ids.to_numpy()).loc[wanted].to_numpy()
    S = embedding_matrix(emb)[order]
    view = embedding_matrix(emb, VIEW_PREFIX)[order] if any(c.startswith(VIEW_PREFIX) for c in emb.columns) else None
    for name, block in (("embedding", S), ("substitute view", view)):
        if block is not None and not np.isfinite(block).all():
            bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise SencaError(f"{name} of spot {wanted[bad]!r} is not finite", path)
    return S, view


def _resolve_image(option: Path | None, spots_meta: dict[str, Any]) -> tuple[Path | None, dict[str, Any], str | None]:
    """(image path or None, image info for the metadata, a note when a recorded image is unavailable)."""
    info = dict(spots_meta.get("image") or {})
    if option is not None:
        if not Path(option).exists():
            raise SencaError("image not found", option)
        return Path(option), {**info, "path": str(Path(option).resolve()), "source": info.get("source") or "option"}, None
    recorded = info.get("path")
    if not recorded or info.get("source") == "none":
        return None, {**info, "path": None, "source": "none"}, None
    if not Path(recorded).exists():
        log.warning("image %s recorded by preprocess is not reachable here: figures are drawn without it "
                    "(pass --image)", recorded)
        return None, info, "image not reachable"
    return Path(recorded), info, None


def _spot_pitch(spots_meta: dict[str, Any], xy: np.ndarray) -> float:
    """Spot-to-spot distance in pixels: from preprocess, else the median nearest-neighbour distance."""
    pitch = spots_meta.get("spot_pitch_px")
    if pitch and np.isfinite(pitch) and pitch > 0:
        return float(pitch)
    measured = median_spot_pitch(xy)
    return measured if np.isfinite(measured) and measured > 0 else 1.0


# ----------------------------------------------------------------------------- the stage
@dataclass
class ClusterResult:
    """Everything ``senca cluster`` writes, computed but not yet on disk."""

    sample: str
    clusters: pd.DataFrame
    provenance: Provenance
    adata: Any
    figures: dict[str, Any] = field(repr=False)
    n_clusters: int = 0
    source: str = ""


def resolve_method(method: str | None, spots_meta: dict[str, Any]) -> str:
    """The flat clustering of S: ``--method``, else by platform (PLATFORM_CLUSTER_METHOD, docs/method.md)."""
    if method is None:
        return PLATFORM_CLUSTER_METHOD.get(str(spots_meta.get("defaults_platform")), "ward")
    if method not in CLUSTER_METHODS:
        raise SencaError(f"--method must be one of {', '.join(CLUSTER_METHODS)}, got {method!r}")
    return method


def resolve_view_weight(option: float | None, spots_meta: dict[str, Any], has_view: bool,
                        embeddings: Path) -> tuple[float, str]:
    """The substitute view's weight beside S and where it came from: ``--view-weight``, else the platform's.

    An explicit weight > 0 needs the view (train-senca writes it as ``view_*`` columns): its absence is a
    user error. The platform's default falls back to S alone, with a warning, for embeddings written
    before senca wrote the view, so the recorded weight is always the one used.
    """
    if option is not None:
        if not np.isfinite(option) or option < 0:
            raise SencaError(f"--view-weight must be a number >= 0, got {option}")
        if option > 0 and not has_view:
            raise SencaError(f"--view-weight {option:g} needs the substitute view ({VIEW_PREFIX}* columns), which "
                             "these embeddings lack: train them again with this senca, or use --view-weight 0", embeddings)
        return float(option), "option"
    weight = PLATFORM_VIEW_WEIGHT.get(str(spots_meta.get("defaults_platform")), 0.0)
    if weight > 0 and not has_view:
        log.warning("%s has no substitute view (%s* columns; written by an older train-senca): clustering S alone",
                    embeddings.name, VIEW_PREFIX)
        return 0.0, "platform default; no view in the embeddings"
    return weight, "platform default"


def resolve_knn_prior(option: float | None, spots_meta: dict[str, Any]) -> tuple[float, str]:
    """The kNN prior's weight after the mixture and where it came from: ``--knn-prior`` (checked by
    :func:`cluster_slide` before any file is read), else the platform's."""
    if option is not None:
        return float(option), "option"
    return PLATFORM_KNN_PRIOR.get(str(spots_meta.get("defaults_platform")), 0.0), "platform default"


def cluster_slide(embeddings: str | Path, spots: str | Path, h5ad: str | Path, n_clusters: int | None = None,
                  image: str | Path | None = None, seed: int = 0, method: str | None = None,
                  view_weight: float | None = None, gmm_inits: int | None = None,
                  knn_prior: float | None = None) -> ClusterResult:
    """Cluster one slide's S (tied GMM or Ward); build clusters table, figures and the final AnnData.

    The Ward tree and its dendrogram are built either way (the paper's agglomerative view of S); with
    ``method="gmm"`` the flat clusters come from the tied Gaussian mixture (senca.clustering). With a view
    weight w > 0 (``view_weight``, else the platform's: Visium 2, legacy ST 0) everything here (tree,
    mixture, automatic k, UMAP) works on [S, w x substitute view], each block at unit root mean variance.

    Reads ``{s}.embeddings.parquet``, ``{s}.spots.parquet``, the preprocess ``{s}.h5ad`` (and the
    H&E image, for figures and ``uns['spatial']`` only: pixels never change the clusters).
    """
    from senca import plots

    if gmm_inits is not None and gmm_inits < 1:  # before any file is read or tree built
        raise SencaError(f"--gmm-inits must be >= 1, got {gmm_inits}")
    if knn_prior is not None and not (np.isfinite(knn_prior) and knn_prior >= 0):
        raise SencaError(f"--knn-prior must be a number >= 0, got {knn_prior}")
    embeddings, spots, h5ad = Path(embeddings), Path(spots), Path(h5ad)
    spots_df, spots_meta = read_table(spots, "spots")
    emb_df, emb_meta = read_table(embeddings, "embeddings")
    sample = str(spots_meta.get("sample"))
    if str(emb_meta.get("sample")) != sample:
        raise SencaError(f"embeddings are of sample {emb_meta.get('sample')!r}, spots of {sample!r}", embeddings)
    check_made_from(emb_meta, embeddings, "spots", spots)
    spot_ids = spots_df["spot_id"].astype(str)
    S, view = _aligned_embeddings(emb_df, spot_ids, embeddings)
    n = len(spot_ids)
    labels = spots_df["label"] if "label" in spots_df.columns else None
    if labels is not None and labels.isna().all():
        labels = None
    if n < 3:
        raise SencaError(f"only {n} spot(s): nothing to cluster", spots)

    k, source = resolve_n_clusters(n_clusters, spots_meta.get("n_clusters"), labels, n)
    weight, weight_source = resolve_view_weight(view_weight, spots_meta, view is not None, embeddings)
    X = beside_view(S, view, weight)  # what is clustered: S, or [S, w x view]
    what = "S" if X is S else f"[S, {weight:g} x view]"
    adata, _ = read_h5ad_for_spots(h5ad, spot_ids)

    # kNN graph of what is clustered (for UMAP)
    import scanpy as sc

    adata.obsm["X_senca"] = S
    rep = "X_senca"
    if X is not S:
        adata.obsm["X_senca_view"] = view
        adata.obsm["X_senca_clustered"] = X
        rep = "X_senca_clustered"
    cache_umap_kernels()
    n_neighbors = max(2, min(UMAP_NEIGHBORS, n - 1))
    sc.pp.neighbors(adata, use_rep=rep, n_neighbors=n_neighbors, random_state=seed,
                    transformer=_knn_transformer(n, n_neighbors, seed))
    if n > EXACT_WARD_MAX_SPOTS:
        n_micro = micro_cluster_count(n, k)
        log.info("%d spots > %d: Ward over %d k-means micro-clusters of %s", n, EXACT_WARD_MAX_SPOTS, n_micro, what)
        tree = two_level_ward_tree(X, n_micro, seed)
    else:
        tree = ward_tree(X)

    auto_scores = None
    if k is None:
        k, auto_scores = auto_n_clusters(tree, X, seed)
        log.info("n_clusters chosen automatically: k=%d (largest silhouette of %s over k=%d..%d: %s)", k, what,
                 min(auto_scores), max(auto_scores), ", ".join(f"{kk}:{v:.3f}" for kk, v in auto_scores.items()))
    method = resolve_method(method, spots_meta)
    for name, given in (("--gmm-inits", gmm_inits), ("--knn-prior", knn_prior)):
        if given is not None and method != "gmm":
            log.warning("%s: %s %g has no effect: the flat clusters are Ward's cut (--method gmm uses it)",
                        sample, name, given)
    prior, prior_source = resolve_knn_prior(knn_prior, spots_meta)
    mixture = None
    if method == "gmm":
        mixture = tied_gmm(X, k, seed=seed, n_init=gmm_inits, knn_prior=prior)
        assignment = mixture.labels
    else:
        assignment = cut_tree(tree, k)
    how = f"Ward {tree.method}"
    if mixture:
        how = f"tied GMM on its PCA {mixture.n_pcs}, best of {mixture.n_init} inits by likelihood"
        if mixture.knn_prior:
            how += (f", kNN prior {mixture.knn_prior:g} over {mixture.knn_neighbours} neighbours moved "
                    f"{mixture.prior_moved} spots")
    log.info("%s: %d spots -> %d clusters of %s (n_clusters from %s, %s)", sample, n, k, what, source, how)

    run_umap(adata, X, seed)

    valid = valid_label_mask(labels) if labels is not None else None
    score = score_clusters(assignment, labels) if labels is not None else None
    xy = spots_df[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    image_path, image_info, image_note = _resolve_image(Path(image) if image is not None else None, spots_meta)
    thumb = plots.load_thumbnail(image_path) if image_path is not None else None
    pitch = _spot_pitch(spots_meta, xy)

    clusters = pd.DataFrame({
        "spot_id": spot_ids.to_numpy(),
        "cluster": assignment.astype(np.int32),
        "label": labels.astype("string").array if labels is not None else pd.array([None] * n, dtype="string"),
        "pixel_x": xy[:, 0],
        "pixel_y": xy[:, 1],
    })
    sizes = np.bincount(assignment, minlength=k)
    extra = {
        "n_clusters": k,
        "n_clusters_source": source,
        "n_clusters_auto": {"criterion": "silhouette", "scores": {str(kk): v for kk, v in auto_scores.items()}}
        if auto_scores else None,
        "cluster_sizes": sizes.tolist(),
        "ward": tree.method,
        "method": method,
        "gmm": {"n_pcs": mixture.n_pcs, "n_init": mixture.n_init, "log_likelihood": mixture.log_likelihood,
                "bic": mixture.bic, "converged": mixture.converged,
                "knn_prior": {"beta": mixture.knn_prior, "source": prior_source, "neighbours": mixture.knn_neighbours,
                              "iterations": KNN_PRIOR_ITERATIONS if mixture.knn_prior else 0,
                              "spots_moved": mixture.prior_moved}} if mixture else None,
        "embedding_dim": int(S.shape[1]),
        "clustered": {"on": what, "view_weight": weight, "view_weight_source": weight_source,
                      "view_dim": int(view.shape[1]) if view is not None else 0, "dim": int(X.shape[1])},
        "image": image_info,
        "platform": spots_meta.get("platform"),
        "spot_pitch_px": pitch,
        "train_params": emb_meta.get("params"),
        "train_summary": {key: emb_meta.get(key) for key in ("image", "image_substitute", "device", "final_losses")
                          if key in emb_meta},
        "ari": score["ari"] if score and score["status"] == "ok" else None,
    }
    provenance = Provenance(
        "clusters", sample, "cluster",
        params={"n_clusters": n_clusters, "image": image, "seed": seed, "method": method, "view_weight": view_weight,
                "gmm_inits": gmm_inits, "knn_prior": knn_prior,
                "exact_ward_max_spots": EXACT_WARD_MAX_SPOTS, "umap_neighbors": UMAP_NEIGHBORS,
                "micro_clusters": tree.n_micro},
        inputs={"embeddings": file_checksum(embeddings), "spots": file_checksum(spots), "h5ad": file_checksum(h5ad)},
        extra=extra,
    )

    _annotate_anndata(adata, sample, assignment, labels, thumb, pitch, provenance, plots.cluster_colors(k))
    ari = score["ari"] if score and score["status"] == "ok" else None
    label_arr = labels.to_numpy(dtype=object) if labels is not None else None
    figures = {
        "clusters.png": plots.plot_spatial_clusters(xy, assignment, pitch, thumb, sample, label_arr, valid, ari,
                                                    image_note),
        "umap.png": plots.plot_umap(adata.obsm["X_umap"], assignment, sample, label_arr, valid),
        "dendrogram.png": plots.plot_dendrogram(
            tree.linkage(), node_clusters(tree, assignment if method == "ward" else cut_tree(tree, k), k),
            k, cut_height(tree, k), sample,
            note=("" if tree.method == "exact" else " (Ward over k-means micro-clusters of S)")
            + ("" if method == "ward" else "; colours: the tree's own cut, the clusters are the GMM's")),
    }
    return ClusterResult(sample, clusters, provenance, adata, figures, k, source)


def _annotate_anndata(adata: Any, sample: str, assignment: np.ndarray, labels: pd.Series | None,
                      thumb: Any, pitch: float, provenance: Provenance, colors: list[str]) -> None:
    """Put clusters, S and the image where Scanpy/Squidpy look for them.

    ``uns['spatial'][sample]``: ``images['hires']`` is the H&E thumbnail (uint8) and
    ``tissue_hires_scalef`` maps the full-resolution pixel coordinates of ``obsm['spatial']`` into
    it; ``spot_diameter_fullres`` is 0.55 x the spot pitch (Visium's 55 um spots at 100 um). An
    image-less slide gets no ``images`` (no pixels are invented): plot it with ``img_key=None``.
    """
    k = int(assignment.max()) + 1
    categories = [str(i) for i in range(k)]
    adata.obs["senca_cluster"] = pd.Categorical([str(c) for c in assignment], categories=categories)
    adata.uns["senca_cluster_colors"] = colors
    if labels is not None:
        adata.obs["label"] = pd.Categorical(labels.astype("string").fillna("NA").to_numpy(dtype=str))
    elif "label" in adata.obs:
        adata.obs["label"] = adata.obs["label"].astype("string").fillna("NA").astype("category")
    if "spatial" not in adata.obsm:
        raise SencaError("h5ad has no obsm['spatial']")
    from senca.plots import SPOT_DIAMETER_FRACTION

    scalefactors = {"tissue_hires_scalef": float(thumb.scale) if thumb is not None else 1.0,
                    "spot_diameter_fullres": float(pitch * SPOT_DIAMETER_FRACTION)}
    library: dict[str, Any] = {"images": {}, "scalefactors": scalefactors,
                               "metadata": {"source": "senca", "image": "none" if thumb is None else "hires thumbnail"}}
    if thumb is not None:
        library["images"]["hires"] = thumb.pixels
    adata.uns["spatial"] = {sample: library}
    if isinstance(adata.uns.get("senca"), str):  # preprocess's provenance: kept, under its stage's name
        adata.uns["senca_preprocess"] = adata.uns["senca"]
    adata.uns["senca"] = json.dumps(provenance.to_json(), sort_keys=True, default=str)


def write_cluster_outputs(result: ClusterResult, outdir: str | Path) -> dict[str, Path]:
    """Write clusters.parquet, the three figures and senca.h5ad into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s = result.sample
    written = {"clusters.parquet": write_table(result.clusters, outdir / f"{s}.clusters.parquet", result.provenance)}
    for name, fig in result.figures.items():
        written[name] = save_figure(fig, outdir / f"{s}.{name}")
    written["senca.h5ad"] = write_h5ad(result.adata, outdir / f"{s}.senca.h5ad")
    return written
