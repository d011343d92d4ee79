"""LRP rules as data (SPEC §3).

A rule says how one linear layer (Conv2d or Linear, BatchNorm already folded in) shares
its output relevance R_k among its inputs:

    R_j = Σ_t  x_tj · Σ_k w_tjk · R_k / stab(z_k),     z_k = Σ_t Σ_j x_tj w_tjk (+ b_tk)

Each *term* t pairs an input modifier (x -> x_t: the input itself, its positive or negative
part, or a constant "source" such as ones or the pixel box bounds) with a parameter
modifier ((w, b) -> (w_t, b_t)); ``stab`` is the output modifier (z + ε·sign z). The
engine (``engine.py``) turns any rule into one modified-gradient pass; so ε, γ, z⁺ (αβ with
α=1, β=0), flat, w², zᴮ and LRP-0 below are each a few lines of data. The idea follows
zennit's hook/rule split; the code is our own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from lrprec.errors import UsageError

#: Stabilizer used where a rule has no ε of its own: only keeps 0/0 finite.
TINY = 1e-9


@dataclass(frozen=True)
class LayerContext:
    """What a rule may know about the layer input: its sign and, at the input layer, the pixel box."""

    nonneg: bool = False
    bounds: tuple[Tensor, Tensor] | None = None
    rectified: bool = False  # the output feeds a ReLU: relevance only arrives where z > 0


@dataclass(frozen=True)
class InputModifier:
    """x -> x_t. ``source``: x_t is a constant (not derived from x) whose relevance x_t·grad counts at the input."""

    name: str
    fn: Callable[[Tensor, LayerContext], Tensor | None]
    source: bool = False


@dataclass(frozen=True)
class ParamModifier:
    """(w, b) -> (w_t, b_t). ``keeps_weight``: w_t is w, so the engine may reuse z_t as the layer's real output."""

    name: str
    fn: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]
    keeps_weight: bool = False
    #: w_t is the same for every output unit (flat): the engine computes one output unit and broadcasts it
    uniform: bool = False


def _positive(x: Tensor, ctx: LayerContext) -> Tensor:
    return x if ctx.nonneg else x.clamp(min=0)


def _negative(x: Tensor, ctx: LayerContext) -> Tensor | None:
    return None if ctx.nonneg else x.clamp(max=0)


def _bound(index: int) -> Callable[[Tensor, LayerContext], Tensor]:
    def fn(x: Tensor, ctx: LayerContext) -> Tensor:
        if ctx.bounds is None:
            raise UsageError("the zB (box) rule needs input bounds; it applies to the first layer of an image backbone only")
        bound = ctx.bounds[index].to(dtype=x.dtype, device=x.device)
        return bound.expand_as(x)
    return fn


IDENTITY = InputModifier("x", lambda x, ctx: x)
POSITIVE = InputModifier("x+", _positive)
NEGATIVE = InputModifier("x-", _negative)
ONES = InputModifier("1", lambda x, ctx: torch.ones_like(x), source=True)
LOW = InputModifier("low", _bound(0), source=True)
HIGH = InputModifier("high", _bound(1), source=True)


def _plus(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _minus(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


KEEP = ParamModifier("w,b", lambda w, b: (w, b), keeps_weight=True)
NO_BIAS = ParamModifier("w", lambda w, b: (w, None), keeps_weight=True)
W_PLUS = ParamModifier("w+", lambda w, b: (w.clamp(min=0), None))
W_MINUS = ParamModifier("w-", lambda w, b: (w.clamp(max=0), None))
NEG_W_PLUS = ParamModifier("-w+", lambda w, b: (-w.clamp(min=0), None))
NEG_W_MINUS = ParamModifier("-w-", lambda w, b: (-w.clamp(max=0), None))
FLAT_W = ParamModifier("1", lambda w, b: (torch.ones_like(w), None), uniform=True)
SQUARE_W = ParamModifier("w²", lambda w, b: (w * w, None))


def _gamma_weight(g: float, favour: str, bias: bool) -> ParamModifier:
    """w -> w + γ·w⁺ (``favour="+"``) or w + γ·w⁻ (``"-"``); the bias, when kept, gets the same treatment."""
    part = (lambda t: t.clamp(min=0)) if favour == "+" else (lambda t: t.clamp(max=0))

    def fn(w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return w + g * part(w), (None if b is None or not bias else b + g * part(b))
    return ParamModifier(f"w+{g}w{favour}" + ("" if bias else " (no b)"), fn)


@dataclass(frozen=True)
class Rule:
    """A propagation rule: terms (input modifier, parameter modifier), stabilizer ε, placement constraint.

    The gradient mapper is shared by all rules: the gradient reaching the layer output is
    scaled by ``ratio = z_real / stab(z_mod)`` and then flows through z_mod's own Jacobian,
    which is exactly R_j = Σ_k x_j ∂z_mod,k/∂x_j · R_k / stab(z_mod,k) with R = x · grad.
    """

    name: str
    terms: tuple[tuple[InputModifier, ParamModifier], ...]
    epsilon: float = TINY
    input_layer_only: bool = False
    #: sign-aware rules: the terms used for outputs whose real value is negative (``terms`` for z ≥ 0)
    neg_terms: tuple[tuple[InputModifier, ParamModifier], ...] | None = None
    #: z_mod ≥ 0 by construction (z⁺: x⁺w⁺ + x⁻w⁻; flat; w²), so stab(z_mod) = z_mod + ε (two passes, not four)
    nonneg_output: bool = False

    def sign_aware(self, ctx: LayerContext) -> bool:
        """Whether ``neg_terms`` must be evaluated: it exists and relevance can reach negative outputs."""
        return self.neg_terms is not None and not ctx.rectified

    def stabilize(self, z: Tensor) -> Tensor:
        """Output modifier: z + ε·sign(z), with sign(+0) = +1 so no denominator is ever 0."""
        return torch.copysign(z.abs() + self.epsilon, z)

    def ratio(self, z_real: Tensor, z_mod: Tensor) -> Tensor:
        """Gradient mapper: factor turning the real output's gradient R/z_real into R/stab(z_mod)."""
        if z_real is z_mod:  # unmodified rule: z/stab(z) = |z|/(|z|+ε), three elementwise passes
            a = z_mod.abs()
            return a / (a + self.epsilon)
        if self.nonneg_output:
            return z_real / (z_mod + self.epsilon)
        return z_real / self.stabilize(z_mod)

    @property
    def reuses_forward(self) -> bool:
        """One unmodified term: z_mod is the layer's own output (minus bias at most), no extra forward needed."""
        return (self.neg_terms is None and len(self.terms) == 1 and self.terms[0][0] is IDENTITY
                and self.terms[0][1].keeps_weight)


def lrp0() -> Rule:
    """The z-rule (the paper's eq 4, as in Bach et al. 2015): R_j = Σ_k x_j w_jk / z_k · R_k.

    z_k is the layer's real output, bias included: the bias is the weight of a constant
    input unit and keeps its share b_k / z_k · R_k. On a canonized layer the folded
    BatchNorm shift is that bias. (Dividing by Σ_j x_j w_jk alone, bias left out, is
    conservative but ill-conditioned where the shift dominates z: the denominator crosses
    zero while z does not, and relevance of both signs explodes.) In a ReLU network with
    max pooling this is gradient × input.
    """
    return Rule("lrp0", ((IDENTITY, KEEP),))


def epsilon(eps: float = 1e-6, bias: bool = True) -> Rule:
    """LRP-ε: the z-rule with ε added to the denominator's magnitude (absorbs weak, noisy relevance)."""
    return Rule(f"epsilon({eps:g})", ((IDENTITY, KEEP if bias else NO_BIAS),), epsilon=eps)


def gamma(g: float = 0.25, eps: float = 1e-6) -> Rule:
    """Generalized LRP-γ (sign-aware): favour contributions of the output's own sign.

    With c_jk = x_j w_jk: where z_k ≥ 0 the contributions become c_jk + γ·c_jk⁺ (positive
    ones amplified: x⁺ meets w + γw⁺, x⁻ meets w + γw⁻, bias b + γb⁺), where z_k < 0 they
    become c_jk + γ·c_jk⁻ (x⁺ meets w + γw⁻, x⁻ meets w + γw⁺, bias b + γb⁻), so the
    denominator keeps the sign of z_k. On layers whose output feeds a ReLU only the z ≥ 0
    form is ever used (Montavon et al. 2019's γ); the z < 0 form is skipped there.
    """
    pos = ((POSITIVE, _gamma_weight(g, "+", True)), (NEGATIVE, _gamma_weight(g, "-", False)))
    neg = ((POSITIVE, _gamma_weight(g, "-", True)), (NEGATIVE, _gamma_weight(g, "+", False)))
    return Rule(f"gamma({g:g})", pos, epsilon=eps, neg_terms=neg)


def zplus() -> Rule:
    """z⁺ (= αβ with α=1, β=0): only positive contributions x⁺w⁺ + x⁻w⁻ share relevance; bias ignored."""
    return Rule("zplus", ((POSITIVE, W_PLUS), (NEGATIVE, W_MINUS)), nonneg_output=True)


def flat() -> Rule:
    """Flat rule for the input layer: relevance spread uniformly over each output's receptive field."""
    return Rule("flat", ((ONES, FLAT_W),), input_layer_only=True, nonneg_output=True)


def wsquare() -> Rule:
    """w² rule for the input layer: R_j ∝ w_jk², independent of the input value."""
    return Rule("wsquare", ((ONES, SQUARE_W),), input_layer_only=True, nonneg_output=True)


def zbox(low: Tensor | None = None, high: Tensor | None = None) -> Rule:
    """zᴮ (box) rule for pixels in [low, high]: z = x·w − low·w⁺ − high·w⁻, bias ignored.

    Bounds default to the backbone's ``input_bounds()``, supplied by the engine.
    """
    rule = Rule("zbox", ((IDENTITY, NO_BIAS), (LOW, NEG_W_PLUS), (HIGH, NEG_W_MINUS)), input_layer_only=True)
    if low is None and high is None:
        return rule
    if low is None or high is None:
        raise UsageError("zbox needs both low and high bounds, or neither")
    lo, hi = torch.as_tensor(low), torch.as_tensor(high)
    fixed = (InputModifier("low", lambda x, ctx: lo.to(x).expand_as(x), source=True),
             InputModifier("high", lambda x, ctx: hi.to(x).expand_as(x), source=True))
    return Rule("zbox", ((IDENTITY, NO_BIAS), (fixed[0], NEG_W_PLUS), (fixed[1], NEG_W_MINUS)), input_layer_only=True)


#: Rules by name, each a factory taking its own keyword arguments.
RULES: dict[str, Callable[..., Rule]] = {
    "lrp0": lrp0, "epsilon": epsilon, "gamma": gamma, "zplus": zplus,
    "flat": flat, "wsquare": wsquare, "zbox": zbox,
}
