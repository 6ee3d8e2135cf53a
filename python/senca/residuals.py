"""Analytic Pearson residuals of the HVG counts, computed a row block at a time.

    r_ig = (x_ig - mu_ig) / sqrt(mu_ig + mu_ig^2 / theta),   mu_ig = n_i p_g,   clipped to [-sqrt(N), sqrt(N)]

with n_i the spot's total over the HVGs, p_g the gene's share of all HVG counts and theta = 100: the
negative-binomial residuals of Lause, Berens & Kobak (Genome Biology 2021), exactly as
``scanpy.experimental.pp.normalize_pearson_residuals`` computes them on the HVG subset (a test checks
the two agree). Why not call scanpy on the matrix: residuals are dense (every zero count becomes a
negative residual) and scanpy materialises the whole slide several times over in float64; here only
the sparse counts and one dense row block exist at once, so a 10^5-spot slide stays O(block).
Why residuals at all (docs/method.md, round 12): on Visium they rank low-count layer markers by how
far they depart from a count model instead of by log-fold size, and the smoothed, z-scored residuals
separate the DLPFC layers better than the z-scored log1p values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

PEARSON_THETA = 100.0  # the overdispersion of Lause et al. and scanpy's default


class PearsonResiduals:
    """Spots x genes residuals of sparse ``counts``, dense only for the rows asked for (``matrix[a:b]``).

    Behaves as the matrix :func:`senca.io.artifacts.write_matrix_table` writes row group by row group:
    ``shape``, slicing by rows, and ``toarray()`` for small slides and tests.
    """

    def __init__(self, counts: sp.spmatrix, theta: float = PEARSON_THETA):
        if theta <= 0:
            raise ValueError(f"theta must be > 0, got {theta}")
        self.counts = sp.csr_matrix(counts, dtype=np.float64)
        self.theta = float(theta)
        self.spot_totals = np.asarray(self.counts.sum(axis=1)).ravel()
        gene_totals = np.asarray(self.counts.sum(axis=0)).ravel()
        total = float(gene_totals.sum())
        self.gene_shares = gene_totals / total if total > 0 else gene_totals
        self.clip = float(np.sqrt(self.counts.shape[0]))

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("PearsonResiduals is read by row slices")
        mu = np.outer(self.spot_totals[rows], self.gene_shares)
        with np.errstate(divide="ignore", invalid="ignore"):
            residuals = (self.counts[rows].toarray() - mu) / np.sqrt(mu + mu * mu / self.theta)
        residuals[~np.isfinite(residuals)] = 0.0  # mu = 0 (a spot or gene with no HVG counts): no signal
        return np.clip(residuals, -self.clip, self.clip).astype(np.float32)

    def toarray(self) -> np.ndarray:
        return self[0:self.shape[0]]
