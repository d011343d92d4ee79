"""The in-batch ranking loss: each positive pair against the batch's other items (issue 19)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lrprec.data.catalog import Pairs


def rank_candidates(b: Pairs, related) -> np.ndarray:
    """(n, 2n) bool: which of the batch's 2n items [b.a; b.b] may serve as row k's negatives in the
    ranking loss — not a_k itself, not b_k (its target column n + k stays True), not an item
    ``related(a, item, r, u)`` relates to a_k (known positives and the data's own rules)."""
    n = len(b)
    items = np.concatenate([b.a, b.b])[None, :]
    a, r, u = b.a[:, None], b.relation[:, None], b.user[:, None]
    ok = ~((items == a) | (items == b.b[:, None]) | related(a, items, r, u))
    ok[np.arange(n), n + np.arange(n)] = True
    return ok


def rank_loss(model, feats: torch.Tensor, relation: torch.Tensor, user: torch.Tensor, label: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """Summed in-batch softmax cross-entropy of each positive pair (i, j) against the batch's other items.

    The pair's logit c_r − d_u(i, j) competes with c_r − d_u(i, j') for every item j' of the
    batch that ``mask`` allows (see :func:`rank_candidates`): the items a top-k list must rank
    below j. ``feats`` are the backbone features of the stacked batch [x_a; x_b] (2n, F). This
    costs no extra backbone pass; it is what teaches the order over the whole catalog, which
    the pairwise objective with one negative per positive leaves loose.
    """
    n = relation.shape[0]
    pos = torch.nonzero(label > 0.5).flatten()
    if pos.numel() == 0:
        return feats.sum() * 0
    q_all = model.project_partner_all(feats)                             # (2n, R, K)
    p_all = model.project_all(feats[pos])                                # (P, R, K)
    total = feats.new_zeros(())
    # one relation at a time with plain slices: a gather with repeated indices would accumulate its
    # gradient in a thread-dependent order on CPU, and runs with the same seed would drift apart
    for r in torch.unique(relation[pos]).tolist():
        g = torch.nonzero(relation[pos] == r).flatten()
        rows = pos[g]
        rel = relation[rows]
        p, q = p_all[g, r], q_all[:, r]                                  # (G, K) query side of i, (2n, K) every item
        w = model.theta(rel, user[rows]).pow(2)
        d = (w.unsqueeze(1) * (p.unsqueeze(1) - q.unsqueeze(0)).pow(2)).sum(-1)  # (G, 2n), no cancellation
        logits = (model.c[r] - d).masked_fill(~mask[rows], float("-inf"))
        total = total + nn.functional.cross_entropy(logits, n + rows, reduction="sum")
    return total
