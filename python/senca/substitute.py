"""The image branch's input for a slide without H&E: a smoothed second view of the expression.

Why a module of its own: the substitute view is used by training (``senca.train``, the image branch
of an image-less slide) and by the benchmark's no-network floor ("smoothed PCA + GMM": the same view,
clustered directly), so both measure the very same numbers. Everything is sparse or blockwise:
O(spots x neighbours) memory, never an N x N matrix (docs/method.md, "Image-less slides").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from senca.model.losses import window_mean
from senca.tiling import SlideGraph

SMOOTH_BLOCK_VALUES = 1 << 24  # gathered neighbour values per block (64 MiB float32)
PCA_BLOCK_VALUES = 1 << 25  # PCA row blocks (256 MiB float64; 11,184 spots x 3,000 HVGs)
EIGSH_MIN_WIDTH = 256  # below this many genes the full eigendecomposition is already instant
EIGSH_MAX_FRACTION = 1 / 40  # Lanczos for up to width / 40 components; more: LAPACK's subset eigensolver


def neighbourhood_smooth(x: torch.Tensor, graph: SlideGraph, hops: int,
                         block_values: int = SMOOTH_BLOCK_VALUES) -> torch.Tensor:
    """Average ``x`` over each spot and its graph neighbours, ``hops`` times (sparse, O(N k)).

    Spots are smoothed in blocks of consecutive ids: the attention edges are sorted by target, so a
    block's edges are one slice, and only its gathered neighbour rows (about ``block_values`` values)
    exist at a time instead of (edges x genes) for the whole slide (3 x 10^5 spots x 1,000 HVGs with
    k = 6: ~10 GB). Every spot sums its neighbours in the same order as a single pass: the same numbers.
    """
    edges = graph.attention_edges
    rows = graph.rows(edges)
    if rows.order is not None or x.shape[0] == 0:  # not sorted by target: one pass
        for _ in range(hops):
            x = window_mean(x, edges, graph.num_nodes)
        return x
    degree = max(1, -(-edges.shape[1] // graph.num_nodes))
    step = max(1, block_values // (degree * max(x.shape[1], 1)))
    for _ in range(hops):
        out = torch.empty_like(x)
        for start in range(0, graph.num_nodes, step):
            stop = min(start + step, graph.num_nodes)
            block = edges[:, int(rows.indptr[start]):int(rows.indptr[stop])]
            local = torch.stack([block[0], block[1] - start])
            out[start:stop] = window_mean(x, local, stop - start)
        x = out
    return x


def leading_eigenvectors(covariance: np.ndarray, n_components: int) -> np.ndarray:
    """The ``n_components`` eigenvectors of a symmetric matrix with the largest eigenvalues, largest first.

    Why not ``numpy.linalg.eigh``: a 3,000-gene covariance has 3,000 eigenpairs and the substitute keeps
    32; the full decomposition took 6.8 s of train-senca's start on DLPFC (one core), Lanczos iteration
    (ARPACK ``eigsh``, fixed start vector: deterministic) finds the leading ones to machine precision in
    about 1 s. Lanczos' cost grows with the number asked for, so the RNA branch's 200 input PCs
    (``--input-pcs 200``) go to LAPACK's subset solver (``syevr``: one tridiagonalisation, then only the
    wanted eigenvectors): 1.9 s against eigsh's 4.4 s at 3,000 genes, the same directions to 1e-14
    (docs/scaling.md). Small matrices, or requests for more than a quarter of the width, use ``eigh``.
    """
    width = covariance.shape[0]
    if width < EIGSH_MIN_WIDTH or n_components > width // 4:
        values, vectors = np.linalg.eigh(covariance)
        return vectors[:, np.argsort(values)[::-1][:n_components]]
    if n_components > width * EIGSH_MAX_FRACTION:
        from scipy.linalg import eigh

        values, vectors = eigh(covariance, subset_by_index=[width - n_components, width - 1], driver="evr")
        return vectors[:, np.argsort(values)[::-1]]
    from scipy.sparse.linalg import eigsh

    values, vectors = eigsh(covariance, k=n_components, which="LA", v0=np.full(width, width ** -0.5), tol=0)
    return vectors[:, np.argsort(values)[::-1]]


def pca(x: np.ndarray, n_components: int, block_values: int = PCA_BLOCK_VALUES) -> np.ndarray:
    """Deterministic PCA scores (covariance eigenvectors, signs fixed): (N, n_components).

    Float64 work is done in row blocks of about ``block_values`` values (the mean and the covariance
    accumulated block by block), so memory is O(block + genes^2) rather than two float64 copies of
    ``x``. A matrix that fits one block (every Visium slide at 3,000 HVGs) gets the numbers of a
    single whole-matrix pass, bit for bit.
    """
    n, width = x.shape
    step = max(1, block_values // max(width, 1))
    blocks = [slice(start, min(start + step, n)) for start in range(0, n, step)]
    mean = np.zeros(width)
    for rows in blocks:
        mean += np.asarray(x[rows], dtype=np.float64).sum(axis=0)
    mean /= n
    n_components = min(n_components, width, max(n - 1, 1))
    covariance = np.zeros((width, width))
    for rows in blocks:
        centred = np.asarray(x[rows], dtype=np.float64) - mean
        covariance += centred.T @ centred
    vectors = leading_eigenvectors(covariance, n_components)
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    scores = np.empty((n, n_components), dtype=np.float32)
    for rows in blocks:
        scores[rows] = (np.asarray(x[rows], dtype=np.float64) - mean) @ (vectors * signs)
    return scores


def image_substitute(expr: np.ndarray, graph: SlideGraph, hops: int, n_components: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The image branch's input for a slide without H&E: a smoothed second view of the expression.

    The HVG matrix averaged over each spot's neighbourhood ``hops`` times (a view at lower spatial
    resolution, like a patch covering several spots), then PCA'd to ``n_components`` so the image
    head's width does not depend on the gene panel. No pixels are invented.
    """
    smoothed = neighbourhood_smooth(torch.as_tensor(expr, dtype=torch.float32), graph, hops).numpy()
    view = pca(smoothed, n_components) if n_components and n_components < smoothed.shape[1] else smoothed
    info = {"kind": "expression_neighbourhood_mean", "hops": hops, "pca_components": int(view.shape[1]),
            "description": f"HVG expression averaged over spot + graph neighbours, {hops} times, PCA to {view.shape[1]}"}
    return view.astype(np.float32), info
