"""Flat clustering methods for S beside the paper's Ward tree (``senca.cluster`` keeps the tree either way).

Why: the paper clusters S agglomeratively (Ward) for its dendrogram, but on Visium a tied-covariance
Gaussian mixture (mclust's EEE model, what GraphST and STAGATE use) on the leading principal components
of the same S finds layers more accurately (docs/method.md, "Clustering"). A mixture fit depends on its
initialisation, so several seeded initialisations are fitted and the one with the highest likelihood is
kept: chosen without labels, never by ARI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from senca.knn_prior import default_neighbours, refine_with_knn_prior

CLUSTER_METHODS = ("gmm", "ward")
GMM_PCS = 20  # principal components of S the mixture is fitted on (GraphST's mclust input: PCA 20)
# Starts of the mixture (k-means-started; the most likely wins). More starts find likelier fits and, on DLPFC,
# better layers (400 against 50: +0.010 +- 0.007 expected ARI, 10 seeds, round 25 of docs/method.md); the batched search makes 400
# cost what scikit-learn's 50 did. The work grows with spots x starts, so big slides get fewer, never under 50.
GMM_INITS = 400
GMM_MIN_INITS = 50
GMM_START_SPOTS = 2_000_000  # starts x spots of the default search: 400 up to 5,000 spots, 50 from 40,000
GMM_MAX_ITER = 300
GMM_REG_COVAR = 1e-5
GMM_THREADS = 1  # BLAS/OpenMP threads for the mixture fit (see tied_gmm)


@dataclass
class MixtureFit:
    """The chosen mixture: labels per spot and the label-free evidence it was chosen on."""

    labels: np.ndarray          # (N,) int64 component per spot, 0..k-1
    log_likelihood: float       # mean per-spot log-likelihood of the chosen fit
    bic: float
    n_pcs: int
    n_init: int
    converged: bool
    knn_prior: float = 0.0      # beta of the kNN Potts prior fitted after the mixture (0: the mixture's own labels)
    knn_neighbours: int = 0
    prior_moved: int = 0        # spots whose component the prior changed (likelihood and BIC are the mixture's)


def principal_components(S: np.ndarray, n_pcs: int, seed: int = 0) -> np.ndarray:
    """The leading ``n_pcs`` principal component scores of S (all of S's columns when it is narrower).

    Randomized SVD (scikit-learn) with a fixed seed: O(N x d x n_pcs), deterministic, no d x d eigenproblem.
    """
    from sklearn.decomposition import PCA

    S = np.asarray(S, dtype=np.float64)
    width = min(n_pcs, S.shape[1], max(S.shape[0] - 1, 1))
    if width >= S.shape[1]:
        return S - S.mean(axis=0)
    solver = "randomized" if S.shape[1] > 2 * width else "full"
    return PCA(n_components=width, svd_solver=solver, random_state=seed).fit_transform(S)


def default_gmm_inits(n_spots: int) -> int:
    """The mixture's starts for a slide of ``n_spots`` when --gmm-inits is not given (see GMM_START_SPOTS)."""
    return int(min(GMM_INITS, max(GMM_MIN_INITS, GMM_START_SPOTS // max(n_spots, 1))))


def tied_gmm(S: np.ndarray, k: int, seed: int = 0, n_init: int | None = None, n_pcs: int = GMM_PCS,
             knn_prior: float = 0.0, knn_neighbours: int | None = None) -> MixtureFit:
    """Fit a tied-covariance Gaussian mixture with ``k`` components to PCA(``n_pcs``) of S.

    ``n_init`` (default: ``default_gmm_inits``) k-means-started fits drawn from ``seed`` are searched at
    once (senca.gmm_search: scikit-learn's EM step for step, ~5x less time a start on a Visium slide) and
    the most likely (label-free) is finished by scikit-learn's ``GaussianMixture`` from its parameters:
    likelihood, BIC and the converged flag are scikit-learn's, and so are the labels unless ``knn_prior``
    > 0, which then refits the labels with a Potts prior of that weight over the same PCs' kNN graph
    (senca.knn_prior; ``knn_neighbours`` None: one neighbour per 120 spots, 5 to 30). Components are
    renumbered by decreasing size, so equal partitions give equal label vectors.
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from senca.gmm_search import search_tied_starts

    if k < 1 or k > len(S):
        raise ValueError(f"k = {k} components for {len(S)} spots")
    X = principal_components(S, n_pcs, seed).astype(np.float64)
    if n_init is None:
        n_init = default_gmm_inits(len(X))
    # one BLAS/OpenMP thread: scikit-learn's steps on (spots x 20) were too small for threads to pay (14.7 s
    # threaded, 3.2 s on one); the batched search gains little from two (2.4 vs 2.9 s on DLPFC) and one
    # thread keeps the sums, so the labels, independent of the machine's thread count (docs/scaling.md)
    with threadpool_limits(limits=GMM_THREADS):
        best = search_tied_starts(X, k, n_init, seed, reg_covar=GMM_REG_COVAR, max_iter=GMM_MAX_ITER).best
        model = GaussianMixture(n_components=k, covariance_type="tied", max_iter=GMM_MAX_ITER,
                                reg_covar=GMM_REG_COVAR, weights_init=best.weights / best.weights.sum(),
                                means_init=best.means, precisions_init=_symmetric_inverse(best.covariance),
                                random_state=seed)
        labels = model.fit_predict(X)
        log_likelihood, bic = float(model.score(X)), float(model.bic(X))
        moved = 0
        if knn_prior > 0:
            knn_neighbours = default_neighbours(len(X)) if knn_neighbours is None else knn_neighbours
            refined = refine_with_knn_prior(X, labels, knn_prior, knn_neighbours, reg_covar=GMM_REG_COVAR, seed=seed)
            moved, labels = int((refined != labels).sum()), refined
    return MixtureFit(relabel_by_size(labels), log_likelihood, bic, X.shape[1], n_init, bool(model.converged_),
                      float(knn_prior), int(knn_neighbours) if knn_prior > 0 else 0, moved)


def _symmetric_inverse(covariance: np.ndarray) -> np.ndarray:
    """The precision matrix, made exactly symmetric (scikit-learn checks that before it starts)."""
    precision = np.linalg.inv(covariance)
    return (precision + precision.T) / 2


def beside_view(S: np.ndarray, view: np.ndarray | None, weight: float) -> np.ndarray:
    """What the cluster stage clusters: S itself (``weight`` 0 or no view), else [S, ``weight`` x view].

    Each block is brought to unit root mean variance first (senca.blocks), so ``weight`` is the view's
    share whatever the two blocks' widths and units. Why: on Visium the substitute view beside S at
    weight 2 found layers more accurately than S alone (+0.020 +- 0.007 ARI, DLPFC, 5 seeds; a tie on
    legacy ST): docs/method.md, round 17.
    """
    if not weight or view is None:
        return S
    from senca.blocks import unit_root_mean_variance

    blocks = [unit_root_mean_variance(np.asarray(S, dtype=np.float32)),
              unit_root_mean_variance(np.asarray(view, dtype=np.float32), weight)]
    return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 by decreasing cluster size (ties: by first appearance)."""
    labels = np.asarray(labels)
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(values.max() + 1 if len(values) else 0, dtype=np.int64)
    mapping[values[order]] = np.arange(len(values))
    return mapping[labels]
