"""Render ``RUN/report.html`` from the artifacts found in a run directory.

Each stage writes plain files (metrics.json, history.json, explain/, faithfulness/,
recommendations/); this module only reads them, so the report can be rebuilt any time
and a stage that was skipped simply has no section.

The markup lives in Jinja2 templates (``templates/``, autoescaped): ``report.html`` is the page,
``_sections.html`` holds one macro per section and ``_evaluation.html`` the evaluation tables that the
web app's run page shares. The functions here gather each section's data from the run directory into
plain dicts and lists and render the matching macro.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jinja2

from lrprec.files import atomic_write, atomic_write_text


@dataclass
class Section:
    id: str
    title: str
    html: str  # the section's body, already HTML (rendered from a template, or raw markup from the caller)


def _pct(x: float | None) -> str:
    if isinstance(x, jinja2.Undefined):  # a field missing from the data: say which
        x._fail_with_undefined_error()
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    if isinstance(x, jinja2.Undefined):
        x._fail_with_undefined_error()
    return "–" if x is None else f"{x:.{digits}f}"


@functools.cache
def _env() -> jinja2.Environment:
    # StrictUndefined: a key missing from a section's data is an error, not an empty cell
    env = jinja2.Environment(loader=jinja2.PackageLoader("lrprec.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    return env


def _render(template: str, macro: str, data: dict[str, Any]) -> str:
    """Call ``macro`` of ``template`` with ``data``; the result is HTML (a markupsafe.Markup, so templates
    that embed it do not escape it again).

    A field missing from the data (a metrics file of another version) raises KeyError, as reading
    the dict in Python would: the web run page skips a split it cannot render on that."""
    try:
        return getattr(_env().get_template(template).module, macro)(data)
    except jinja2.UndefinedError as exc:
        raise KeyError(f"{template} {macro}: {exc.message}") from exc


def _rel(run: Path, f: str | Path) -> str:
    """A link from the report (in RUN/) to a file, relative so the folder can be moved as a whole."""
    return os.path.relpath(Path(f).resolve(), run.resolve())


# -- the evaluation tables (report and web run page) ------------------------------------------------

def _table1_data(report: dict) -> dict:
    rels = list(report["relations"])
    cats = sorted({c for r in rels for c in report["relations"][r]["by_category"]})
    return {"relations": rels, "dim": str(report.get("dim", "")),
            "rows": [{"category": c, "cells": [report["relations"][r]["by_category"].get(c) for r in rels]} for c in cats],
            "totals": [report["relations"][r] for r in rels],
            "overall": report["overall"], "split": report.get("split", "test"), "personalized": report.get("personalized")}


def table1_html(report: dict) -> str:
    """Category × relation accuracy (AUC) table, the paper's Table 1 layout."""
    return _render("_evaluation.html", "table1", _table1_data(report))


def _ranking_data(ranking: dict, baselines: dict[str, dict] | None = None) -> dict:
    cols = ("recall@10", "recall@50", "ndcg@10", "mrr")
    methods = {"model": ranking, **{k: v for k, v in (baselines or {}).items() if v}}
    rows = []
    for r in list(ranking["relations"]) + ["all", "user-carrying"]:
        for name, rep in methods.items():
            m = rep["overall"] if r == "all" else rep.get("personalized") if r == "user-carrying" else rep["relations"].get(r)
            if not m or not m.get("n"):
                continue
            rows.append({"relation": r if name == "model" else "", "method": name, "model": name == "model",
                         "scores": [m[c] for c in cols], "median_rank": m["median_rank"], "n": m["n"]})
    return {"n_items": ranking["n_items"], "columns": cols, "rows": rows}


def ranking_html(ranking: dict, baselines: dict[str, dict] | None = None) -> str:
    """Recall@10/50, NDCG@10, MRR per relation (rows) for the model and, beside it, each baseline."""
    return _render("_evaluation.html", "ranking", _ranking_data(ranking, baselines))


def _truth_data(truth: dict) -> dict:
    rows = [{"relation": r, "precision": e["precision"], "right_side": e["right_side"], "ideal": e["ideal"], "chance": e["chance"],
             "users": {"precision": e["users_precision"], "min_precision": e["users_min_precision"]} if "users_precision" in e else None}
            for r, e in truth["relations"].items()]
    return {"k": truth["k"], "queries": truth["queries"], "rows": rows}


def truth_html(truth: dict) -> str:
    """Precision@k of top-k lists against the synthetic catalog's rules (global θ and per user)."""
    return _render("_evaluation.html", "truth", _truth_data(truth))


def _evaluation_data(split: str, rep: dict, baselines: dict[str, dict] | None = None, level: int = 3) -> dict:
    protocols = [{"negatives": neg, "table": _table1_data({**prot, "split": split, "dim": rep.get("dim")})}
                 for neg, prot in rep.get("protocols", {"category": rep}).items()]
    ranking = _ranking_data(rep["ranking"], {k: v.get("ranking") for k, v in (baselines or {}).items()}) if rep.get("ranking") else None
    return {"split": split, "level": level, "head": str(rep.get("head", "metric")), "train_negatives": str(rep.get("train_negatives", "category")),
            "protocols": protocols, "ranking": ranking, "truth": _truth_data(rep["truth"]) if rep.get("truth") else None}


def evaluation_html(split: str, rep: dict, baselines: dict[str, dict] | None = None, level: int = 3) -> str:
    """One split of ``lrprec evaluate``: Table 1 per negative protocol, the ranking (baselines beside
    the model), and the truth check — shared by the report and the web run page."""
    return _render("_evaluation.html", "evaluation", _evaluation_data(split, rep, baselines, level))


def read_baselines(run: Path) -> dict[str, dict[str, dict]]:
    """``RUN/baselines.json`` ({split: {name: report}}) when the demo (or a user) stored baselines there."""
    path = run / "baselines.json"
    return json.loads(path.read_text()) if path.exists() else {}


# -- the sections ----------------------------------------------------------------------------------

def _section(id: str, title: str, macro: str, data: dict) -> Section:
    return Section(id, title, _render("_sections.html", macro, data))


def _metrics_section(run: Path) -> Section | None:
    path = run / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    baselines = read_baselines(run)
    splits = [_evaluation_data(split, rep, baselines.get(split)) for split, rep in metrics.items()]
    return _section("table1", "Link prediction (Table 1 layout) and ranking", "metrics", {"splits": splits})


def _comparison_section(run: Path) -> Section | None:
    path = run / "comparison.json"
    if not path.exists():
        return None
    comp = json.loads(path.read_text())
    rows = [{"name": name, "accuracy": r["overall"]["accuracy"], "auc": r["overall"]["auc"],
             "personalized_accuracy": (r.get("personalized") or {}).get("accuracy")} for name, r in comp.items()]
    return _section("ablation", "Does end-to-end training and personalization matter?", "comparison", {"rows": rows})


def _training_section(run: Path) -> Section | None:
    hist_path = run / "history.json"
    if not hist_path.exists():
        return None
    hist = json.loads(hist_path.read_text())
    fig = run / "figures" / "training.png"
    if not fig.exists():
        plot_training(hist, fig)
    data = {"figure": str(fig.relative_to(run)), "epochs": hist["epochs"], "best_epoch": hist["best"]["epoch"]}
    return _section("training", "Training", "training", data)


def plot_training(hist: dict, path: Path) -> Path:
    """Plot the training history (loss and validation accuracy per epoch, from history.json) to ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = hist["epochs"]
    x = [e["epoch"] for e in ep]
    fig, ax1 = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    ax1.plot(x, [e["loss"] for e in ep], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(x, [100 * e["val_accuracy"] for e in ep], "s-", color="tab:green", label="validation accuracy")
    ax2.set_ylabel("validation accuracy %", color="tab:green")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, fig.savefig)
    plt.close(fig)
    return path


def _examples_section(run: Path) -> Section | None:
    path = run / "explain" / "examples" / "examples.json"
    if not path.exists():
        return None
    recs = json.loads(path.read_text())
    relations = []
    for rel in dict.fromkeys(r["relation"] for r in recs):
        pairs = []
        for r in (x for x in recs if x["relation"] == rel):
            img = next((f for f in r["files"] if f.endswith("heatmaps.png")), None)
            if img:
                pairs.append({"image": _rel(run, img), "kind": r["kind"], "probability": r["probability"], "user": r["user"],
                              "conservation": r.get("conservation")})
        relations.append({"name": rel, "pairs": pairs})
    data = {"rule": recs[0]["rule"] if recs else "", "relations": relations}
    return _section("explanations", "Explained pairs (first-order LRP)", "examples", data)


def _faithfulness_section(run: Path) -> Section | None:
    path = run / "faithfulness" / "faithfulness.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    imputers = list(res.get("imputers") or [])
    first = imputers[0] if imputers else None

    def key(kv: tuple[str, dict]) -> float:
        m = kv[1]
        v = (m.get("srg") or {}).get(first) if first else None
        return -(v if v is not None else (m["aopc"].get("morf") or -1e9))

    rows = []
    for name, m in sorted(res["methods"].items(), key=key):
        aopc = m["aopc"]
        srg = []
        for imp in imputers:
            lo, hi = (m.get("srg_ci95") or {}).get(imp) or [None, None]
            srg.append({"value": (m.get("srg") or {}).get(imp), "lo": lo, "hi": hi})
        rnd = m.get("randomization") or {}
        rows.append({"name": name, "srg": srg,
                     "randomization": {"passed": rnd["passed"], "rho": rnd["spearman"][-1]} if rnd.get("spearman") else None,
                     "morf": aopc.get("morf"), "morf_ci": m.get("aopc_ci95", {}).get("morf") or [None, None], "lrf": aopc.get("lrf"),
                     "random": aopc.get("random"),
                     "gap": None if aopc.get("morf") is None or aopc.get("random") is None else aopc["morf"] - aopc["random"],
                     "relevance_mass": m.get("relevance_mass"), "pointing_game": m.get("pointing_game")})
    data = {"pairs": res["pairs"], "split": str(res.get("split", "test")), "image": str(res.get("image", "a")), "region": res["region"],
            "imputers": imputers, "taus": res.get("ranking_tau_pairs") or {},
            "threshold": (res.get("randomization") or {}).get("threshold", 0.5), "steps": res["steps"], "fill": first or "uniform",
            "mask_area_fraction": res.get("mask_area_fraction"), "rows": rows,
            "figures": [_rel(run, p) for p in res.get("files", []) if p.endswith(".png")]}
    return _section("faithfulness", "How faithful are the explanations?", "faithfulness", data)


def _recommendations_section(run: Path) -> Section | None:
    path = run / "recommendations" / "recommendations.json"
    if not path.exists():
        return None
    queries = []
    for r in json.loads(path.read_text()):
        relations = [{"name": rel, "picks": [{"image": _rel(run, x["image"]), "item": x["item"], "category": c, "probability": x["probability"]}
                                             for c, lst in cats.items() for x in lst[:1] if x.get("image")]}
                     for rel, cats in r.get("per_category", {}).items()]
        queries.append({"item": r["item"], "title": r.get("title", ""), "user": r["user"],
                        "query_image": _rel(run, r["query_image"]) if r.get("query_image") else None,
                        "relations": relations, "figures": [_rel(run, f) for f in r.get("figures", [])]})
    return _section("recommendations", "Recommendations with explanations", "recommendations", {"queries": queries})


def _guidance_section(run: Path) -> Section | None:
    path = run / "guidance.json"
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    cat, tr = g["catalog"], g["train"]
    rows = []
    for name, r in g["variants"].items():
        cf, ind = r.get("counterfactual") or {}, r.get("independent") or {}
        rows.append({"name": name, "test_accuracy": r["test_accuracy"], "agrees": r["test_accuracy_mark_agrees"],
                     "disagrees": r["test_accuracy_mark_disagrees"], "sensitivity": cf["sensitivity"] if cf else None,
                     "mark_share": r["mark_share"], "mark_share_ci": r["mark_share_ci"], "independent_share": ind.get("mark_share"),
                     "alarm": r.get("alarm"), "figure": _rel(run, r["figure"]) if r.get("figure") else None})
    data = {"catalog_items": cat["items"], "catalog_seed": cat["seed"], "spurious": cat["spurious"], "epochs": tr["epochs"],
            "mark_area": next(iter(g["variants"].values()))["mark_area"], "example_relation": g.get("example_relation", ""), "rows": rows}
    return _section("guidance", "Explanation-guided training: does the model look at the right pixels?", "guidance", data)


def _shortcut_row(run: Path, name: str, r: dict) -> dict:
    """One model's row of the audit → correct table (a shortcut report, lrprec.app.evaluation.shortcut_report)."""
    return {"name": name, "test_accuracy": r["test_accuracy"], "disagrees": r["test_accuracy_mark_disagrees"],
            "sensitivity": (r.get("counterfactual") or {}).get("sensitivity"), "mark_share": r["mark_share"], "alarm": r.get("alarm"),
            "probe": r.get("probe"), "figure": _rel(run, r["figure"]) if r.get("figure") else None}


def _audit_correct_section(run: Path) -> Section | None:
    """The demo's audit → correct story (RUN/guidance.json's ``audit_correct``, lrprec.demo.audit_correct_result)."""
    path = run / "guidance.json"
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    ac = g.get("audit_correct")
    if not ac:
        return None
    variants = g["variants"]
    clusters = [{**c, "figure": _rel(run, c["figure"]), "tests": [{"name": k, "effect": v["effect"], "cost": v["cost"]} for k, v in c["tests"].items()]}
                for c in ac["clusters"]]
    flagged = next((c for c in clusters if c["id"] == ac["audit"]["flagged"]), None)
    corr = ac.get("correction")
    data = {"audit": ac["audit"], "clusters": clusters, "flagged": flagged, "epochs": g["train"]["epochs"],
            "plain": _shortcut_row(run, f"plain: {ac['plain']}", variants[ac["plain"]]),
            "oracle": _shortcut_row(run, f"oracle, told the mark: {ac['oracle']}", variants[ac["oracle"]]),
            "corrected": _shortcut_row(run, "corrected: lrprec audit, then lrprec correct (defaults)", ac["corrected"]) if ac.get("corrected") else None,
            "correction": {"method": corr["method"], "epochs": corr["epochs"], "directions": corr["directions"],
                           "region_area": corr.get("region_area")} if corr else None}
    return _section("audit-correct", "Audit → correct: finding the shortcut without being told, and removing it", "audit_correct", data)


def _audit_section(run: Path) -> Section | None:
    path = run / "audit" / "audit.json"
    if not path.exists():
        return None
    a = json.loads(path.read_text())
    rows = [{"id": c["id"], "size": c["size"], "score": c["score"], "suspicious": c["suspicious"],
             "tests": [{"name": k, "effect": v["effect"], "cost": v["cost"]} for k, v in c.get("tests", {}).items()],
             "figure": _rel(run, path.parent / c["figure"]) if c.get("figure") else None} for c in a["clusters"]]
    data = {"pairs": a["pairs"], "heatmaps": a["heatmaps"], "split": a["split"], "flagged": a["flagged"], "rows": rows,
            "rule": a.get("rule") or {}, "run": run.name}
    return _section("audit", "Audit: strategies found in the heatmaps (SpRAy), judged by behaviour", "audit", data)


# Later stages register their section builders here (name -> function(run) -> Section | None).
SECTION_BUILDERS: list[Callable[[Path], Section | None]] = [_metrics_section, _comparison_section, _training_section, _examples_section, _faithfulness_section, _guidance_section, _audit_correct_section, _audit_section, _recommendations_section]


def write_report(run: str | Path, title: str | None = None, extra: list[Section] | None = None) -> Path:
    """Write ``RUN/report.html`` from whatever the run directory holds; returns its path."""
    run = Path(run)
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    sections = [s for b in SECTION_BUILDERS if (s := b(run)) is not None] + list(extra or [])
    config = {"backbone": cfg.get("backbone", "?"), "dim": cfg.get("dim", "?"), "relations": cfg.get("relations") or [], "catalog": cfg.get("catalog", "?")}
    out = run / "report.html"
    atomic_write_text(out, _env().get_template("report.html").render(title=title or run.name, config=config, sections=sections))
    return out
