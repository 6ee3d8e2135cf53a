"""Tiles built from the slide's CSR index, and the other whole-slide passes of training done in blocks.

Both exist for large slides (10^5..10^6 spots): a tile must cost O(its own edges), not a scan of every
slide edge, and the features' standardisation and the image-less view must not make float64 or
(edges x genes) copies of a whole slide. Each must give the numbers of the simple whole-slide
computation it replaces, which these tests keep as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import k_hop_subgraph, subgraph

from senca.graph import knn_edges
from senca.model.losses import pool_cells, window_mean
from senca.model.senca import ImageHead
from senca.substitute import neighbourhood_smooth, pca
from senca.tiling import (
    HALO_HOPS,
    EdgeRows,
    SlideGraph,
    Tile,
    build_slide_graph,
    cell_batches,
    make_tile,
    spatial_tiles,
)

FIELDS = ("nodes", "gcn_edges", "gcn_weight", "attention_edges", "window_edges")


def reference_tile(core: np.ndarray, graph: SlideGraph, hops: int = HALO_HOPS) -> Tile:
    """make_tile as it was: torch_geometric's k_hop_subgraph and subgraph over every slide edge."""
    core_t = torch.as_tensor(np.asarray(core, dtype=np.int64))
    parts, counts = [torch.sort(core_t).values], [len(core_t)]
    inside = torch.zeros(graph.num_nodes, dtype=torch.bool)
    inside[core_t] = True
    for hop in range(1, hops + 1):  # ring h: within h hops, not within h - 1 (k_hop_subgraph's subset is sorted)
        subset = k_hop_subgraph(core_t, hop, graph.attention_edges, num_nodes=graph.num_nodes)[0]
        parts.append(subset[~inside[subset]])
        inside[subset] = True
        counts.append(counts[-1] + len(parts[-1]))
    nodes = torch.cat(parts)
    position = torch.full((graph.num_nodes,), -1, dtype=torch.int64)
    position[nodes] = torch.arange(nodes.numel())

    def relabel(edges, weight=None):
        kept, kept_weight = subgraph(nodes, edges, edge_attr=weight, num_nodes=graph.num_nodes)
        return position[kept], kept_weight

    gcn, weight = relabel(graph.gcn_edges, graph.gcn_weight)
    return Tile(nodes, len(core_t), gcn, weight, relabel(graph.attention_edges)[0], relabel(graph.window_edges)[0],
                tuple(counts))


def jittered_slide(n: int = 600, k: int = 6, seed: int = 0) -> tuple[np.ndarray, SlideGraph]:
    """Irregular spot positions, so degrees (and CSR row lengths) vary from spot to spot."""
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 1000, size=(n, 2))
    edges = knn_edges(coords, k)
    return coords, build_slide_graph(edges["source"].to_numpy(), edges["target"].to_numpy(), n)


def assert_same_tile(a: Tile, b: Tile) -> None:
    assert a.num_core == b.num_core and a.hop_counts == b.hop_counts
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize("hops", [0, 1, HALO_HOPS])
def test_tiles_equal_the_whole_edge_list_reference(hops):
    coords, graph = jittered_slide()
    rng = np.random.default_rng(1)
    batches = cell_batches(pool_cells(coords, 60.0), 64, rng) + spatial_tiles(coords, 100, rng)
    for core in batches:
        assert_same_tile(make_tile(core, graph, hops), reference_tile(core, graph, hops))
    assert torch.equal(graph.position(), torch.full((graph.num_nodes,), -1))  # scratch left clean
    assert len(graph._rows) == 2  # one CSR index for the shared GCN/attention list, one for the windows


def test_a_tile_of_the_whole_slide_and_of_one_spot():
    coords, graph = jittered_slide(n=120, k=4)
    everything = np.arange(graph.num_nodes)
    assert_same_tile(make_tile(everything, graph), reference_tile(everything, graph))
    assert_same_tile(make_tile(np.array([7]), graph), reference_tile(np.array([7]), graph))


def test_an_interrupted_tile_leaves_no_marks():
    _, graph = jittered_slide(n=80, k=4)
    with pytest.raises(IndexError):
        make_tile(np.array([3, graph.num_nodes + 5]), graph)
    assert torch.equal(graph.position(), torch.full((graph.num_nodes,), -1))
    assert_same_tile(make_tile(np.array([3, 4]), graph), reference_tile(np.array([3, 4]), graph))


def test_edge_rows_of_an_unsorted_list_keep_the_list_order():
    rng = np.random.default_rng(0)
    edges = torch.as_tensor(rng.integers(0, 30, size=(2, 200)))
    rows = EdgeRows(edges, 30)
    nodes = torch.tensor([17, 2, 29, 5])
    expected = torch.nonzero(torch.isin(edges[1], nodes)).flatten()
    assert torch.equal(rows.gather(nodes), expected)


# ----------------------------------------------------------------------------- whole-slide passes in blocks
def test_blockwise_standardisation_equals_the_float64_whole_matrix():
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(5000, 24, generator=generator) * 3 + torch.linspace(0, 50, 24)
    whole = features.double()
    mean = whole.mean(dim=0)
    scale = (whole - mean).pow(2).mean(dim=0).mean().sqrt()
    for block_values in (24 * 5000, 24 * 333, 1):  # one block, uneven blocks, one row per block
        head = ImageHead(24, 8)
        head.fit_standardisation(features, block_values=block_values)
        torch.testing.assert_close(head.feature_mean, mean.float(), rtol=0, atol=0)
        torch.testing.assert_close(head.feature_scale, scale.float(), rtol=0, atol=0)


def test_blockwise_neighbourhood_smoothing_is_bit_identical():
    _, graph = jittered_slide(n=500, k=6)
    x = torch.rand(500, 13, generator=torch.Generator().manual_seed(0))
    whole = window_mean(window_mean(x, graph.attention_edges, graph.num_nodes), graph.attention_edges,
                        graph.num_nodes)
    for block_values in (1, 1000, 10**9):
        assert torch.equal(neighbourhood_smooth(x, graph, 2, block_values=block_values), whole)


def test_blockwise_pca_equals_the_whole_matrix_pca():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(700, 30)) * np.linspace(5, 0.1, 30)).astype(np.float32)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    vectors = vectors[:, np.argsort(values)[::-1][:6]]
    vectors *= np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(6)])
    whole = (centred @ vectors).astype(np.float32)
    assert np.array_equal(pca(x, 6), whole)  # one block: the same computation
    np.testing.assert_allclose(pca(x, 6, block_values=30 * 64), whole, rtol=1e-5, atol=1e-5)


def test_reach_is_the_hop_prefixes_only_when_the_halo_covers_the_model():
    coords, graph = jittered_slide()
    core = cell_batches(pool_cells(coords, 60.0), 64, np.random.default_rng(2))[0]
    tile = make_tile(core, graph)
    core_count, within_1, within_2, everything = tile.hop_counts
    assert tile.reach == (core_count, within_1, within_2) and everything == tile.num_nodes
    assert core_count < within_1 < within_2 < everything  # a scattered batch: every ring is non-empty
    # every spot of ring h has an attention edge from ring h - 1 (the rings are BFS levels, in order)
    source, target = tile.attention_edges
    for lo, hi, previous in ((within_1, within_2, (core_count, within_1)), (within_2, everything, (within_1, within_2))):
        from_previous = (source >= lo) & (source < hi) & (target >= previous[0]) & (target < previous[1])
        assert torch.equal(torch.unique(source[from_previous]), torch.arange(lo, hi))
    assert make_tile(core, graph, HALO_HOPS - 1).reach is None  # a shallower halo: compute every row
