"""Link prediction metrics in the paper's Table 1 layout: accuracy at P > 0.5 and ROC-AUC."""
from __future__ import annotations

import numpy as np

from lrprec.data.catalog import RELATIONS, Catalog, Pairs


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC by the rank-sum formula (ties get average ranks); None when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    uniq, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scores(label: np.ndarray, logit: np.ndarray) -> dict:
    acc = float(((logit > 0) == (label == 1)).mean()) if len(label) else None
    return {"accuracy": acc, "auc": roc_auc(label, logit), "n": int(len(label))}


def link_prediction_report(catalog: Catalog, pairs: Pairs, logits: np.ndarray, relations: list[str]) -> dict:
    """``{"relations": {REL: {accuracy, auc, n, by_category: {CAT: {...}}}}, "overall": {...}, "personalized": {...}}``.

    Accuracy counts P > 0.5 (logit > 0) as "related"; a pair's category is its query item's.
    """
    out: dict = {"relations": {}}
    cat_of = catalog.categories[pairs.a]
    keep = np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])
    for r in relations:
        sel = pairs.relation == RELATIONS.index(r)
        if not sel.any():
            continue
        entry = _scores(pairs.label[sel], logits[sel])
        entry["by_category"] = {c: _scores(pairs.label[sel & (cat_of == c)], logits[sel & (cat_of == c)]) for c in catalog.category_names if (sel & (cat_of == c)).any()}
        out["relations"][r] = entry
    out["overall"] = _scores(pairs.label[keep], logits[keep])
    personal = keep & (pairs.user >= 0)
    out["personalized"] = _scores(pairs.label[personal], logits[personal]) if personal.any() else None
    return out


def table1_text(report: dict, dim: int | None = None) -> str:
    """The paper's Table 1 layout: rows category (× K), columns relation; accuracy in % (AUC below)."""
    rels = list(report["relations"])
    cats = sorted({c for r in rels for c in report["relations"][r]["by_category"]})
    head = f"{'category':<22}{'K':>5}" + "".join(f"{r:>20}" for r in rels)
    lines = [head, "-" * len(head)]
    k = "" if dim is None else str(dim)

    def cell(d: dict | None) -> str:
        if not d or d.get("accuracy") is None:
            return f"{'-':>20}"
        auc = "" if d.get("auc") is None else f" ({d['auc']:.3f})"
        return f"{100 * d['accuracy']:>11.1f}{auc:>9}"

    for c in cats:
        lines.append(f"{c:<22}{k:>5}" + "".join(cell(report["relations"][r]["by_category"].get(c)) for r in rels))
    lines.append("-" * len(head))
    lines.append(f"{'all':<22}{k:>5}" + "".join(cell(report["relations"][r]) for r in rels))
    ov = report["overall"]
    lines.append(f"overall accuracy {100 * ov['accuracy']:.1f}%  AUC {ov['auc']:.3f}  n={ov['n']}" if ov["accuracy"] is not None else "overall: no pairs")
    if report.get("personalized"):
        p = report["personalized"]
        lines.append(f"user-carrying pairs: accuracy {100 * p['accuracy']:.1f}%  n={p['n']}")
    lines.append("cells: accuracy % at P > 0.5 (ROC-AUC)")
    return "\n".join(lines)


def evaluation_text(report: dict) -> str:
    """What ``lrprec evaluate`` prints: Table 1 per negative protocol, the ranking, the truth check."""
    from lrprec.evaluate.ranking import ranking_text
    from lrprec.evaluate.truth import truth_text

    parts = []
    for neg, rep in report.get("protocols", {"category": report}).items():
        parts.append(f"Table 1, {neg} negatives ({report.get('split', 'test')} split)\n" + table1_text(rep, report.get("dim")))
    if report.get("ranking"):
        parts.append(ranking_text(report["ranking"]))
    if report.get("truth"):
        parts.append(truth_text(report["truth"]))
    head = f"head {report.get('head', 'metric')}, trained on {report.get('train_negatives', 'category')} negatives"
    return head + "\n\n" + "\n\n".join(parts)
