"""Ranking evaluation over the whole catalog (SPEC §1 "Ranking"): what a user of the top-k sees.

For every held-out positive (i, j, r[, u]) the rank of j among all catalog items ≠ i by the
method's score for (i, ·, r, u) — for a pair model P_u(r_ij), i.e. the smallest distance —
then recall@10, recall@50, NDCG@10 and MRR per relation, per category of i, and for the
user-carrying pairs apart. A *scorer* is any function ``(a, relation, user) -> (n, N)``
scores (higher = more related) over all N items, so the model and every baseline are ranked
by the same code. Ties count half (the expected rank under random tie-breaking).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS, Catalog, Pairs

Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
CUTOFFS = (10, 50)


def rank_metrics(ranks: np.ndarray) -> dict:
    """recall@10/50, NDCG@10, MRR and the median rank of 1-based ranks (one relevant item per query)."""
    ranks = np.asarray(ranks, np.float64)
    if ranks.size == 0:
        return {"n": 0}
    out: dict = {f"recall@{k}": float((ranks <= k).mean()) for k in CUTOFFS}
    out["ndcg@10"] = float(np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    out["mrr"] = float((1.0 / ranks).mean())
    out["median_rank"] = float(np.median(ranks))
    out["n"] = int(ranks.size)
    return out


def target_ranks(scorer: Scorer, pairs: Pairs, batch_size: int = 128) -> np.ndarray:
    """1-based rank of each pair's item b among all items ≠ a under ``scorer`` (ties count half)."""
    ranks = np.empty(len(pairs), np.float64)
    for s in range(0, len(pairs), batch_size):
        p = pairs.take(slice(s, s + batch_size))
        scores = np.asarray(scorer(p.a, p.relation, p.user), np.float64)
        rows = np.arange(len(p))
        target = scores[rows, p.b][:, None]
        scores[rows, p.a] = -np.inf  # the query item itself is never a candidate
        better = (scores > target).sum(1)
        ties = (scores == target).sum(1) - 1  # the target ties with itself
        ranks[s:s + len(p)] = 1.0 + better + 0.5 * ties
    return ranks


def ranking_report(catalog: Catalog, pairs: Pairs, scorer: Scorer, relations: list[str], batch_size: int = 128) -> dict:
    """``{"relations": {REL: {metrics, by_category: {CAT: metrics}}}, "overall", "personalized", "n_items"}``.

    ``pairs`` may hold negatives: only positives (label 1) are ranked.
    """
    pos = pairs.take(np.flatnonzero((pairs.label == 1) & np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])))
    ranks = target_ranks(scorer, pos, batch_size)
    cat_of = catalog.categories[pos.a]
    out: dict = {"relations": {}, "n_items": len(catalog)}
    for r in relations:
        sel = pos.relation == RELATIONS.index(r)
        if not sel.any():
            continue
        entry = rank_metrics(ranks[sel])
        entry["by_category"] = {c: rank_metrics(ranks[sel & (cat_of == c)]) for c in catalog.category_names if (sel & (cat_of == c)).any()}
        personal = sel & (pos.user >= 0)
        entry["personalized"] = rank_metrics(ranks[personal]) if personal.any() else None
        out["relations"][r] = entry
    out["overall"] = rank_metrics(ranks)
    out["personalized"] = rank_metrics(ranks[pos.user >= 0]) if (pos.user >= 0).any() else None
    return out


def top_k(scorer: Scorer, a: np.ndarray, relation: np.ndarray, user: np.ndarray, k: int, batch_size: int = 128) -> np.ndarray:
    """(n, k) item rows of the k best-scored items ≠ a for each query, best first."""
    out = np.empty((len(a), k), np.int64)
    for s in range(0, len(a), batch_size):
        sl = slice(s, s + batch_size)
        scores = np.asarray(scorer(a[sl], relation[sl], user[sl]), np.float64)
        scores[np.arange(scores.shape[0]), a[sl]] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, 1).argsort(1, kind="stable")[:, ::-1]
        out[sl] = np.take_along_axis(part, order, 1)
    return out


# ---- the pair model as a scorer ---------------------------------------------------------------------
class ModelScorer:
    """Scores every item for a query by the model's logit c_r − d_u(i, j), from item vectors computed once.

    ``query``/``partner`` are (N, R, K) projections of every item (x E_r, and x F_r for an
    asymmetric head or x E_r for a metric one); θ_{u,r}² and c_r come from the model. The
    distance is expanded as Σ w p² − 2 (w∘p)·q + Σ w q², one matrix product per batch.
    """

    def __init__(self, model, query: np.ndarray, partner: np.ndarray):
        self.model, self.query, self.partner = model, query, partner
        self.c = model.c.detach().double().cpu().numpy()

    @classmethod
    @torch.inference_mode()
    def from_catalog(cls, model, catalog: Catalog, input_size: int | None = None, batch_size: int = 256) -> "ModelScorer":
        """Run the backbone once per item (batched, eval mode) and keep both projections (float64)."""
        from lrprec.run import iter_item_features

        n = len(catalog)
        query = np.empty((n, model.n_relations, model.dim))
        partner = np.empty_like(query)
        for rows, f in iter_item_features(model, catalog, input_size, batch_size):
            query[rows] = model.project_all(f).double().cpu().numpy()
            partner[rows] = model.project_partner_all(f).double().cpu().numpy()
        return cls(model, query, partner)

    def weights(self, relation: np.ndarray, user: np.ndarray) -> np.ndarray:
        """θ_{u,r}² per row, (n, K) float64."""
        with torch.no_grad():
            th = self.model.theta(torch.from_numpy(np.asarray(relation, np.int64)), torch.from_numpy(np.asarray(user, np.int64)))
        return th.double().pow(2).cpu().numpy()

    def pair_logits(self, pairs: Pairs) -> np.ndarray:
        """Logits c_r − d_u of labelled pairs (link prediction) from the stored vectors."""
        w = self.weights(pairs.relation, pairs.user)
        diff = self.query[pairs.a, pairs.relation] - self.partner[pairs.b, pairs.relation]
        return (self.c[pairs.relation] - (w * diff ** 2).sum(1)).astype(np.float32)

    def __call__(self, a: np.ndarray, relation: np.ndarray, user: np.ndarray) -> np.ndarray:
        w = self.weights(relation, user)                       # (n, K)
        p = self.query[a, relation]                            # (n, K)
        out = np.empty((len(a), self.partner.shape[0]))
        for r in np.unique(relation):
            rows = np.flatnonzero(relation == r)
            q = self.partner[:, r]                             # (N, K)
            wp = w[rows] * p[rows]
            d = (wp * p[rows]).sum(1, keepdims=True) - 2 * wp @ q.T + w[rows] @ (q ** 2).T
            out[rows] = self.c[r] - d
        return out


def ranking_text(report: dict) -> str:
    """A terminal table: recall@10/50, NDCG@10, MRR per relation, overall and user-carrying."""
    cols = ("recall@10", "recall@50", "ndcg@10", "mrr", "median_rank", "n")
    lines = [f"ranking of each held-out positive among all {report['n_items']} items",
             f"{'relation':<22}" + "".join(f"{c:>12}" for c in cols)]

    def row(name: str, m: dict | None) -> str:
        if not m or not m.get("n"):
            return f"{name:<22}" + "".join(f"{'-':>12}" for _ in cols)
        return f"{name:<22}" + "".join(f"{m[c]:>12d}" if c == "n" else f"{m[c]:>12.3f}" if c != "median_rank" else f"{m[c]:>12.1f}" for c in cols)

    for r, m in report["relations"].items():
        lines.append(row(r, m))
    lines.append(row("all", report["overall"]))
    if report.get("personalized"):
        lines.append(row("user-carrying", report["personalized"]))
    return "\n".join(lines)
