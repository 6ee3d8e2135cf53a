"""A Potts prior over the clustered features' kNN graph, fitted after the tied mixture (``senca cluster --knn-prior``).

Why: on Visium a slide's layers are long stretches of one expression gradient in what is clustered
(docs/method.md, round 20), and a tied Gaussian mixture puts its boundaries where its ellipsoids meet. A
spot's nearest spots in the same features mostly share its layer (89 % of the 10 nearest on DLPFC), so a
hidden Markov random field over that graph, the mixture's likelihood plus ``beta`` times the share of the
spot's neighbours in each component, fitted by mean-field EM (Zhang, Brady & Smith 2001; Celeux, Forbes &
Peyrard 2003), moves the boundary spots to the side their neighbours are on: +0.021 +- 0.006 ARI on DLPFC
over ten seeds, every slide and seed up (docs/method.md, round 26). The graph is in feature space, not on
the slide: a spot's spatial neighbours are already averaged into the view, and a prior over the spatial
graph gained +0.004 at most.

Label-free (no label is read), deterministic, and O(spots x neighbours) memory: the graph is a sparse kNN
matrix (exact up to ``EXACT_KNN_MAX_SPOTS``, NN-descent above, as the UMAP graph), never spots x spots.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from senca.gmm_search import component_logits, m_step, one_hot

# k of the feature-space graph: a share of the slide, not a count (round 26: on DLPFC's ~3,650 spots k 20-50 give
# +0.015-0.027 at beta 8-16, but on the 782-spot demo band k 15-30 cost 0.008-0.010 while k 5-10 tie), so
# k = spots // KNN_PRIOR_SPOTS_PER_NEIGHBOUR (30 on DLPFC), between KNN_PRIOR_MIN and KNN_PRIOR_MAX
KNN_PRIOR_SPOTS_PER_NEIGHBOUR = 120
KNN_PRIOR_MIN, KNN_PRIOR_MAX = 5, 30
KNN_PRIOR_ITERATIONS = 10  # mean-field EM rounds (round 26: 30 rounds add +0.005 at k 20; the reach grows with rounds)
EXACT_KNN_MAX_SPOTS = 100_000  # exact neighbours up to here, NN-descent above (senca.cluster's UMAP graph: the same)


def default_neighbours(n_spots: int) -> int:
    """The prior's k for a slide of ``n_spots``: one neighbour per 120 spots, 5 to 30 (30 from 3,600 spots)."""
    return int(min(KNN_PRIOR_MAX, max(KNN_PRIOR_MIN, n_spots // KNN_PRIOR_SPOTS_PER_NEIGHBOUR)))


def knn_graph(X: np.ndarray, n_neighbors: int, seed: int = 0) -> sparse.csr_matrix:
    """Each row's ``n_neighbors`` nearest other rows of X (Euclidean), weight 1 / n_neighbors: (N, N) sparse.

    A row of the product with responsibilities is then the mean responsibility of the spot's neighbours.
    """
    n = len(X)
    k = int(min(n_neighbors, n - 1))
    if k < 1:
        return sparse.csr_matrix((n, n))
    if n <= EXACT_KNN_MAX_SPOTS:
        from sklearn.neighbors import NearestNeighbors

        neighbours = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(return_distance=False)  # itself excluded
    else:
        from pynndescent import NNDescent

        neighbours = NNDescent(X, n_neighbors=k + 1, random_state=seed, n_jobs=1).neighbor_graph[0]
    return mean_over_neighbours(neighbours, k)


def mean_over_neighbours(neighbours: np.ndarray, k: int) -> sparse.csr_matrix:
    """(N, N) sparse averaging matrix from each row's neighbour ids ((N, m) array, nearest first): the first ``k``
    valid ids other than the row itself, weight 1 / their number. An approximate search may return the row itself
    or -1 (no neighbour found); both are dropped, so every row of the matrix still sums to 1 (0 if none is left).
    """
    n = len(neighbours)
    ids = np.asarray(neighbours, dtype=np.int64)
    valid = (ids >= 0) & (ids != np.arange(n)[:, None])
    valid &= np.cumsum(valid, axis=1) <= k
    rows = np.nonzero(valid)[0]
    counts = np.bincount(rows, minlength=n)
    weights = 1.0 / counts[rows]
    return sparse.csr_matrix((weights, (rows, ids[valid])), shape=(n, n))


def refine_with_knn_prior(X: np.ndarray, labels: np.ndarray, beta: float, n_neighbors: int | None = None,
                          iterations: int = KNN_PRIOR_ITERATIONS, reg_covar: float = 1e-5, seed: int = 0) -> np.ndarray:
    """Labels of X after mean-field EM of a tied mixture with a Potts prior over X's kNN graph.

    Starts from the mixture's hard ``labels`` (k = labels.max() + 1 components). Each round: the tied M step
    from the current responsibilities q, then q_ij proportional to w_j N(x_i | mean_j, cov) exp(beta *
    mean of q_.j over i's neighbours). ``beta`` 0 is plain tied EM from the labels. ``n_neighbors``: the
    graph's k (default :func:`default_neighbours`).
    """
    X = np.asarray(X, dtype=np.float64)
    n_neighbors = default_neighbours(len(X)) if n_neighbors is None else n_neighbors
    k = int(labels.max()) + 1
    graph = knn_graph(X, n_neighbors, seed) if beta > 0 else None
    scatter = X.T @ X
    resp = one_hot(np.asarray(labels, dtype=np.int64)[None, :], k)  # (1, k, N)
    for _ in range(iterations):
        logits = component_logits(X, m_step(X, scatter, resp, reg_covar))[0][0]    # (k, N)
        if graph is not None:
            logits += beta * (graph @ resp[0].T).T
        logits -= logits.max(axis=0)
        np.exp(logits, out=logits)
        resp = (logits / logits.sum(axis=0))[None]
    return resp[0].argmax(axis=0)
