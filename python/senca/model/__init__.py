"""The SENCA-st network (paper section 3): graph transformer, image head, cross-attention, losses."""

import warnings

with warnings.catch_warnings():  # torch_geometric's import calls the deprecated torch.jit.script: not ours to fix
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import torch_geometric  # noqa: F401


from senca.model.cross_attention import NeighbourhoodCrossAttention
from senca.model.graph_transformer import GraphTransformer, NeighbourhoodSelfAttention, edge_attention
from senca.model.losses import nt_xent
from senca.model.senca import ImageHead, ModelConfig, SencaModel, SencaOutput, load_model

__all__ = [
    "GraphTransformer",
    "ImageHead",
    "ModelConfig",
    "NeighbourhoodCrossAttention",
    "NeighbourhoodSelfAttention",
    "SencaModel",
    "SencaOutput",
    "edge_attention",
    "load_model",
    "nt_xent",
]
