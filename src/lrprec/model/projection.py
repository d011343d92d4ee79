"""A concept projection as a linear layer (P-ClArC, Anders et al. 2022): a ← a − V Vᵀ(a − z̄).

With ``V`` (k, F) orthonormal concept directions and ``z̄`` (F,) a reference point (the mean
activation of samples *without* the concept), the map is affine:
``a ↦ (I − VᵀV) a + VᵀV z̄``, so it is an ``nn.Linear`` with weight ``I − VᵀV`` and bias
``VᵀV z̄``. Appended to the backbone's ``classifier`` it sits between the backbone's output and
the head: every consumer of the run's features (index, explain, serve, the shortcut probe) sees
the projected features, and the LRP engine passes relevance through it as a dense layer.
"""
from __future__ import annotations

import torch
from torch import nn

from lrprec.errors import UsageError


def projection_params(V: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a ← a − VᵀV(a − ref) for orthonormal rows ``V`` (k, F) and ``ref`` (F,)."""
    if V.dim() != 2 or ref.shape != (V.shape[1],):
        raise UsageError(f"concept directions must be (k, F) and the reference (F,); got {tuple(V.shape)} and {tuple(ref.shape)}")
    P = V.T @ V
    return torch.eye(V.shape[1], dtype=V.dtype) - P, P @ ref


def projection_layer(V: torch.Tensor, ref: torch.Tensor) -> nn.Linear:
    """The projection as a frozen ``nn.Linear(F, F)``."""
    weight, bias = projection_params(V.double(), ref.double())
    layer = nn.Linear(V.shape[1], V.shape[1])
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        layer.bias.copy_(bias.float())
    layer.requires_grad_(False)
    return layer


def attach_projection(backbone: nn.Module, layer: nn.Linear | None = None) -> nn.Linear:
    """Append a projection layer (``layer``, or an identity-shaped placeholder whose weights a state dict fills) to the backbone's output."""
    F = int(backbone.out_dim)
    if layer is None:
        layer = nn.Linear(F, F)
        layer.requires_grad_(False)
    if getattr(backbone, "kind", "image") == "features" or not isinstance(backbone.classifier, nn.Sequential):
        raise UsageError("a concept projection needs an image backbone (features mode has no layer to project in)")
    backbone.classifier.append(layer)
    return layer
