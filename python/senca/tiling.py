"""Spatial tiles with halos: why training and inference memory is bounded by a tile, not a slide.

A slide (up to 10^6 spots on Visium HD) is cut into spatially compact tiles of at most
``max_spots`` spots by recursive bisection of the coordinates at the (jittered) median of the
longer axis. Each tile is extended by the multi-hop halo the model's layers read from
(``torch_geometric.utils.k_hop_subgraph``), so the tile's own ("core") spots see exactly the
neighbourhood they would see in the whole slide; losses and outputs use the core spots only.

The halo is exact when ``HALO_HOPS`` covers the model's receptive field: the RNA branch reads 2 hops
(GCN propagation, then neighbourhood self-attention) and the cross-attention shared encoder and the
window pooling read 1 more, so 3 hops. The GCN normalisation is computed once on the whole slide and
carried as edge weights, so halo truncation never changes a degree.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

with warnings.catch_warnings():  # torch_geometric's import calls the deprecated torch.jit.script: not ours to fix
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import torch_geometric  # noqa: F401
from torch_geometric.utils import k_hop_subgraph, subgraph

HALO_HOPS = 3


@dataclass
class SlideGraph:
    """The whole slide's graph structures, as torch tensors on the CPU.

    ``gcn_edges``/``gcn_weight``: the symmetrised kNN graph with self loops and symmetric GCN
    normalisation D^-1/2 (A + I) D^-1/2, messages flowing source -> target.
    ``attention_edges``: the same symmetrised graph with self loops (RNA-branch self-attention).
    ``window_edges``: neighbour -> spot for n(i) = {i} U kNN(i) (cross-attention, windows).
    """

    num_nodes: int
    gcn_edges: torch.Tensor
    gcn_weight: torch.Tensor
    attention_edges: torch.Tensor
    window_edges: torch.Tensor


@dataclass
class Tile:
    """One mini-batch: ``nodes`` (global ids, core first) and the edges among them (local ids)."""

    nodes: torch.Tensor
    num_core: int
    gcn_edges: torch.Tensor
    gcn_weight: torch.Tensor
    attention_edges: torch.Tensor
    window_edges: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.numel())


def build_slide_graph(source: np.ndarray, target: np.ndarray, num_nodes: int) -> SlideGraph:
    """Turn kNN edges (spot ``source`` -> one of its nearest spots ``target``) into model graphs."""
    source = torch.as_tensor(np.asarray(source, dtype=np.int64))
    target = torch.as_tensor(np.asarray(target, dtype=np.int64))
    loops = torch.arange(num_nodes, dtype=torch.int64)
    # neighbour -> spot, so spot i aggregates over its own kNN list, plus i itself
    window = torch.stack([torch.cat([target, loops]), torch.cat([source, loops])])
    window = _unique_edges(window, num_nodes)
    # symmetrised graph (the adjacency of paper 3.2) with self loops
    both = torch.cat([torch.stack([source, target]), torch.stack([target, source])], dim=1)
    both = both[:, both[0] != both[1]]
    sym = _unique_edges(torch.cat([both, torch.stack([loops, loops])], dim=1), num_nodes)
    degree = torch.bincount(sym[1], minlength=num_nodes).to(torch.float64)
    weight = (degree[sym[0]] * degree[sym[1]]).rsqrt().to(torch.float32)
    return SlideGraph(num_nodes, sym, weight, sym, window)


def _unique_edges(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Drop duplicate edges and sort by (target, source): a canonical, deterministic edge order."""
    key = torch.unique(edges[1] * num_nodes + edges[0])  # sorted
    return torch.stack([key % num_nodes, key // num_nodes])


def spatial_tiles(coords: np.ndarray, max_spots: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Partition spots into compact tiles of at most ``max_spots`` by recursive median bisection.

    With ``rng`` each cut falls at a random quantile in [0.35, 0.65] instead of the median, so tile
    borders (and which spots share a batch) change from epoch to epoch; the tile order is shuffled.
    Tiles hold between ~0.35 x and 1 x ``max_spots`` spots whatever the tissue's shape.
    """
    if max_spots < 1:
        raise ValueError("max_spots must be >= 1")
    coords = np.asarray(coords, dtype=np.float64)
    pending = [np.arange(len(coords))]
    tiles: list[np.ndarray] = []
    while pending:
        idx = pending.pop()
        if len(idx) <= max_spots:
            tiles.append(np.sort(idx))
            continue
        points = coords[idx]
        axis = int(np.argmax(np.ptp(points, axis=0)))
        quantile = 0.5 if rng is None else rng.uniform(0.35, 0.65)
        order = np.argsort(points[:, axis], kind="stable")
        cut = min(max(int(round(quantile * len(idx))), 1), len(idx) - 1)
        pending.append(idx[order[cut:]])
        pending.append(idx[order[:cut]])
    if rng is not None:
        tiles = [tiles[i] for i in rng.permutation(len(tiles))]
    return tiles


def cell_batches(cells: np.ndarray, max_spots: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Pack whole spatial cells (``cells``: spot -> cell id) into batches of at most ``max_spots`` spots.

    Cells are taken in random order (``rng``), so a batch holds cells from all over the slide: the
    contrastive negatives of a batch then come from other tissue regions, not only from the batch's
    own neighbourhood (a single compact tile would hold mostly one region, and NT-Xent would learn
    what tells neighbouring windows of one region apart instead of what tells regions apart). A cell
    larger than ``max_spots`` becomes a batch of its own. Every spot is in exactly one batch.
    """
    order = np.argsort(cells, kind="stable")
    bounds = np.flatnonzero(np.diff(cells[order])) + 1
    groups = np.split(order, bounds)
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    batches: list[np.ndarray] = []
    current: list[np.ndarray] = []
    size = 0
    for group in groups:
        if current and size + len(group) > max_spots:
            batches.append(np.sort(np.concatenate(current)))
            current, size = [], 0
        current.append(group)
        size += len(group)
    if current:
        batches.append(np.sort(np.concatenate(current)))
    return batches


def make_tile(core: np.ndarray, graph: SlideGraph, hops: int = HALO_HOPS) -> Tile:
    """The tile ``core`` plus its ``hops``-hop halo, with every edge set restricted and relabelled."""
    core_t = torch.as_tensor(np.asarray(core, dtype=np.int64))
    if hops > 0:
        subset, _, _, _ = k_hop_subgraph(core_t, hops, graph.attention_edges, num_nodes=graph.num_nodes)
    else:
        subset = core_t
    in_core = torch.zeros(graph.num_nodes, dtype=torch.bool)
    in_core[core_t] = True
    halo = subset[~in_core[subset]]
    nodes = torch.cat([torch.sort(core_t).values, halo])  # core first, so outputs[:num_core] are the core's
    gcn_edges, gcn_weight = _relabel(nodes, graph.gcn_edges, graph.num_nodes, graph.gcn_weight)
    attention_edges, _ = _relabel(nodes, graph.attention_edges, graph.num_nodes)
    window_edges, _ = _relabel(nodes, graph.window_edges, graph.num_nodes)
    return Tile(nodes, len(core_t), gcn_edges, gcn_weight, attention_edges, window_edges)


def _relabel(nodes: torch.Tensor, edges: torch.Tensor, num_nodes: int,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Edges with both ends in ``nodes``, renumbered to positions in ``nodes``."""
    kept, kept_weight = subgraph(nodes, edges, edge_attr=weight, num_nodes=num_nodes)
    position = torch.full((num_nodes,), -1, dtype=torch.int64)
    position[nodes] = torch.arange(nodes.numel())
    return position[kept], kept_weight


def whole_slide_tile(graph: SlideGraph) -> Tile:
    """The whole slide as one tile (small slides, tests)."""
    nodes = torch.arange(graph.num_nodes)
    return Tile(nodes, graph.num_nodes, graph.gcn_edges, graph.gcn_weight, graph.attention_edges, graph.window_edges)
