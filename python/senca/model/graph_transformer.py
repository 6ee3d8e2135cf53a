"""The transcriptomic branch g of SENCA-st (paper 3.2): R = g(G), a sparse graph transformer.

The paper describes: dropout (masking, as in a denoising autoencoder) -> a learnable matrix
multiplication -> a "spatial" multiplication with the adjacency matrix (message passing) -> a
transformer block (self-attention, LayerNorm, feed-forward, a residual bypassing the block) -> an
activation. Self-attention here runs over graph neighbourhoods (each spot attends to itself and its
graph neighbours, an edge softmax), never over a dense N x N matrix: memory is O(spots x k).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import scatter, softmax


def edge_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, edges: torch.Tensor,
                   num_nodes: int) -> torch.Tensor:
    """Scaled dot-product attention restricted to graph edges (an edge softmax).

    ``q``, ``k``: (N, heads, d_k); ``v``: (N, heads, d_v); ``edges``: (2, E) key/value node j ->
    query node i. Returns (N, heads, d_v) with out_i = sum_j softmax_j(q_i . k_j / sqrt(d_k)) v_j,
    the softmax taken over the edges into i. Scores are kept in float32 under mixed precision.
    """
    source, target = edges
    score = (q[target].float() * k[source].float()).sum(dim=-1) / math.sqrt(q.shape[-1])  # (E, heads)
    alpha = softmax(score, target, num_nodes=num_nodes)
    return scatter(alpha.unsqueeze(-1) * v[source].float(), target, dim=0, dim_size=num_nodes, reduce="sum")


class NeighbourhoodSelfAttention(nn.Module):
    """Multi-head self-attention where spot i attends only to the spots j with an edge j -> i."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def reset_parameters(self) -> None:
        for layer in (self.query, self.key, self.value, self.out):
            layer.reset_parameters()

    def forward(self, h: torch.Tensor, edges: torch.Tensor, num_out: int | None = None) -> torch.Tensor:
        """h: (N, dim); edges: (2, E) with self loops -> (num_out, dim), the first ``num_out`` rows (all by default).

        With ``num_out`` < N only the edges into those rows are read and only their queries computed:
        the rows a later layer never reads cost nothing (see ``GraphTransformer.forward``'s ``rows``).
        """
        n, dim = h.shape
        num_out = n if num_out is None else num_out
        if num_out < n:
            edges = edges[:, edges[1] < num_out]
        heads = (self.heads, dim // self.heads)
        attended = edge_attention(self.query(h[:num_out]).view(num_out, *heads), self.key(h).view(n, *heads),
                                  self.value(h).view(n, *heads), edges, num_out)
        return self.out(attended.reshape(num_out, dim).to(h.dtype))


class GraphTransformer(nn.Module):
    """g: (N, genes) expression + graph -> R (N, out_dim) RNA embeddings (paper 3.2).

        h = Â (dropout(X) W)                                (GCN: linear, then normalised adjacency)
        R = act( h W_res + FF(LayerNorm(SelfAttn_G(h))) )   (transformer block + residual, act = ELU)

    Â = D^-1/2 (A + I) D^-1/2 is passed in as edge weights (computed once per slide, so tiles with
    halos see exactly the whole-slide normalisation). FF: Linear(hidden, hidden), GELU,
    Linear(hidden, out); W_res projects the residual from hidden to out (the paper's residual
    bypasses the block, whose output is narrower than its input).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 128, dropout: float = 0.2, heads: int = 4):
        super().__init__()
        self.masking = nn.Dropout(dropout)
        self.propagate = GCNConv(in_dim, hidden_dim, add_self_loops=False, normalize=False)
        self.attention = NeighbourhoodSelfAttention(hidden_dim, heads)
        self.norm = nn.LayerNorm(hidden_dim)
        self.feed_forward = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        self.residual = nn.Linear(hidden_dim, out_dim, bias=False)
        self.activation = nn.ELU()

    def reset_parameters(self) -> None:
        self.propagate.reset_parameters()
        self.attention.reset_parameters()
        self.norm.reset_parameters()
        for layer in (*self.feed_forward, self.residual):
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, x: torch.Tensor, gcn_edges: torch.Tensor, gcn_weight: torch.Tensor,
                attention_edges: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """R for every node, or with ``rows`` = (n_out, n_mid) for the first n_out nodes only.

        Why: on a mini-batch with its halo most rows are read by nothing. R at a node reads the
        propagated ``h`` of its graph neighbours, and ``h`` at a node reads its neighbours' inputs;
        when nodes are ordered by hops from the core (``Tile.reach``), R within 1 hop needs ``h``
        within 2 hops only: ``n_mid`` rows. The rows kept are exactly what the full pass gives.
        """
        n_out, n_mid = rows if rows is not None else (x.shape[0], x.shape[0])
        masked = self.masking(x)  # every row, so the dropout mask does not depend on ``rows``
        if n_mid < x.shape[0]:
            keep = gcn_edges[1] < n_mid
            gcn_edges, gcn_weight = gcn_edges[:, keep], gcn_weight[keep]
        h = self.propagate(masked, gcn_edges, gcn_weight)[:n_mid]
        block = self.feed_forward(self.norm(self.attention(h, attention_edges, n_out)))
        return self.activation(self.residual(h[:n_out]) + block)
