"""Top-k lists checked against the synthetic catalog's own rules (SPEC §1 "Ranking", §5).

The synthetic catalog knows which items are related (:func:`lrprec.data.synthetic.related`),
so a recommender's top-k can be graded without held-out pairs: precision@k is the share of
the k items ≠ i that the rules relate to the query i; ``right_side`` is the share on the
relation's category side (the query's category for a substitute, another for a
complement), ``own_category`` the share in the query's own category. ``ideal`` is the best
precision possible (below 1 where a query has fewer than k related items) and
``precision_of_ideal`` the precision over the ideal list (hits / min(related, k) per query
with a related item: a query with 5 related items scores 5/5, not 5/10), ``chance`` the
rules' base rate. With the global θ the rule is the relation's own; under a user's θ, for
relations whose pairs carry users (the complements), it is that user's attribute.
"""
from __future__ import annotations

import numpy as np

from lrprec.data.catalog import RELATIONS, SUBSTITUTES, Catalog
from lrprec.data.rules import related, synthetic_rules
from lrprec.evaluate.ranking import Scorer, top_k


def _grade(attrs: np.ndarray, user_attr: np.ndarray, q: np.ndarray, top: np.ndarray, r: int, u: int) -> dict:
    rel = related(attrs, user_attr, q[:, None], top, r, u)
    same = attrs[q, 0][:, None] == attrs[top, 0]
    side = same if RELATIONS[r] in SUBSTITUTES else ~same
    n = attrs.shape[0]
    every = related(attrs, user_attr, q[:, None], np.arange(n)[None, :], r, u).sum(1)
    k = top.shape[1]
    has = every > 0  # precision over the ideal list: a query with 5 related items scores 5/5, not 5/10
    of_ideal = rel[has].sum(1) / np.minimum(every[has], k)
    return {"precision": float(rel.mean()), "right_side": float(side.mean()), "chance": float(every.mean() / (n - 1)),
            "ideal": float(np.minimum(every, k).mean() / k), "own_category": float(same.mean()),
            "precision_of_ideal": float(of_ideal.mean()) if has.any() else float("nan")}


def truth_report(catalog: Catalog, scorer: Scorer, relations: list[str], k: int = 10, max_queries: int = 1000) -> dict | None:
    """Precision@k against the rules per relation (global θ) and per user; None for catalogs without rules.

    Queries: every item, or ``max_queries`` evenly spaced ones on larger catalogs.
    """
    rules = synthetic_rules(catalog)
    if rules is None:
        return None
    attrs, user_attr = rules
    n = len(catalog)
    q = np.unique(np.linspace(0, n - 1, min(n, max_queries)).round().astype(np.int64))
    personal_rel = set(np.unique(catalog.positives().relation[catalog.positives().user >= 0]).tolist())
    out: dict = {"k": k, "queries": int(q.size), "relations": {}}
    for name in relations:
        r = RELATIONS.index(name)
        rr = np.full(q.size, r)
        entry = _grade(attrs, user_attr, q, top_k(scorer, q, rr, np.full(q.size, -1), k), r, -1)
        if r in personal_rel and len(catalog.user_ids):
            users = {uid: _grade(attrs, user_attr, q, top_k(scorer, q, rr, np.full(q.size, u), k), r, u)
                     for u, uid in enumerate(catalog.user_ids)}
            entry["users"] = users
            entry["users_precision"] = float(np.mean([v["precision"] for v in users.values()]))
            entry["users_min_precision"] = float(min(v["precision"] for v in users.values()))
        out["relations"][name] = entry
    return out


def truth_text(report: dict) -> str:
    """A terminal table: precision@k and right category side per relation, users' mean/min."""
    k = report["k"]
    lines = [f"top-{k} lists against the catalog's rules ({report['queries']} query items)",
             f"{'relation':<20}{'precision@' + str(k):>14}{'right side':>12}{'chance':>9}{'users (mean/min)':>20}"]
    for r, e in report["relations"].items():
        users = f"{e['users_precision']:.2f}/{e['users_min_precision']:.2f}" if "users_precision" in e else "-"
        lines.append(f"{r:<20}{e['precision']:>14.3f}{e['right_side']:>12.3f}{e['chance']:>9.3f}{users:>20}")
    return "\n".join(lines)
