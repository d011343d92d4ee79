"""BiLRP: second-order relevance between patches of image A and patches of image B ([E22], SPEC §3).

The similarity is a sum of products of embedding dimensions,
S = 2 Σ_k φ_k(x_i) φ_k(x_j) with φ_k = θ_k a_k, so

    R_pp' = 2 Σ_k LRP_p(φ_k; x_i) · LRP_p'(φ_k; x_j)

says which region p of image i matches which region p' of image j. Pixel relevance is
summed over channels and pooled to a grid×grid patch grid before the product. When each
first-order map conserves φ_k (lrp0, or tiny ε, on a bias-free backbone), the matrix sums
to S. The backbone runs once on [x_a; x_b]; the K per-dimension LRP passes are one
vmapped backward per chunk of dimensions (``is_grads_batched``), not K forwards.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lrprec.explain.composites import DEFAULT_COMPOSITE, Composite
from lrprec.explain.engine import LRPNet
from lrprec.explain.targets import IndexLike, as_index, explain_pairs, head_seed


def grid_pool(rel: Tensor, grid: int) -> Tensor:
    """Sum (..., H, W) relevance into (..., grid·grid) patches; every pixel lands in exactly one patch."""
    H, W = rel.shape[-2:]
    if grid <= 0 or grid > min(H, W):
        raise ValueError(f"grid must be in 1..{min(H, W)} for {H}x{W} images, got {grid}")
    ph = torch.nn.functional.one_hot(torch.arange(H) * grid // H, grid).to(rel)
    pw = torch.nn.functional.one_hot(torch.arange(W) * grid // W, grid).to(rel)
    return torch.einsum("...hw,hg,wq->...gq", rel, ph, pw).flatten(-2)


def bilrp(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike = -1,
          composite: str | Composite = DEFAULT_COMPOSITE, grid: int = 8, target: str = "similarity",
          batch_size: int = 16, chunk: int = 16) -> Tensor:
    """Patch-to-patch relevance (B, grid², grid²): row p is a patch of x_a, column p' a patch of x_b.

    ``chunk`` embedding dimensions share one vmapped backward pass (memory ∝ chunk × batch).
    """
    if target != "similarity":
        raise ValueError(f"BiLRP explains the similarity only (a sum of products), not {target!r}")
    if x_a.dim() != 4 or x_a.shape != x_b.shape:
        raise ValueError("BiLRP needs two image batches of the same shape (B, C, H, W); features mode has no patches")
    n = x_a.shape[0]
    rel_t, user_t = as_index(relation, n, "relation", x_a.device), as_index(user, n, "user", x_a.device)
    net = LRPNet(model.backbone, composite)
    out = [_bilrp_batch(model, net, x_a[s:s + batch_size], x_b[s:s + batch_size], rel_t[s:s + batch_size],
                        user_t[s:s + batch_size], grid, chunk) for s in range(0, n, batch_size)]
    return torch.cat(out)


def _bilrp_batch(model, net: LRPNet, x_a: Tensor, x_b: Tensor, relation: Tensor, user: Tensor,
                 grid: int, chunk: int) -> Tensor:
    B, K = x_a.shape[0], model.dim
    x = torch.cat([x_a, x_b]).detach().requires_grad_(True)
    trace = net.forward(x)
    out, _, _, _ = head_seed(model, net, trace, relation, user, "similarity", exact=False)
    theta = model.theta(relation, user).detach()
    theta2 = torch.cat([theta, theta])  # (2B, K): φ_k = θ_k a_k on both sides
    result = x.new_zeros(B, grid * grid, grid * grid)
    for k0 in range(0, K, chunk):
        ks = torch.arange(k0, min(k0 + chunk, K), device=x.device)
        seeds = x.new_zeros(len(ks), 2 * B, K)
        seeds[torch.arange(len(ks), device=x.device), :, ks] = theta2[:, ks].t()  # seed k: output relevance θ_k a_k
        rel = net.relevance(trace, out, seeds, retain_graph=True, batched=True)  # (k, 2B, C, H, W)
        with torch.no_grad():
            patches = grid_pool(rel.sum(2), grid)  # (k, 2B, P)
            result += 2 * torch.einsum("kbp,kbq->bpq", patches[:, :B], patches[:, B:])
    return result


def top_links(matrix: Tensor, n: int) -> list[tuple[int, int, float]]:
    """The n strongest links (p, p', value) of one (P, P') BiLRP matrix, by |value|, strongest first."""
    if matrix.dim() != 2:
        raise ValueError(f"top_links takes one (P, P') matrix, got shape {tuple(matrix.shape)}")
    flat = matrix.flatten()
    n = max(0, min(n, flat.numel()))
    idx = flat.abs().topk(n).indices
    cols = matrix.shape[1]
    return [(int(i) // cols, int(i) % cols, float(flat[i])) for i in idx]


def marginals(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike = -1,
              composite: str | Composite = DEFAULT_COMPOSITE, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Pixel marginals of BiLRP: Σ_p' R_pp' for image a (and Σ_p R_pp' for image b), as (B, C, H, W) maps.

    LRP is linear in the output relevance for a fixed forward pass, so
    Σ_k LRP(φ_k; x_i)·2φ_k(x_j) is the first-order LRP of S with R_k = 2θ_k² a_ik a_jk: the
    marginals are ``explain_pairs(..., target="similarity")`` and cost one pass, not K.
    """
    res = explain_pairs(model, x_a, x_b, relation, user, target="similarity", composite=composite, batch_size=batch_size)
    return res.relevance_a, res.relevance_b
