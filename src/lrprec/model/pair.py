"""The Siamese personalized pair model (SPEC §2, the paper's eqs 1-2).

d_u(x_i, x_j) = Σ_k θ_uk² (a_ik − a_jk)², a = f(x) E_r, and P = σ(c_r − d_u).
One model holds a shared backbone and per-relation heads (E_r, c_r, θ_{u,r}). The
backbone runs once on the stacked batch [x_i; x_j] (never twice), which keeps LRP's
per-layer state unambiguous.
"""
from __future__ import annotations

import torch
from torch import nn

from lrprec.model.backbones import Backbone


class PairModel(nn.Module):
    """Backbone + per-relation projection E_r (F×K), personal weights θ and shift c_r."""

    def __init__(self, backbone: Backbone, dim: int, n_relations: int, n_users: int = 0, personalize: bool = True, seed: int = 0):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"the embedding dimension K must be positive, got {dim}")
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

    # ---- pieces the explainers reuse ---------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features x = f(image), (B, F)."""
        return self.backbone(x)

    def project_all(self, feats: torch.Tensor) -> torch.Tensor:
        """a = x E_r for every relation, (B, R, K)."""
        return (feats @ self.E).view(feats.shape[0], self.n_relations, self.dim)

    def project(self, feats: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """a = x E_r for each row's relation, (B, K)."""
        return self.project_all(feats)[torch.arange(feats.shape[0]), relation]

    def theta(self, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """θ for each row: the user's own where known (user >= 0), else the global θ_r. (B, K)."""
        th = self.theta_global[relation]
        if self.n_users > 0:
            known = user >= 0
            delta = self.theta_delta[relation, user.clamp(min=0)]
            th = th + delta * known.unsqueeze(-1).to(th.dtype)
        return th

    def theta_all(self, user: torch.Tensor) -> torch.Tensor:
        """θ of every relation head for each row's user, (B, R, K)."""
        return torch.stack([self.theta(torch.full_like(user, r), user) for r in range(self.n_relations)], 1)

    def logits_all(self, a: torch.Tensor, a_other: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Logits c_r − d of every head from (B, R, K) projections and θs, (B, R)."""
        return self.c.unsqueeze(0) - (theta.pow(2) * (a - a_other).pow(2)).sum(-1)

    def head_logits(self, x: torch.Tensor, x_other: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """(B, R) logits of every relation head for the pairs (x, x_other), one backbone pass."""
        a = self.project_all(self.embed(torch.cat([x, x_other])))
        n = x.shape[0]
        return self.logits_all(a[:n], a[n:], self.theta_all(user))

    @staticmethod
    def distance(a_i: torch.Tensor, a_j: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Eq 1: d = Σ_k θ_k² (a_ik − a_jk)²."""
        return (theta.pow(2) * (a_i - a_j).pow(2)).sum(-1)

    # ---- forward ----------------------------------------------------------------------------
    def pair_embeddings(self, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected embeddings of both sides, the backbone run once on [x_a; x_b]."""
        feats = self.embed(torch.cat([x_a, x_b], 0))
        a = self.project(feats, torch.cat([relation, relation]))
        n = x_a.shape[0]
        return a[:n], a[n:]

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """Logit c_r − d_u; P(related) = sigmoid(logit) (eq 2)."""
        a_i, a_j = self.pair_embeddings(x_a, x_b, relation)
        return self.logit_from_embeddings(a_i, a_j, relation, user)

    def logit_from_embeddings(self, a_i: torch.Tensor, a_j: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        return self.c[relation] - self.distance(a_i, a_j, self.theta(relation, user))
