"""Putting feature blocks on one scale before they are concatenated.

Why a module of its own: training (the image head's [substitute view, patch features], the RNA branch's
PCA input) and clustering ([S, w x substitute view]) both join blocks of different widths and units, and
must weigh them the same way: each block divided by its root mean column variance, then times its weight,
so neither a block's width nor its units decides its share.
"""

from __future__ import annotations

import numpy as np


def unit_root_mean_variance(block: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """``weight`` x ``block`` divided by the block's root mean column variance: one scale for every column."""
    return weight * block / max(float(np.sqrt(block.var(axis=0).mean())), 1e-8)
