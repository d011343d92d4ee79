"""First-order pair explanations: head relevance for a target, then LRP down both backbones (SPEC §3).

Targets (θ = θ_{u,r}, a = x E_r; the partner image b is projected by F_r under an asymmetric
head, so read a_j = x_j F_r and W = [E; −F] below; δ = a_i − a_j):

- ``similarity`` S = 2 Σ_k θ_k² a_ik a_jk. Image i's head relevance is R_k = 2θ_k² a_ik a_jk
  (image j's symmetrically), propagated through E (the composite's dense rule) and the
  backbone. Each side explains the whole score given the other: each side sums to S.
  ``absorbed`` = S − (sum_a + sum_b)/2, the mean share per side lost to biases and ε.
- ``distance`` d = Σ_k θ_k² δ_k². R_k = θ_k² δ_k² is propagated through the linear map
  W = [E; −E] on [x_i; x_j] (one layer, the composite's dense rule), which splits it
  between the images, then down each backbone: sum_a + sum_b = d. ``absorbed`` = d − (a+b).
- ``logit`` c − d. The shift c is a bias of the output: it holds its whole share c and
  only −d reaches the images (R_k = −θ_k² δ_k², as for distance but negated), so
  sum_a + sum_b = c − d − c = −d, and ``absorbed`` = logit − (a+b) = c (+ what ε/biases absorb).

``conservation`` reports what was measured, per pair: (sum_a + sum_b) / 2S for the
similarity, (sum_a + sum_b) / d for the distance, (sum_a + sum_b) / (−d) for the logit.
It is 1 only where every layer conserves (bias-free layers and tiny ε; z⁺ and zᴮ ignore
biases by construction); on a model with BatchNorm shifts or biases and the γ/ε rules it
can lie far from 1, and every explanation carries it so that nobody has to assume it.

The backbone runs once on the stacked batch [x_a; x_b]; one backward pass gives both sides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from lrprec.errors import UsageError
from lrprec.explain.canonizers import ParamLayer
from lrprec.explain.composites import DEFAULT_COMPOSITE, Composite
from lrprec.explain.engine import LRPNet, apply_rule
from lrprec.explain.rules import LayerContext

TARGETS: tuple[str, ...] = ("similarity", "distance", "logit")

IndexLike = int | Sequence[int] | Tensor


@dataclass
class PairExplanation:
    """Relevance of both images of each pair for one explained quantity (see module docstring).

    Attributes:
        relevance_a: Relevance on image a, the shape of ``x_a``: (B, 3, H, W), or (B, F) in features mode.
        relevance_b: Relevance on image b, the shape of ``x_b``.
        target_value: (B,) the explained quantity (S, d or the logit, per ``target``).
        logit: (B,) c − d.
        probability: (B,) P(related) = σ(c − d).
        absorbed: (B,) the target's share that does not reach the input (biases, ε, and c for the logit).
        relevance_sum_a: (B,) Σ relevance_a, as computed (not assumed).
        relevance_sum_b: (B,) Σ relevance_b.
        conservation: (B,) measured Σ R over both images / the share that should reach them (1 = conserved).
    """

    relevance_a: Tensor   # same shape as x_a: (B, 3, H, W), or (B, F) in features mode
    relevance_b: Tensor
    target_value: Tensor  # (B,) the explained quantity
    logit: Tensor         # (B,) c − d
    probability: Tensor   # (B,) σ(c − d)
    absorbed: Tensor      # (B,) target share not reaching the input (biases, ε, and c for the logit)
    relevance_sum_a: Tensor  # (B,) Σ relevance_a, as computed (not assumed)
    relevance_sum_b: Tensor  # (B,) Σ relevance_b
    conservation: Tensor  # (B,) measured Σ R over both images / the share that should reach them (1 = conserved)


def check_target(target: str) -> str:
    """``target`` itself if known, else ValueError naming the known targets."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return target


def as_index(value: IndexLike, n: int, what: str, device: torch.device | str | None = None) -> Tensor:
    """An int, sequence or tensor of indices as a (n,) long tensor on ``device`` (an int is broadcast)."""
    t = torch.as_tensor(value, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise UsageError(f"{what} has {t.numel()} entries for {n} pairs")
    return t


def target_from_embeddings(model, a_i: Tensor, a_j: Tensor, relation: Tensor, user: Tensor, target: str) -> Tensor:
    """The explained quantity (B,) from projected embeddings; used by the baselines too."""
    theta2 = model.theta(relation, user).pow(2)
    if target == "similarity":
        return 2 * (theta2 * a_i * a_j).sum(-1)
    d = (theta2 * (a_i - a_j).pow(2)).sum(-1)
    if target == "distance":
        return d
    if target == "logit":
        return model.c[relation] - d
    raise UsageError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


def _select(z: Tensor, relation: Tensor, n_rel: int, dim: int) -> Tensor:
    """Rows of (B, R·K) restricted to each row's relation: (B, K)."""
    return z.view(z.shape[0], n_rel, dim)[torch.arange(z.shape[0], device=z.device), relation]


def _head_layer(weight: Tensor) -> ParamLayer:
    return ParamLayer("E", "linear", lambda: (weight, None))


def head_seed(model, net: LRPNet, trace, relation: Tensor, user: Tensor, target: str, exact: bool):
    """Head output (relevance path), its gradient seed, and the real a_i, a_j, δ values.

    The seed g is chosen so that output · g is the head relevance R_k of the target. Image a
    is projected by E_r, image b by the partner projection (F_r of an asymmetric head, E_r of
    a metric one): the similarity's layer is [E | F] with each image's half selected, the
    distance's W = [E; −F].
    """
    B = relation.shape[0]
    rule = net.composite.dense
    ctx = LayerContext(nonneg=trace.nonneg)
    theta2 = model.theta(relation, user).pow(2)
    E = model.E if exact else model.E.detach()
    Fp = model.partner_matrix()
    Fp = Fp if exact else Fp.detach()
    asym = getattr(model, "F", None) is not None
    n_rel, K = model.n_relations, model.dim
    RK = n_rel * K
    if target == "similarity":
        res = apply_rule(rule, _head_layer((torch.cat([E, Fp], 1) if asym else E).t()), trace.output, trace.plain, ctx)
        if asym:  # rows of image a read x E, rows of image b read x F
            out = torch.cat([_select(res.out[:B, :RK], relation, n_rel, K), _select(res.out[B:, RK:], relation, n_rel, K)])
            plain = None if res.plain is None else torch.cat([_select(res.plain[:B, :RK], relation, n_rel, K),
                                                              _select(res.plain[B:, RK:], relation, n_rel, K)])
        else:
            rel2 = torch.cat([relation, relation])
            out = _select(res.out, rel2, n_rel, K)
            plain = None if res.plain is None else _select(res.plain, rel2, n_rel, K)
        a = plain if exact else out.detach()
        a_i, a_j = a[:B], a[B:]
        seed = torch.cat([2 * theta2 * a_j, 2 * theta2 * a_i])  # R_k / a_k: ∂S/∂a for each side
        return out, seed, a_i, a_j
    # distance and logit: one linear layer W = [E; −F] on [x_i, x_j]
    f, fp = trace.output, trace.plain
    x_cat = torch.cat([f[:B], f[B:]], 1)
    xp_cat = None if fp is None else torch.cat([fp[:B], fp[B:]], 1)
    res = apply_rule(rule, _head_layer(torch.cat([E, -Fp], 0).t()), x_cat, xp_cat, ctx)
    out = _select(res.out, relation, n_rel, K)
    delta = _select(res.plain, relation, n_rel, K) if exact else out.detach()
    seed = theta2 * delta if target == "distance" else -theta2 * delta  # R_k / δ_k
    src = fp if exact else f.detach()
    a_i = _select(src[:B] @ E, relation, n_rel, K)
    a_j = _select(src[B:] @ Fp, relation, n_rel, K)
    return out, seed, a_i, a_j


def _explain_batch(model, net: LRPNet, x_a: Tensor, x_b: Tensor, relation: Tensor, user: Tensor, target: str,
                   create_graph: bool) -> PairExplanation:
    B = x_a.shape[0]
    x = torch.cat([x_a, x_b]).detach().requires_grad_(True)
    trace = net.forward(x, exact=create_graph)
    out, seed, a_i, a_j = head_seed(model, net, trace, relation, user, target, create_graph)
    if not create_graph:
        seed = seed.detach()
    rel = net.relevance(trace, out, seed, create_graph=create_graph)
    with torch.set_grad_enabled(create_graph):
        value = target_from_embeddings(model, a_i, a_j, relation, user, target)
        logit = target_from_embeddings(model, a_i, a_j, relation, user, "logit")
        if not create_graph:
            rel, value, logit = rel.detach(), value.detach(), logit.detach()
        rel_a, rel_b = rel[:B], rel[B:]
        sum_a, sum_b = rel_a.flatten(1).sum(1), rel_b.flatten(1).sum(1)
        absorbed = value - (sum_a + sum_b) / 2 if target == "similarity" else value - (sum_a + sum_b)
        share = -target_from_embeddings(model, a_i, a_j, relation, user, "distance") if target == "logit" else value
        conservation = conservation_ratio(sum_a, sum_b, share, target)
    return PairExplanation(rel_a.contiguous(), rel_b.contiguous(), value, logit, torch.sigmoid(logit), absorbed,
                           sum_a, sum_b, conservation)


def conservation_ratio(sum_a: Tensor, sum_b: Tensor, share: Tensor, target: str) -> Tensor:
    """Measured Σ R over both images / ``share``, the part of ``target`` that should reach them (S, d or −d)."""
    return ((sum_a + sum_b) / 2 if target == "similarity" else sum_a + sum_b) / share


def explain_catalog_pairs(model, catalog, pairs, input_size: int | None = None, target: str = "logit",
                          composite: str | Composite = DEFAULT_COMPOSITE, batch_size: int = 64) -> Tensor:
    """Relevance of both images of catalog ``pairs`` stacked as ``[images a; images b]``: (2n, C, H, W)."""
    from lrprec.run import item_inputs

    dev = model.E.device
    e = explain_pairs(model, item_inputs(catalog, model, pairs.a, input_size).to(dev), item_inputs(catalog, model, pairs.b, input_size).to(dev),
                      torch.from_numpy(pairs.relation), torch.from_numpy(pairs.user), target=target, composite=composite, batch_size=batch_size)
    return torch.cat([e.relevance_a, e.relevance_b])


def explain_pairs(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike = -1,
                  target: str = "similarity", composite: str | Composite = DEFAULT_COMPOSITE,
                  batch_size: int = 64, create_graph: bool = False) -> PairExplanation:
    """Explain pairs (x_a[n], x_b[n]) of a PairModel for ``target`` under ``composite``.

    Batched: the backbone runs once per batch on [x_a; x_b]. The caller's model is not
    modified (explanations use eval semantics: running BN statistics, no dropout).
    With ``create_graph`` the relevance is differentiable w.r.t. the model's parameters.

    Args:
        model (PairModel): A trained pair model.
        x_a: (B, 3, H, W) float preprocessed images (``Run.inputs``), or (B, F) features.
        x_b: Same shape as ``x_a``: the partners.
        relation: Relation index per pair (an int is broadcast), into ``RELATIONS``.
        user: User row per pair; −1 (default) for the global θ.
        target: ``similarity`` (2 Σ θ² a_i a_j), ``distance`` (d) or ``logit`` (c − d).
        composite: A composite name (``COMPOSITES``) or a ``Composite``.
        batch_size: Pairs per backward pass.
        create_graph: Keep the graph so the relevance can be differentiated (guided training).

    Returns:
        A ``PairExplanation`` with (B, …) tensors.

    Raises:
        UsageError: An unknown target or composite, shapes of x_a and x_b that differ, batch_size ≤ 0.
    """
    check_target(target)
    if x_a.shape != x_b.shape:
        raise UsageError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if batch_size <= 0:
        raise UsageError("batch_size must be positive")
    n = x_a.shape[0]
    relation_t, user_t = as_index(relation, n, "relation", x_a.device), as_index(user, n, "user", x_a.device)
    net = LRPNet(model.backbone, composite)
    parts = [
        _explain_batch(model, net, x_a[s:s + batch_size], x_b[s:s + batch_size], relation_t[s:s + batch_size],
                       user_t[s:s + batch_size], target, create_graph)
        for s in range(0, n, batch_size)
    ]
    if len(parts) == 1:
        return parts[0]
    return PairExplanation(*(torch.cat([getattr(p, f) for p in parts]) for f in PairExplanation.__dataclass_fields__))
