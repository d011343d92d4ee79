"""Link prediction metrics in the paper's Table 1 layout: accuracy at P > 0.5 and ROC-AUC."""
from __future__ import annotations

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS, Catalog, Pairs
from lrprec.model.pair import PairModel
from lrprec.run import item_inputs


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


@torch.inference_mode()
def predict_logits(model: PairModel, catalog: Catalog, pairs: Pairs, batch_size: int = 256, input_size: int | None = None, features: torch.Tensor | None = None) -> np.ndarray:
    """Logits c − d for every pair, batched; ``features`` (item rows × F) skips the backbone."""
    model.eval()
    out = np.empty(len(pairs), np.float32)
    for s in range(0, len(pairs), batch_size):
        sl = slice(s, s + batch_size)
        rel = torch.from_numpy(pairs.relation[sl])
        usr = torch.from_numpy(pairs.user[sl])
        if features is not None:
            fa, fb = features[torch.from_numpy(pairs.a[sl])], features[torch.from_numpy(pairs.b[sl])]
            a_i, a_j = model.project(fa, rel), model.project(fb, rel)
            logit = model.logit_from_embeddings(a_i, a_j, rel, usr)
        else:
            logit = model(item_inputs(catalog, model, pairs.a[sl], input_size), item_inputs(catalog, model, pairs.b[sl], input_size), rel, usr)
        out[sl] = logit.numpy()
    return out


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


def evaluate_run(path, split: str = "test") -> dict:
    """Evaluate a run on a split and store the result in ``RUN/metrics.json`` (per split)."""
    import json

    from lrprec.run import Run, atomic_write_text

    if split not in ("validation", "test"):
        raise ValueError(f"--split must be validation or test, got {split!r}")
    run = Run.load(path)
    pairs = run.catalog.pairs(split)
    logits = predict_logits(run.model, run.catalog, pairs, input_size=run.input_size)
    report = link_prediction_report(run.catalog, pairs, logits, run.relations)
    report.update({"split": split, "dim": run.config["dim"], "backbone": run.config["backbone"]})
    metrics_path = run.path / "metrics.json"
    stored = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    stored[split] = report
    atomic_write_text(metrics_path, json.dumps(stored, indent=2))
    return report
