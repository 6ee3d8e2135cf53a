"""senca.clustering: the tied Gaussian mixture beside Ward (label-free choice of init), and its use by cluster."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_cluster import cluster_args, rewrite_spots, slide  # noqa: F401 (the fixture)

from senca.clustering import principal_components, relabel_by_size, tied_gmm
from senca.io.artifacts import read_table

from helpers import run_cli


def anisotropic_blobs(seed: int = 0, n: int = 600, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """k groups sharing one stretched covariance (what a tied mixture models and Ward's spheres do not)."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, size=n)
    centres = np.zeros((k, 30))
    centres[:, 1] = np.arange(k) * 8.0  # separated along one axis
    noise = rng.normal(size=(n, 30))
    noise[:, 0] *= 4.0  # a stretched nuisance axis shared by every group
    return (centres[groups] + noise).astype(np.float32), groups


def test_tied_gmm_recovers_groups_with_a_shared_covariance():
    X, groups = anisotropic_blobs()
    fit = tied_gmm(X, 4, seed=0)
    assert adjusted_rand_score(groups, fit.labels) > 0.9
    assert fit.converged and fit.n_pcs == 20 and fit.n_init == 400 and np.isfinite(fit.log_likelihood)
    assert sorted(set(fit.labels)) == [0, 1, 2, 3]
    assert (np.diff(np.bincount(fit.labels)) <= 0).all()  # largest component first


def test_more_inits_never_lower_the_likelihood():
    X, _ = anisotropic_blobs(seed=3)
    one, many = tied_gmm(X, 4, seed=0, n_init=1), tied_gmm(X, 4, seed=0, n_init=10)
    assert many.log_likelihood >= one.log_likelihood - 1e-9


def test_tied_gmm_is_deterministic_for_a_seed():
    X, _ = anisotropic_blobs(seed=1)
    assert np.array_equal(tied_gmm(X, 4, seed=5).labels, tied_gmm(X, 4, seed=5).labels)


def test_one_thread_fit_is_the_threaded_fit(monkeypatch):
    """tied_gmm fits on one BLAS/OpenMP thread for speed (docs/scaling.md): the same clusters as threaded."""
    import senca.clustering as clustering

    X, _ = anisotropic_blobs(seed=2, n=900, k=5)
    single = tied_gmm(X, 5, seed=1, n_init=8)
    monkeypatch.setattr(clustering, "GMM_THREADS", None)  # threadpoolctl: None = no limit
    threaded = tied_gmm(X, 5, seed=1, n_init=8)
    assert np.array_equal(single.labels, threaded.labels)
    assert single.log_likelihood == pytest.approx(threaded.log_likelihood, rel=1e-12)


def test_tied_gmm_refuses_more_components_than_spots():
    with pytest.raises(ValueError, match="components"):
        tied_gmm(np.zeros((3, 2), np.float32), 4)


def test_principal_components_keep_narrow_inputs_and_reduce_wide_ones():
    X, _ = anisotropic_blobs()
    assert principal_components(X[:, :8], 20).shape == (600, 8)
    pcs = principal_components(X, 5)
    assert pcs.shape == (600, 5) and np.allclose(pcs.mean(axis=0), 0, atol=1e-6)
    assert np.var(pcs[:, 0]) > 40  # the axis separating the groups comes first


def test_relabel_by_size():
    assert relabel_by_size(np.array([5, 5, 2, 9, 9, 9])).tolist() == [1, 1, 2, 0, 0, 0]


@pytest.mark.parametrize(("method", "platform"), [("gmm", None), ("ward", None), (None, "visium"), (None, "st")])
def test_cluster_method_option_and_platform_default(slide, tmp_path, method, platform):  # noqa: F811 (fixture)
    spots = slide["spots"] if platform is None else rewrite_spots(slide["spots"], tmp_path / "syn.spots.parquet",
                                                                   defaults_platform=platform)
    args = cluster_args({**slide, "spots": spots}, tmp_path, *(["--method", method] if method else []))
    run_cli(*args)
    df, meta = read_table(tmp_path / "syn.clusters.parquet", "clusters")
    expected = method or {"visium": "gmm", "st": "ward"}[platform]
    assert meta["params"]["method"] == expected and meta["method"] == expected
    assert (meta["gmm"] is not None) == (expected == "gmm")
    assert adjusted_rand_score(slide["truth"], df["cluster"]) > 0.9
    assert (tmp_path / "syn.dendrogram.png").stat().st_size > 0  # the Ward tree is drawn either way
