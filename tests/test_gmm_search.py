"""senca.gmm_search: many k-means-started tied mixtures at once, step for step scikit-learn's EM."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from senca import gmm_search
from senca.clustering import default_gmm_inits, tied_gmm
from senca.gmm_search import e_step, kmeans_plus_plus, lloyd, m_step, one_hot, search_tied_starts, tied_em


def layered(seed: int = 0, n: int = 800, k: int = 5, d: int = 6) -> np.ndarray:
    """k overlapping groups along one axis with a shared stretched covariance (several likelihood basins)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] *= 3.0
    X[:, 0] += rng.integers(0, k, size=n) * 2.5
    return X


def test_em_from_a_start_is_scikit_learns_em_from_it():
    X, k = layered(), 5
    labels = np.random.default_rng(1).integers(0, k, size=(1, len(X)))
    start = m_step(X, X.T @ X, one_hot(labels, k), 1e-5)
    params, score, converged = tied_em(X, X.T @ X, labels, k, reg_covar=1e-5, tol=1e-3, max_iter=300)
    reference = GaussianMixture(k, covariance_type="tied", reg_covar=1e-5, tol=1e-3, max_iter=300,
                                weights_init=start.weights[0] / start.weights[0].sum(), means_init=start.means[0],
                                precisions_init=np.linalg.inv(start.covariance[0])).fit(X)
    assert converged[0] and reference.converged_
    assert score[0] == pytest.approx(reference.lower_bound_, abs=1e-10)
    np.testing.assert_allclose(params.means[0], reference.means_, atol=1e-9)
    np.testing.assert_allclose(params.covariance[0], reference.covariances_, atol=1e-9)


def test_e_step_likelihood_is_scikit_learns_score():
    X, k = layered(seed=2), 5
    model = GaussianMixture(k, covariance_type="tied", random_state=0).fit(X)
    params = gmm_search.TiedParameters(model.weights_[None], model.means_[None], model.covariances_[None])
    resp, ll = e_step(X, X.T @ X, params)
    assert ll[0] == pytest.approx(model.score(X), abs=1e-10)
    np.testing.assert_allclose(resp[0].T, model.predict_proba(X), atol=1e-10)


def test_lloyd_from_given_centres_is_scikit_learns_kmeans():
    X, k = layered(seed=3), 5
    rng = np.random.default_rng(4)
    centres = kmeans_plus_plus(X, np.einsum("ij,ij->i", X, X), k, 6, rng)
    assert np.isin(centres.reshape(-1, X.shape[1]), X).all(axis=1).all()  # seeds are data points
    tol = 1e-4 * X.var(axis=0).mean()
    ours = lloyd(X, centres.copy(), tol)
    for b in range(len(centres)):
        reference = KMeans(k, init=centres[b], n_init=1, algorithm="lloyd").fit(X)
        assert np.array_equal(ours[b], reference.labels_)


def test_search_keeps_its_most_likely_start_and_is_deterministic(monkeypatch):
    X, k = layered(seed=5), 5
    first = search_tied_starts(X, k, 30, seed=7)
    again = search_tied_starts(X, k, 30, seed=7)
    assert np.array_equal(first.log_likelihoods, again.log_likelihoods)
    _, best_score = e_step(X, X.T @ X, gmm_search.TiedParameters(
        first.best.weights[None], first.best.means[None], first.best.covariance[None]))
    assert best_score[0] >= first.log_likelihoods.max() - 1e-3  # the best start's final parameters
    assert first.converged.all() and len(first.log_likelihoods) == 30
    monkeypatch.setattr(gmm_search, "CHUNK_BYTES", 1)  # one start a chunk: the same search, memory-bound
    single = search_tied_starts(X, k, 30, seed=7)
    assert len(single.log_likelihoods) == 30 and single.converged.all()


def test_more_starts_find_a_likelier_fit_than_one():
    X, k = layered(seed=6), 5
    assert tied_gmm(X, k, seed=0, n_init=40).log_likelihood >= tied_gmm(X, k, seed=0, n_init=1).log_likelihood - 1e-9


def test_default_starts_shrink_with_the_slide_but_never_below_fifty():
    assert default_gmm_inits(613) == 400 and default_gmm_inits(3_639) == 400
    assert default_gmm_inits(10_000) == 200
    assert default_gmm_inits(100_000) == 50 and default_gmm_inits(300_000) == 50
    assert tied_gmm(layered(), 5).n_init == 400
