"""Autograd pieces that give a modified backward while the forward keeps its real value.

Every function here returns the *real* output (so later layers see true activations) and
sends a rule's gradient to the relevance path only. Quantities the backward multiplies by
(a ratio, the other factor of a product, a softmax output) are taken from the ordinary
("plain") path and saved with their graph, so the relevance stays exactly differentiable
w.r.t. the parameters (``create_graph``: second order), while no first-order gradient
leaks into the plain path. ``relay`` serves every linear rule and the residual sum;
``bilinear``, ``softmax_grad`` and the LayerNorm/GELU forms in :mod:`lrprec.explain.attnlrp`
are AttnLRP's rules (Achtibat et al., ICML 2024) in this gradient × input form.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _Relay(torch.autograd.Function):
    """Forward: the real output. Backward: the gradient times ``ratio``, sent to z_mod only."""

    @staticmethod
    def forward(ctx, z_mod: Tensor, z_real: Tensor, ratio: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(ratio)
        return z_real.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None, None


def relay(z_mod: Tensor, z_real: Tensor, ratio: Tensor) -> Tensor:
    """z_real in the forward; the gradient times ``ratio`` flows into z_mod's graph in the backward."""
    return _Relay.apply(z_mod, z_real, ratio)


def stabilize(z: Tensor, eps: float) -> Tensor:
    """z + ε·sign(z), with sign(+0) = +1 so no denominator is ever 0."""
    return torch.copysign(z.abs() + eps, z)


def residual_sum(a: Tensor, b: Tensor, a_plain: Tensor | None, b_plain: Tensor | None, eps: float) -> tuple[Tensor, Tensor | None]:
    """z = a + b, relevance split in proportion to the summands: R_a = a · R / stab(z), R_b = b · R / stab(z).

    The sum is a linear layer with unit weights under the ε-rule (zennit's ``Norm`` on its
    ``Sum`` module): the gradient reaching z is scaled by z / (z + ε·sign z) and then flows
    to both summands unchanged. ``a_plain``/``b_plain``: the exact path (second order), or None.
    """
    if a_plain is not None and b_plain is not None:
        z_real = a_plain + b_plain
        return relay(a + b, z_real, z_real / stabilize(z_real, eps)), z_real
    z = a + b
    with torch.no_grad():
        mag = z.abs()
        ratio = mag / (mag + eps)  # z / stab(z), with z's own sign cancelling
    return relay(z, z, ratio), None


class _Bilinear(torch.autograd.Function):
    """a @ bᵀ forward (real factors); backward: the uniform rule, half of the gradient × input to each factor."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, a_real: Tensor, b_real: Tensor, out_real: Tensor,  # type: ignore[override]
                transpose: bool, scale: float) -> Tensor:
        ctx.save_for_backward(a_real, b_real)
        ctx.transpose, ctx.scale = transpose, scale
        return out_real.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a_real, b_real = ctx.saved_tensors
        c = 0.5 * ctx.scale  # applied to the factors' gradients (N·d values each), not to the N² product's
        if ctx.transpose:  # out = a bᵀ
            return (grad @ b_real) * c, (grad.transpose(-1, -2) @ a_real) * c, None, None, None, None, None
        return (grad @ b_real.transpose(-1, -2)) * c, (a_real.transpose(-1, -2) @ grad) * c, None, None, None, None, None


def bilinear(a: Tensor, b: Tensor, a_real: Tensor, b_real: Tensor, out_real: Tensor, transpose: bool = False,
             scale: float = 1.0) -> Tensor:
    """scale · a @ b (or scale · a @ bᵀ) under the uniform rule: each factor receives half of the product's relevance.

    ``a``/``b`` are the relevance-path factors, ``a_real``/``b_real`` their real values (the
    plain path's tensors in exact mode, else the same values detached) and ``out_real`` the
    scaled product, computed once by the caller (it is the forward value).
    """
    return _Bilinear.apply(a, b, a_real, b_real, out_real, transpose, scale)


class _Softmax(torch.autograd.Function):
    """softmax forward (real output s); backward: its ordinary Jacobian s ⊙ (g − Σ g s) (AttnLRP's softmax rule)."""

    @staticmethod
    def forward(ctx, x: Tensor, s_real: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(s_real)
        return s_real.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad, s, -1, s.dtype), None  # s ⊙ (g − Σ g s), fused


def softmax(x: Tensor, s_real: Tensor) -> Tensor:
    """Softmax over the last axis: relevance = gradient × input at the logits (the bias-absorbing Taylor rule)."""
    return _Softmax.apply(x, s_real)
