"""The LRP engine: one modified-gradient pass through a canonized backbone.

Convention: relevance is activation × gradient everywhere, R = a · ∂/∂a. Each rule layer
returns its real output z_real (so later layers see true activations) but backpropagates
through the rule's modified output z_mod with the incoming gradient scaled by
z_real / stab(z_mod) (the ``z · (R/z).detach()`` idea, as an autograd.Function so that the
scale keeps its own graph for second-order use). Then at the layer input
x · grad = Σ_k x ∂z_mod,k/∂x · R_k / stab(z_mod,k), the rule's LRP redistribution.
Parameter-free layers (ReLU, max/avg pooling, flatten, dropout) pass the ordinary
gradient: max-pooling gives all relevance to the winner, average pooling splits it in
proportion to the inputs (the z-rule of a linear map).

No hooks and no per-call state: a module used once on a stacked batch [x_a; x_b] (the
Siamese case), or twice, is explained correctly. With ``exact=True`` (needed for
``create_graph``) the real activations run on a second, ordinary path, so the relevance is
exactly differentiable w.r.t. the caller's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lrprec.explain.canonizers import Layer, ParamLayer, PassLayer, canonize
from lrprec.explain.composites import Composite, get_composite
from lrprec.explain.rules import LayerContext, Rule


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


@dataclass
class RuleOutput:
    """A rule layer's output on the relevance path, its exact-path twin (or None) and new relevance sources."""

    out: Tensor
    plain: Tensor | None
    sources: list[Tensor] = field(default_factory=list)


def apply_rule(rule: Rule, layer: ParamLayer, x: Tensor, x_plain: Tensor | None, ctx: LayerContext) -> RuleOutput:
    """Run one linear layer under ``rule``; ``x_plain`` is given in exact mode (second-order graphs)."""
    exact = x_plain is not None
    w, b = layer.params()
    if not exact:
        w, b = w.detach(), (None if b is None else b.detach())
    xs: list[Tensor] = []
    ws: list[Tensor] = []
    bs: list[Tensor] = []
    sources: list[Tensor] = []
    bt: Tensor | None = None
    for in_mod, p_mod in rule.terms:
        xt = in_mod.fn(x, ctx)
        if xt is None:
            continue
        if in_mod.source:
            xt = xt.detach().requires_grad_(True)
            sources.append(xt)
        wt, bt = p_mod.fn(w, b)
        xs.append(xt)
        ws.append(wt)
        if bt is not None:
            bs.append(bt)
    assert xs, f"rule {rule.name} produced no term"
    bias_mod = None if not bs else (bs[0] if len(bs) == 1 else torch.stack(bs).sum(0))
    if len(xs) == 1:
        z_mod = layer.apply(xs[0], ws[0], bias_mod)
    elif layer.conv_args.get("groups", 1) != 1:
        z_mod = sum(layer.apply(xt, wt, None) for xt, wt in zip(xs, ws))
        z_mod = z_mod if bias_mod is None else _add_bias(z_mod, bias_mod, layer)
    else:  # Σ_t layer(x_t, w_t) is one layer on the inputs stacked along channels: one pass, not T
        z_mod = layer.apply(torch.cat(xs, 1), torch.cat(ws, 1), bias_mod)
    if exact:
        z_real = layer.apply(x_plain, w, b)
        ratio = rule.ratio(z_real, z_mod)
    else:
        with torch.no_grad():
            zm = z_mod.detach()
            if not rule.reuses_forward:
                z_real = layer.apply(x.detach(), w, b)
            elif b is None or bt is not None:
                z_real = zm  # z_mod is the layer's own output: the same tensor, and a cheaper ratio
            else:
                z_real = _add_bias(zm, b, layer)  # the rule dropped the bias
            ratio = rule.ratio(z_real, zm)
    return RuleOutput(_Relay.apply(z_mod, z_real, ratio), z_real if exact else None, sources)


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


class LRPNet:
    """A backbone prepared for explanation under a composite (the caller's module is left untouched)."""

    def __init__(self, backbone: nn.Module, composite: str | Composite):
        self.composite = get_composite(composite)
        self.layers: list[Layer] = canonize(backbone)
        self.bounds = backbone.input_bounds() if hasattr(backbone, "input_bounds") else None
        self.rules: list[Rule | None] = []
        first = True  # the first parameterized layer is the input layer (flat / zB go there)
        for layer in self.layers:
            if isinstance(layer, ParamLayer):
                self.rules.append(self.composite.rule_for(layer.kind, first))
                first = False
            else:
                self.rules.append(None)

    def forward(self, x: Tensor, exact: bool = False) -> Trace:
        """Modified forward on ``x`` (which must require grad); ``exact`` also runs the ordinary path."""
        if not x.requires_grad:
            raise ValueError("LRPNet.forward needs an input that requires grad")
        h = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x  # faster CPU convolutions
        hp = h if exact else None
        nonneg, first, sources = False, True, []
        for layer, rule in zip(self.layers, self.rules):
            if isinstance(layer, PassLayer):
                h = layer.fn(h)
                hp = None if hp is None else layer.fn(hp)
                nonneg = nonneg or layer.sign == "nonneg"
                continue
            assert rule is not None
            ctx = LayerContext(nonneg=nonneg, bounds=self.bounds if first else None)
            res = apply_rule(rule, layer, h, hp, ctx)
            h, hp, nonneg, first = res.out, res.plain, False, False
            sources += res.sources
        return Trace(x, h, hp, sources, nonneg)

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
