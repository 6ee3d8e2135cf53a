"""The full SENCA-st model (paper Fig. 1): two branches, cross-attention, shared encoder/decoder.

    R = g(X, G)                       transcriptomic branch (graph transformer), N x rna_dim
    H = FC(image features)            image branch head (the CNN ran once in embed-patches), N x rna_dim
    A1, A2 = cross-attention(H, R)    eq. 3-4 over each spot's neighbourhood {i} U kNN(i)
    E = [A1, A2] (concat) or A1 + A2 (sum, eq. 2)
    S = encoder(E)                    the shared embedding that is clustered, N x shared_dim
    D = decoder(S)                    trained to reconstruct E (eq. 1's MSE term)

``ModelConfig`` is a plain dataclass so a checkpoint stores it as a dict and ``load_model`` rebuilds
the exact network from ``torch.load(..., weights_only=True)`` output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from senca.model.cross_attention import NeighbourhoodCrossAttention
from senca.model.graph_transformer import GraphTransformer
from senca.model.losses import window_mean

COMBINE = ("concat", "sum")
RECONSTRUCT = ("branches", "encoder_input", "views", "expression", "smoothed_expression")
STANDARDISATION_BLOCK_VALUES = 1 << 23  # values per row block when fitting ImageHead's standardisation


@dataclass
class ModelConfig:
    """Everything needed to rebuild a SencaModel (paper 4.1 defaults)."""

    n_genes: int
    image_dim: int
    hidden_dim: int = 256
    rna_dim: int = 128
    shared_dim: int = 64
    combine: str = "concat"
    cross_attention: bool = True
    dropout: float = 0.2
    heads: int = 4
    normalise_encoder_input: bool = True  # LayerNorm (no affine) on E: its scale can neither collapse nor explode
    detach_branches: bool = True  # the MSE trains the shared encoder only; NT-Xent alone shapes H and R
    reconstruct: str = "branches"  # MSE target: "branches" = spot i's own [R_i, H_i]; "encoder_input" = E_i;
    # "views" = [R_i, the image branch's standardised input of spot i] (features the network cannot move);
    # "expression" = spot i's own HVG expression X_i, as GraphST's decoder (docs/method.md, round 5);
    # "smoothed_expression" = X averaged over i's window n(i), the floor's denoised signal (round 9)
    graph_contrast: bool = False  # a bilinear discriminator for the corrupted-graph (DGI) term (round 6)

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {self.combine!r}")
        if self.reconstruct not in RECONSTRUCT:
            raise ValueError(f"reconstruct must be one of {RECONSTRUCT}, got {self.reconstruct!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SencaOutput:
    """Per-node tensors of one forward pass (rows follow the tile's nodes; with ``reach``, a prefix of them)."""

    rna: torch.Tensor        # R
    image: torch.Tensor      # H
    encoder_input: torch.Tensor  # E
    shared: torch.Tensor     # S
    decoded: torch.Tensor    # D
    target: torch.Tensor     # what D reconstructs: E, or spot i's own [R_i, H_i] (see ModelConfig.reconstruct)


class ImageHead(nn.Module):
    """H = FC(standardised patch features): the trainable part of the image branch (paper 3.3).

    The features are centred and divided by one global scale (their root mean variance), both fixed
    from the slide before training and kept as buffers so a checkpoint reproduces them. A single
    scale keeps the features' relative variances (per-feature z-scoring would inflate noise
    dimensions, e.g. the trailing components of a PCA'd substitute view).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_scale", torch.ones(()))
        self.fc = nn.Linear(in_dim, out_dim)

    @torch.no_grad()
    def fit_standardisation(self, features: torch.Tensor, block_values: int = STANDARDISATION_BLOCK_VALUES) -> None:
        """Set the mean and the root-mean-variance scale from every spot's ``features`` (N x F).

        Two passes over row blocks of about ``block_values`` values with float64 accumulators: memory
        is one float64 block (64 MiB), not float64 copies of the whole matrix (3 x 10^5 spots x 1280
        features: 3 GB each, and the centred squares took three of them).
        """
        n, width = features.shape
        blocks = features.split(max(1, block_values // max(width, 1)))
        total = torch.zeros(width, dtype=torch.float64)
        for block in blocks:
            total += block.double().sum(dim=0)
        mean = total / n
        squares = torch.zeros_like(total)
        for block in blocks:
            squares += block.double().sub_(mean).pow_(2).sum(dim=0)
        scale = (squares / n).mean().sqrt()
        self.feature_mean.copy_(mean.to(self.feature_mean.dtype))
        self.feature_scale.copy_(torch.clamp(scale, min=1e-8).to(self.feature_scale.dtype))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """The FC's input: features centred and divided by the slide's one global scale."""
        return (features - self.feature_mean) / self.feature_scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.standardise(features))


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, out_dim))


class SencaModel(nn.Module):
    """SENCA-st: (expression, image features, tile graph) -> R, H, E, S, D for every tile node."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.rna_branch = GraphTransformer(config.n_genes, config.hidden_dim, config.rna_dim, config.dropout, config.heads)
        self.image_branch = ImageHead(config.image_dim, config.rna_dim)
        self.cross_attention = NeighbourhoodCrossAttention(config.rna_dim, attention=config.cross_attention)
        encoder_in = 2 * config.rna_dim if config.combine == "concat" else config.rna_dim
        self.input_norm = nn.LayerNorm(encoder_in, elementwise_affine=False) if config.normalise_encoder_input else nn.Identity()
        self.encoder = _mlp(encoder_in, config.rna_dim, config.shared_dim)
        target_dim = {"branches": 2 * config.rna_dim, "encoder_input": encoder_in,
                      "views": config.rna_dim + config.image_dim, "expression": config.n_genes,
                      "smoothed_expression": config.n_genes}[config.reconstruct]
        self.decoder = _mlp(config.shared_dim, config.rna_dim, target_dim)
        # scores (R_i, summary of i's window): real pairs high, pairs with shuffled expression low (DGI)
        self.discriminator = nn.Bilinear(config.rna_dim, config.rna_dim, 1) if config.graph_contrast else None

    def forward(self, x: torch.Tensor, image_features: torch.Tensor, gcn_edges: torch.Tensor,
                gcn_weight: torch.Tensor, attention_edges: torch.Tensor, window_edges: torch.Tensor,
                reach: tuple[int, int, int] | None = None) -> SencaOutput:
        """Every output for every node, or with ``reach`` = (n_core, n_1, n_2) (``Tile.reach``: nodes
        ordered by hops from the core) only the rows the core's S, D and losses read: E, S, D and the
        target for the first n_core nodes, R and H for the first n_1 (the core's windows), the GCN
        within n_2. Those rows equal the full pass's; on a scattered DLPFC batch it is about half the work.
        """
        n = x.shape[0]
        n_core, n_1, n_2 = reach if reach is not None else (n, n, n)
        r = self.rna_branch(x, gcn_edges, gcn_weight, attention_edges, (n_1, n_2))
        h = self.image_branch(image_features[:n_1])
        if self.config.detach_branches:
            a1, a2 = self.cross_attention(h.detach(), r.detach(), window_edges, n_core)
        else:
            a1, a2 = self.cross_attention(h, r, window_edges, n_core)
        e = self.input_norm(torch.cat([a1, a2], dim=1) if self.config.combine == "concat" else a1 + a2)
        s = self.encoder(e)
        if self.config.reconstruct == "branches":
            width = (self.config.rna_dim,)
            target = torch.cat([F.layer_norm(r[:n_core].detach(), width), F.layer_norm(h[:n_core].detach(), width)], dim=1)
        elif self.config.reconstruct == "views":
            width = (self.config.rna_dim,)
            target = torch.cat([F.layer_norm(r[:n_core].detach(), width),
                                self.image_branch.standardise(image_features[:n_core])], dim=1)
        elif self.config.reconstruct == "expression":
            target = x[:n_core]
        elif self.config.reconstruct == "smoothed_expression":
            target = window_mean(x, window_edges[:, window_edges[1] < n_core], n_core)
        else:
            target = e
        return SencaOutput(rna=r, image=h, encoder_input=e, shared=s, decoded=self.decoder(s), target=target)


def load_model(checkpoint: dict[str, Any]) -> SencaModel:
    """Rebuild a trained model from a checkpoint dict (as loaded with ``weights_only=True``)."""
    model = SencaModel(ModelConfig.from_dict(checkpoint["config"]["model"]))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model
