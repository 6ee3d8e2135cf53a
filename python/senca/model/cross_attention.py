"""The neighbourhood cross-attention of SENCA-st's shared encoder (paper 3.4, eq. 3-4).

For spot i and its neighbourhood n = {i} U kNN(i), the image and RNA embeddings are projected
(H_{n,p}, R_{n,p}) and two attentions are taken, keeping spot i's row:

    A1_i = softmax_j( (H_{i,p} W^q1) . (R_{j,p} W^k1) / sqrt(E) ) R_j W^v1        (eq. 3)
    A2_i = softmax_j( (R_{i,p} W^q2) . (H_{j,p} W^k2) / sqrt(E) ) H_j W^v2        (eq. 4)

the softmax running over j in n(i): one edge softmax over the neighbourhood edges, O(spots x (k+1)).
A spot whose image and RNA agree with its neighbours' spreads its weight; one that looks like its
neighbours but is transcriptionally different (or the reverse) concentrates it, which is the
"structurally similar but functionally different" emphasis the paper is after.

With ``attention=False`` (the ``--no-cross-attention`` ablation, paper table 4 "without
cross-attention weights") the weights are replaced by the uniform neighbourhood mean, everything
else unchanged: A1_i = mean_j R_j W^v1, A2_i = mean_j H_j W^v2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from senca.model.graph_transformer import edge_attention


class NeighbourhoodCrossAttention(nn.Module):
    """(H, R) (N, dim) each + neighbourhood edges -> (A1, A2) (N, dim) each, eq. 3-4."""

    def __init__(self, dim: int = 128, key_dim: int | None = None, attention: bool = True):
        super().__init__()
        self.attention = attention
        self.key_dim = key_dim or dim
        self.value_rna = nn.Linear(dim, dim, bias=False)    # W^v1
        self.value_image = nn.Linear(dim, dim, bias=False)  # W^v2
        if attention:
            self.project_image = nn.Linear(dim, dim)  # -> H_{n,p}
            self.project_rna = nn.Linear(dim, dim)    # -> R_{n,p}
            self.query_image = nn.Linear(dim, self.key_dim, bias=False)  # W^q1
            self.key_rna = nn.Linear(dim, self.key_dim, bias=False)      # W^k1
            self.query_rna = nn.Linear(dim, self.key_dim, bias=False)    # W^q2
            self.key_image = nn.Linear(dim, self.key_dim, bias=False)    # W^k2

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def forward(self, h: torch.Tensor, r: torch.Tensor, window_edges: torch.Tensor,
                num_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``window_edges``: (2, E) neighbour j -> spot i for j in {i} U kNN(i).

        Returns the first ``num_out`` rows (all by default): only the windows of those spots are read.
        """
        n = h.shape[0] if num_out is None else num_out
        if n < h.shape[0]:
            window_edges = window_edges[:, window_edges[1] < n]
        v1 = self.value_rna(r)
        v2 = self.value_image(h)
        if not self.attention:
            source, target = window_edges
            a1 = scatter(v1[source], target, dim=0, dim_size=n, reduce="mean")
            a2 = scatter(v2[source], target, dim=0, dim_size=n, reduce="mean")
            return a1, a2
        hp = self.project_image(h)
        rp = self.project_rna(r)
        a1 = edge_attention(self.query_image(hp[:n]).unsqueeze(1), self.key_rna(rp).unsqueeze(1), v1.unsqueeze(1),
                            window_edges, n)
        a2 = edge_attention(self.query_rna(rp[:n]).unsqueeze(1), self.key_image(hp).unsqueeze(1), v2.unsqueeze(1),
                            window_edges, n)
        return a1.squeeze(1).to(h.dtype), a2.squeeze(1).to(h.dtype)
