"""The Siamese personalized pair model (SPEC §2, the paper's eqs 1-2).

d_u(x_i, x_j) = Σ_k θ_uk² (a_ik − b_jk)², a = f(x) E_r, and P = σ(c_r − d_u).
One model holds a shared backbone and per-relation heads (E_r, c_r, θ_{u,r}). The
backbone runs once on the stacked batch [x_i; x_j] (never twice), which keeps LRP's
per-layer state unambiguous.

Heads (SPEC §2 "heads for complements"): the paper's *metric* head projects both items
with E_r (b = a, a weighted Euclidean metric); the *asymmetric* head projects the partner
with its own F_r (b = f(x) F_r), which can rank "other category, same style" above a
same-category look-alike — a metric cannot. ``head="auto"`` (the default for new runs) is
metric for substitutes and asymmetric for complements; F_r starts equal to E_r, so an
asymmetric head starts as the metric one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lrprec.data.catalog import COMPLEMENTS, RELATIONS
from lrprec.errors import UsageError
from lrprec.model.backbones import Backbone

HEADS = ("metric", "asymmetric", "auto")
PARTNER_INITS = ("copy", "independent")
DEFAULT_HEAD = "auto"


def asymmetric_relations(head: str, n_relations: int) -> list[bool]:
    """Which relation heads project the partner with their own F_r under a head choice."""
    if head not in HEADS:
        raise UsageError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
    if head == "auto":
        return [r < len(RELATIONS) and RELATIONS[r] in COMPLEMENTS for r in range(n_relations)]
    return [head == "asymmetric"] * n_relations


class PairModel(nn.Module):
    """Backbone + per-relation projection E_r (F×K), personal weights θ and shift c_r."""

    def __init__(self, backbone: Backbone, dim: int, n_relations: int, n_users: int = 0, personalize: bool = True, seed: int = 0,
                 head: str = "metric", recon_size: int = 0, partner_init: str = "copy"):
        super().__init__()
        self.head = head
        self.asymmetric = asymmetric_relations(head, n_relations)
        if dim <= 0:
            raise UsageError(f"the embedding dimension K must be positive, got {dim}")
        self.backbone = backbone
        self.dim = dim
        self.n_relations = n_relations
        self.n_users = n_users if personalize else 0
        g = torch.Generator().manual_seed(seed)
        F = backbone.out_dim
        self.E = nn.Parameter(torch.randn(F, n_relations * dim, generator=g) / F ** 0.5)
        # θ starts at 1/sqrt(2K): with unit-variance projections the initial distance is ~1 ≈ c.
        self.theta_global = nn.Parameter(torch.full((n_relations, dim), (2.0 * dim) ** -0.5))
        # θ_u = θ_global + δ_u: users start at the global metric and move away with evidence.
        self.theta_delta = nn.Parameter(torch.zeros(n_relations, max(self.n_users, 1), dim))
        self.c = nn.Parameter(torch.full((n_relations,), 1.0))
        # partner projection F_r of asymmetric heads (absent for a metric-only model: old runs load unchanged)
        self.F = nn.Parameter(self._partner_init(partner_init, seed)) if any(self.asymmetric) else None
        self._asym_cols = torch.tensor(self.asymmetric).repeat_interleave(dim)
        # training-only decoder of the appearance loss (absent unless asked for: old runs load unchanged)
        self.recon_size = recon_size
        self.recon = None
        if recon_size > 0:
            self.recon = nn.Linear(F, 3 * recon_size * recon_size)
            with torch.no_grad():
                self.recon.weight.copy_(torch.randn(self.recon.weight.shape, generator=g) / F ** 0.5)
                self.recon.bias.zero_()

    def _partner_init(self, how: str, seed: int) -> torch.Tensor:
        """F_r's starting point: a copy of E_r (the metric head's, where near-duplicates start at
        distance 0 for every relation) or an independent draw of the same scale (issue 31)."""
        if how == "copy":
            return self.E.detach().clone()
        if how == "independent":  # its own stream: E, θ and the decoder start as with a copy
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 31]).generate_state(1)[0]))
            return torch.randn(self.E.shape, generator=g) / self.E.shape[0] ** 0.5
        raise UsageError(f"unknown partner initialization {how!r}; known: {', '.join(PARTNER_INITS)}")

    # ---- pieces the explainers reuse ---------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features x = f(image), (B, F)."""
        return self.backbone(x)

    def appearance_loss(self, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Squared error of the image's ``recon_size``² thumbnail decoded linearly from its features, (B,).

        Keeps what no relation asks for but a user may (the synthetic catalog's colour) in the
        backbone: without it the shared features drop colour and colour-driven users stay at chance.
        """
        target = nn.functional.adaptive_avg_pool2d(x.detach().float(), self.recon_size).flatten(1)
        return (self.recon(feats.float()) - target).pow(2).mean(1)

    def project_all(self, feats: torch.Tensor) -> torch.Tensor:
        """a = x E_r for every relation, (B, R, K)."""
        return (feats @ self.E).view(feats.shape[0], self.n_relations, self.dim)

    def project(self, feats: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """a = x E_r for each row's relation, (B, K)."""
        return self.project_all(feats)[torch.arange(feats.shape[0]), relation]

    def partner_matrix(self) -> torch.Tensor:
        """The partner side's projection, (F, R·K): F_r for asymmetric heads, E_r for metric ones."""
        if self.F is None:
            return self.E
        return torch.where(self._asym_cols.to(self.E.device), self.F, self.E)

    def project_partner_all(self, feats: torch.Tensor) -> torch.Tensor:
        """b = x F_r (asymmetric heads) or x E_r (metric heads) for every relation, (B, R, K)."""
        if self.F is None:
            return self.project_all(feats)
        return (feats @ self.partner_matrix()).view(feats.shape[0], self.n_relations, self.dim)

    def project_partner(self, feats: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """The partner side's projection for each row's relation, (B, K)."""
        return self.project_partner_all(feats)[torch.arange(feats.shape[0]), relation]

    def theta(self, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """θ for each row: the user's own where known (user >= 0), else the global θ_r. (B, K)."""
        th = self.theta_global[relation]
        if self.n_users > 0:
            known = user >= 0
            delta = self.theta_delta[relation, user.clamp(min=0)]
            th = torch.where(known.unsqueeze(-1), th + delta, th)
        return th

    def theta_all(self, user: torch.Tensor) -> torch.Tensor:
        """θ of every relation head for each row's user, (B, R, K)."""
        return torch.stack([self.theta(torch.full_like(user, r), user) for r in range(self.n_relations)], 1)

    def logits_all(self, a: torch.Tensor, a_other: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Logits c_r − d of every head from (B, R, K) projections and θs, (B, R)."""
        return self.c.unsqueeze(0) - (theta.pow(2) * (a - a_other).pow(2)).sum(-1)

    def head_logits(self, x: torch.Tensor, x_other: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """(B, R) logits of every relation head for the pairs (x, x_other), one backbone pass."""
        feats = self.embed(torch.cat([x, x_other]))
        n = x.shape[0]
        return self.logits_all(self.project_all(feats[:n]), self.project_partner_all(feats[n:]), self.theta_all(user))

    @staticmethod
    def distance(a_i: torch.Tensor, a_j: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Eq 1: d = Σ_k θ_k² (a_ik − a_jk)²."""
        return (theta.pow(2) * (a_i - a_j).pow(2)).sum(-1)

    # ---- forward ----------------------------------------------------------------------------
    def pair_embeddings(self, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected embeddings of both sides (a_i = x_a E_r, b_j = x_b F_r or x_b E_r), the backbone run once on [x_a; x_b]."""
        feats = self.embed(torch.cat([x_a, x_b], 0))
        n = x_a.shape[0]
        return self.project(feats[:n], relation), self.project_partner(feats[n:], relation)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """Logit c_r − d_u(a, b), (B,); P(related) = sigmoid(logit) (eq 2).

        ``x_a``, ``x_b``: (B, 3, H, W) preprocessed images (or (B, F) features); ``relation``:
        (B,) int64 into ``RELATIONS``; ``user``: (B,) int64 user rows, −1 for the global θ.
        The backbone runs once on the stacked batch [x_a; x_b].
        """
        a_i, a_j = self.pair_embeddings(x_a, x_b, relation)
        return self.logit_from_embeddings(a_i, a_j, relation, user)

    def logit_from_embeddings(self, a_i: torch.Tensor, a_j: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """Logit c_r − d_u(i, j) from projected embeddings ``a_i``, ``a_j`` (B, K); ``relation``, ``user`` (B,) int64 (user −1: global θ); returns (B,)."""
        return self.c[relation] - self.distance(a_i, a_j, self.theta(relation, user))
