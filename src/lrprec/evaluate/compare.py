"""Several runs and baselines side by side in the paper's Table 1 layout.

Rows are category × run (each run's K shown), columns are relations, cells are accuracy in %
at P > 0.5; within each category the best run of each relation is starred. An ``all`` block
(every category) and one line per run with overall accuracy, ROC-AUC and pair count follow::

    category             run                 K  also_viewed  also_bought
    bag                  random              -        49.0         51.3
                         category-tree       -        50.0         50.0
                         k10                10        71.2*        80.3*

:func:`compare_reports` evaluates what it is given (run folders, stored report files, baseline
names) on one split; :func:`compare_text` renders any ``{name: report}`` mapping.
"""
from __future__ import annotations


from lrprec.data.catalog import RELATIONS

_NAME_MAX = 28


def _label(report: dict) -> str:
    if report.get("method"):
        return f"{report['method']} (baseline)"
    parts = [str(report.get("backbone") or "model")]
    if report.get("dim") is not None:
        parts.append(f"K={report['dim']}")
    return ", ".join(parts)


def _acc(d: dict | None) -> float | None:
    return None if not d or d.get("accuracy") is None else float(d["accuracy"])


def compare_table(reports: dict[str, dict]) -> str:
    """Table 1 layout for ``{name: report}`` (reports as ``link_prediction_report`` or
    ``evaluate_baseline`` return them): rows category × run, columns relation."""
    if not reports:
        return "no runs to compare"
    names = list(reports)
    rels = [r for r in RELATIONS if any(r in (rep.get("relations") or {}) for rep in reports.values())]
    cats = sorted({c for rep in reports.values() for r in (rep.get("relations") or {}).values() for c in r.get("by_category", {})})
    shown = {n: (n if len(n) <= _NAME_MAX else "…" + n[-(_NAME_MAX - 1):]) for n in names}
    wn = max(8, max(len(s) for s in shown.values())) + 2
    wc = max(10, min(22, max((len(c) for c in cats), default=3) + 2))
    wr = max(12, max((len(r) for r in rels), default=0) + 2)
    head = f"{'category':<{wc}}{'run':<{wn}}{'K':>5}" + "".join(f"{r:>{wr}}" for r in rels)
    rule = "-" * len(head)
    lines = []
    splits = sorted({str(rep.get("split")) for rep in reports.values() if rep.get("split")})
    catalogs = sorted({str(rep.get("catalog")) for rep in reports.values() if rep.get("catalog")})
    lines.append(f"split: {', '.join(splits) or '?'}" + ("   note: reports come from different splits" if len(splits) > 1 else ""))
    if len(catalogs) > 1:
        lines.append("note: reports come from different catalogs: " + ", ".join(catalogs))
    for n in names:
        lines.append(f"  {shown[n]:<{wn}}{_label(reports[n])}")
    lines += [head, rule]

    def block(title: str, get) -> None:
        accs = {n: {r: _acc(get(reports[n], r)) for r in rels} for n in names}
        best = {r: max((a[r] for a in accs.values() if a[r] is not None), default=None) for r in rels}
        for k, n in enumerate(names):
            dim = reports[n].get("dim")
            row = f"{title if k == 0 else '':<{wc}}{shown[n]:<{wn}}{'-' if dim is None else str(dim):>5}"
            for r in rels:
                a = accs[n][r]
                if a is None:
                    row += f"{'-':>{wr}}"
                else:
                    star = "*" if len(names) > 1 and best[r] is not None and abs(a - best[r]) < 1e-12 else " "
                    row += f"{100 * a:>{wr - 1}.1f}{star}"
            lines.append(row.rstrip())

    for c in cats:
        block(c, lambda rep, r, c=c: ((rep.get("relations") or {}).get(r) or {}).get("by_category", {}).get(c))
    lines.append(rule)
    block("all", lambda rep, r: (rep.get("relations") or {}).get(r))
    lines.append(rule)
    lines.append(f"{'overall':<{wc}}{'run':<{wn}}{'accuracy':>10}{'AUC':>8}{'pairs':>9}")
    for n in names:
        ov = reports[n].get("overall") or {}
        acc = "-" if ov.get("accuracy") is None else f"{100 * ov['accuracy']:.1f}"
        auc = "-" if ov.get("auc") is None else f"{ov['auc']:.3f}"
        lines.append(f"{'':<{wc}}{shown[n]:<{wn}}{acc:>10}{auc:>8}{ov.get('n', 0):>9}")
    lines.append("cells: accuracy % at P > 0.5 (chance 50%); * best in its category and relation")
    return "\n".join(lines)


def ranking_compare_table(reports: dict[str, dict]) -> str:
    """Recall@10 and MRR per relation for every report that carries a ``ranking`` (runs and baselines)."""
    have = {n: r["ranking"] for n, r in reports.items() if r.get("ranking")}
    if not have:
        return ""
    rels = [r for r in RELATIONS if any(r in rk["relations"] for rk in have.values())]
    wn = max(8, max(len(n) for n in have)) + 2
    head = f"{'run':<{wn}}" + "".join(f"{r:>22}" for r in rels) + f"{'all':>16}"
    lines = ["ranking of held-out positives over the whole catalog: recall@10 / MRR (* best)", head, "-" * len(head)]
    best = {r: max((rk["relations"][r]["mrr"] for rk in have.values() if r in rk["relations"]), default=None) for r in rels}
    for n, rk in have.items():
        row = f"{n:<{wn}}"
        for r in rels:
            m = rk["relations"].get(r)
            star = "*" if m and len(have) > 1 and abs(m["mrr"] - best[r]) < 1e-12 else " "
            row += f"{'-':>22}" if not m else f"{m['recall@10']:>13.3f} / {m['mrr']:.3f}{star}"
        row += f"{rk['overall']['recall@10']:>8.3f} / {rk['overall']['mrr']:.3f}"
        lines.append(row)
    return "\n".join(lines)


def compare_text(named_reports: dict[str, dict]) -> str:
    """What ``lrprec evaluate --compare`` prints: :func:`compare_table` (Table 1 under the category
    negatives, and under random ones where every report has them) and the ranking side by side."""
    parts = [compare_table(named_reports)]
    if named_reports and all("random" in (r.get("protocols") or {}) for r in named_reports.values()):
        parts.append("random negatives:\n" + compare_table({n: {**r, **r["protocols"]["random"]} for n, r in named_reports.items()}))
    rk = ranking_compare_table(named_reports)
    return "\n\n".join(parts + ([rk] if rk else []))


def unique_name(name: str, taken: dict) -> str:
    """``name``, or ``name#2``, ``name#3``, …: the first that is not a key of ``taken``."""
    if name not in taken:
        return name
    k = 2
    while f"{name}#{k}" in taken:
        k += 1
    return f"{name}#{k}"
