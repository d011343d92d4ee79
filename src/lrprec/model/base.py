"""The common base of the image backbones, and reading a local checkpoint file (never downloading)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrprec.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Common base: ``features`` -> ``avgpool`` -> flatten -> ``classifier``; ``out_dim`` = F."""

    out_dim: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    kind: str = "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, F) of preprocessed images x (B, 3, H, W)."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def input_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest normalized pixel value per channel, shape (1, 3, 1, 1) each."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (0 - mean) / std, (1 - mean) / std



def load_state_file(path: str | Path, what: str) -> dict:
    """A state dict from a local ``.pth``/``.pt`` or ``.safetensors`` file (a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path} (this program never downloads)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds no state dict")
    return state
