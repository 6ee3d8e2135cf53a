"""Many starts of the tied-covariance Gaussian mixture at once: the search behind ``senca cluster --method gmm``.

Why: the tied mixture's likelihood on a Visium slide has many basins and the most likely is rare (0.25-2 %
of single starts reach it; docs/method.md, round 23), so the label-free choice improves with the number of
starts. scikit-learn fits starts one after another, and on a slide's (spots x 20) matrix each EM step is
mostly Python and numpy call overhead (~5 ms a step, ~0.06 s a start on DLPFC). Here a chunk of starts
runs as stacked arrays: k-means++ seeding and Lloyd steps (scikit-learn's ``init_params="kmeans"``), then
tied EM with scikit-learn's stopping rule, ~5x less time a start on a Visium slide. The most likely start is then
finished by scikit-learn's own ``GaussianMixture`` (its EM from those parameters, its labels, likelihood
and BIC), so what is reported is scikit-learn's model; only the search for its start is ours.

Memory is O(chunk x spots x k): the chunk shrinks with the slide (``CHUNK_BYTES``), never an N x N matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_BYTES = 64 * 2**20  # working set of one chunk's (starts x spots x k) float64 arrays
KMEANS_MAX_ITER = 300     # scikit-learn KMeans' defaults
KMEANS_TOL = 1e-4
LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class TiedParameters:
    """One tied Gaussian mixture: component weights (k,), means (k, d), shared covariance (d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covariance: np.ndarray


@dataclass
class SearchResult:
    """The most likely start and what the search saw (mean per-spot log-likelihood of every start)."""

    best: TiedParameters
    log_likelihoods: np.ndarray  # (n_starts,) at each start's convergence, in the order drawn
    converged: np.ndarray        # (n_starts,) bool: the EM stopping rule met within max_iter


def chunk_size(n_spots: int, k: int, n_starts: int) -> int:
    """Starts per chunk so that a chunk's (starts x spots x max(k, 3)) float64 arrays stay near CHUNK_BYTES."""
    per_start = n_spots * max(k, 3) * 8 * 3  # distances / log-probabilities, their exp, one-hot or responsibilities
    return int(max(1, min(n_starts, CHUNK_BYTES // max(per_start, 1))))


def kmeans_plus_plus(X: np.ndarray, sq_norms: np.ndarray, k: int, n_starts: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding for ``n_starts`` starts at once: (n_starts, k, d) centres.

    As scikit-learn's: 2 + log(k) candidates per new centre, drawn in proportion to the squared distance
    to the nearest centre so far, and the one that most lowers the total kept.
    """
    n, d = X.shape
    trials = 2 + int(np.log(k))
    centres = np.empty((n_starts, k, d))
    first = rng.integers(n, size=n_starts)
    centres[:, 0] = X[first]
    closest = np.maximum(sq_norms[None] - 2 * X[first] @ X.T + sq_norms[first][:, None], 0)  # (B, N)
    for c in range(1, k):
        cumulative = np.cumsum(closest, axis=1)
        draws = rng.random((n_starts, trials)) * cumulative[:, -1:]
        candidates = np.minimum(np.stack([np.searchsorted(row, u) for row, u in zip(cumulative, draws, strict=True)]), n - 1)
        cand_x = X[candidates]                                                       # (B, T, d)
        dist = np.maximum(sq_norms[None, None] - 2 * cand_x @ X.T + sq_norms[candidates][:, :, None], 0)
        dist = np.minimum(dist, closest[:, None, :])                                  # (B, T, N)
        best = dist.sum(axis=2).argmin(axis=1)
        chosen = np.arange(n_starts)
        centres[:, c] = cand_x[chosen, best]
        closest = dist[chosen, best]
    return centres


def lloyd(X: np.ndarray, centres: np.ndarray, tol: float) -> np.ndarray:
    """Lloyd's k-means steps from (B, k, d) centres; returns (B, N) labels.

    Stops a start as scikit-learn does: when its labels no longer change, or when the centres move by
    at most ``tol`` in total squared distance. A centre left without spots stays where it was. Arrays are
    (starts, k, spots): reductions over k then run along contiguous rows of spots.
    """
    n_starts, k, _ = centres.shape
    labels = np.full((n_starts, len(X)), -1)
    active = np.arange(n_starts)
    for _ in range(KMEANS_MAX_ITER):
        C = centres[active]
        new = _nearest(X, C)
        onehot = one_hot(new, k)                                                     # (b, k, N)
        counts = onehot.sum(axis=2)
        moved = np.where(counts[:, :, None] > 0, _rows_times(onehot, X) / np.maximum(counts, 1)[:, :, None], C)
        shift = ((moved - C) ** 2).sum(axis=(1, 2))
        same = (new == labels[active]).all(axis=1)
        labels[active] = new
        centres[active] = moved
        active = active[~(same | (shift <= tol))]
        if not len(active):
            break
    return _nearest(X, centres)  # the final labels are those of the final centres (scikit-learn's last E step)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """(B, k, N) float64 indicator of (B, N) labels: hard responsibilities, the layout of the search's arrays."""
    return (labels[:, None, :] == np.arange(k)[None, :, None]).astype(np.float64)


def _rows_times(stacked: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(B, k, m) @ (m, p) as one (B k, m) @ (m, p) product: one large BLAS call instead of B small ones."""
    b, k, m = stacked.shape
    return (stacked.reshape(b * k, m) @ right).reshape(b, k, right.shape[1])


def _nearest(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(B, N) index of each spot's nearest centre ((B, k, d) centres; |x|^2 is the same for all and omitted)."""
    dist = _rows_times(centres, X.T)                                                 # (B, k, N)
    dist *= -2
    dist += (centres ** 2).sum(axis=2)[:, :, None]
    # argmin over the short k axis as k elementwise passes over contiguous rows (numpy's argmin over a
    # middle axis is ~5x slower here); ties go to the lower index, as argmin's
    nearest = np.zeros(dist[:, 0].shape, dtype=np.int64)
    lowest = dist[:, 0].copy()
    for j in range(1, dist.shape[1]):
        closer = dist[:, j] < lowest
        nearest[closer] = j
        np.minimum(lowest, dist[:, j], out=lowest)
    return nearest


def m_step(X: np.ndarray, scatter: np.ndarray, resp: np.ndarray, reg_covar: float) -> TiedParameters:
    """Tied M step for (B, k, N) responsibilities, as scikit-learn's (weights, means, one shared covariance)."""
    nk = resp.sum(axis=2) + 10 * np.finfo(resp.dtype).eps                          # (B, k)
    means = _rows_times(resp, X) / nk[:, :, None]                                   # (B, k, d)
    cov = scatter[None] - np.einsum("bk,bkd,bke->bde", nk, means, means)
    cov /= nk.sum(axis=1)[:, None, None]
    idx = np.arange(X.shape[1])
    cov[:, idx, idx] += reg_covar
    return TiedParameters(nk / len(X), means, cov)


def component_logits(X: np.ndarray, params: TiedParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part of log(weight_j N(x | mean_j, cov)) that differs between components: (B, k, N) logits
    log w_j - mean_j' P mean_j / 2 + mean_j' P x, with the precision P (B, d, d) and log sqrt det(cov) (B,).

    With a shared covariance the term x' P x is the same for every component, so it is left out: it cancels
    from the responsibilities (and from any per-component prior added to these logits, senca.knn_prior).
    """
    d = X.shape[1]
    chol = np.linalg.cholesky(params.covariance)                                    # (B, d, d)
    eye = np.broadcast_to(np.eye(d), chol.shape)
    precision = np.linalg.solve(chol.transpose(0, 2, 1), np.linalg.solve(chol, eye))  # (B, d, d)
    pm = params.means @ precision                                                   # (B, k, d): (P mu)' per row
    log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)              # log sqrt det(cov)
    offset = np.log(params.weights) - 0.5 * np.einsum("bkd,bkd->bk", params.means, pm)
    logits = _rows_times(pm, X.T)                                                   # (B, k, N)
    logits += offset[:, :, None]
    return logits, precision, log_det


def e_step(X: np.ndarray, scatter: np.ndarray, params: TiedParameters) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (B, k, N) and each start's mean per-spot log-likelihood (B,).

    The x' P x term left out of :func:`component_logits` has the mean trace(P X'X) / N over spots, so no
    (B, N, d) whitened copy is made.
    """
    n, d = X.shape
    logits, precision, log_det = component_logits(X, params)
    top = logits.max(axis=1)                                                        # (B, N)
    logits -= top[:, None, :]
    np.exp(logits, out=logits)
    total = logits.sum(axis=1)
    resp = np.divide(logits, total[:, None, :], out=logits)
    mean_quad = np.einsum("bde,de->b", precision, scatter) / n                      # mean of x' P x
    ll = (top + np.log(total)).mean(axis=1) - 0.5 * mean_quad - log_det - 0.5 * d * LOG_2PI
    return resp, ll


def _take(params: TiedParameters, rows: np.ndarray) -> TiedParameters:
    return TiedParameters(params.weights[rows], params.means[rows], params.covariance[rows])


def tied_em(X: np.ndarray, scatter: np.ndarray, labels: np.ndarray, k: int, reg_covar: float, tol: float,
            max_iter: int) -> tuple[TiedParameters, np.ndarray, np.ndarray]:
    """Tied EM from hard (B, N) labels for each start, scikit-learn's loop and stopping rule.

    Each step: E step under the current parameters (its mean log-likelihood is the start's score), then
    M step; a start stops once its score changes by less than ``tol``. Returns the final parameters,
    the last scores and the converged flags.
    """
    n_starts = len(labels)
    params = m_step(X, scatter, one_hot(labels, k), reg_covar)
    score = np.full(n_starts, -np.inf)
    converged = np.zeros(n_starts, dtype=bool)
    active = np.arange(n_starts)
    for _ in range(max_iter):
        current = _take(params, active)
        resp, ll = e_step(X, scatter, current)
        updated = m_step(X, scatter, resp, reg_covar)
        del resp
        done = np.abs(ll - score[active]) < tol
        score[active] = ll
        params.weights[active], params.means[active], params.covariance[active] = (
            updated.weights, updated.means, updated.covariance)
        converged[active[done]] = True
        active = active[~done]
        if not len(active):
            break
    return params, score, converged


def search_tied_starts(X: np.ndarray, k: int, n_starts: int, seed: int, reg_covar: float = 1e-6,
                       tol: float = 1e-3, max_iter: int = 100) -> SearchResult:
    """Fit ``n_starts`` k-means-started tied mixtures in chunks and keep the most likely one.

    Deterministic for a ``seed`` (numpy's PCG64 stream; the chunk size depends only on the data's shape).
    """
    if n_starts < 1 or not 1 <= k <= len(X):
        raise ValueError(f"{n_starts} starts of {k} components for {len(X)} spots")
    X = np.ascontiguousarray(X, dtype=np.float64)
    n = len(X)
    rng = np.random.default_rng(seed)
    sq_norms = np.einsum("ij,ij->i", X, X)
    scatter = X.T @ X
    kmeans_tol = KMEANS_TOL * float(X.var(axis=0).mean())
    chunk = chunk_size(n, k, n_starts)
    scores, flags = [], []
    best, best_score = None, -np.inf
    for start in range(0, n_starts, chunk):
        b = min(chunk, n_starts - start)
        centres = kmeans_plus_plus(X, sq_norms, k, b, rng)
        labels = lloyd(X, centres, kmeans_tol)
        params, score, converged = tied_em(X, scatter, labels, k, reg_covar, tol, max_iter)
        scores.append(score)
        flags.append(converged)
        i = int(np.argmax(score))
        if score[i] > best_score:
            best_score = float(score[i])
            best = TiedParameters(params.weights[i].copy(), params.means[i].copy(), params.covariance[i].copy())
    return SearchResult(best, np.concatenate(scores), np.concatenate(flags))
