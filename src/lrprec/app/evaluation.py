"""Evaluating runs and storing the results: RUN/metrics.json, baseline reports, comparisons, the shortcut report."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from lrprec.data.catalog import NEGATIVE_PROTOCOLS, RELATIONS
from lrprec.data.watermark import catalog_artifact
from lrprec.defaults import GUIDE_COMPOSITE
from lrprec.errors import UsageError
from lrprec.evaluate.baselines import baseline_name, evaluate_baseline
from lrprec.evaluate.compare import unique_name
from lrprec.evaluate.linkpred import link_prediction_report
from lrprec.evaluate.perturbation import bootstrap_ci
from lrprec.evaluate.probe import linear_probe
from lrprec.evaluate.ranking import ModelScorer, ranking_report
from lrprec.evaluate.shortcut import (VARIANTS, alarm, counterfactual_probabilities, mark_share, shortcut_arrays,
                                     shortcut_sensitivity)
from lrprec.evaluate.truth import truth_report
from lrprec.explain.baselines import attribute
from lrprec.explain.targets import explain_catalog_pairs
from lrprec.model.backbones import preprocess
from lrprec.run import Run, atomic_write_text, embed_items, item_inputs, predict_logits


def evaluate_run(path, split: str = "test") -> dict:
    """Evaluate a run on a split and store the result in ``RUN/metrics.json`` (per split).

    The report's top level is Table 1 under the ``category`` negatives (as before protocols
    existed); ``protocols`` holds Table 1 under every stored protocol (``category``,
    ``random``); ``ranking`` ranks each held-out positive among all catalog items
    (:mod:`lrprec.evaluate.ranking`); ``truth`` grades top-10 lists against the synthetic
    catalog's rules (None for other catalogs). Every item goes through the backbone once.
    """
    if split not in ("validation", "test"):
        raise UsageError(f"--split must be validation or test, got {split!r}")
    run = Run.load(path)
    cat = run.catalog
    scorer = ModelScorer.from_catalog(run.model, cat, run.input_size)
    protocols = {}
    for neg in NEGATIVE_PROTOCOLS:
        if neg == "category" or cat.has_protocol(neg):
            pairs = cat.pairs(split, neg)
            protocols[neg] = link_prediction_report(cat, pairs, scorer.pair_logits(pairs), run.relations)
    report = dict(protocols["category"])
    report.update({
        "split": split, "dim": run.config["dim"], "backbone": run.config["backbone"], "negatives": "category",
        "head": run.config.get("head", "metric"), "train_negatives": run.config.get("negatives", "category"),
        "protocols": protocols,
        "ranking": ranking_report(cat, cat.pairs(split), scorer, run.relations),
        "truth": truth_report(cat, scorer, run.relations),
    })
    metrics_path = run.path / "metrics.json"
    stored = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    stored[split] = report
    atomic_write_text(metrics_path, json.dumps(stored, indent=2))
    return report


def compare_reports(
    items: list[str | os.PathLike],
    split: str = "test",
    *,
    catalog: str | os.PathLike | None = None,
    seed: int = 0,
    relations: list[str] | None = None,
    log=None,
) -> dict[str, dict]:
    """Reports for each item, in order, named for display: ``{name: report}``.

    An item is a run folder (evaluated on ``split`` with ``evaluate_run``), a stored report
    JSON file (``lrprec baseline --out FILE`` / ``evaluate --json`` output), or a baseline name
    (``random``, ``category-tree``/``ct``, ``wnn``; ``baseline:NAME`` when a folder of that
    name exists). Baselines run on ``catalog``, by default the runs' catalog, over the runs'
    relations (so the columns line up).
    """
    if not items:
        raise UsageError("nothing to compare: give run folders, report files or baseline names")
    kinds: list[tuple[str, object]] = []
    for it in items:
        s = str(it)
        p = Path(s)
        if s.lower().startswith("baseline:"):
            kinds.append(("baseline", baseline_name(s.split(":", 1)[1])))
        elif p.is_dir():
            if not (p / "config.json").is_file():
                raise UsageError(f"{p} is not an lrprec run (no config.json)")
            kinds.append(("run", p))
        elif p.is_file():
            kinds.append(("file", p))
        else:
            try:
                kinds.append(("baseline", baseline_name(s)))
            except ValueError:
                raise UsageError(f"{s!r} is neither a run folder, a report file nor a baseline "
                                 f"(random, category-tree, wnn)") from None
    run_cfgs = {p: json.loads((p / "config.json").read_text()) for k, p in kinds if k == "run"}
    if any(k == "baseline" for k, _ in kinds) and catalog is None:
        roots = sorted({str(c.get("catalog")) for c in run_cfgs.values() if c.get("catalog")})
        if not roots:
            raise UsageError("baselines need a catalog: give --catalog DATA (or a run trained on it)")
        if len(roots) > 1:
            raise UsageError(f"the runs come from different catalogs ({', '.join(roots)}); give --catalog DATA for the baselines")
        catalog = roots[0]
    if relations is None and run_cfgs:
        trained = {r for c in run_cfgs.values() for r in c.get("relations") or []}
        relations = [r for r in RELATIONS if r in trained] or None
    out: dict[str, dict] = {}
    for kind, obj in kinds:
        if kind == "run":
            rep = evaluate_run(obj, split)
            rep.setdefault("catalog", run_cfgs[obj].get("catalog"))
            out[unique_name(Path(obj).name or str(obj), out)] = rep
        elif kind == "file":
            try:
                rep = json.loads(Path(obj).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UsageError(f"{obj} is not a readable report JSON: {exc}") from None
            if isinstance(rep, dict) and split in rep and "relations" not in rep:  # a run's metrics.json
                rep = rep[split]
            if not isinstance(rep, dict) or "relations" not in rep or "overall" not in rep:
                raise UsageError(f"{obj} is not a link-prediction report (no 'relations'/'overall')")
            out[unique_name(Path(obj).stem, out)] = rep
        else:
            if log:
                log(f"baseline {obj} on {catalog} ({split})")
            out[unique_name(str(obj), out)] = evaluate_baseline(catalog, str(obj), split=split, seed=seed, relations=relations)
    return out


def shortcut_report(run_path: str | os.PathLike, pairs: int = 256, composite: str | None = None, batch_size: int = 64,
                    independent_pairs: int = 64, split: str = "test", probe: bool = True) -> dict:
    """Measure a run's reliance on its catalog's watermark, by explanation and by behaviour
    (:mod:`lrprec.evaluate.shortcut`); stored as ``RUN/shortcut.json``.

    ``pairs`` validation pairs are explained with LRP (``composite``; default: the composite the
    run's guidance penalized, else :data:`lrprec.defaults.GUIDE_COMPOSITE`) and as many test pairs
    re-scored with the mark stamped/removed; ``independent_pairs`` of the explained pairs are
    also explained with integrated gradients (0: skip). ``split``: the pairs the behaviour is
    measured on — ``test`` to report, ``validation`` to choose settings (then the report keeps
    its key names, says ``split``, and is stored as ``RUN/shortcut_validation.json``). On a tint catalog
    (``--spurious-kind tint``) the relevance share is skipped (the cast covers every pixel) and the
    counterfactuals apply/remove the tint. ``probe``: a cross-validated linear probe of the artifact's
    tag from the features the head reads, every catalog item (:mod:`lrprec.evaluate.probe`)."""
    if split not in ("validation", "test"):
        raise UsageError(f"split must be validation or test, got {split!r}")
    if pairs <= 0:
        raise UsageError("--pairs must be positive")
    run = Run.load(run_path)
    if run.model.backbone.kind == "features":
        raise UsageError("the shortcut report explains images; this run reads precomputed features")
    composite = composite or run.config.get("guide_rule") or GUIDE_COMPOSITE
    cat = run.catalog
    tags, marks = shortcut_arrays(cat)
    artifact = catalog_artifact(cat.root, cat.meta, cat.images)
    sel = cat.pairs("validation").spread(pairs)
    shares, mark_px, marked = np.empty(0), None, np.zeros(0, bool)
    if artifact.kind == "mark":  # a tint covers every pixel: its relevance share says nothing
        relevance = explain_catalog_pairs(run.model, cat, sel, run.input_size, "logit", composite, batch_size)
        rows = np.concatenate([sel.a, sel.b])
        marked = tags[rows] == 1  # only these images carry the watermark
        mark_px = torch.from_numpy(np.asarray(marks[rows[marked]]))
        shares = mark_share(relevance[torch.from_numpy(marked)], mark_px)
        shares = shares[np.isfinite(shares)]
    lo, hi = bootstrap_ci(shares) if shares.size > 1 else (float("nan"), float("nan"))

    test = cat.pairs(split)
    logits = predict_logits(run.model, cat, test, input_size=run.input_size)
    correct = (logits > 0) == (test.label == 1)
    agrees = (tags[test.a] == tags[test.b]) == (test.label == 1)

    def acc(sel_: np.ndarray) -> float | None:
        return float(correct[sel_].mean()) if sel_.any() else None

    # behaviour: the same test pairs with the mark on both, on neither, on image a only
    cf_pairs = test.spread(pairs)
    rel_t, usr_t = torch.from_numpy(cf_pairs.relation), torch.from_numpy(cf_pairs.user)
    model = run.model.eval()

    @torch.inference_mode()
    def score(images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(images_a), batch_size):
            xa = preprocess(images_a[s:s + batch_size], model.backbone, run.input_size)
            xb = preprocess(images_b[s:s + batch_size], model.backbone, run.input_size)
            out.append(torch.sigmoid(model(xa, xb, rel_t[s:s + batch_size], usr_t[s:s + batch_size])).double().numpy())
        return np.concatenate(out)

    probs = counterfactual_probabilities(score, np.asarray(cat.images[cf_pairs.a]), np.asarray(cat.images[cf_pairs.b]), artifact,
                                         rows=(cf_pairs.a, cf_pairs.b))
    sens = shortcut_sensitivity(probs)
    s_lo, s_hi = bootstrap_ci(sens) if sens.size > 1 else (float("nan"), float("nan"))
    counterfactual = {"pairs": int(sens.size), "sensitivity": float(sens.mean()), "sensitivity_ci": [s_lo, s_hi],
                      "mean_p": {v: float(probs[v].mean()) for v in VARIANTS}}
    # the mark's share under an explainer that no training penalized
    independent = None
    if independent_pairs > 0 and artifact.kind == "mark":
        k = min(independent_pairs, len(sel))
        sub_pairs = sel.take(np.arange(k))
        xa = item_inputs(cat, model, sub_pairs.a, run.input_size)
        xb = item_inputs(cat, model, sub_pairs.b, run.input_size)
        ra, rb = attribute(model, xa, xb, sub_pairs.relation, sub_pairs.user, "integrated_gradients", target="logit")
        sub_rows = np.concatenate([sub_pairs.a, sub_pairs.b])
        sub_marked = tags[sub_rows] == 1
        ig = mark_share(torch.cat([ra, rb])[torch.from_numpy(sub_marked)], torch.from_numpy(np.asarray(marks[sub_rows[sub_marked]])))
        ig = ig[np.isfinite(ig)]
        independent = {"method": "integrated_gradients", "n_images": int(ig.size), "mark_share": float(ig.mean()) if ig.size else None}

    report = {
        "run": str(run.path), "composite": composite, "n_images": int(shares.size),
        "mark_share": float(shares.mean()) if shares.size else None, "mark_share_ci": [lo, hi],
        "mark_area": float(mark_px.bool().float().mean()) if mark_px is not None and marked.any() else None,
        "test_accuracy": float(correct.mean()), "test_accuracy_mark_agrees": acc(agrees), "test_accuracy_mark_disagrees": acc(~agrees),
        "test_pairs_mark_agrees": int(agrees.sum()), "test_pairs": int(len(test)), "split": split,
        "counterfactual": counterfactual, "independent": independent, "kind": artifact.kind,
        "probe": linear_probe(embed_items(model, cat, run.input_size).double().numpy(), tags) if probe else None,
        "guide": {k: run.config.get(k) for k in ("guide", "guide_weight", "guide_masks")},
    }
    report["alarm"] = alarm(counterfactual["sensitivity"], report["test_accuracy_mark_agrees"], report["test_accuracy_mark_disagrees"],
                            report["mark_share"], report["mark_area"])
    atomic_write_text(run.path / ("shortcut.json" if split == "test" else "shortcut_validation.json"), json.dumps(report, indent=2))
    return report


def write_baseline_report(report: dict, path: str | os.PathLike) -> Path:
    """Store a baseline report as JSON (what ``compare_reports`` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2))
    return path
