"""Explanation-guided training (issue 9; the paper's future work, §4).

The guidance loss penalizes relevance outside an *allowed region* of each input image,
"right for the right reasons" (Ross et al. 2017) with two choices of relevance:

- ``lrp``: the differentiable LRP relevance of the pair's logit c − d (both images, one
  modified backward with ``create_graph``; BatchNorm folded with its running statistics,
  as every explanation here), under ε-γ-box by default (``guide_rule``; lrprec.defaults.GUIDE_COMPOSITE).
  Its guidance gradient is large: measured at initialization on the default model, it
  reaches the convolutions ~200× larger than the BCE gradient (LRP-ε: ~10×; measured before
  issue 13 made the second-order gradient exact, which shrank it on the first convolutions), so λ trades
  removing a shortcut against learning speed — see the README for measured values.
- ``gradient``: the input gradient ∂(c − d)/∂x of the training forward itself (Ross et al.'s
  choice; cheaper: one double-backward, no second forward).

Per image, with pixel relevance r_p (channels summed for LRP; the gradient's channel norm,
r_p² = Σ_c g_cp², for ``gradient``) and penalty weights w_p = 1 − allowed_p ∈ [0, 1]:

    L_guide = Σ_p w_p r_p² / Σ_p r_p²     (mean over the images of the batch)

a share in [0, 1]: 0 when all relevance is allowed, so λ means the same for either method
and at any logit scale. The training objective becomes BCE-mean + λ · L_guide.

Three sources of allowed regions (``masks``):

- ``gt``: the catalog's ground-truth masks (the attribute-carrying pixels): relevance anywhere
  else is penalized.
- ``mark``: everything but a known artifact's pixels (the planted watermark,
  ``shortcut_masks.npy``): only relevance on the artifact is penalized — the knowledge
  counterfactual augmentation uses, so the two compare like for like. Images without the
  mark carry no penalty.
- ``relevance``: no ground truth — the paper's outer loop over the validation set. After
  every epoch the model explains the validation pairs (LRP of the logit); each pixel's
  relevance is turned into evidence for the *correct* answer (its sign flipped for
  negatives: on a negative pair, relevance that lowers the logit is right), and pixels are
  scored by how consistently their relevance helps: e_p = Σ_n y_n r_np / Σ_n |r_np|
  (4×4-pixel blocks; y = ±1). Regions whose relevance helps on held-out pairs as often as it
  misleads (e ≈ 0: a feature that worked in training but carries no signal) *and* that draw
  more than their uniform share of relevance get penalty weight
  w = (1 − clip(e / e_ref, 0, 1)) · clip((n·A − 1) / 3, 0, 1), e_ref the 90th percentile of e,
  A the block's mean share of |relevance|, n the number of blocks (full weight from 4× the
  uniform share). In the next epoch the guidance loss pushes relevance — and with it what
  the early convolutions respond to — out of them. The map is global (one per epoch, not
  per item), so it can catch what sits in the same place in every image (a watermark, a
  studio logo, a border), not a shortcut that moves. The first epoch trains unguided
  (there is no map yet); the map is LRP under the guidance composite (ε-γ-box by default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lrprec.errors import UsageError

GUIDES: tuple[str, ...] = ("lrp", "gradient")
MASK_SOURCES: tuple[str, ...] = ("gt", "relevance", "mark")
BLOCK = 4  # pixels per side of the blocks the relevance map is scored on


def check_guide(guide: str | None, masks: str, weight: float) -> None:
    """ValueError naming the choices for an unknown method, mask source or a negative weight."""
    if guide is not None and guide not in GUIDES:
        raise UsageError(f"unknown --guide {guide!r}; choose one of: {', '.join(GUIDES)}")
    if masks not in MASK_SOURCES:
        raise UsageError(f"unknown --guide-masks {masks!r}; choose one of: {', '.join(MASK_SOURCES)}")
    if not weight >= 0:
        raise UsageError(f"--guide-weight must be >= 0, got {weight}")


def pixel_sq(relevance: Tensor, guide: str) -> Tensor:
    """(B, H, W) squared pixel relevance r_p² from (B, C, H, W): (Σ_c R)² for LRP, Σ_c g² for gradients."""
    if guide == "gradient":
        return relevance.pow(2).sum(1)
    return relevance.sum(1).pow(2)


def outside_share(r2: Tensor, penalty: Tensor, eps: float = 1e-12) -> Tensor:
    """(B,) Σ_p w_p r_p² / Σ_p r_p²: the share of squared relevance on penalized pixels (w: (B|1, H, W))."""
    r2 = r2.flatten(1)
    w = penalty.expand(r2.shape[0], *penalty.shape[-2:]) if penalty.dim() == 2 or penalty.shape[0] == 1 else penalty
    return (w.flatten(1) * r2).sum(1) / (r2.sum(1) + eps)


def guidance_loss(relevance: Tensor, penalty: Tensor, guide: str = "lrp") -> Tensor:
    """Mean over images of :func:`outside_share`: zero iff no relevance falls on penalized pixels."""
    return outside_share(pixel_sq(relevance, guide), penalty).mean()


def lrp_relevance(model, net, x: Tensor, relation: Tensor, user: Tensor) -> Tensor:
    """Differentiable LRP relevance (2B, C, H, W) of the logit of pairs (x[:B], x[B:]) (see :mod:`targets`)."""
    from lrprec.explain.targets import head_seed

    xin = x.detach().requires_grad_(True)
    trace = net.forward(xin, exact=True)
    out, seed, _, _ = head_seed(model, net, trace, relation, user, "logit", exact=True)
    return net.relevance(trace, out, seed, create_graph=True)


def gradient_relevance(logit: Tensor, x: Tensor) -> Tensor:
    """Input gradient of the summed logits w.r.t. ``x`` (which the forward saw), kept differentiable."""
    (g,) = torch.autograd.grad(logit.sum(), x, create_graph=True)
    return g


@torch.no_grad()
def consistency_penalty(pixel_rel: Tensor, sign: Tensor, quantile: float = 0.9, full_at: float = 4.0) -> tuple[Tensor, Tensor]:
    """The outer loop's penalty map (H, W) and block consistency e (H/BLOCK, W/BLOCK) from validation relevance.

    ``pixel_rel`` (N, H, W) is each validation image's pixel relevance of the logit,
    ``sign`` (N,) is +1 for images of positive pairs and −1 for negative pairs (the
    direction in which relevance supports the correct answer). A block is penalized by
    (1 − clip(e / e_ref, 0, 1)) × clip((n·A − 1) / (full_at − 1), 0, 1): unreliable *and*
    drawing more than the uniform share 1/n of the relevance (A: mean share per image,
    fully from ``full_at`` × uniform), so blocks the model barely looks at stay free.
    """
    r = pixel_rel.float()
    k = BLOCK if r.shape[-1] % BLOCK == 0 and r.shape[-2] % BLOCK == 0 and r.shape[-1] >= 4 * BLOCK else 1
    blocks = F.avg_pool2d(r[:, None], k)[:, 0]
    mag = blocks.abs()
    e = (sign.view(-1, 1, 1).float() * blocks).sum(0) / mag.sum(0).clamp_min(1e-12)
    ref = torch.quantile(e.flatten(), quantile).clamp_min(1e-6)
    share = (mag / mag.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)).mean(0) * e.numel()
    w = (1 - (e / ref).clamp(0, 1)) * ((share - 1) / (full_at - 1)).clamp(0, 1)
    penalty = F.interpolate(w[None, None], scale_factor=k, mode="nearest")[0, 0] if k > 1 else w
    return penalty, e
