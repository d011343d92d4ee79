"""Explanations for a trained run, addressed by item ids: what the CLI, the demo and the web use.

Resolves ids to model inputs, runs the batched pair explanation (first order, optionally
BiLRP), and writes figures plus raw relevance arrays. Relevance arrays are H×W, summed
over colour channels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS
from lrprec.errors import UsageError
from lrprec.files import atomic_write, atomic_write_text
from lrprec.run import Run


def resolve_relation(run: Run, a: np.ndarray, b: np.ndarray, user: np.ndarray, relation: str | None) -> np.ndarray:
    """Relation index per pair: the given one (checked), else the trained relation with the highest P."""
    if relation is not None:
        return np.full(len(a), run.check_relation(relation), np.int64)
    probs = pair_probabilities(run, a, b, user)
    names = run.relations
    best = np.argmax(np.stack([probs[r] for r in names], 1), 1)
    return np.asarray([RELATIONS.index(names[k]) for k in best], np.int64)


@torch.inference_mode()
def pair_probabilities(run: Run, a: np.ndarray, b: np.ndarray, user: np.ndarray) -> dict[str, np.ndarray]:
    """P(related) of each pair under every trained relation head (one backbone pass)."""
    u = torch.from_numpy(np.asarray(user, np.int64))
    probs = torch.sigmoid(run.model.head_logits(run.inputs(a), run.inputs(b), u)).numpy()
    return {name: probs[:, RELATIONS.index(name)] for name in run.relations}


def explain_ids(
    run: Run, pairs: list[tuple[str, str]], user: str | None = None, relation: str | None = None, target: str = "similarity",
    rule: str | None = None, bilrp: bool = False, out: Path | None = None, grid: int = 8, batch_size: int = 32,
) -> list[dict]:
    """Explain item-id pairs; returns one JSON-ready record per pair and writes files under ``out``."""
    from lrprec.explain.composites import DEFAULT_COMPOSITE, get_composite
    from lrprec.explain.targets import TARGETS, explain_pairs

    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    rule = rule or DEFAULT_COMPOSITE
    get_composite(rule)  # validates the name with a clear message
    if bilrp and target != "similarity":
        raise UsageError("BiLRP explains the similarity target only; drop --target or use --target similarity")
    cat = run.catalog
    a = np.asarray([cat.index_of(x) for x, _ in pairs], np.int64)
    b = np.asarray([cat.index_of(y) for _, y in pairs], np.int64)
    u = np.full(len(pairs), cat.user_index(user), np.int64)
    rel = resolve_relation(run, a, b, u, relation)
    xa, xb = run.inputs(a), run.inputs(b)
    expl = explain_pairs(run.model, xa, xb, torch.from_numpy(rel), torch.from_numpy(u), target=target, composite=rule, batch_size=batch_size)
    matrices = None
    if bilrp:
        from lrprec.explain.bilrp import bilrp as bilrp_fn

        matrices = bilrp_fn(run.model, xa, xb, torch.from_numpy(rel), torch.from_numpy(u), composite=rule, grid=grid).detach().numpy()
    rel_a = _hw(expl.relevance_a)
    rel_b = _hw(expl.relevance_b)
    records = []
    for k, (ia, ib) in enumerate(pairs):
        rec = {
            "item_a": ia, "item_b": ib, "user": user, "relation": RELATIONS[rel[k]],
            "probability": float(expl.probability[k]), "target": target, "target_value": float(expl.target_value[k]),
            "relevance_sum": {"a": float(rel_a[k].sum()), "b": float(rel_b[k].sum())},
            "absorbed": float(expl.absorbed[k]), "conservation": float(expl.conservation[k]), "rule": rule, "files": [],
        }
        if matrices is not None:
            rec["bilrp_sum"] = float(matrices[k].sum())
        if out is not None:
            d = Path(out) if len(pairs) == 1 else Path(out) / f"{ia}__{ib}"
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / "relevance_a.npy", lambda t: np.save(t, rel_a[k]))
            atomic_write(d / "relevance_b.npy", lambda t: np.save(t, rel_b[k]))
            rec["files"] += [str(d / "relevance_a.npy"), str(d / "relevance_b.npy")]
            if cat.images is not None:
                from lrprec.explain.render import bilrp_figure, pair_figure

                title = f"{RELATIONS[rel[k]]}  P = {rec['probability']:.3f}  user {user or '(global)'}  [{rule}, {target}]"
                rec["files"].append(str(pair_figure(cat.images[a[k]], cat.images[b[k]], rel_a[k], rel_b[k], d / "heatmaps.png", title, (ia, ib))))
                if matrices is not None:
                    rec["files"].append(str(bilrp_figure(cat.images[a[k]], cat.images[b[k]], matrices[k], grid, d / "bilrp.png")))
            if matrices is not None:
                atomic_write(d / "bilrp.npy", lambda t: np.save(t, matrices[k]))
                rec["files"].append(str(d / "bilrp.npy"))
            atomic_write_text(d / "explanation.json", json.dumps(rec, indent=2))
        records.append(rec)
    return records


def _hw(relevance: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) → (B, H, W) summed over channels; (B, F) features stay (B, F)."""
    r = relevance.detach().float().numpy()
    return r.sum(1) if r.ndim == 4 else r


def explain_recommendations(run: Run, result: dict, out_dir: Path) -> list[Path]:
    """Heatmaps for a recommendation result (query vs each recommended item) and a contact sheet."""
    from lrprec.explain.render import contact_sheet

    if run.catalog.images is None:
        raise UsageError("heatmaps need images; this catalog holds precomputed features only")
    out_dir = Path(out_dir)
    figures: list[Path] = []
    for rel, items in result["results"].items():
        groups = items.values() if isinstance(items, dict) else [items]
        flat = [r for g in groups for r in g]
        if not flat:
            continue
        recs = explain_ids(run, [(result["item"], r["item"]) for r in flat], user=result.get("user"), relation=rel, out=out_dir / rel)
        figures += [Path(f) for rec in recs for f in rec["files"] if f.endswith("heatmaps.png")]
    if figures:
        figures.append(contact_sheet(figures, out_dir / "contact_sheet.png"))
    return figures


def example_pairs(run: Run, split: str = "test", per_kind: int = 2, seed: int = 0) -> list[dict]:
    """Pick, per trained relation, true positives, a false positive and a false negative to show."""
    from lrprec.run import predict_logits

    cat = run.catalog
    pairs = cat.pairs(split)
    logits = predict_logits(run.model, cat, pairs, input_size=run.input_size)
    rng = np.random.default_rng(seed)
    picks = []
    for name in run.relations:
        sel = pairs.relation == RELATIONS.index(name)
        for kind, mask, n in (("true positive", (pairs.label == 1) & (logits > 0), per_kind), ("false positive", (pairs.label == 0) & (logits > 0), 1), ("false negative", (pairs.label == 1) & (logits <= 0), 1)):
            idx = np.flatnonzero(sel & mask)
            for k in rng.permutation(idx)[:n]:
                picks.append({"kind": kind, "relation": name, "item_a": cat.item_ids[pairs.a[k]], "item_b": cat.item_ids[pairs.b[k]],
                              "user": (cat.user_ids[pairs.user[k]] if pairs.user[k] >= 0 else None), "label": int(pairs.label[k])})
    return picks


def explain_examples(run: Run, out: Path, per_kind: int = 2) -> list[dict]:
    """Explain the demo's example pairs into ``out`` and index them in ``out/examples.json``."""
    records = []
    for ex in example_pairs(run, per_kind=per_kind):
        d = Path(out) / f"{ex['relation']}__{ex['item_a']}__{ex['item_b']}"
        rec = explain_ids(run, [(ex["item_a"], ex["item_b"])], user=ex["user"], relation=ex["relation"], out=d)[0]
        records.append({**ex, **rec})
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "examples.json", json.dumps(records, indent=2))
    return records
