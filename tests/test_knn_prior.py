"""senca.knn_prior: the Potts prior over the clustered features' kNN graph, refitted after the tied mixture."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from senca.clustering import tied_gmm
from senca.knn_prior import knn_graph, refine_with_knn_prior


def overlapping(seed: int = 0, n: int = 600, k: int = 4, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """k groups along one axis that overlap (their boundaries are ambiguous), and the group of each row."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, k, size=n)
    X = rng.normal(size=(n, d))
    X[:, 0] += group * 2.0
    return X, group


def test_knn_graph_is_each_rows_nearest_others_at_equal_weight():
    X, _ = overlapping()
    graph = knn_graph(X, 7)
    assert graph.shape == (len(X), len(X)) and graph.nnz == 7 * len(X)  # O(spots x k), never dense
    np.testing.assert_allclose(np.asarray(graph.sum(axis=1)).ravel(), 1.0)
    assert graph.diagonal().sum() == 0  # a spot is not its own neighbour
    distances = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    brute = np.argsort(distances, axis=1)[:, :7]
    assert all(set(graph[i].indices) == set(brute[i]) for i in range(len(X)))


def test_refinement_is_mean_field_em_with_the_prior():
    """Against a direct implementation: tied M step, Gaussian densities, beta x mean neighbour responsibility."""
    X, _ = overlapping(seed=3, n=200, k=3, d=3)
    labels = tied_gmm(X, 3, seed=0, n_init=5).labels
    beta, neighbours, rounds = 6.0, 8, 4
    A = knn_graph(X, neighbours).toarray()
    q = np.eye(3)[labels]
    for _ in range(rounds):
        nk = q.sum(axis=0)
        means = q.T @ X / nk[:, None]
        cov = sum((q[:, [j]] * (X - means[j])).T @ (X - means[j]) for j in range(3)) / len(X) + 1e-5 * np.eye(3)
        log_p = np.stack([np.log(nk[j] / len(X)) + multivariate_normal(means[j], cov).logpdf(X) for j in range(3)], 1)
        z = log_p + beta * A @ q
        q = np.exp(z - logsumexp(z, axis=1, keepdims=True))
    expected = q.argmax(axis=1)
    got = refine_with_knn_prior(X, labels, beta, neighbours, iterations=rounds)
    assert np.array_equal(got, expected)


def test_a_stronger_prior_makes_labels_agree_with_their_neighbours():
    X, _ = overlapping(seed=1)
    labels = tied_gmm(X, 4, seed=0, n_init=10).labels
    graph = knn_graph(X, 15).tocoo()

    def agreement(lab: np.ndarray) -> float:
        return float(np.mean(lab[graph.row] == lab[graph.col]))

    shares = [agreement(refine_with_knn_prior(X, labels, beta, 15)) for beta in (0.0, 4.0, 16.0)]
    assert shares[0] < shares[1] < shares[2]


def test_tied_gmm_records_the_prior_and_zero_is_the_plain_mixture():
    X, _ = overlapping(seed=2)
    plain = tied_gmm(X, 4, seed=0, n_init=10)
    zero = tied_gmm(X, 4, seed=0, n_init=10, knn_prior=0.0)
    assert np.array_equal(plain.labels, zero.labels) and zero.prior_moved == 0 and zero.knn_neighbours == 0
    prior = tied_gmm(X, 4, seed=0, n_init=10, knn_prior=16.0, knn_neighbours=20)
    again = tied_gmm(X, 4, seed=0, n_init=10, knn_prior=16.0, knn_neighbours=20)
    assert np.array_equal(prior.labels, again.labels)  # deterministic
    assert prior.knn_prior == 16.0 and prior.knn_neighbours == 20 and prior.prior_moved > 0
    assert prior.log_likelihood == pytest.approx(plain.log_likelihood)  # the mixture's own evidence, unchanged
    assert set(np.unique(prior.labels)) <= set(range(4))


def test_tiny_inputs_do_not_break():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert knn_graph(X[:1], 5).nnz == 0
    assert refine_with_knn_prior(X, np.array([0, 0, 1, 1]), 16.0, 30, iterations=3).tolist() == [0, 0, 1, 1]


def test_the_graphs_size_follows_the_slide():
    """One neighbour per 120 spots, 5 to 30: DLPFC's ~3,650 spots get 30, a 782-spot crop 6, big slides 30."""
    from senca.knn_prior import default_neighbours

    assert default_neighbours(3_639) == 30 and default_neighbours(3_673) == 30
    assert default_neighbours(782) == 6 and default_neighbours(300) == 5 and default_neighbours(100_000) == 30
    X, _ = overlapping(seed=4, n=600)
    fit = tied_gmm(X, 4, seed=0, n_init=5, knn_prior=8.0)
    assert fit.knn_neighbours == 5  # 600 // 120


def test_neighbour_lists_from_an_approximate_search_become_an_averaging_matrix():
    """NN-descent's lists (above 10^5 spots) may hold the spot itself or -1: both are dropped, k kept, rows sum to 1."""
    from senca.knn_prior import mean_over_neighbours

    lists = np.array([[0, 1, 2, 3], [2, 1, 0, -1], [2, -1, -1, -1], [1, 0, 2, 3]])
    graph = mean_over_neighbours(lists, 2).toarray()
    np.testing.assert_allclose(graph, [[0, 0.5, 0.5, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    exact_like = np.argsort(((np.arange(6.0)[:, None] - np.arange(6.0)[None, :]) ** 2), axis=1, kind="stable")
    assert (mean_over_neighbours(exact_like, 3).sum(axis=1) == 1).all()
