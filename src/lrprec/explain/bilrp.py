"""BiLRP: second-order relevance between patches of image A and patches of image B ([E22], SPEC §3).

The similarity is a sum of products of embedding dimensions,
S = 2 Σ_k φ_k(x_i) φ_k(x_j) with φ_k = θ_k a_k, so

    R_pp' = 2 Σ_k LRP_p(φ_k; x_i) · LRP_p'(φ_k; x_j)

says which region p of image i matches which region p' of image j. Pixel relevance is
summed over channels and pooled to a grid×grid patch grid before the product. When each
first-order map conserves φ_k (lrp0, or tiny ε, on a bias-free backbone), the matrix sums
to S. The backbone runs once on [x_a; x_b]; the K per-dimension LRP passes are one
vmapped backward per chunk of dimensions (``is_grads_batched``), not K forwards.

Cost: each LRP pass costs about as much as a forward+backward (vmap batches them but
saves no arithmetic), so the exact matrix costs ~K passes. ``rank=m < K`` is the fast
path: per pair, the m/2 dimensions with the largest |θ_k² a_ik a_jk| are propagated
exactly and the other K − m/2 are sketched by m − m/2 random orthogonal combinations
(seeded, unbiased: the sketch's E[G Gᵀ] = I on those dimensions), so it costs m passes.
With m ≥ K it is the exact matrix. Its error is measured in benchmarks/bench_bilrp.py.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lrprec.errors import UsageError
from lrprec.explain.composites import DEFAULT_COMPOSITE, Composite
from lrprec.explain.engine import LRPNet
from lrprec.explain.targets import IndexLike, as_index, head_seed


def grid_pool(rel: Tensor, grid: int) -> Tensor:
    """Sum (..., H, W) relevance into (..., grid·grid) patches; every pixel lands in exactly one patch."""
    H, W = rel.shape[-2:]
    if grid <= 0 or grid > min(H, W):
        raise UsageError(f"grid must be in 1..{min(H, W)} for {H}x{W} images, got {grid}")
    ph = torch.nn.functional.one_hot(torch.arange(H) * grid // H, grid).to(rel)
    pw = torch.nn.functional.one_hot(torch.arange(W) * grid // W, grid).to(rel)
    return torch.einsum("...hw,hg,wq->...gq", rel, ph, pw).flatten(-2)


def bilrp(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike = -1,
          composite: str | Composite = DEFAULT_COMPOSITE, grid: int = 8, target: str = "similarity",
          batch_size: int = 16, chunk: int = 16, rank: int | None = None, seed: int = 0) -> Tensor:
    """Patch-to-patch relevance (B, grid², grid²): row p is a patch of x_a, column p' a patch of x_b.

    ``chunk`` embedding dimensions share one vmapped backward pass (memory ∝ chunk × batch).
    ``rank``: None (or ≥ K) for the exact matrix; m < K for the m-pass sketch (see module
    docstring; ``seed`` fixes its random directions).
    """
    if target != "similarity":
        raise UsageError(f"BiLRP explains the similarity only (a sum of products), not {target!r}")
    if x_a.dim() != 4 or x_a.shape != x_b.shape:
        raise UsageError("BiLRP needs two image batches of the same shape (B, C, H, W); features mode has no patches")
    if rank is not None and rank <= 0:
        raise UsageError(f"rank must be positive (or None for the exact matrix), got {rank}")
    n = x_a.shape[0]
    rel_t, user_t = as_index(relation, n, "relation", x_a.device), as_index(user, n, "user", x_a.device)
    net = LRPNet(model.backbone, composite)
    gen = torch.Generator().manual_seed(seed)
    out = [_bilrp_batch(model, net, x_a[s:s + batch_size], x_b[s:s + batch_size], rel_t[s:s + batch_size],
                        user_t[s:s + batch_size], grid, chunk, rank, gen) for s in range(0, n, batch_size)]
    return torch.cat(out)


def _seed_basis(weight: Tensor, rank: int | None, gen: torch.Generator) -> Tensor:
    """(m, B, K) directions in embedding space per pair, with Σ_j g_j g_jᵀ = I exactly (m ≥ K) or in expectation.

    ``weight`` (B, K) ranks the dimensions; the top m/2 get their own unit direction, the
    rest share m − m/2 random orthonormal combinations scaled by √((K − t)/(m − t)).
    """
    B, K = weight.shape
    eye = torch.eye(K, dtype=weight.dtype, device=weight.device)
    if rank is None or rank >= K:
        return eye.unsqueeze(1).expand(K, B, K)
    top = rank // 2
    sketch = rank - top
    order = weight.abs().argsort(1, descending=True)  # (B, K)
    basis = weight.new_zeros(rank, B, K)
    rows = torch.arange(B, device=weight.device)
    for j in range(top):
        basis[j, rows, order[:, j]] = 1.0
    rest = K - top
    g = torch.linalg.qr(torch.randn(rest, sketch, generator=gen, dtype=torch.float64))[0]  # orthonormal columns
    g = (g * (rest / sketch) ** 0.5).to(weight)  # E[g gᵀ] = I on the rest (Haar-random subspace)
    for j in range(sketch):
        basis[top + j].scatter_(1, order[:, top:], g[:, j].expand(B, rest))
    return basis


def _bilrp_batch(model, net: LRPNet, x_a: Tensor, x_b: Tensor, relation: Tensor, user: Tensor,
                 grid: int, chunk: int, rank: int | None, gen: torch.Generator) -> Tensor:
    B = x_a.shape[0]
    x = torch.cat([x_a, x_b]).detach().requires_grad_(True)
    trace = net.forward(x)
    out, _, a_i, a_j = head_seed(model, net, trace, relation, user, "similarity", exact=False)
    theta = model.theta(relation, user).detach()
    basis = _seed_basis(theta.pow(2) * a_i * a_j, rank, gen)  # (m, B, K)
    theta2 = torch.cat([theta, theta])  # (2B, K): φ_k = θ_k a_k on both sides
    result = x.new_zeros(B, grid * grid, grid * grid)
    for j0 in range(0, basis.shape[0], chunk):
        dirs = basis[j0:j0 + chunk]
        seeds = torch.cat([dirs, dirs], 1) * theta2  # direction g: output relevance Σ_k g_k θ_k a_k
        rel = net.relevance(trace, out, seeds, retain_graph=True, batched=True)  # (m, 2B, C, H, W)
        with torch.no_grad():
            patches = grid_pool(rel.sum(2), grid)  # (m, 2B, P)
            result += 2 * torch.einsum("kbp,kbq->bpq", patches[:, :B], patches[:, B:])
    return result


def top_links(matrix: Tensor, n: int) -> list[tuple[int, int, float]]:
    """The n strongest links (p, p', value) of one (P, P') BiLRP matrix, by |value|, strongest first."""
    if matrix.dim() != 2:
        raise UsageError(f"top_links takes one (P, P') matrix, got shape {tuple(matrix.shape)}")
    flat = matrix.flatten()
    n = max(0, min(n, flat.numel()))
    idx = flat.abs().topk(n).indices
    cols = matrix.shape[1]
    return [(int(i) // cols, int(i) % cols, float(flat[i])) for i in idx]


def marginals(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike = -1,
              composite: str | Composite = DEFAULT_COMPOSITE, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Pixel marginals of BiLRP as (B, C, H, W) maps: pooled to the grid they are exactly the matrix's
    row sums Σ_p' R_pp' (image a) and column sums Σ_p R_pp' (image b), under any composite.

    Row sums are 2 Σ_k LRP_p(φ_k; x_i) · T_k(x_j), with T_k(x_j) = Σ_p' LRP_p'(φ_k; x_j) the
    *measured* total of the other image's map for dimension k. LRP is linear in the output
    relevance for a fixed forward pass, so this is one first-order pass of image a with
    output relevance 2θ_k a_ik T_k(x_j) per dimension; all K totals T come from one
    double-backward of the map's sum w.r.t. its seed. Cost: about three passes, not K.
    Where every map conserves (T_k = φ_k: lrp0/ε on a bias-free backbone), this is the
    first-order similarity map ``explain_pairs(..., target="similarity")``.
    """
    if x_a.dim() != 4 or x_a.shape != x_b.shape:
        raise UsageError("BiLRP marginals need two image batches of the same shape (B, C, H, W)")
    n = x_a.shape[0]
    rel_t, user_t = as_index(relation, n, "relation", x_a.device), as_index(user, n, "user", x_a.device)
    net = LRPNet(model.backbone, composite)
    parts = [_marginals_batch(model, net, x_a[s:s + batch_size], x_b[s:s + batch_size], rel_t[s:s + batch_size],
                              user_t[s:s + batch_size]) for s in range(0, n, batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _marginals_batch(model, net: LRPNet, x_a: Tensor, x_b: Tensor, relation: Tensor, user: Tensor) -> tuple[Tensor, Tensor]:
    B = x_a.shape[0]
    x = torch.cat([x_a, x_b]).detach().requires_grad_(True)
    trace = net.forward(x)
    out, _, _, _ = head_seed(model, net, trace, relation, user, "similarity", exact=False)
    theta = torch.cat([model.theta(relation, user).detach()] * 2)  # (2B, K)
    probe = torch.zeros_like(out, requires_grad=True)
    total = net.relevance(trace, out, probe, create_graph=True, retain_graph=True).sum()
    (unit,) = torch.autograd.grad(total, probe)  # (2B, K): Σ_p LRP_p of a unit seed on dimension k
    t = theta * unit  # T_k: measured total of the map of φ_k (seed θ_k)
    other = torch.cat([t[B:], t[:B]])  # each image's partner
    rel = net.relevance(trace, out, 2 * theta * other)  # output relevance 2θ_k a_k T_k(partner)
    return rel[:B].detach(), rel[B:].detach()
