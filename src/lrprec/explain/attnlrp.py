"""AttnLRP (Achtibat et al., ICML 2024) for the Vision Transformer: LayerNorm, attention and MLP as LRP steps.

- Linear maps (q/k/v in-projection, out-projection, MLP): the composite's dense rule, through
  the engine (``apply``), like any other layer.
- LayerNorm: the centring x − mean(x) is linear (its gradient is the z-rule); the division by
  σ is treated as a constant (the identity rule, eq. 9), then the elementwise affine passes
  the ordinary gradient (the bias keeps its share). lxt: ``layer_norm_forward``.
- Softmax: gradient × input at the logits (AttnLRP's softmax rule, its bias term absorbed).
- q kᵀ and A v: the uniform rule (eq. 7), half of a product's relevance to each factor
  (lxt: q and k each get a quarter of the plain gradient, v a half).
- GELU: the identity rule, R_in = R_out (gradient scaled by gelu(x)/x).
- The residual stream: the explicit sum step (:func:`lrprec.explain.relay.residual_sum`).

Every step returns the real output and, in exact mode, keeps the plain path alongside, so
the relevance is differentiable w.r.t. all parameters (second order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrprec.explain.relay import bilinear, relay, residual_sum, softmax

Apply = Callable[..., tuple[Tensor, Tensor | None]]  # (ParamLayer, h, h_plain) -> (out, out_plain)
Tap = Callable[[str, Tensor], Tensor]  # (name, t) -> t or a tapped view of it (the engine's per-step relevance trace)


def no_tap(name: str, t: Tensor) -> Tensor:
    """The default tap: the tensor itself (no trace)."""
    return t


def _real(h: Tensor, hp: Tensor | None) -> Tensor:
    """The real value to multiply by in a backward: the plain path (exact mode) or h's value, detached."""
    return h.detach() if hp is None else hp


@dataclass
class NormLayer:
    """LayerNorm over the last axis under the identity rule for its σ (AttnLRP)."""

    name: str
    module: nn.LayerNorm

    def run(self, apply: Apply, h: Tensor, hp: Tensor | None, eps: float, tap: Tap = no_tap) -> tuple[Tensor, Tensor | None]:
        m = self.module
        if hp is None:  # first order: one fused LayerNorm forward, the rule in the backward
            return _LayerNormIdentity.apply(h, m.weight.detach(), m.bias.detach(), m.eps), None
        centred = h - h.mean(-1, keepdim=True)  # the relevance path: centring is linear
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            src = hp - hp.mean(-1, keepdim=True)
            inv = torch.rsqrt(src.pow(2).mean(-1, keepdim=True) + m.eps)
            real = src * inv
        y = relay(centred, real, inv.expand_as(real))
        return y * m.weight + m.bias, real * m.weight + m.bias


class _LayerNormIdentity(torch.autograd.Function):
    """LayerNorm forward (fused); backward: the centring's gradient of g·w/σ, σ held constant (first order only)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        out, _, rstd = torch.native_layer_norm(h, (h.shape[-1],), w, b, eps)
        ctx.save_for_backward(w, rstd)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        w, rstd = ctx.saved_tensors
        c = (grad * w).mul_(rstd)
        return c.sub_(c.mean(-1, keepdim=True)), None, None, None


def gelu(h: Tensor, hp: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """GELU under the identity rule: all relevance of gelu(x) goes to x (the gradient scaled by gelu(x)/x = Φ(x)).

    gelu(x) = x·Φ(x), so the ratio is the normal CDF Φ itself, one elementwise pass (lxt divides by
    x + 1e-10·sign x: the same to a relative 1e-10/|x|).
    """
    src = _real(h, hp)
    with torch.set_grad_enabled(hp is not None and torch.is_grad_enabled()):
        real = F.gelu(src)
        ratio = torch.special.ndtr(src)
    return relay(h, real, ratio), (None if hp is None else real)


@dataclass
class AttentionLayer:
    """Multi-head self-attention: in-projection, softmax(q kᵀ/√d) v per head (uniform rule), out-projection."""

    name: str
    module: nn.Module  # lrprec.model.vit.SelfAttention
    qkv: object  # ParamLayer
    out: object  # ParamLayer

    def run(self, apply: Apply, h: Tensor, hp: Tensor | None, eps: float, tap: Tap = no_tap) -> tuple[Tensor, Tensor | None]:
        m = self.module
        qkv, qkvp = apply(self.qkv, h, hp)
        q, k, v = m.split(tap(f"{self.name}.in_proj", qkv))
        qr, kr, vr = m.split(_real(qkv, qkvp))
        scale = 1.0 / math.sqrt(q.shape[-1])
        with torch.set_grad_enabled(hp is not None and torch.is_grad_enabled()):
            scores = (qr * scale) @ kr.transpose(-1, -2)  # the scale on q (N·d values), not on the N² scores
            a_real = torch.softmax(scores, -1)
            o_real = a_real @ vr
        logits = tap(f"{self.name}.logits", bilinear(q, k, qr, kr, scores, transpose=True, scale=scale))
        a = tap(f"{self.name}.softmax", softmax(logits, a_real))
        o = tap(f"{self.name}.a_v", bilinear(a, v, a_real, vr, o_real))
        return apply(self.out, m.merge(o), None if hp is None else m.merge(o_real))


@dataclass
class MLPLayer:
    """Linear → GELU (identity rule) → Linear."""

    name: str
    fc1: object  # ParamLayer
    fc2: object

    def run(self, apply: Apply, h: Tensor, hp: Tensor | None, eps: float, tap: Tap = no_tap) -> tuple[Tensor, Tensor | None]:
        h, hp = apply(self.fc1, h, hp)
        h, hp = gelu(tap(f"{self.name}.0", h), hp)
        return apply(self.fc2, tap(f"{self.name}.gelu", h), hp)


@dataclass
class EncoderLayer:
    """x + attn(ln_1(x)), then + mlp(ln_2(x)); each residual sum splits relevance in proportion to its summands."""

    name: str
    steps: tuple  # (ln_1, attention, ln_2, mlp)

    def run(self, apply: Apply, h: Tensor, hp: Tensor | None, eps: float, tap: Tap = no_tap) -> tuple[Tensor, Tensor | None]:
        ln_1, attn, ln_2, mlp = self.steps
        for norm, branch in ((ln_1, attn), (ln_2, mlp)):
            b, bp = norm.run(apply, tap(f"{norm.name}.in", h), hp, eps)
            b, bp = branch.run(apply, tap(norm.name, b), bp, eps, tap)
            h, hp = residual_sum(tap(branch.name, b), tap(f"{branch.name}.skip", h), bp, hp, eps)
            h = tap(f"{branch.name}.sum", h)
        return h, hp
