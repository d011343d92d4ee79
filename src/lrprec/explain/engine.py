"""The LRP engine: one modified-gradient pass through a canonized backbone.

Convention: relevance is activation × gradient everywhere, R = a · ∂/∂a. Each rule layer
returns its real output z_real (so later layers see true activations) but backpropagates
through the rule's modified output z_mod with the incoming gradient scaled by
z_real / stab(z_mod) (the ``z · (R/z).detach()`` idea, as an autograd.Function so that the
scale keeps its own graph for second-order use). Then at the layer input
x · grad = Σ_k x ∂z_mod,k/∂x · R_k / stab(z_mod,k), the rule's LRP redistribution.
Parameter-free layers (ReLU, max/avg pooling, flatten, dropout) pass the ordinary
gradient: max-pooling gives all relevance to the winner, average pooling splits it in
proportion to the inputs (the z-rule of a linear map). A residual sum (ResNet) splits its
relevance between the summands in proportion to their values, ε-stabilized
(:func:`residual_sum`).

No hooks and no per-call state: a module used once on a stacked batch [x_a; x_b] (the
Siamese case), or twice, is explained correctly. With ``exact=True`` (needed for
``create_graph``) the real activations, and each ratio's denominator stab(z_mod), run on a
second, ordinary path, so the relevance is exactly differentiable w.r.t. the caller's
parameters (tested against float64 finite differences, tests/test_explain_second_order.py).
Sign-aware rules (generalized γ) evaluate their z < 0 form only where relevance can reach
negative outputs: not on a layer whose output feeds a ReLU.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lrprec.errors import UsageError
from lrprec.explain.canonizers import Layer, ParamLayer, PassLayer, ResidualLayer, canonize
from lrprec.explain.composites import Composite, get_composite
from lrprec.explain.relay import relay as _relay, residual_sum
from lrprec.explain.rules import LayerContext, ParamModifier, Rule


@dataclass
class RuleOutput:
    """A rule layer's output on the relevance path, its exact-path twin (or None) and new relevance sources."""

    out: Tensor
    plain: Tensor | None
    sources: list[Tensor] = field(default_factory=list)


#: first owner module -> (state key, {parameter modifier name or "": (w, b)}): detached weights, folded and modified,
#: reused across batches and calls while the model is unchanged (first order only; weak, so it dies with the model)
_WEIGHTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]]" = weakref.WeakKeyDictionary()


class _Weights:
    """The detached parameters of one layer and their rule-modified forms, cached per model state (first order)."""

    def __init__(self, layer: ParamLayer):
        self.store: dict | None = None
        if layer.owners:
            key = layer.state_key()
            hit = _WEIGHTS.get(layer.owners[0])
            if hit is None or hit[0] != key:
                hit = (key, {})
                _WEIGHTS[layer.owners[0]] = hit
            self.store = hit[1]
        if self.store is not None and "" in self.store:
            self.w, self.b = self.store[""]
        else:
            with torch.no_grad():
                w, b = layer.params()
                self.w, self.b = w.detach(), (None if b is None else b.detach())
            if self.store is not None:
                self.store[""] = (self.w, self.b)

    def modified(self, p_mod: ParamModifier) -> tuple[Tensor, Tensor | None]:
        if self.store is None:
            return p_mod.fn(self.w, self.b)
        if p_mod.name not in self.store:
            with torch.no_grad():
                self.store[p_mod.name] = p_mod.fn(self.w, self.b)
        return self.store[p_mod.name]


def _modified_output(terms: tuple, layer: ParamLayer, x: Tensor, w: Tensor, b: Tensor | None, ctx: LayerContext,
                     sources: list[Tensor] | None, weights: _Weights | None = None) -> tuple[Tensor, bool]:
    """z_mod = Σ_t layer(x_t, w_t) (+ Σ_t b_t) for one term list; returns it and whether a bias term was added.

    ``sources`` collects the constant inputs (ones, box bounds) as leaves whose relevance is
    counted at the input; ``None`` (the exact-path denominator) uses them as plain constants.
    """
    xs: list[Tensor] = []
    ws: list[Tensor] = []
    bs: list[Tensor] = []
    for in_mod, p_mod in terms:
        xt = in_mod.fn(x, ctx)
        if xt is None:
            continue
        if in_mod.source:
            xt = xt.detach()
            if sources is not None:
                xt.requires_grad_(True)
                sources.append(xt)
        wt, bt = p_mod.fn(w, b) if weights is None else weights.modified(p_mod)
        xs.append(xt)
        ws.append(wt)
        if bt is not None:
            bs.append(bt)
    assert xs, "the rule produced no term"
    bias_mod = None if not bs else (bs[0] if len(bs) == 1 else torch.stack(bs).sum(0))
    if len(terms) == 1 and terms[0][1].uniform and layer.conv_args.get("groups", 1) == 1:
        z = layer.apply(xs[0], ws[0][:1], None)  # every output unit has the same weights: compute one, broadcast it
        return z.expand(*z.shape[:-1], w.shape[0]) if layer.kind == "linear" else z.expand(-1, w.shape[0], -1, -1), False
    if len(xs) == 1:
        return layer.apply(xs[0], ws[0], bias_mod), bias_mod is not None
    if layer.conv_args.get("groups", 1) != 1:
        z = sum(layer.apply(xt, wt, None) for xt, wt in zip(xs, ws))
        return (z if bias_mod is None else _add_bias(z, bias_mod, layer)), bias_mod is not None
    # Σ_t layer(x_t, w_t) is one layer on the inputs stacked along channels (features): one pass, not T
    axis = 1 if layer.kind == "conv2d" else -1
    return layer.apply(torch.cat(xs, axis), torch.cat(ws, 1), bias_mod), bias_mod is not None


def _signed_output(rule: Rule, layer: ParamLayer, x: Tensor, w: Tensor, b: Tensor | None, ctx: LayerContext,
                   z_real: Tensor | None, sources: list[Tensor] | None, weights: _Weights | None = None) -> tuple[Tensor, bool]:
    """The rule's modified output; a sign-aware rule takes its ``neg_terms`` form where the real output is < 0."""
    z_pos, has_bias = _modified_output(rule.terms, layer, x, w, b, ctx, sources, weights)
    if not rule.sign_aware(ctx):
        return z_pos, has_bias
    assert z_real is not None
    z_neg, _ = _modified_output(rule.neg_terms, layer, x, w, b, ctx, sources, weights)
    return torch.where(z_real.detach() >= 0, z_pos, z_neg), has_bias


def apply_rule(rule: Rule, layer: ParamLayer, x: Tensor, x_plain: Tensor | None, ctx: LayerContext) -> RuleOutput:
    """Run one linear layer under ``rule``; ``x_plain`` is given in exact mode (second-order graphs).

    Exact mode: the ratio z_real / stab(z_mod) is formed entirely on the ordinary path
    (z_mod recomputed from ``x_plain``), so its derivative w.r.t. lower layers' parameters
    follows the true Jacobian; the relevance path's z_mod only carries the rule's
    redistribution (its autograd edge runs through the lower layers' modified backward).
    """
    exact = x_plain is not None
    weights = None
    if exact:
        w, b = layer.params()
    else:
        weights = _Weights(layer)
        w, b = weights.w, weights.b
    sources: list[Tensor] = []
    signed = rule.sign_aware(ctx)
    if exact:
        z_real = layer.apply(x_plain, w, b)
        z_mod, _ = _signed_output(rule, layer, x, w, b, ctx, z_real, sources)
        if rule.reuses_forward and rule.terms[0][1].fn(w, b)[1] is b:
            z_den = z_real  # z_mod is the layer's own output
        else:
            z_den, _ = _signed_output(rule, layer, x_plain, w, b, ctx, z_real, None)
        ratio = rule.ratio(z_real, z_den)
        return RuleOutput(_relay(z_mod, z_real, ratio), z_real, sources)
    z_first = None
    if signed or not rule.reuses_forward:
        with torch.no_grad():
            z_first = layer.apply(x.detach(), w, b)
    z_mod, has_bias = _signed_output(rule, layer, x, w, b, ctx, z_first, sources, weights)
    with torch.no_grad():
        zm = z_mod.detach()
        if z_first is not None:
            z_real = z_first
        elif b is None or has_bias:
            z_real = zm  # z_mod is the layer's own output: the same tensor, and a cheaper ratio
        else:
            z_real = _add_bias(zm, b, layer)  # the rule dropped the bias
        ratio = rule.ratio(z_real, zm)
    return RuleOutput(_relay(z_mod, z_real, ratio), None, sources)


def _add_bias(z: Tensor, b: Tensor, layer: ParamLayer) -> Tensor:
    return z + (b.view(1, -1, 1, 1) if layer.kind == "conv2d" else b)


@dataclass
class Trace:
    """A modified forward pass: ``output`` (relevance path), ``plain`` (exact path or None), the input and sources."""

    input: Tensor
    output: Tensor
    plain: Tensor | None
    sources: list[Tensor]
    nonneg: bool


@dataclass
class _Step:
    """One canonized layer with its rule (None for pass layers) and, for a residual block, its branches."""

    layer: Layer
    rule: Rule | None = None
    rectified: bool = False
    main: list["_Step"] = field(default_factory=list)
    shortcut: list["_Step"] = field(default_factory=list)


@dataclass
class _State:
    """Mutable per-pass state: sources collected so far; whether the input layer is still to come; the trace taps."""

    sources: list[Tensor] = field(default_factory=list)
    first: bool = True
    taps: list[tuple[str, Tensor]] | None = None

    def tap(self, name: str, t: Tensor) -> Tensor:
        """``t`` itself, or (tracing) a view of it that keeps its gradient: R = t · grad flows only through this use."""
        if self.taps is None:
            return t
        t = t.view_as(t)
        t.retain_grad()
        self.taps.append((name, t))
        return t


class LRPNet:
    """A backbone prepared for explanation under a composite (the caller's module is left untouched)."""

    def __init__(self, backbone: nn.Module, composite: str | Composite):
        self.composite = get_composite(composite)
        self.layers: list[Layer] = canonize(backbone)
        self.bounds = backbone.input_bounds() if hasattr(backbone, "input_bounds") else None
        self.steps = self._plan(self.layers, _State())

    def _plan(self, layers: list[Layer], state: _State) -> list[_Step]:
        """Rules per layer: the first parameterized layer (in execution order) is the input layer (flat / zB go there).

        A layer whose output goes straight into a ReLU only ever receives relevance where z > 0
        (``rectified``); the last layer of a residual branch feeds the sum, not a ReLU.
        """
        steps: list[_Step] = []
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            rectified = isinstance(nxt, PassLayer) and nxt.sign == "nonneg"
            if isinstance(layer, ResidualLayer):
                steps.append(_Step(layer, main=self._plan(layer.main, state), shortcut=self._plan(layer.shortcut, state)))
            elif isinstance(layer, ParamLayer):
                steps.append(_Step(layer, self.composite.rule_for(layer.kind, state.first), rectified))
                state.first = False
            else:
                steps.append(_Step(layer))
        return steps

    @property
    def rules(self) -> list[Rule | None]:
        """The rule of each top-level layer (None for pass layers and residual blocks)."""
        return [s.rule for s in self.steps]

    def forward(self, x: Tensor, exact: bool = False, taps: list[tuple[str, Tensor]] | None = None) -> Trace:
        """Modified forward on ``x`` (which must require grad); ``exact`` also runs the ordinary path.

        ``taps``: a list that receives (step name, tensor) for every step's output (and each
        branch's input), with its gradient retained, so that after the backward
        ``(t * t.grad).sum()`` is the relevance that step passes on (:func:`relevance_trace`).
        """
        if not x.requires_grad:
            raise UsageError("LRPNet.forward needs an input that requires grad")
        h = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x  # faster CPU convolutions
        state = _State(taps=taps)
        h, hp, nonneg = self._run(self.steps, h, h if exact else None, False, state)
        return Trace(x, h, hp, state.sources, nonneg)

    def _run(self, steps: list[_Step], h: Tensor, hp: Tensor | None, nonneg: bool,
             state: _State) -> tuple[Tensor, Tensor | None, bool]:
        for step in steps:
            layer = step.layer
            if isinstance(layer, PassLayer):
                h = layer.fn(h)
                hp = None if hp is None else layer.fn(hp)
                nonneg = nonneg or layer.sign == "nonneg"
            elif isinstance(layer, ResidualLayer):
                m, mp, _ = self._run(step.main, state.tap(f"{layer.name}.main.in", h), hp, nonneg, state)
                s, sp, _ = self._run(step.shortcut, state.tap(f"{layer.name}.shortcut.in", h), hp, nonneg, state)
                h, hp = residual_sum(state.tap(f"{layer.name}.main", m), state.tap(f"{layer.name}.shortcut", s),
                                     mp, sp, self.composite.sum_epsilon)
                nonneg = False
            elif not isinstance(layer, ParamLayer):  # a transformer step (lrprec.explain.attnlrp)
                h, hp = layer.run(lambda pl, x, xp: self._apply(pl, x, xp, False, False, state), h, hp,
                                  self.composite.sum_epsilon, state.tap)
                nonneg = False
            else:
                h, hp = self._apply(layer, h, hp, nonneg, step.rectified, state, step.rule)
                nonneg = False
            h = state.tap(layer.name, h)
        return h, hp, nonneg

    def _apply(self, layer: ParamLayer, h: Tensor, hp: Tensor | None, nonneg: bool, rectified: bool, state: _State,
               rule: Rule | None = None) -> tuple[Tensor, Tensor | None]:
        """One linear layer under its rule (the composite's, by kind and position, unless given)."""
        rule = rule or self.composite.rule_for(layer.kind, state.first)
        ctx = LayerContext(nonneg=nonneg, bounds=self.bounds if state.first else None, rectified=rectified)
        res = apply_rule(rule, layer, h, hp, ctx)
        state.first = False
        state.sources += res.sources
        return res.out, res.plain

    def relevance(self, trace: Trace, output: Tensor, grad_output: Tensor, create_graph: bool = False,
                  retain_graph: bool | None = None, batched: bool = False) -> Tensor:
        """Input relevance for an output (computed from ``trace.output``) seeded with ``grad_output``.

        The output relevance is ``output · grad_output``; ``batched`` treats grad_output's
        first dimension as independent seeds (one backward, vmapped).
        """
        inputs = [trace.input, *trace.sources]
        grads = torch.autograd.grad(output, inputs, grad_output, retain_graph=retain_graph, create_graph=create_graph,
                                    allow_unused=True, materialize_grads=True, is_grads_batched=batched)
        with torch.set_grad_enabled(create_graph):
            rel = trace.input * grads[0]
            for src, g in zip(trace.sources, grads[1:]):
                rel = rel + src * g
        return rel


def explain(backbone: nn.Module, x: Tensor, composite: str | Composite, grad_output: Tensor,
            create_graph: bool = False) -> Tensor:
    """Relevance of ``backbone(x)`` with output relevance ``backbone(x) · grad_output`` (e.g. one-hot: one unit)."""
    net = LRPNet(backbone, composite)
    xin = x.detach().requires_grad_(True)
    trace = net.forward(xin, exact=create_graph)
    return net.relevance(trace, trace.output, grad_output, create_graph=create_graph)
