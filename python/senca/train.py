"""Training SENCA-st on one slide, self-supervised (paper eq. 1, section 4.1): the work behind
``senca train-senca``.

``train_senca`` is a pure function: arrays in (HVG expression, coordinates, kNN edges, optional
patch features), arrays out (the shared embedding S of every spot, a per-step loss log, a checkpoint
dict). Reading and writing artifacts is the command's job (senca/commands/train_senca.py).

Why it is shaped this way:

* mini-batches are spatial tiles plus their 3-hop halo (senca.tiling), so memory is bounded by the
  tile whatever the slide's size, and the tile's spots see their whole-slide neighbourhood;
* an epoch is one pass over a fresh, randomly jittered partition of the slide into tiles, so every
  spot is in exactly one batch per epoch and batch borders move between epochs;
* the final S is computed in eval mode (no dropout) over the whole slide, also tile by tile;
* a slide without an image gets a substitute second view (the expression averaged over each spot's
  graph neighbourhood, PCA'd to a fixed width) so the architecture and the losses are unchanged:
  never fabricated pixels (docs/method.md, "Image-less slides").
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from senca import __version__
from senca.blocks import unit_root_mean_variance
from senca.device import resolve_device
from senca.errors import SencaError
from senca.graph import knn_edges, median_spot_pitch
from senca.model.losses import (
    cell_mean,
    embedding_variance,
    graph_contrast,
    nt_xent,
    overlapping_windows,
    pool_cells,
    reconstruction_mse,
    window_mean,
)
from senca.model.senca import RECONSTRUCT, ModelConfig, SencaModel, SencaOutput
from senca.progress import progress
from senca.substitute import image_substitute, neighbourhood_smooth, pca
from senca.tiling import SlideGraph, Tile, build_slide_graph, cell_batches, make_tile, spatial_tiles

log = logging.getLogger("senca")

INFERENCE_TILE_SPOTS = 4096  # eval needs no gradients: bigger tiles, same bounded memory
GENE_SCALES = ("none", "zscore")
FUSED_ADAM_DEVICES = ("cpu", "cuda")  # where torch.optim.Adam(fused=True) has a kernel
# train-senca defaults that depend on the platform (preprocess records it as defaults_platform): docs/method.md
PLATFORM_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "st": {"gene_scale": "none", "reconstruct": "branches", "substitute_hops": 2, "image_pcs": 0,
           "image_with_substitute": False, "image_weight": 1.0, "input_pcs": 0},
    # round 5 (method.md): D decodes the spot's HVGs, a 1-hop substitute, and with H&E the image head reads
    # [substitute, PCA 32 of the patch features] so the image adds to the expression's view, never replaces it
    # round 12: on Pearson residuals (preprocess's Visium default) the RNA branch reads their PCA 200
    "visium": {"gene_scale": "zscore", "reconstruct": "expression", "substitute_hops": 1, "image_pcs": 32,
               "image_with_substitute": True, "image_weight": 1.0, "input_pcs": 200},
}


def make_optimiser(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam (paper 4.1) with its fused kernel where torch has one for the device.

    Why fused: on a CPU torch's default Adam loops over the parameters one tensor at a time; the fused
    kernel does the same update in one pass. Measured on two threads (docs/scaling.md, session 12): DLPFC
    training ~8 % faster (within the run-to-run spread), H1 level. Same algorithm, S equal to ~1e-6.
    """
    fused = device.type in FUSED_ADAM_DEVICES
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)


def platform_train_defaults(platform: str | None) -> dict[str, Any]:
    """The train-senca settings for the platform preprocess recorded (legacy ST's, the paper's, when unknown)."""
    return dict(PLATFORM_TRAIN_DEFAULTS.get(str(platform), PLATFORM_TRAIN_DEFAULTS["st"]))


LOSS_TERMS = ("loss", "nt_xent_pooled", "nt_xent_window", "nt_xent_spot", "graph_contrast", "mse")
LOG_COLUMNS = ["epoch", "step", *LOSS_TERMS, "embedding_var", "encoder_input_var", "n_spots", "n_cells", "lr"]


@dataclass
class TrainConfig:
    """Training knobs; defaults from paper 4.1 where it gives them, measured here where it does not."""

    epochs: int = 10
    lr: float = 5e-4
    lambda_mse: float = 40.0
    temperature: float = 0.5
    hidden_dim: int = 256
    rna_dim: int = 128
    shared_dim: int = 64
    combine: str = "concat"
    k: int | None = None  # None: the graph as preprocess built it
    cross_attention: bool = True
    hierarchical: bool = True
    batch_spots: int = 128
    seed: int = 0
    device: str = "auto"
    dropout: float = 0.2
    heads: int = 4
    pool_pitches: float = 3.0  # side of a pooling cell for H_p, R_p, in spot pitches
    # The collapse guard and what the MSE trains (docs/method.md, "Model"): D reconstructs spot i's own
    # detached [R_i, H_i] ("branches"; "encoder_input" = the paper-literal E), E is layer-normalised,
    # the target carries no gradient, and R, H enter the shared encoder detached.
    reconstruct: str = "branches"
    normalise_encoder_input: bool = True
    detach_target: bool = True
    detach_branches: bool = True
    batching: str = "scattered"  # mini-batch = random pooling cells from all over the slide | "compact" tiles
    mask_overlapping: bool = True  # windows sharing spots are not negatives of each other
    substitute_hops: int = 2    # image-less slides: neighbourhood averaging steps
    substitute_dim: int = 32    # image-less slides: PCA width of the substitute view (docs/method.md)
    gene_scale: str = "none"    # "zscore": each HVG centred and scaled to unit variance (Visium default, by platform)
    input_pcs: int = 0          # > 0: the RNA branch reads PCA(input_pcs) of the (scaled) HVGs (0: the HVGs, the paper)
    image_pcs: int = 0          # > 0: patch features PCA'd to this width before the image head's FC (0: the paper's raw features)
    image_with_substitute: bool = False  # with H&E: the image head reads [substitute view, patch features] (docs/method.md)
    image_weight: float = 1.0   # with image_with_substitute: the patch block's scale relative to the substitute's
    image_hops: int = 0         # with H&E: patch features averaged over spot + graph neighbours this many times first
    graph_contrast: float = 0.0  # > 0: weight of a corrupted-graph (DGI) contrast on R added to eq. 1 (0: the paper)
    reference_spots: int = 0    # > 0: a slide with fewer spots trains for more epochs (epochs_for; 0: fixed epochs, the paper)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.lambda_mse >= 0, f"--lambda-mse must be >= 0, got {self.lambda_mse}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (min(self.hidden_dim, self.rna_dim, self.shared_dim) >= 1, "dimensions must be >= 1"),
            (self.hidden_dim % self.heads == 0, f"--hidden-dim {self.hidden_dim} must be divisible by {self.heads} heads"),
            (self.combine in ("concat", "sum"), f"--combine must be concat or sum, got {self.combine!r}"),
            (self.k is None or self.k >= 1, f"--k must be >= 1, got {self.k}"),
            (self.batch_spots >= 8, f"--batch-spots must be >= 8, got {self.batch_spots}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.pool_pitches > 0, f"pool_pitches must be > 0, got {self.pool_pitches}"),
            (self.reconstruct in RECONSTRUCT, f"unknown reconstruct target {self.reconstruct!r}"),
            (self.batching in ("scattered", "compact"), f"unknown batching {self.batching!r}"),
            (self.substitute_hops >= 0 and self.substitute_dim >= 1, "substitute_hops >= 0 and substitute_dim >= 1"),
            (self.image_pcs >= 0, f"--image-pcs must be >= 0, got {self.image_pcs}"),
            (self.input_pcs >= 0, f"--input-pcs must be >= 0, got {self.input_pcs}"),
            (self.image_weight > 0, f"--image-weight must be > 0, got {self.image_weight}"),
            (self.image_hops >= 0, f"--image-hops must be >= 0, got {self.image_hops}"),
            (self.graph_contrast >= 0, f"--graph-contrast must be >= 0, got {self.graph_contrast}"),
            (self.reference_spots >= 0, f"--reference-spots must be >= 0, got {self.reference_spots}"),
            (self.gene_scale in GENE_SCALES, f"--gene-scale must be one of {', '.join(GENE_SCALES)}, got {self.gene_scale!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SencaError(message)


@dataclass
class TrainResult:
    embeddings: np.ndarray          # (N, shared_dim) float32, S in the spots' order
    log: pd.DataFrame               # one row per optimiser step
    checkpoint: dict[str, Any]      # {"state_dict", "config", "senca_version"}: weights_only-loadable
    summary: dict[str, Any] = field(default_factory=dict)  # final losses, device, image mode, timings
    view: np.ndarray | None = None  # (N, substitute_dim) float32: the substitute view, for [S, w x view] clustering


def epochs_for(config: TrainConfig, n_spots: int) -> int:
    """The epochs a slide of ``n_spots`` trains for: ``config.epochs``, or, on a slide with fewer spots than
    ``config.reference_spots``, as many more as give it the optimisation steps a slide of that size gets.

    Why an option: an epoch is one pass over the slide in ~128-spot batches, so ten epochs are ~290 steps on a DLPFC
    section but ~70 on a 900-spot crop of one, whose S then fell 0.02-0.04 ARI below its own substitute view. Trained
    for the section's steps (``reference_spots`` 3600) sixteen image-less crops gained +0.029 on average, 15 of 16 of
    them, but by 0.9 sd over training seeds, below the 2 sd a default needs (docs/method.md, round 27): off (0, the
    paper's fixed epochs) by default on every platform.
    """
    if not config.reference_spots or n_spots >= config.reference_spots:
        return config.epochs
    return math.ceil(config.epochs * config.reference_spots / max(n_spots, 1))


# ----------------------------------------------------------------------------- inputs
def scale_genes(expr: np.ndarray, how: str) -> np.ndarray:
    """Per-gene z-score of the HVG matrix, in place (``how="zscore"``), as scanpy's ``pp.scale``.

    Why: on Visium the layer markers are low-mean genes whose log-expression variance is small; without
    scaling the few high-variance genes dominate every distance (DLPFC: docs/method.md). Genes with zero
    variance are left centred (divided by 1). Float64 column statistics; the matrix itself stays float32.
    """
    if how == "none":
        return expr
    mean = expr.mean(axis=0, dtype=np.float64)
    sd = expr.std(axis=0, dtype=np.float64)
    expr -= mean.astype(np.float32)
    expr /= np.where(sd > 0, sd, 1.0).astype(np.float32)
    return expr


def select_k(coords: np.ndarray, source: np.ndarray, target: np.ndarray, distance: np.ndarray,
             k: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The kNN edges to train on: the given graph, or each spot's ``k`` nearest (``--k``).

    Fewer neighbours than the graph holds are taken from it (nearest first); more are recomputed from
    the coordinates with the same ball tree as preprocess.
    """
    counts = np.bincount(source, minlength=len(coords))
    graph_k = int(counts.min()) if len(counts) else 0
    if k is None or k == graph_k == int(counts.max()):
        return source, target, graph_k
    if k <= graph_k:
        order = np.lexsort((distance, source))
        rank = np.arange(len(order)) - np.searchsorted(source[order], source[order], side="left")
        keep = order[rank < k]
        keep.sort()
        return source[keep], target[keep], k
    edges = knn_edges(coords, k)
    return edges["source"].to_numpy(), edges["target"].to_numpy(), k


# ----------------------------------------------------------------------------- determinism
@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[np.random.Generator]:
    """Seed torch/numpy/random and ask torch for deterministic kernels for the block.

    On CPU runs are bit-identical for a seed. On CUDA, torch_geometric's scatter reductions use
    atomics, so results can differ in the last bits between runs: torch is told to warn, not fail.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield np.random.default_rng(seed)
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


# ----------------------------------------------------------------------------- one step
def _forward(model: SencaModel, tile: Tile, x: torch.Tensor, features: torch.Tensor, device: torch.device) -> SencaOutput:
    nodes = tile.nodes
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model(x[nodes].to(device), features[nodes].to(device), tile.gcn_edges.to(device),
                     tile.gcn_weight.to(device), tile.attention_edges.to(device), tile.window_edges.to(device),
                     tile.reach)


def tile_losses(out: SencaOutput, tile: Tile, cells: torch.Tensor | None, config: TrainConfig,
                corrupt_rna: torch.Tensor | None = None,
                discriminator: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Eq. 1 on one tile's core spots; ``cells`` (core spots -> pooling cell) for the global term.

    With ``config.graph_contrast`` > 0, ``corrupt_rna`` (R of the tile with its expression rows shuffled,
    :func:`corrupted_rna`) and the model's ``discriminator`` add the DGI-style term at that weight.
    """
    c = tile.num_core
    h, r = out.image.float(), out.rna.float()
    nan = torch.tensor(float("nan"), device=h.device)
    terms = {"nt_xent_pooled": nan, "nt_xent_window": nan, "nt_xent_spot": nan, "graph_contrast": nan}
    total = torch.zeros((), device=h.device)
    window = tile.window_edges.to(h.device)
    core_windows = window[:, window[1] < c]  # R and H may hold only the rows these read (Tile.reach)
    if config.hierarchical:
        hw = window_mean(h, core_windows, c)
        rw = window_mean(r, core_windows, c)
        overlap = overlapping_windows(window, c, tile.num_nodes) if config.mask_overlapping else None
        terms["nt_xent_window"] = nt_xent(hw, rw, config.temperature, overlap)
        total = total + terms["nt_xent_window"]
        if cells is not None and int(cells.max()) >= 1:
            cells = cells.to(h.device)
            terms["nt_xent_pooled"] = nt_xent(cell_mean(h[:c], cells), cell_mean(r[:c], cells), config.temperature)
            total = total + terms["nt_xent_pooled"]
    else:
        terms["nt_xent_spot"] = nt_xent(h[:c], r[:c], config.temperature)
        total = total + terms["nt_xent_spot"]
    if config.graph_contrast > 0:
        terms["graph_contrast"] = graph_contrast(r, corrupt_rna, core_windows, c, discriminator)
        total = total + config.graph_contrast * terms["graph_contrast"]
    terms["mse"] = reconstruction_mse(out.target[:c], out.decoded[:c], config.detach_target)
    terms["loss"] = total + config.lambda_mse * terms["mse"]
    return terms


def corrupted_rna(model: SencaModel, tile: Tile, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """R of the tile's graph with its expression rows shuffled among the nodes: the DGI term's negatives."""
    shuffled = tile.nodes[torch.randperm(tile.num_nodes)]
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model.rna_branch(x[shuffled].to(device), tile.gcn_edges.to(device), tile.gcn_weight.to(device),
                                tile.attention_edges.to(device), tile.reach[1:] if tile.reach else None)


# ----------------------------------------------------------------------------- training
def epoch_batches(coords: np.ndarray, cells: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """This epoch's mini-batches: random sets of pooling cells ("scattered") or compact tiles ("compact")."""
    if config.batching == "compact":
        return spatial_tiles(coords, config.batch_spots, rng)
    return cell_batches(cells, config.batch_spots, rng)


def _dense(ids: np.ndarray) -> np.ndarray:
    """Renumber ids to 0..C-1 in order of first appearance."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def network_input(expr: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """What the RNA branch reads: the HVG matrix (the paper), or its leading ``config.input_pcs`` PCs.

    Why an option: PCA 200 of the 3,000 scaled Visium HVGs (as SEDR, CCST and DeepST feed their networks)
    was measured as a cheaper, denoised input; it kept the same ARI on DLPFC but saved only ~7 % of the
    training on 2 threads, so the HVGs stay the default (docs/method.md, round 7). The scores are brought
    to unit root mean variance by one global scale, as the image head's input is, so their relative
    variances are kept. The substitute view is still made from the HVGs; the reconstruction target of
    ``reconstruct="expression"`` is what the branch reads.
    """
    if not config.input_pcs or config.input_pcs >= expr.shape[1]:
        return expr, {"kind": "hvg", "width": int(expr.shape[1])}
    scores = unit_root_mean_variance(pca(expr, config.input_pcs))
    return np.ascontiguousarray(scores, dtype=np.float32), {"kind": "hvg_pca", "width": int(scores.shape[1])}


def image_view(expr: np.ndarray, graph: SlideGraph, image_features: np.ndarray | None,
               config: TrainConfig) -> tuple[torch.Tensor, dict[str, Any]]:
    """The image branch's input (patch features, or the image-less substitute) and how it was made."""
    if image_features is None:
        view, substitute = image_substitute(expr, graph, config.substitute_hops, config.substitute_dim)
        return torch.as_tensor(view), {"image": "none", "image_substitute": substitute}
    features = np.ascontiguousarray(image_features, dtype=np.float32)
    info: dict[str, Any] = {"image": "patches", "image_substitute": None}
    if config.image_hops:
        features = neighbourhood_smooth(torch.as_tensor(features), graph, config.image_hops).numpy()
        info["image_hops"] = config.image_hops
    if config.image_pcs and config.image_pcs < features.shape[1]:
        features = pca(features, config.image_pcs)
        info["image_pcs"] = int(features.shape[1])
    if config.image_with_substitute:
        view, substitute = image_substitute(expr, graph, config.substitute_hops, config.substitute_dim)
        # each part at unit root-mean-variance (the patches' then times image_weight), so neither block's
        # width or units decides its weight
        parts = [unit_root_mean_variance(view), unit_root_mean_variance(features, config.image_weight)]
        features = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
        info["image_substitute"] = substitute
    return torch.as_tensor(features), info


def clustering_view(expr: np.ndarray, graph: SlideGraph, features: torch.Tensor, image_info: dict[str, Any],
                    config: TrainConfig) -> np.ndarray:
    """The substitute view (the expression's smoothed PCA) to write beside S for the cluster stage.

    Why: on Visium, clustering [S, 2 x this view] finds layers more accurately than S alone (docs/method.md,
    round 17 and ``senca cluster --view-weight``). It is always the expression's view, with or without
    H&E, and it is the one training already made where it made one (image-less: the image head's input;
    with ``image_with_substitute``: that input's first block, at unit root mean variance, which the cluster
    stage's own scaling leaves as it is), so nothing is computed twice.
    """
    substitute = image_info.get("image_substitute")
    if substitute is not None:
        width = int(substitute["pca_components"])
        return np.ascontiguousarray(features[:, :width].numpy(), dtype=np.float32)
    view, _ = image_substitute(expr, graph, config.substitute_hops, config.substitute_dim)
    return view


def build_model(n_genes: int, features: torch.Tensor, config: TrainConfig,
                device: torch.device) -> tuple[SencaModel, ModelConfig]:
    """A freshly initialised SencaModel for this slide (image features standardised), on ``device``."""
    model_config = ModelConfig(n_genes=n_genes, image_dim=features.shape[1], hidden_dim=config.hidden_dim,
                               rna_dim=config.rna_dim, shared_dim=config.shared_dim, combine=config.combine,
                               cross_attention=config.cross_attention, dropout=config.dropout, heads=config.heads,
                               normalise_encoder_input=config.normalise_encoder_input,
                               detach_branches=config.detach_branches, reconstruct=config.reconstruct,
                               graph_contrast=config.graph_contrast > 0)
    model = SencaModel(model_config)
    model.image_branch.fit_standardisation(features)
    return model.to(device), model_config


def train_epoch(model: SencaModel, optimiser: torch.optim.Optimizer, epoch: int, first_step: int, coords: np.ndarray,
                cell_size: float, graph: SlideGraph, x: torch.Tensor, features: torch.Tensor, config: TrainConfig,
                device: torch.device, rng: np.random.Generator) -> list[dict[str, float]]:
    """One pass over a fresh random partition of the slide into mini-batches; one log row per step."""
    model.train()
    origin = coords.min(axis=0) - rng.uniform(0.0, cell_size, size=2)  # pooling grid moves every epoch
    slide_cells = pool_cells(coords, cell_size, origin)
    rows: list[dict[str, float]] = []
    for core in epoch_batches(coords, slide_cells, config, rng):
        if len(core) < 2:
            continue
        tile = make_tile(core, graph)
        cells = torch.as_tensor(_dense(slide_cells[tile.nodes[: tile.num_core].numpy()]))
        out = _forward(model, tile, x, features, device)
        corrupt = corrupted_rna(model, tile, x, device) if config.graph_contrast > 0 else None
        terms = tile_losses(out, tile, cells, config, corrupt, model.discriminator)
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimiser.step()
        rows.append({
            "epoch": epoch, "step": first_step + len(rows), **{name: float(value.detach()) for name, value in terms.items()},
            "embedding_var": embedding_variance(out.shared[: tile.num_core]),
            "encoder_input_var": embedding_variance(out.encoder_input[: tile.num_core]),
            "n_spots": tile.num_core, "n_cells": int(cells.max()) + 1, "lr": optimiser.param_groups[0]["lr"],
        })
    return rows


def train_senca(expr: np.ndarray, coords: np.ndarray, source: np.ndarray, target: np.ndarray,
                distance: np.ndarray | None = None, image_features: np.ndarray | None = None,
                config: TrainConfig | None = None, quiet: bool = True) -> TrainResult:
    """Train SENCA-st on one slide and return S for every spot, the step log and a checkpoint.

    ``expr``: (N, genes) log-normalised HVGs; ``coords``: (N, 2) pixel coordinates; ``source`` ->
    ``target``: each spot's k nearest spots (row indices), ``distance`` their lengths;
    ``image_features``: (N, F) patch features, or None for an image-less slide.
    """
    config = config or TrainConfig()
    config.validate()
    given = expr
    expr = np.ascontiguousarray(expr, dtype=np.float32)
    if config.gene_scale != "none":  # scaled in place: never the caller's array
        expr = scale_genes(expr.copy() if np.shares_memory(expr, given) else expr, config.gene_scale)
    coords = np.asarray(coords, dtype=np.float64)
    n = expr.shape[0]
    if coords.shape != (n, 2):
        raise SencaError(f"coordinates have shape {coords.shape}, expected ({n}, 2)")
    if n < 3:
        raise SencaError(f"slide has {n} spot(s); training needs at least 3")
    if image_features is not None and len(image_features) != n:
        raise SencaError(f"patch features have {len(image_features)} rows for {n} spots")
    source = np.asarray(source, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    distance = np.zeros(len(source), np.float32) if distance is None else np.asarray(distance, dtype=np.float32)
    device = resolve_device(config.device)

    with seeded(config.seed, device) as rng:
        started = time.perf_counter()
        source, target, k = select_k(coords, source, target, distance, config.k)
        graph = build_slide_graph(source, target, n)
        features, image_info = image_view(expr, graph, image_features, config)
        rna_input, input_info = network_input(expr, config)
        x = torch.as_tensor(rna_input)
        model, model_config = build_model(rna_input.shape[1], features, config, device)
        optimiser = make_optimiser(model, config.lr, device)
        pitch = median_spot_pitch(coords)
        cell_size = config.pool_pitches * (pitch if math.isfinite(pitch) and pitch > 0 else 1.0)
        rows: list[dict[str, float]] = []
        n_epochs = epochs_for(config, n)
        epochs = progress(range(n_epochs), quiet, desc="train-senca", unit="epoch")
        for epoch in epochs:
            rows += train_epoch(model, optimiser, epoch, len(rows), coords, cell_size, graph, x, features, config,
                                device, rng)
            if hasattr(epochs, "set_postfix") and rows:
                epochs.set_postfix(loss=f"{rows[-1]['loss']:.3f}", var=f"{rows[-1]['embedding_var']:.3g}")
        train_seconds = time.perf_counter() - started
        embeddings = embed_slide(model, coords, graph, x, features, device, max(config.batch_spots, INFERENCE_TILE_SPOTS))
        view = clustering_view(expr, graph, features, image_info, config)
        step = len(rows)

    log_frame = pd.DataFrame(rows, columns=LOG_COLUMNS).astype({"epoch": "int64", "step": "int64", "n_spots": "int64", "n_cells": "int64"})
    last_epoch = log_frame[log_frame["epoch"] == log_frame["epoch"].max()]
    final = {c: float(last_epoch[c].mean()) for c in LOSS_TERMS if last_epoch[c].notna().any()}
    summary = {
        **image_info, "rna_input": input_info, "device": str(device), "k": k, "n_spots": n, "n_genes": expr.shape[1],
        "epochs": n_epochs, "steps": step, "spot_pitch": pitch, "pool_cell_size": cell_size, "train_seconds": round(train_seconds, 3),
        "final_losses": final, "embedding_var": float(embeddings.var(axis=0).mean()),
    }
    checkpoint = {
        "state_dict": {name: value.detach().cpu().clone() for name, value in model.state_dict().items()},
        "config": {"model": model_config.to_dict(), "train": asdict(config), "image": image_info, "rna_input": input_info,
                   "k": k},
        "senca_version": __version__,
    }
    return TrainResult(embeddings, log_frame, checkpoint, summary, view)


@torch.no_grad()
def embed_slide(model: SencaModel, coords: np.ndarray, graph: SlideGraph, x: torch.Tensor, features: torch.Tensor,
                device: torch.device, tile_spots: int = INFERENCE_TILE_SPOTS) -> np.ndarray:
    """S for every spot in eval mode (no dropout), tile by tile with halos: equal to a whole-slide pass."""
    model.eval()
    out = np.zeros((graph.num_nodes, model.config.shared_dim), dtype=np.float32)
    for core in spatial_tiles(coords, tile_spots):
        tile = make_tile(core, graph)
        shared = _forward(model, tile, x, features, device).shared[: tile.num_core]
        out[tile.nodes[: tile.num_core].numpy()] = shared.float().cpu().numpy()
    return out


# ----------------------------------------------------------------------------- artifacts
STAGE = "train-senca"


@dataclass
class TrainingInputs:
    """The arrays ``train_senca`` needs, read and checked from the preprocess/embed artifacts."""

    sample: str
    spot_ids: list[str]
    expr: np.ndarray
    coords: np.ndarray
    source: np.ndarray
    target: np.ndarray
    distance: np.ndarray
    image_features: np.ndarray | None
    checksums: dict[str, str]
    image_meta: dict[str, Any] = field(default_factory=dict)  # the patches' encoder provenance
    defaults_platform: str | None = None  # whose defaults preprocess applied (st | visium)


def read_training_inputs(spots: str | Path, expr: str | Path, graph: str | Path,
                         patches: str | Path | None = None) -> TrainingInputs:
    """Read ``{s}.spots/expr/graph[/patches].parquet``; every mismatch is a SencaError naming the file."""
    from senca.io.artifacts import (
        align_to_spots,
        check_made_from,
        embedding_matrix,
        file_checksum,
        read_table,
    )

    spots_df, spots_meta = read_table(spots, "spots")
    sample = str(spots_meta.get("sample"))
    spot_ids = spots_df["spot_id"].astype(str).tolist()
    expr_df, expr_meta = read_table(expr, "expr")
    graph_df, graph_meta = read_table(graph, "graph")
    for path, meta in ((expr, expr_meta), (graph, graph_meta)):
        if str(meta.get("sample")) != sample:
            raise SencaError(f"is for sample {meta.get('sample')!r} but the spots file is for {sample!r}", path)
        if meta.get("inputs") and spots_meta.get("inputs") and meta["inputs"] != spots_meta["inputs"]:
            raise SencaError(f"was preprocessed from other input files than {spots} (recorded sha256 differ): "
                             "one of them is stale; rerun preprocess", path)
    if expr_df["spot_id"].astype(str).tolist() != spot_ids:
        expr_df = align_to_spots(expr_df, spot_ids, expr)
    # C order now (training gathers rows), so the column-major matrix behind the frame is freed with it
    # here instead of being kept beside a contiguous copy for the whole run
    matrix = np.ascontiguousarray(expr_df.drop(columns="spot_id").to_numpy(dtype=np.float32))
    _check_finite(matrix, expr_df, expr)
    del expr_df
    coords = spots_df[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    if not np.isfinite(coords).all():
        bad = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise SencaError(f"spot {spot_ids[bad]!r} has a missing pixel_x/pixel_y", spots)
    source = graph_df["source"].to_numpy(dtype=np.int64)
    target = graph_df["target"].to_numpy(dtype=np.int64)
    n = len(spot_ids)
    for column, values in (("source", source), ("target", target)):
        bad = np.flatnonzero((values < 0) | (values >= n))
        if len(bad):
            raise SencaError(f"column {column!r} row {int(bad[0])} points at spot {int(values[bad[0]])}, "
                             f"but the slide has {n} spots (graph from another preprocess run?)", graph)
    keep = source != target  # a self loop is added by the model itself
    distance = graph_df["distance"].to_numpy(dtype=np.float32)
    checksums = {"spots": file_checksum(spots), "expr": file_checksum(expr), "graph": file_checksum(graph)}
    features, image_meta = None, {}
    if patches is not None:
        patches_df, patches_meta = read_table(patches, "patches")
        if str(patches_meta.get("sample")) != sample:
            raise SencaError(f"is for sample {patches_meta.get('sample')!r} but the spots file is for {sample!r}", patches)
        check_made_from(patches_meta, patches, "spots", spots, checksums["spots"])
        patches_df = align_to_spots(patches_df, spot_ids, patches)
        features = embedding_matrix(patches_df)
        _check_finite(features, patches_df, patches)
        checksums["patches"] = file_checksum(patches)
        image_meta = {k: patches_meta.get(k) for k in ("params", "encoder", "weights") if k in patches_meta}
    return TrainingInputs(sample, spot_ids, matrix, coords, source[keep], target[keep], distance[keep], features,
                          checksums, image_meta, spots_meta.get("defaults_platform"))


def _check_finite(matrix: np.ndarray, frame: pd.DataFrame, path: str | Path, block_values: int = 1 << 24) -> None:
    """Refuse a NaN/inf, naming its spot and column: row blocks, so no (spots x columns) mask is made."""
    step = max(1, block_values // max(matrix.shape[1], 1))
    for start in range(0, len(matrix), step):
        bad = ~np.isfinite(matrix[start:start + step])
        if bad.any():
            row, col = (int(v[0]) for v in np.nonzero(bad))
            columns = [c for c in frame.columns if c != "spot_id"]
            raise SencaError(f"spot {frame['spot_id'].iloc[start + row]!r} has a non-finite value in column "
                             f"{columns[col]!r}", path)


def write_training_outputs(result: TrainResult, inputs: TrainingInputs, config: TrainConfig,
                           outdir: str | Path) -> dict[str, Path]:
    """Write ``{s}.model.pt``, ``{s}.embeddings.parquet``, ``{s}.train_log.parquet`` (each atomically)."""
    from senca.io.artifacts import Provenance, embedding_frame, save_torch, write_table

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s = inputs.sample
    paths = {"model": outdir / f"{s}.model.pt", "embeddings": outdir / f"{s}.embeddings.parquet",
             "train_log": outdir / f"{s}.train_log.parquet"}
    # no wall-clock time (train_seconds) in the metadata: the same inputs and seed give byte-identical files
    extra = {key: result.summary[key] for key in ("image", "image_substitute", "rna_input", "device", "k", "epochs", "steps",
                                                   "final_losses", "embedding_var", "n_spots", "n_genes")}
    if inputs.image_meta:
        extra["image_encoder"] = inputs.image_meta
    params = asdict(config)

    def provenance(kind: str) -> Provenance:
        return Provenance(kind, s, STAGE, params, inputs.checksums, extra)

    write_table(embedding_frame(inputs.spot_ids, result.embeddings, result.view), paths["embeddings"],
                provenance("embeddings"))
    write_table(result.log, paths["train_log"], provenance("train_log"))
    checkpoint = dict(result.checkpoint)
    checkpoint["config"] = {**checkpoint["config"], "sample": s, "inputs": dict(inputs.checksums)}
    save_torch(checkpoint, paths["model"])
    return paths
