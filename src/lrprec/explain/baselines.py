"""Baseline attributions for comparison with LRP (SPEC §3), computed with captum.

Each explains the same target as ``explain_pairs`` (similarity, distance or logit), for
each image given the other: the attribution of x_a is taken with x_b fixed and vice
versa. Gradients are partial derivatives, so saliency and gradient×input get both sides
from one backward pass; integrated gradients walks a separate path per side (zero
baseline). The backbone always runs once on the stacked batch, in eval mode (the model's
train/eval flags are restored afterwards).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn

from lrprec.errors import UsageError
from lrprec.explain.targets import IndexLike, as_index, check_target, target_from_embeddings

METHODS: tuple[str, ...] = ("saliency", "gradxinput", "integrated_gradients", "random")
IG_STEPS = 16


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, every submodule's own flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _pair_function(model, target: str):
    """f(x_a, x_b, relation, user) -> target per pair, the backbone run once on [x_a; x_b]."""
    def f(x_a: Tensor, x_b: Tensor, relation: Tensor, user: Tensor) -> Tensor:
        a_i, a_j = model.pair_embeddings(x_a, x_b, relation)
        return target_from_embeddings(model, a_i, a_j, relation, user, target)
    return f


def attribute(model, x_a: Tensor, x_b: Tensor, relation: IndexLike, user: IndexLike, method: str,
              target: str = "similarity", seed: int = 0) -> tuple[Tensor, Tensor]:
    """(rel_a, rel_b), each shaped like its input, for ``method`` in METHODS explaining ``target``."""
    if method not in METHODS:
        raise UsageError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
    check_target(target)
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(x_a.shape, generator=g, dtype=x_a.dtype).to(x_a.device),
                torch.rand(x_b.shape, generator=g, dtype=x_b.dtype).to(x_b.device))
    n = x_a.shape[0]
    rel_t, user_t = as_index(relation, n, "relation", x_a.device), as_index(user, n, "user", x_a.device)
    f = _pair_function(model, target)
    xa, xb = x_a.detach().clone().requires_grad_(True), x_b.detach().clone().requires_grad_(True)
    with eval_mode(model):
        if method == "saliency":
            ra, rb = Saliency(f).attribute((xa, xb), additional_forward_args=(rel_t, user_t), abs=True)
        elif method == "gradxinput":
            ra, rb = InputXGradient(f).attribute((xa, xb), additional_forward_args=(rel_t, user_t))
        else:
            ig = IntegratedGradients(f)
            swapped = lambda x_b_, x_a_, r, u: f(x_a_, x_b_, r, u)  # noqa: E731 - side b varies
            ra = ig.attribute(xa, baselines=0.0, additional_forward_args=(xb, rel_t, user_t), n_steps=IG_STEPS,
                              internal_batch_size=max(n * 4, 1))
            rb = IntegratedGradients(swapped).attribute(xb, baselines=0.0, additional_forward_args=(xa, rel_t, user_t),
                                                        n_steps=IG_STEPS, internal_batch_size=max(n * 4, 1))
    return ra.detach(), rb.detach()
