"""Choosing the torch device: ``auto`` uses CUDA when present, else the CPU."""

from __future__ import annotations

from senca.errors import SencaError


def resolve_device(name: str = "auto") -> torch.device:  # noqa: F821 - torch imported lazily
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SencaError("--device cuda was asked for but no CUDA GPU is visible to torch")
    return torch.device(name)
