"""The spatial graph: each spot's k nearest spots by physical distance (ball tree, paper 3.1).

Stored as a directed edge list (source -> its k nearest targets), O(spots x k) memory, never an
N x N matrix. k defaults from the grid: 4 for the square legacy-ST grid, 6 for Visium's hexagons; for
an ``.h5ad`` of unknown origin the grid is recognised from how many spots sit at the nearest distance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from senca.errors import SencaError

PLATFORM_K = {"st": 4, "visium": 6}


def knn_edges(xy: np.ndarray, k: int) -> pd.DataFrame:
    """Edges (source, target, distance) from every spot to its ``k`` nearest other spots."""
    n = len(xy)
    if n < k + 1:
        raise SencaError(f"slide has {n} spot(s); a {k}-neighbour graph needs at least {k + 1}")
    tree = NearestNeighbors(n_neighbors=k + 1, algorithm="ball_tree").fit(xy)
    distance, index = tree.kneighbors(xy)
    # Drop each spot itself. With duplicated coordinates the spot may not come first: remove it by id.
    source = np.repeat(np.arange(n), k + 1).reshape(n, k + 1)
    keep = index != source
    keep[keep.sum(axis=1) > k, -1] = False  # spot absent from its own list (ties): drop the farthest
    return pd.DataFrame(
        {
            "source": source[keep].astype(np.int32),
            "target": index[keep].astype(np.int32),
            "distance": distance[keep].astype(np.float32),
        }
    )


def median_spot_pitch(xy: np.ndarray) -> float:
    """Median distance from a spot to its nearest other position: the grid pitch in coordinate units.

    Duplicated positions are counted once (a zero distance is no pitch); NaN with < 2 distinct positions.
    """
    points = np.unique(np.asarray(xy, dtype=np.float64), axis=0)
    if len(points) < 2:
        return float("nan")
    distance, _ = NearestNeighbors(n_neighbors=2, algorithm="ball_tree").fit(points).kneighbors(points)
    return float(np.median(distance[:, 1]))


def detect_grid_k(xy: np.ndarray) -> int:
    """6 for a hexagonal grid, 4 for a square one: the median count of spots within 1.2 x the pitch."""
    if len(xy) < 8:
        return 4
    pitch = median_spot_pitch(xy)
    tree = NearestNeighbors(algorithm="ball_tree").fit(xy)
    counts = np.array([len(i) - 1 for i in tree.radius_neighbors(xy, radius=1.2 * pitch, return_distance=False)])
    return 6 if np.median(counts) >= 5 else 4


def default_k(platform: str, xy: np.ndarray) -> int:
    return PLATFORM_K.get(platform) or detect_grid_k(xy)
