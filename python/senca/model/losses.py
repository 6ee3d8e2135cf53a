"""The SENCA-st loss (paper eq. 1) and the hierarchical pooling it is computed on (paper 3.5).

    Loss = NT-Xent_g(H_p, R_p) + NT-Xent_w(H_w, R_w) + lambda * avg_i MSE(E_i, D_i)

* ``nt_xent`` is SimCLR's normalised temperature-scaled cross entropy between two views: pair i of
  the batch is the positive, every other member of either view is a negative.
* ``window_mean`` gives H_w, R_w: H and R averaged over each spot's window (the spot and its k
  nearest spots), one sparse scatter over the neighbourhood edges, O(spots x k).
* ``pool_cells`` / ``cell_mean`` give H_p, R_p: H and R mean-pooled over coarse square cells of the
  slide (low resolution), so the global term smooths the noise of single spots.
* ``reconstruction_mse`` is the local term; its target is detached by default so the trivial optimum
  (encoder input E driven to a constant, then D = E for free) is not rewarded: see docs/method.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent (SimCLR) between paired rows of ``z1`` and ``z2`` (both B x d); needs B >= 2.

    Cosine similarities of all 2B embeddings are divided by ``temperature``; for each embedding the
    loss is the cross entropy of picking its partner among the other 2B - 1. ``not_negative`` (B x B,
    bool) removes pairs (i, j), i != j, from the negatives in both views: windows that share spots
    are not different places (false negatives). Memory is O(B^2) in the batch (a tile's windows or
    cells), never in the slide.
    """
    if z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"nt_xent needs two equal batches of >= 2 rows, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.t() / temperature
    excluded = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    if not_negative is not None:
        block = not_negative.to(z.device) & ~torch.eye(b, dtype=torch.bool, device=z.device)
        excluded = excluded | block.repeat(2, 2)
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    excluded[torch.arange(2 * b, device=z.device), partner] = False  # the positive always stays
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, partner)


def overlapping_windows(window_edges: torch.Tensor, num_core: int, num_nodes: int) -> torch.Tensor:
    """(num_core x num_core) bool: True where the windows of core spots i and j share a spot.

    Computed sparsely (membership^T membership), O(edges x k) work; only the B x B answer is dense,
    the same size as the NT-Xent logits it masks.
    """
    from scipy import sparse

    source, target = (t.cpu().numpy() for t in window_edges)
    keep = target < num_core
    membership = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (source[keep], target[keep])),
                                   shape=(num_nodes, num_core))
    pairs = (membership.T @ membership).tocoo()
    mask = torch.zeros(num_core, num_core, dtype=torch.bool)
    mask[torch.as_tensor(pairs.row, dtype=torch.int64), torch.as_tensor(pairs.col, dtype=torch.int64)] = True
    return mask.to(window_edges.device)


def window_mean(x: torch.Tensor, window_edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Mean of ``x`` over each spot's window; ``window_edges`` (2 x E) point member -> centre.

    The edges must include each spot's self loop so the window is {i} U kNN(i).
    """
    source, target = window_edges
    return scatter(x[source], target, dim=0, dim_size=num_nodes, reduce="mean")


def pool_cells(coords: np.ndarray, cell_size: float, origin: np.ndarray | None = None) -> np.ndarray:
    """Index (0..C-1) of the square cell of side ``cell_size`` each spot falls into.

    Cells are numbered in order of first appearance so the result is deterministic and dense.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if origin is None:
        origin = coords.min(axis=0)
    cell = np.floor((coords - origin) / cell_size).astype(np.int64)
    _, first, inverse = np.unique(cell, axis=0, return_index=True, return_inverse=True)
    # renumber cells by the first spot that falls in them (np.unique sorts lexicographically)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def cell_mean(x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``x`` in each cell (``cells`` dense 0..C-1): the pooled H_p / R_p."""
    return scatter(x, cells, dim=0, dim_size=int(cells.max()) + 1, reduce="mean")


def reconstruction_mse(encoder_input: torch.Tensor, decoded: torch.Tensor, detach_target: bool = True) -> torch.Tensor:
    """avg_i MSE(E_i, D_i); with ``detach_target`` the target E carries no gradient (collapse guard)."""
    target = encoder_input.detach() if detach_target else encoder_input
    return F.mse_loss(decoded.float(), target.float())


def embedding_variance(s: torch.Tensor) -> float:
    """Mean per-dimension variance of embeddings across spots: ~0 means the embedding collapsed."""
    if s.shape[0] < 2:
        return float("nan")
    return float(s.detach().float().var(dim=0, unbiased=False).mean())


def graph_contrast(real: torch.Tensor, corrupt: torch.Tensor, window_edges: torch.Tensor, num_core: int,
                   discriminator: torch.nn.Module) -> torch.Tensor:
    """Corrupted-graph contrast in the style of Deep Graph Infomax (GraphST's local-global term).

    ``real``: an embedding of every tile node (N x d); ``corrupt``: the same network on the same graph with
    the expression rows shuffled among the nodes. Each core spot's summary is the L2-normalised mean of its
    window ({i} U kNN(i)) squashed by a sigmoid; the bilinear ``discriminator`` must score (spot, summary of
    its own window) as real and (corrupted spot, that summary) as fake, and the same with the roles swapped.
    Why: it rewards the features a spot shares with its neighbourhood and not with random spots, which a
    reconstruction alone does not. O(edges x d), binary cross-entropy with logits.
    """
    n = real.shape[0]
    summaries = [torch.sigmoid(F.normalize(window_mean(z.float(), window_edges, n)[:num_core], dim=1)) for z in (real, corrupt)]
    own, shuffled = real[:num_core].float(), corrupt[:num_core].float()
    labels = torch.cat([torch.ones(num_core, device=real.device), torch.zeros(num_core, device=real.device)])
    loss = torch.zeros((), device=real.device)
    for positive, negative, summary in ((own, shuffled, summaries[0]), (shuffled, own, summaries[1])):
        scores = torch.cat([discriminator(positive, summary), discriminator(negative, summary)]).squeeze(1)
        loss = loss + F.binary_cross_entropy_with_logits(scores, labels)
    return loss
