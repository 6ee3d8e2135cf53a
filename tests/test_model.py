"""SENCA-st model, losses, tiling and training loop on small synthetic graphs (fast, CPU)."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from senca.graph import knn_edges
from senca.model import (
    GraphTransformer,
    ModelConfig,
    NeighbourhoodCrossAttention,
    SencaModel,
    load_model,
    nt_xent,
)
from senca.model.losses import cell_mean, overlapping_windows, pool_cells, reconstruction_mse, window_mean
from senca.substitute import image_substitute
from senca.tiling import (
    HALO_HOPS,
    build_slide_graph,
    cell_batches,
    make_tile,
    spatial_tiles,
    whole_slide_tile,
)
from senca.train import (
    TrainConfig,
    embed_slide,
    select_k,
    tile_losses,
    train_senca,
)


def grid_slide(side: int = 20, genes: int = 40, seed: int = 0, k: int = 4):
    """A side x side square grid with 3 planted regions (left third; top/bottom of the rest)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    coords = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64) * 100.0
    region = np.where(xx.ravel() < side // 3, 0, np.where(yy.ravel() < side // 2, 1, 2))
    means = rng.gamma(2.0, 1.0, size=(3, genes))
    expr = np.log1p(rng.poisson(means[region] * 2)).astype(np.float32)
    edges = knn_edges(coords, k)
    return {"expr": expr, "coords": coords, "source": edges["source"].to_numpy(), "target": edges["target"].to_numpy(),
            "distance": edges["distance"].to_numpy(), "region": region}


@pytest.fixture(scope="module")
def slide():
    return grid_slide()


@pytest.fixture(scope="module")
def graph(slide):
    return build_slide_graph(slide["source"], slide["target"], len(slide["expr"]))


def small_model(slide, image_dim: int = 16, **kwargs) -> SencaModel:
    torch.manual_seed(0)
    config = ModelConfig(n_genes=slide["expr"].shape[1], image_dim=image_dim, **kwargs)
    return SencaModel(config)


def forward(model, slide, graph, features):
    tile = whole_slide_tile(graph)
    return model(torch.as_tensor(slide["expr"]), features, tile.gcn_edges, tile.gcn_weight, tile.attention_edges,
                 tile.window_edges), tile


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("combine,e_dim", [("concat", 256), ("sum", 128)])
def test_forward_shapes(slide, graph, combine, e_dim):
    n = len(slide["expr"])
    model = small_model(slide, combine=combine)
    out, _ = forward(model, slide, graph, torch.randn(n, 16))
    assert out.rna.shape == (n, 128)
    assert out.image.shape == (n, 128)
    assert out.encoder_input.shape == (n, e_dim)
    assert out.shared.shape == (n, 64)
    assert out.decoded.shape == out.target.shape == (n, 256)  # reconstructs [R_i, H_i]
    assert torch.isfinite(out.shared).all()


def test_graph_transformer_dimensions_configurable(slide, graph):
    g = GraphTransformer(slide["expr"].shape[1], hidden_dim=64, out_dim=32, heads=2)
    r = g(torch.as_tensor(slide["expr"]), graph.gcn_edges, graph.gcn_weight, graph.attention_edges)
    assert r.shape == (len(slide["expr"]), 32)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cross_attention,hierarchical", [(True, True), (False, True), (True, False)])
def test_gradients_reach_every_parameter(slide, graph, cross_attention, hierarchical):
    n = len(slide["expr"])
    model = small_model(slide, cross_attention=cross_attention)
    model.image_branch.fit_standardisation(torch.randn(n, 16))
    model.train()
    out, tile = forward(model, slide, graph, torch.randn(n, 16))
    cells = torch.as_tensor(pool_cells(slide["coords"], 300.0))
    terms = tile_losses(out, tile, cells, TrainConfig(hierarchical=hierarchical))
    terms["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


@pytest.mark.parametrize("reconstruct,width", [("branches", 256), ("encoder_input", 128)])
def test_reconstruction_target(slide, graph, reconstruct, width):
    n = len(slide["expr"])
    model = small_model(slide, combine="sum", reconstruct=reconstruct)
    out, _ = forward(model, slide, graph, torch.randn(n, 16))
    assert out.decoded.shape == out.target.shape == (n, width)
    if reconstruct == "branches":  # spot i's own layer-normalised R_i and H_i, carrying no gradient
        assert not out.target.requires_grad
        torch.testing.assert_close(out.target[:, :128], torch.nn.functional.layer_norm(out.rna, (128,)).detach())
    else:
        assert out.target is out.encoder_input


def test_smoothed_expression_target_is_the_window_mean_of_the_hvgs(slide, graph):
    n = len(slide["expr"])
    model = small_model(slide, reconstruct="smoothed_expression")
    out, tile = forward(model, slide, graph, torch.randn(n, 16))
    x = torch.as_tensor(slide["expr"])
    assert out.decoded.shape == out.target.shape == x.shape
    source, target = tile.window_edges  # member -> centre, self loops included
    spot = int(target[0])
    torch.testing.assert_close(out.target[spot], x[source[target == spot]].mean(dim=0))
    assert not out.target.requires_grad  # data, not a function of the parameters


def test_collapse_guard_detaches_the_target():
    e = torch.randn(10, 8, requires_grad=True)
    d = torch.randn(10, 8, requires_grad=True)
    reconstruction_mse(e, d, detach_target=True).backward()
    assert e.grad is None and d.grad is not None
    e2 = torch.randn(10, 8, requires_grad=True)
    reconstruction_mse(e2, d, detach_target=False).backward()
    assert e2.grad is not None


# ----------------------------------------------------------------------------- losses
def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's definition written out loop by loop."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    b = len(z1)
    total = 0.0
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        denominator = sum(torch.exp(z[i] @ z[m] / t) for m in range(2 * b) if m != i)
        total += -torch.log(torch.exp(z[i] @ z[j] / t) / denominator)
    return float(total / (2 * b))


def test_nt_xent_matches_definition_and_rewards_alignment():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(reference_nt_xent(z1, z2, 0.5), rel=1e-5)
    aligned = nt_xent(z1, z1 + 0.01 * torch.randn(6, 5), 0.5)
    assert aligned < nt_xent(z1, z2, 0.5)
    with pytest.raises(ValueError):
        nt_xent(z1[:1], z2[:1], 0.5)


def test_overlapping_windows_are_not_negatives(slide, graph):
    n = graph.num_nodes
    mask = overlapping_windows(graph.window_edges, 50, n)
    src, dst = graph.window_edges.tolist()
    members = [set() for _ in range(n)]
    for a, b in zip(src, dst, strict=True):
        members[b].add(a)
    brute = torch.tensor([[bool(members[i] & members[j]) for j in range(50)] for i in range(50)])
    assert torch.equal(mask, brute) and mask.diagonal().all() and not mask.all()
    # masked negatives: the loss equals the reference computed without those pairs, and differs from unmasked
    torch.manual_seed(2)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    not_negative = torch.zeros(6, 6, dtype=torch.bool)
    not_negative[0, 1] = not_negative[1, 0] = True
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    total = 0.0
    for i in range(12):
        j = (i + 6) % 12
        others = [m for m in range(12) if m != i and (m == j or not not_negative[i % 6, m % 6] or m % 6 == i % 6)]
        total += -torch.log(torch.exp(z[i] @ z[j] / 0.5) / sum(torch.exp(z[i] @ z[m] / 0.5) for m in others))
    assert nt_xent(z1, z2, 0.5, not_negative).item() == pytest.approx(float(total / 12), rel=1e-5)
    assert nt_xent(z1, z2, 0.5, not_negative).item() != pytest.approx(nt_xent(z1, z2, 0.5).item())


def test_window_and_cell_means(slide, graph):
    x = torch.arange(len(slide["expr"]), dtype=torch.float32).unsqueeze(1)
    w = window_mean(x, graph.window_edges, graph.num_nodes)
    # spot 0 (corner (0, 0)) has kNN {1, 20, 21, 40}-ish; its window mean includes itself
    members = torch.cat([graph.window_edges[0][graph.window_edges[1] == 0]])
    assert 0 in members.tolist() and len(members) == 5
    assert w[0, 0].item() == pytest.approx(x[members].mean().item())
    cells = pool_cells(slide["coords"], 500.0)
    assert cells.min() == 0 and len(np.unique(cells)) == 16  # 20 x 20 grid, 5 x 5 cells
    pooled = cell_mean(x, torch.as_tensor(cells))
    assert pooled[cells[0], 0].item() == pytest.approx(x[torch.as_tensor(cells == cells[0])].mean().item())


# ----------------------------------------------------------------------------- pruned rows
def tile_step(model, tile, coords, x, features, config, reach, corrupt_order):
    """Losses and gradients of one training step on ``tile``, computing every row or only ``reach``'s."""
    from senca.train import _dense, corrupted_rna

    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same dropout masks in both passes
    nodes = tile.nodes
    out = model(x[nodes], features[nodes], tile.gcn_edges, tile.gcn_weight, tile.attention_edges, tile.window_edges,
                reach)
    corrupt = None
    if config.graph_contrast > 0:
        torch.manual_seed(corrupt_order)
        corrupt = corrupted_rna(model, tile if reach is not None else replace(tile, hop_counts=()), x, torch.device("cpu"))
    cells = torch.as_tensor(_dense(pool_cells(coords, 300.0)[tile.nodes[: tile.num_core].numpy()]))
    terms = tile_losses(out, tile, cells, config, corrupt, model.discriminator)
    terms["loss"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, {k: float(v.detach()) for k, v in terms.items()}, grads


@pytest.mark.parametrize("settings", [
    {"reconstruct": "expression"},
    {"reconstruct": "branches", "cross_attention": False},
    {"reconstruct": "smoothed_expression", "graph_contrast": True},
    {"reconstruct": "views", "combine": "sum"},
])
def test_pruned_rows_equal_the_full_pass_with_gradients(slide, graph, settings):
    """With ``Tile.reach`` each layer computes only the rows the core reads: same S, losses and gradients."""
    n = len(slide["expr"])
    model = small_model(slide, **settings)
    features = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))
    model.image_branch.fit_standardisation(features)
    model.train()
    x = torch.as_tensor(slide["expr"])
    core = cell_batches(pool_cells(slide["coords"], 300.0), 60, np.random.default_rng(0))[0]
    tile = make_tile(core, graph)
    assert tile.reach is not None and tile.reach[2] < tile.num_nodes  # something is pruned
    config = TrainConfig(graph_contrast=0.5 if settings.get("graph_contrast") else 0.0)
    full, full_terms, full_grads = tile_step(model, tile, slide["coords"], x, features, config, None, 7)
    pruned, pruned_terms, pruned_grads = tile_step(model, tile, slide["coords"], x, features, config, tile.reach, 7)
    c, n_1 = tile.reach[:2]
    assert pruned.shared.shape[0] == pruned.decoded.shape[0] == pruned.target.shape[0] == c
    assert pruned.rna.shape[0] == pruned.image.shape[0] == n_1
    torch.testing.assert_close(pruned.shared, full.shared[:c])
    torch.testing.assert_close(pruned.target, full.target[:c])
    torch.testing.assert_close(pruned.rna, full.rna[:n_1])
    assert pruned_terms == pytest.approx(full_terms, rel=1e-5, nan_ok=True)
    assert pruned_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(pruned_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- tiling
def test_tiles_partition_and_halo_is_exact(slide, graph):
    rng = np.random.default_rng(0)
    tiles = spatial_tiles(slide["coords"], 50, rng)
    everything = np.sort(np.concatenate(tiles))
    assert np.array_equal(everything, np.arange(len(slide["expr"])))
    assert max(len(t) for t in tiles) <= 50
    tile = make_tile(tiles[0], graph)
    assert torch.equal(tile.nodes[: tile.num_core], torch.as_tensor(np.sort(tiles[0])))
    # the halo holds every spot within HALO_HOPS graph hops of the core
    reach = set(tiles[0].tolist())
    src, dst = graph.attention_edges
    for _ in range(HALO_HOPS):
        reach |= set(src[torch.isin(dst, torch.tensor(sorted(reach)))].tolist())
    assert set(tile.nodes.tolist()) == reach


def test_cell_batches_scatter_whole_cells_across_the_slide(slide):
    cells = pool_cells(slide["coords"], 300.0)  # 3 x 3-spot cells on the 20 x 20 grid
    batches = cell_batches(cells, 64, np.random.default_rng(0))
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(cells)))
    assert max(len(b) for b in batches) <= 64
    for batch in batches:  # cells are never split between batches
        for cell in np.unique(cells[batch]):
            assert np.isin(np.flatnonzero(cells == cell), batch).all()
    # a batch spans the slide rather than one compact patch of it
    spans = [np.ptp(slide["coords"][b], axis=0).max() for b in batches]
    assert np.median(spans) > 0.6 * np.ptp(slide["coords"], axis=0).max()


def test_tiled_inference_equals_whole_slide(slide, graph):
    n = len(slide["expr"])
    model = small_model(slide).eval()
    feats = torch.randn(n, 16)
    with torch.no_grad():
        whole, _ = forward(model, slide, graph, feats)
    tiled = embed_slide(model, slide["coords"], graph, torch.as_tensor(slide["expr"]), feats, torch.device("cpu"), 37)
    np.testing.assert_allclose(tiled, whole.shared.numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- ablations change the computation
def test_no_cross_attention_is_the_uniform_neighbourhood_mean(slide, graph):
    n = len(slide["expr"])
    torch.manual_seed(0)
    h, r = torch.randn(n, 128), torch.randn(n, 128)
    attend = NeighbourhoodCrossAttention(128, attention=True)
    uniform = NeighbourhoodCrossAttention(128, attention=False)
    uniform.load_state_dict(attend.state_dict(), strict=False)  # same W^v1, W^v2
    a1, a2 = attend(h, r, graph.window_edges)
    u1, u2 = uniform(h, r, graph.window_edges)
    expected = window_mean(attend.value_rna(r), graph.window_edges, n)
    torch.testing.assert_close(u1, expected)
    assert not torch.allclose(a1, u1, atol=1e-3) and not torch.allclose(a2, u2, atol=1e-3)
    # eq. 3: queries come from the image: changing spot 0's H changes its RNA-valued row A1_0 only through weights
    h2 = h.clone()
    h2[0] += 5.0
    b1, _ = attend(h2, r, graph.window_edges)
    assert not torch.allclose(b1[0], a1[0]) and torch.allclose(b1[n - 1], a1[n - 1])
    assert len(list(uniform.parameters())) < len(list(attend.parameters()))


def test_no_hierarchical_uses_a_per_spot_term(slide, graph):
    n = len(slide["expr"])
    model = small_model(slide).eval()
    out, tile = forward(model, slide, graph, torch.randn(n, 16))
    cells = torch.as_tensor(pool_cells(slide["coords"], 300.0))
    hier = tile_losses(out, tile, cells, TrainConfig(hierarchical=True))
    flat = tile_losses(out, tile, cells, TrainConfig(hierarchical=False))
    assert torch.isnan(hier["nt_xent_spot"]) and torch.isfinite(hier["nt_xent_window"]) and torch.isfinite(hier["nt_xent_pooled"])
    assert torch.isnan(flat["nt_xent_window"]) and torch.isnan(flat["nt_xent_pooled"])
    assert flat["loss"].item() != pytest.approx(hier["loss"].item())


def test_k_selects_the_neighbourhood(slide):
    s, t, d = slide["source"], slide["target"], slide["distance"]
    s2, t2, k2 = select_k(slide["coords"], s, t, d, 2)
    assert k2 == 2 and np.all(np.bincount(s2) == 2)
    # the 2 kept are each spot's 2 nearest of its 4
    lookup = {(a, b): dist for a, b, dist in zip(s.tolist(), t.tolist(), d.tolist(), strict=True)}
    kept = np.array([lookup[(a, b)] for a, b in zip(s2.tolist(), t2.tolist(), strict=True)]).reshape(-1, 2)
    assert np.allclose(kept.max(axis=1), np.sort(d.reshape(-1, 4), axis=1)[:, 1])
    s8, t8, k8 = select_k(slide["coords"], s, t, d, 8)
    assert k8 == 8 and np.all(np.bincount(s8) == 8)
    assert select_k(slide["coords"], s, t, d, None)[2] == 4
    small = grid_slide(side=8)
    runs = [train_senca(small["expr"], small["coords"], small["source"], small["target"], small["distance"],
                        config=TrainConfig(epochs=1, batch_spots=32, k=k)).embeddings for k in (4, 8)]
    assert not np.allclose(runs[0], runs[1])


def test_ablation_flags_change_embeddings():
    small = grid_slide(side=8)
    args = (small["expr"], small["coords"], small["source"], small["target"], small["distance"])
    base = train_senca(*args, config=TrainConfig(epochs=2, batch_spots=32)).embeddings
    for change in ({"cross_attention": False}, {"hierarchical": False}, {"combine": "sum"}):
        other = train_senca(*args, config=TrainConfig(epochs=2, batch_spots=32, **change)).embeddings
        assert other.shape == base.shape and not np.allclose(other, base), change


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(slide):
    return train_senca(slide["expr"], slide["coords"], slide["source"], slide["target"], slide["distance"],
                       config=TrainConfig(epochs=10, batch_spots=64, seed=3))


def test_loss_falls_and_regions_are_recovered(trained, slide):
    log = trained.log
    per_epoch = log.groupby("epoch")["loss"].mean()
    assert per_epoch.iloc[-1] < 0.85 * per_epoch.iloc[0]
    assert log["step"].tolist() == list(range(len(log)))
    assert {"nt_xent_pooled", "nt_xent_window", "mse", "embedding_var", "lr"} <= set(log.columns)
    assert (log["embedding_var"] > 0).all()
    predicted = AgglomerativeClustering(n_clusters=3, linkage="ward").fit_predict(trained.embeddings)
    assert adjusted_rand_score(slide["region"], predicted) > 0.6


def test_same_seed_bit_identical_other_seed_differs(trained, slide):
    args = (slide["expr"], slide["coords"], slide["source"], slide["target"], slide["distance"])
    again = train_senca(*args, config=TrainConfig(epochs=10, batch_spots=64, seed=3))
    assert np.array_equal(again.embeddings, trained.embeddings)
    assert again.log["loss"].tolist() == trained.log["loss"].tolist()
    other = train_senca(*args, config=TrainConfig(epochs=1, batch_spots=64, seed=4))
    assert not np.array_equal(other.embeddings, train_senca(*args, config=TrainConfig(epochs=1, batch_spots=64, seed=3)).embeddings)


def test_checkpoint_round_trip_weights_only(trained, slide, graph):
    buffer = io.BytesIO()
    torch.save(trained.checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["config"]["image"]["image"] == "none"
    model = load_model(loaded)
    train = loaded["config"]["train"]
    features, _ = image_substitute(slide["expr"], graph, train["substitute_hops"], train["substitute_dim"])
    again = embed_slide(model, slide["coords"], graph, torch.as_tensor(slide["expr"]), torch.as_tensor(features),
                        torch.device("cpu"))
    np.testing.assert_array_equal(again, trained.embeddings)


def test_image_substitute_is_a_smoothed_expression_view(slide, graph):
    view, info = image_substitute(slide["expr"], graph, hops=2, n_components=10)
    assert view.shape == (len(slide["expr"]), 10) and view.dtype == np.float32
    assert info["kind"] == "expression_neighbourhood_mean" and info["hops"] == 2
    # smoothing: neighbouring spots are more alike in the view than in the raw expression
    s, t = slide["source"], slide["target"]

    def neighbour_corr(m):
        m = (m - m.mean(0)) / (m.std(0) + 1e-9)
        return float(np.mean(np.sum(m[s] * m[t], axis=1) / m.shape[1]))

    assert neighbour_corr(view) > neighbour_corr(slide["expr"]) + 0.1


def test_config_validation():
    from senca.errors import SencaError

    for bad in ({"epochs": 0}, {"temperature": 0.0}, {"batch_spots": 4}, {"combine": "mean"}, {"hidden_dim": 250}):
        with pytest.raises(SencaError):
            TrainConfig(**bad).validate()


def test_graph_contrast_prefers_the_real_pairs_once_trained():
    """The DGI-style term is lower when R separates real windows from shuffled ones than when it cannot."""
    from senca.model.losses import graph_contrast

    torch.manual_seed(0)
    n, d = 80, 8
    window = torch.stack([torch.cat([torch.arange(n), (torch.arange(n) + 1) % n]),
                          torch.cat([torch.arange(n), torch.arange(n)])])
    regions = 3.0 * torch.eye(d).repeat_interleave(n // d, dim=0)  # eight spatial blocks of ten spots
    shuffled = regions[torch.randperm(n)]
    discriminator = torch.nn.Bilinear(d, d, 1)
    optimiser = torch.optim.Adam(discriminator.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        graph_contrast(regions, shuffled, window, n, discriminator).backward()
        optimiser.step()
    informative = float(graph_contrast(regions, shuffled, window, n, discriminator))
    blind = float(graph_contrast(regions, regions, window, n, discriminator))  # corrupt == real: nothing to tell
    assert blind >= 2 * np.log(2.0) - 1e-4  # equal scores for both labels: two BCEs of at least log 2 each
    assert informative < 0.7 * blind
