"""Render ``RUN/report.html`` from the artifacts found in a run directory.

Each stage writes plain files (metrics.json, history.json, explain/, faithfulness/,
recommendations/); this module only reads them, so the report can be rebuilt any time
and a stage that was skipped simply has no section.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jinja2


@dataclass
class Section:
    id: str
    title: str
    html: str


def _table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = classes[i] if classes else [""] * len(row)
        out.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in zip(row, cls)) + "</tr>")
    return "".join(out) + "</table>"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table1_html(report: dict) -> str:
    """Category × relation accuracy (AUC) table, the paper's Table 1 layout."""
    rels = list(report["relations"])
    cats = sorted({c for r in rels for c in report["relations"][r]["by_category"]})
    k = str(report.get("dim", ""))

    def cell(d: dict | None) -> str:
        if not d or d.get("accuracy") is None:
            return "–"
        return f"{_pct(d['accuracy'])} <span class='muted'>({d['auc']:.3f})</span>" if d.get("auc") is not None else _pct(d["accuracy"])

    rows = [[html.escape(c), k] + [cell(report["relations"][r]["by_category"].get(c)) for r in rels] for c in cats]
    rows.append(["<b>all</b>", k] + [f"<b>{cell(report['relations'][r])}</b>" for r in rels])
    ov = report["overall"]
    extra = f"<p>Overall accuracy <b>{_pct(ov['accuracy'])}%</b>, ROC-AUC {ov['auc']:.3f} on {ov['n']} {report.get('split', 'test')} pairs (half positives, half negatives: chance is 50%)."
    if report.get("personalized"):
        extra += f" User-carrying pairs: {_pct(report['personalized']['accuracy'])}% (n = {report['personalized']['n']})."
    return _table(["category", "K"] + rels, rows) + extra + "</p><p class='muted'>cells: accuracy % at P &gt; 0.5 (ROC-AUC)</p>"


def _training_section(run: Path) -> Section | None:
    hist_path = run / "history.json"
    if not hist_path.exists():
        return None
    hist = json.loads(hist_path.read_text())
    fig = run / "figures" / "training.png"
    if not fig.exists():
        plot_training(hist, fig)
    ep = hist["epochs"]
    rows = [[str(e["epoch"]), f"{e['loss']:.4f}", _pct(e["val_accuracy"]), f"{e['pairs_per_second']:.0f}"] for e in ep]
    body = f'<div class="fig"><img src="{fig.relative_to(run)}" alt="training curves" width="640"></div>'
    body += _table(["epoch", "train loss", "val accuracy %", "pairs/s"], rows)
    body += f"<p>Best epoch: {hist['best']['epoch']} (its weights are kept).</p>"
    return Section("training", "Training", body)


def plot_training(hist: dict, path: Path) -> Path:
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
    fig.savefig(path)
    plt.close(fig)
    return path


def ranking_html(ranking: dict, baselines: dict[str, dict] | None = None) -> str:
    """Recall@10/50, NDCG@10, MRR per relation (rows) for the model and, beside it, each baseline."""
    cols = ("recall@10", "recall@50", "ndcg@10", "mrr")
    methods = {"model": ranking, **{k: v for k, v in (baselines or {}).items() if v}}
    rows = []
    for r in list(ranking["relations"]) + ["all", "user-carrying"]:
        for name, rep in methods.items():
            m = rep["overall"] if r == "all" else rep.get("personalized") if r == "user-carrying" else rep["relations"].get(r)
            if not m or not m.get("n"):
                continue
            cells = [f"{m[c]:.3f}" for c in cols]
            rows.append([html.escape(r) if name == "model" else "", html.escape(name)] + (["<b>" + c + "</b>" for c in cells] if name == "model" else cells) + [f"{m['median_rank']:.0f}", str(m["n"])])
    return (f"<p>Each held-out positive (i, j) is ranked among all {ranking['n_items']} items ≠ i by the method's score: "
            "what a user of the top-k sees. Several items are truly related to a query, so even a perfect model ranks the "
            "held-out one uniformly among them: compare methods, not against 1.</p>"
            + _table(["relation", "method", *cols, "median rank", "n"], rows))


def truth_html(truth: dict) -> str:
    """Precision@k of top-k lists against the synthetic catalog's rules (global θ and per user)."""
    rows = []
    for r, e in truth["relations"].items():
        users = f"{e['users_precision']:.2f} (min {e['users_min_precision']:.2f})" if "users_precision" in e else "–"
        rows.append([html.escape(r), f"<b>{e['precision']:.3f}</b>", f"{e['right_side']:.3f}", f"{e['ideal']:.2f}", f"{e['chance']:.3f}", users])
    return (f"<p>The catalog knows its rules, so the top-{truth['k']} list of every query item ({truth['queries']} queries) can be graded: "
            "precision = share of the list the rules relate to the query; right side = share on the relation's category side "
            "(same category for a substitute, another for a complement); users = the same under each user's θ against that user's attribute.</p>"
            + _table(["relation", f"precision@{truth['k']}", "right category side", "best possible", "chance", "users' θ: mean (min)"], rows))


def evaluation_html(split: str, rep: dict, baselines: dict[str, dict] | None = None, level: int = 3) -> str:
    """One split of ``lrprec evaluate``: Table 1 per negative protocol, the ranking (baselines beside
    the model), and the truth check — shared by the report and the web run page."""
    h = f"h{level}"
    body = f"<p class='muted'>head: {html.escape(str(rep.get('head', 'metric')))}, training negatives: {html.escape(str(rep.get('train_negatives', 'category')))}</p>"
    for neg, prot in rep.get("protocols", {"category": rep}).items():
        body += f"<{h}>{html.escape(split)} split, {html.escape(neg)} negatives</{h}>" + table1_html({**prot, "split": split, "dim": rep.get("dim")})
    if rep.get("ranking"):
        body += f"<{h}>{html.escape(split)} split: ranking over the whole catalog</{h}>"
        body += ranking_html(rep["ranking"], {k: v.get("ranking") for k, v in (baselines or {}).items()})
    if rep.get("truth"):
        body += f"<{h}>Top-{rep['truth']['k']} lists against the catalog's rules</{h}>" + truth_html(rep["truth"])
    return body


def read_baselines(run: Path) -> dict[str, dict[str, dict]]:
    """``RUN/baselines.json`` ({split: {name: report}}) when the demo (or a user) stored baselines there."""
    path = run / "baselines.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _metrics_section(run: Path) -> Section | None:
    path = run / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    baselines = read_baselines(run)
    body = "".join(evaluation_html(split, rep, baselines.get(split)) for split, rep in metrics.items())
    return Section("table1", "Link prediction (Table 1 layout) and ranking", body)


def _comparison_section(run: Path) -> Section | None:
    path = run / "comparison.json"
    if not path.exists():
        return None
    comp = json.loads(path.read_text())
    rows = [[html.escape(name), _pct(r["overall"]["accuracy"]), f"{r['overall']['auc']:.3f}", _pct((r.get("personalized") or {}).get("accuracy"))] for name, r in comp.items()]
    body = "<p>Design choices measured on the same catalog and seed (test split).</p>" + _table(["variant", "accuracy %", "AUC", "user-carrying pairs %"], rows)
    return Section("ablation", "Does end-to-end training and personalization matter?", body)


def _rel(run: Path, f: str) -> str:
    """A link from the report (in RUN/) to a file, relative so the folder can be moved as a whole."""
    import os

    return os.path.relpath(Path(f).resolve(), run.resolve())


def _examples_section(run: Path) -> Section | None:
    path = run / "explain" / "examples" / "examples.json"
    if not path.exists():
        return None
    recs = json.loads(path.read_text())
    parts = ["<p>LRP relevance on both images of test pairs (red: speaks for the relation, blue: against), "
             "for true positives, a false positive and a false negative of each relation. Rule: "
             f"<code>{html.escape(recs[0]['rule']) if recs else ''}</code>, target: similarity. Ground truth: each relation is "
             "decided by one attribute (pattern or brand mark; colour only for users who buy by colour), so a faithful map lights up that part of the item.</p>"]
    for rel in dict.fromkeys(r["relation"] for r in recs):
        parts.append(f"<h3>{html.escape(rel)}</h3>")
        for r in (x for x in recs if x["relation"] == rel):
            img = next((f for f in r["files"] if f.endswith("heatmaps.png")), None)
            if img:
                cap = f"{html.escape(r['kind'])}: P = {r['probability']:.3f}, user {html.escape(r['user'] or 'global')}"
                if "conservation" in r:
                    cap += f", conservation Σ R / S = {r['conservation']:.2f}"
                parts.append(f'<div class="fig"><img src="{_rel(run, img)}" alt="{cap}" width="620"><br><span class="muted">{cap}</span></div>')
    return Section("explanations", "Explained pairs (first-order LRP)", "".join(parts))


def _faithfulness_section(run: Path) -> Section | None:
    path = run / "faithfulness" / "faithfulness.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())

    def f(x: float | None, d: int = 3) -> str:
        return "–" if x is None else f"{x:.{d}f}"

    imputers = list(res.get("imputers") or [])
    first = imputers[0] if imputers else None

    def key(kv: tuple[str, dict]) -> float:
        m = kv[1]
        v = (m.get("srg") or {}).get(first) if first else None
        return -(v if v is not None else (m["aopc"].get("morf") or -1e9))

    rows = []
    for name, m in sorted(res["methods"].items(), key=key):
        ci = m.get("aopc_ci95", {}).get("morf") or [None, None]
        gap = None if m["aopc"].get("morf") is None or m["aopc"].get("random") is None else m["aopc"]["morf"] - m["aopc"]["random"]
        srg_cells = []
        for imp in imputers:
            lo, hi = (m.get("srg_ci95") or {}).get(imp) or [None, None]
            srg_cells.append(f"{f((m.get('srg') or {}).get(imp))} [{f(lo)}, {f(hi)}]")
        rnd = m.get("randomization") or {}
        check = "–" if not rnd.get("spearman") else f"{'pass' if rnd['passed'] else 'FAIL'} (ρ {rnd['spearman'][-1]:.2f})"
        rows.append([html.escape(name), *srg_cells, check, f(m["aopc"].get("morf")), f"[{f(ci[0])}, {f(ci[1])}]", f(m["aopc"].get("lrf")),
                     f(m["aopc"].get("random")), f(gap), f(m.get("relevance_mass")), f(m.get("pointing_game"))])
    taus = res.get("ranking_tau_pairs") or {}
    body = (f"<p>{res['pairs']} correctly predicted positive {html.escape(str(res.get('split', 'test')))} pairs, image {html.escape(str(res.get('image', 'a')))}. "
            f"Headline: symmetric relevance gain [Blücher et al. 2024], SRG = AUC(LIF) − AUC(MIF) of P(related) as the least / most relevant "
            f"{res['region']}×{res['region']} regions of one ordering are removed, from none to all, under each imputer "
            f"({html.escape(', '.join(imputers) or 'uniform')}); larger is more faithful, a random map scores about 0. "
            + (f"Kendall τ of the method ranking between imputers: {html.escape(', '.join(f'{k} {v:.2f}' for k, v in taus.items() if v is not None))}. " if taus else "")
            + "Randomization: the backbone's layers are randomized from the top; a method passes when the Spearman correlation of its maps "
            f"with the trained model's falls below {(res.get('randomization') or {}).get('threshold', 0.5)}. "
            f"AOPC [Samek et al. 2017]: mean drop of P(related) over {res['steps']} steps ({html.escape(first or 'uniform')} fill). Relevance mass: share of positive relevance inside the ground-truth mask "
            f"(a uniform map scores the mask's area fraction, {f(res.get('mask_area_fraction'))}).</p>")
    body += _table(["method", *[f"SRG {html.escape(imp)} [95% CI]" for imp in imputers], "randomization", "MoRF AOPC", "95% CI", "LRF AOPC",
                    "random AOPC", "gap", "relevance mass", "pointing game"], rows)
    for p in res.get("files", []):
        if p.endswith(".png"):
            body += f'<div class="fig"><img src="{_rel(run, p)}" width="520"></div>'
    return Section("faithfulness", "How faithful are the explanations?", body)


def _recommendations_section(run: Path) -> Section | None:
    path = run / "recommendations" / "recommendations.json"
    if not path.exists():
        return None
    recs = json.loads(path.read_text())
    parts = ["<p>For a query item and a user, the best item of every category to go with it (the paper's eq 5, with the "
             "personalized distance), and the top 5 per relation. Users differ in the attribute that drives their purchases.</p>"]
    for r in recs:
        parts.append(f"<h3>query {html.escape(r['item'])} ({html.escape(r.get('title', ''))}), user {html.escape(r['user'] or 'global')}</h3>")
        if r.get("query_image"):
            parts.append(f'<img src="{_rel(run, r["query_image"])}" width="96" alt="query">')
        for rel, cats in r.get("per_category", {}).items():
            cells = " ".join(f'<div class="fig"><img src="{_rel(run, x["image"])}" width="80" alt="{html.escape(x["item"])}"><br><span class="muted">{html.escape(c)}<br>P = {x["probability"]:.2f}</span></div>' for c, lst in cats.items() for x in lst[:1] if x.get("image"))
            parts.append(f"<p><b>{html.escape(rel)}</b> — per category:</p>{cells}")
        for img in r.get("figures", []):
            parts.append(f'<div class="fig"><img src="{_rel(run, img)}" width="620"></div>')
    return Section("recommendations", "Recommendations with explanations", "".join(parts))


def _guidance_section(run: Path) -> Section | None:
    path = run / "guidance.json"
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    cat, tr = g["catalog"], g["train"]
    rows, alarms = [], []
    for name, r in g["variants"].items():
        lo, hi = r["mark_share_ci"]
        cf, ind = r.get("counterfactual") or {}, r.get("independent") or {}
        rows.append([html.escape(name), _pct(r["test_accuracy"]), _pct(r["test_accuracy_mark_agrees"]), _pct(r["test_accuracy_mark_disagrees"]),
                     "–" if not cf else f"{cf['sensitivity']:+.3f}",
                     f"{_pct(r['mark_share'])} <span class='muted'>[{_pct(lo)}, {_pct(hi)}]</span>", _pct(ind.get("mark_share"))])
        if r.get("alarm"):
            alarms.append(f"<p><b>{html.escape(name)}</b>: {html.escape(r['alarm'])}</p>")
    area = next(iter(g["variants"].values()))["mark_area"]
    body = (f"<p>The paper's future work: feed explanations back into training. A shortcut catalog ({cat['items']} items, seed {cat['seed']}) "
            f"stamps a magenta corner watermark on half the items; on training pairs, 'both or neither carry it' agrees with the label "
            f"{100 * cat['spurious']:.0f}% of the time, in validation and test it carries no signal. Both models train {tr['epochs']} epochs "
            f"with the same seed; the guided one adds λ × the share of its LRP relevance (ε-γ-box, differentiable) that falls outside the "
            f"ground-truth masks, which exclude the watermark (<code>lrprec train --guide lrp</code>). Relevance on the watermark: mean share "
            f"of absolute LRP relevance on the watermark over watermarked validation images (the mark covers {_pct(area)}% of an image).</p>")
    body += ("<p>Shortcut sensitivity: the same test pairs re-scored with the mark on both images, on neither and on one; "
             "(P<sub>both</sub> + P<sub>neither</sub>) / 2 − P<sub>one</sub>, 0 when the mark does not matter. The last column is the "
             "mark's share under integrated gradients, an explainer no training penalized.</p>")
    body += _table(["model", "test accuracy %", "… where the mark agrees with the label", "… where it disagrees", "shortcut sensitivity",
                    "relevance on the watermark % (LRP) [95% CI]", "… (integrated gradients) %"], rows)
    body += "".join(alarms)
    for name, r in g["variants"].items():
        if r.get("figure"):
            body += f'<div class="fig"><img src="{_rel(run, r["figure"])}" width="620" alt="{html.escape(name)}"><br><span class="muted">{html.escape(name)}: the same validation pair ({html.escape(g.get("example_relation", ""))}, logit target)</span></div>'
    return Section("guidance", "Explanation-guided training: does the model look at the right pixels?", body)


# Later stages register their section builders here (name -> function(run) -> Section | None).
SECTION_BUILDERS: list[Callable[[Path], Section | None]] = [_metrics_section, _comparison_section, _training_section, _examples_section, _faithfulness_section, _guidance_section, _recommendations_section]


def write_report(run: str | Path, title: str | None = None, extra: list[Section] | None = None) -> Path:
    """Write ``RUN/report.html`` from whatever the run directory holds; returns its path."""
    run = Path(run)
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    sections = [s for b in SECTION_BUILDERS if (s := b(run)) is not None] + list(extra or [])
    env = jinja2.Environment(loader=jinja2.PackageLoader("lrprec.report", "templates"), autoescape=True)
    subtitle = f"backbone {cfg.get('backbone', '?')}, K = {cfg.get('dim', '?')}, relations {', '.join(cfg.get('relations', []))}, catalog {cfg.get('catalog', '?')}"
    out = run / "report.html"
    out.write_text(env.get_template("report.html").render(title=title or run.name, subtitle=subtitle, sections=sections))
    return out
