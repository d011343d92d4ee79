"""Vision Transformer backbones with torchvision's layout and parameter names (Dosovitskiy et al. 2021).

``conv_proj``, ``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_N.ln_1``,
``.self_attention.in_proj_weight``/``in_proj_bias``/``out_proj``, ``.ln_2``, ``.mlp.0``, ``.mlp.3``
and ``encoder.ln`` are named as in ``torchvision.models.vision_transformer`` (ViT-B/16:
``vit_b_16-c867db91.pth`` loads key for key; ``heads.head``, the ImageNet classifier, is left
out). :func:`timm_to_torchvision` renames a timm ``vit_*_patch16`` state dict to these names.
Features are the class token after the final LayerNorm (F = hidden size); with ``out_dim``
set, ``head`` (Linear + ReLU) maps it to out_dim.

The attention is written out (q, k, v from one in-projection; softmax(q kᵀ/√d) v per head)
rather than through ``nn.MultiheadAttention``, so the LRP engine can give each product,
the softmax and each LayerNorm its AttnLRP rule (``lrprec.explain.attnlrp``).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lrprec.errors import UsageError
from lrprec.model.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, load_state_file

#: name -> (image size, patch, hidden, depth, heads, mlp)
VITS = {
    "vit-b16": (224, 16, 768, 12, 12, 3072),
    "vit-small": (64, 8, 64, 4, 4, 128),
}


class Lambda(nn.Module):
    """A parameter-free step (token assembly, class-token selection) as a module, for ``leaves()``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names (batch-first)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise UsageError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, 3D) -> q, k, v as (B, heads, N, D/heads)."""
        B, N, _ = qkv.shape
        return tuple(t.reshape(B, N, self.heads, -1).transpose(1, 2) for t in qkv.chunk(3, -1))  # type: ignore[return-value]

    @staticmethod
    def merge(o: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, d) -> (B, N, heads·d)."""
        B, H, N, d = o.shape
        return o.transpose(1, 2).reshape(B, N, H * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(F.linear(x, self.in_proj_weight, self.in_proj_bias))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        return self.out_proj(self.merge(a @ v))


class EncoderBlock(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)); ``mlp`` is Linear, GELU, Dropout, Linear, Dropout as in torchvision."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = SelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, tokens: int, dim: int, depth: int, heads: int, mlp: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", EncoderBlock(dim, heads, mlp)) for i in range(depth)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)


class ViT(Backbone):
    """A torchvision-layout ViT; ``out_dim=None`` gives the class token's features (F = hidden)."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, image_size: int = 224, patch: int = 16, hidden: int = 768, depth: int = 12, heads: int = 12,
                 mlp: int = 3072, out_dim: int | None = None, arch: str = "custom"):
        super().__init__()
        if image_size % patch:
            raise UsageError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.image_size, self.patch = image_size, patch
        self.conv_proj = nn.Conv2d(3, hidden, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.encoder = Encoder((image_size // patch) ** 2 + 1, hidden, depth, heads, mlp)
        self.head = nn.Linear(hidden, out_dim) if out_dim else nn.Identity()
        self.head_relu = nn.ReLU() if out_dim else nn.Identity()
        self.out_dim = int(out_dim or hidden)
        self.config = {"image_size": image_size, "patch": patch, "hidden": hidden, "depth": depth, "heads": heads, "mlp": mlp,
                       "out_dim": out_dim, "arch": arch}

    def tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) patch embeddings -> (B, 1 + h·w, D) with the class token first and positions added."""
        if patches.shape[-1] * self.patch != self.image_size or patches.shape[-2] * self.patch != self.image_size:
            raise UsageError(f"this ViT takes {self.image_size} px images (--input-size {self.image_size})")
        x = patches.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1).to(x.dtype), x], 1)
        return x + self.encoder.pos_embedding

    def leaves(self) -> list[tuple[str, nn.Module]]:
        """Modules in execution order for the LRP canonizer; encoder blocks are single leaves."""
        return ([("conv_proj", self.conv_proj), ("tokens", Lambda(self.tokens))]
                + [(f"encoder.layers.{n}", b) for n, b in self.encoder.layers.named_children()]
                + [("encoder.ln", self.encoder.ln), ("class_token_out", Lambda(lambda h: h[:, 0])),
                   ("head", self.head), ("head_relu", self.head_relu)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(self.conv_proj(x))
        h = self.encoder.ln(self.encoder.layers(h))
        return self.head_relu(self.head(h[:, 0]))

    def load_torchvision(self, path: str | Path) -> list[str]:
        """Load a local torchvision (or, renamed, timm) ViT state dict; returns the checkpoint keys left unused."""
        state = load_state_file(path, "ViT")
        if any(k.startswith("blocks.") for k in state):
            state = timm_to_torchvision(state)
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.startswith("head.")]
        if missing:
            raise UsageError(f"{path} is not a torchvision {self.config['arch']} state dict (missing {missing[:3]}...)")
        use = {k: state[k] for k in own if k in state}
        for k, v in use.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise UsageError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict(use, strict=False)
        return [k for k in state if k not in use]


def timm_to_torchvision(state: dict) -> dict:
    """timm ViT keys (``patch_embed.proj``, ``blocks.N.attn.qkv``, …) renamed to torchvision's."""
    out = {}
    fixed = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding", "patch_embed.proj.weight": "conv_proj.weight",
             "patch_embed.proj.bias": "conv_proj.bias", "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias"}
    parts = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.weight": "self_attention.in_proj_weight",
             "attn.qkv.bias": "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for k, v in state.items():
        if k in fixed:
            out[fixed[k]] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            for a, b in parts.items():
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[f"encoder.layers.encoder_layer_{i}.{rest}"] = v
        else:
            out[k] = v
    return out


def build_vit(name: str, out_dim: int | None = None, **config) -> ViT:
    """``vit-b16`` (ViT-B/16 at 224 px) or ``vit-small`` (64 px catalogs: 8 px patches, 4 blocks of width 64)."""
    image_size, patch, hidden, depth, heads, mlp = VITS[name]
    config.pop("arch", None)
    args = {"image_size": image_size, "patch": patch, "hidden": hidden, "depth": depth, "heads": heads, "mlp": mlp}
    args.update(config)
    return ViT(**args, out_dim=out_dim, arch=name)
