"""Presentation of a faithfulness result: the terminal leaderboard, the curve figures and the files.

:func:`lrprec.evaluate.faithfulness.faithfulness` computes the result; this module only shows
and stores it (JSON via :func:`lrprec.jsonable.plain`, figures with matplotlib).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lrprec.evaluate.faithfulness import to_json
from lrprec.explain.methods import DEFAULT_METHOD
from lrprec.files import atomic_write, atomic_write_text


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _srg_key(entry: Mapping[str, Any], imputer: str | None) -> float:
    """Sort key: SRG under ``imputer`` (larger first), else the MoRF − random gap, else MoRF AOPC."""
    v = (entry.get("srg") or {}).get(imputer) if imputer else None
    if v is None:
        v = entry.get("gap", entry.get("aopc", {}).get("morf"))
    return -(v if v is not None else -math.inf)


def randomization_label(entry: Mapping[str, Any]) -> str:
    """``pass (ρ 0.12)`` / ``FAIL (ρ 0.97)`` / ``-`` for a method's randomization check."""
    rnd = entry.get("randomization")
    if not rnd or not rnd.get("spearman"):
        return "-"
    return f"{'pass' if rnd['passed'] else 'FAIL'} (ρ {rnd['spearman'][-1]:.2f})"


def leaderboard_table(result: Mapping[str, Any]) -> str:
    """Terminal table: method × (SRG [CI] per imputer, randomization, MoRF AOPC [CI], LRF, random, gap, mass, pointing).

    Rows are sorted by SRG under the first imputer (the headline), else by the MoRF − random gap.
    """
    methods = result["methods"]
    imputers = list(result.get("imputers") or [])
    header = ["method"] + [f"SRG {imp} [95% CI]" for imp in imputers] + ["randomization", "MoRF AOPC [95% CI]", "LRF AOPC", "random AOPC", "gap", "rel. mass", "pointing"]

    def ci(value: float | None, interval: Sequence[float | None] | None) -> str:
        if value is None:
            return "-"
        lo, hi = interval or (None, None)
        return f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]"

    rows = [header]
    first = imputers[0] if imputers else None
    for name, e in sorted(methods.items(), key=lambda kv: _srg_key(kv[1], first)):
        srg_cells = [ci((e.get("srg") or {}).get(imp), (e.get("srg_ci95") or {}).get(imp)) for imp in imputers]
        rows.append([name, *srg_cells, randomization_label(e), ci(e["aopc"].get("morf"), e["aopc_ci95"].get("morf")), _fmt(e["aopc"].get("lrf")),
                     _fmt(e["aopc"].get("random")), _fmt(e.get("gap")), _fmt(e.get("relevance_mass")), _fmt(e.get("pointing_game"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"faithfulness: {result['pairs']} correctly predicted positive {result.get('split', 'test')} pairs, image {result.get('image', 'a')}, "
        f"{result['steps']} AOPC steps of {result['region']}x{result['region']} regions ({first or 'uniform'} fill), "
        f"SRG = AUC(LIF) - AUC(MIF) of P(related) over {result.get('srg_steps', '-')} fractions",
    ]
    if result.get("mask_area_fraction") is not None:
        lines.append(f"mask area fraction (a uniform map's relevance mass): {result['mask_area_fraction']:.3f}")
    lines.append("")
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if result.get("ranking_tau_pairs"):
        lines.append("ranking stability (Kendall tau of the SRG ranking between imputers): "
                     + ", ".join(f"{k.replace('~', ' vs ')} {_fmt(v, 2)}" for k, v in result["ranking_tau_pairs"].items()))
    rnd = result.get("randomization") or {}
    if rnd.get("pairs"):
        lines.append(f"randomization: backbone layers randomized from the top on {rnd['pairs']} pairs; a method passes when the "
                     f"Spearman correlation of its maps with the trained model's falls below {rnd['threshold']}")
    ref = result.get("reference", {})
    still = result.get("still_related", {}).get("mean")
    if still:
        lines.append(f"still predicted related ({ref.get('method')}, {ref.get('order')}; mean over categories): "
                     f"{still[0]:.2f} at step 0 -> {still[-1]:.2f} after {len(still) - 1} steps")
    if result.get("unavailable_methods"):
        lines.append("not evaluated: " + "; ".join(f"{k} ({v})" for k, v in result["unavailable_methods"].items()))
    return "\n".join(lines)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    """Lay out, write (110 dpi) and close one figure."""
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=110))
    plt.close(fig)
    return path


def plot_curves(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """PNG figures: P(related) and logit vs step per order, the paper's Figure 3 view, predicted relations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    curves = result["curves"]
    orders = list(result.get("orders") or next(iter(curves.values())).keys())
    steps = np.arange(result["steps"] + 1)
    for quantity, label in (("probability", "P(related)"), ("logit", "logit c - d")):
        fig, axes = plt.subplots(1, len(orders), figsize=(4.2 * len(orders), 3.6), sharey=True, squeeze=False)
        for ax, order in zip(axes[0], orders):
            for name, per_order in curves.items():
                if order in per_order:
                    ax.plot(steps, per_order[order][quantity], label=name, lw=2.2 if name == DEFAULT_METHOD else 1.2)
            ax.set_title(order.upper() if order != "random" else "random order")
            ax.set_xlabel(f"perturbation step ({result['region']}x{result['region']} regions)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"mean {label}")
        axes[0][-1].legend(fontsize=7, loc="best")
        files.append(_save(fig, plt, out / f"faithfulness_{quantity}.png"))

    ref = result.get("reference", {})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for cat, vals in result["still_related"].items():
        if cat != "mean":
            ax.plot(steps, vals, lw=1, alpha=0.7, label=cat)
    ax.plot(steps, result["still_related"]["mean"], color="k", lw=2.5, label="mean over categories")
    ax.set_xlabel("perturbation step")
    ax.set_ylabel("fraction still predicted related")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{ref.get('method')} ({ref.get('order')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    files.append(_save(fig, plt, out / "faithfulness_still_related.png"))

    files += _plot_srg_and_randomization(result, out, plt)

    pred = result["predicted_relation"]["mean"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.stackplot(steps, *[pred[k] for k in pred], labels=list(pred))
    ax.set_xlabel("perturbation step")
    ax.set_ylabel("fraction of pairs (mean over categories)")
    ax.set_title(f"predicted relation after perturbation ({ref.get('method')}, {ref.get('order')})")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower left")
    files.append(_save(fig, plt, out / "faithfulness_predicted_relation.png"))
    return files


def _plot_srg_and_randomization(result: Mapping[str, Any], out: Path, plt: Any) -> list[Path]:
    """MIF (solid) and LIF (dashed) curves per imputer; Spearman of the maps as backbone layers are randomized."""
    files: list[Path] = []
    srg_curves = result.get("srg_curves") or {}
    imputers = list(result.get("imputers") or [])
    if srg_curves and imputers:
        frac = np.asarray(result["srg_fractions"])
        fig, axes = plt.subplots(1, len(imputers), figsize=(4.6 * len(imputers), 3.8), sharey=True, squeeze=False)
        for ax, imp in zip(axes[0], imputers):
            for k, (name, per_imp) in enumerate(srg_curves.items()):
                if imp not in per_imp:
                    continue
                colour = f"C{k % 10}"
                srg_v = result["methods"][name]["srg"][imp]
                ax.plot(frac, per_imp[imp]["lif"], color=colour, ls="--", lw=1.2)
                ax.plot(frac, per_imp[imp]["mif"], color=colour, lw=2.2 if name == DEFAULT_METHOD else 1.2, label=f"{name} ({srg_v:.3f})")
            ax.set_title(f"{imp} fill: MIF solid, LIF dashed")
            ax.set_xlabel("fraction of regions removed")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean P(related)")
        axes[0][-1].legend(fontsize=7, loc="best", title="method (SRG)", title_fontsize=7)
        files.append(_save(fig, plt, out / "faithfulness_srg.png"))
    checks = {k: e["randomization"] for k, e in result["methods"].items() if e.get("randomization")}
    if checks:
        fig, ax = plt.subplots(figsize=(5.8, 3.8))
        for k, (name, rnd) in enumerate(checks.items()):
            ax.plot(range(1, len(rnd["spearman"]) + 1), rnd["spearman"], marker="o", color=f"C{k % 10}",
                    lw=2.2 if name == DEFAULT_METHOD else 1.2, label=f"{name} ({'pass' if rnd['passed'] else 'FAIL'})")
        first = next(iter(checks.values()))
        ax.axhline(first["threshold"], color="k", ls=":", lw=1)
        ax.set_xticks(range(1, len(first["layers"]) + 1), first["layers"], rotation=30, fontsize=7)
        ax.set_xlabel("backbone layers randomized (cumulative, from the top)")
        ax.set_ylabel("Spearman ρ to the trained model's maps")
        ax.set_ylim(-0.2, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        files.append(_save(fig, plt, out / "faithfulness_randomization.png"))
    return files


def write_result(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``faithfulness.json``, ``curves.npz`` (per-pair curves and AOPCs) and the plots to ``out_dir``."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = plot_curves(result, out)
    npz = out / "curves.npz"
    atomic_write(npz, lambda t: np.savez_compressed(t, **{k.replace("/", "__"): v for k, v in result.get("_arrays", {}).items()}))
    files.append(npz)
    path = out / "faithfulness.json"
    doc = to_json(result)
    doc["files"] = [str(p) for p in files + [path]]
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return files + [path]


def leaderboard_rows(result: Mapping[str, Any] | None) -> list[dict]:
    """The leaderboard as rows for the web run page, in the terminal table's order (:func:`_srg_key`)."""
    if not result or not isinstance(result.get("methods"), dict):
        return []
    imputers = list(result.get("imputers") or [])
    first = imputers[0] if imputers else None
    rows = []
    for name, e in sorted(result["methods"].items(), key=lambda kv: _srg_key(kv[1], first)):
        aopc = e.get("aopc", {})
        rnd = e.get("randomization") or {}
        rows.append({"method": name, "morf": aopc.get("morf"), "lrf": aopc.get("lrf"), "random": aopc.get("random"),
                     "morf_ci": (e.get("aopc_ci95") or {}).get("morf"), "gap": e.get("gap"),
                     "mass": e.get("relevance_mass"), "pointing": e.get("pointing_game"),
                     "srg": [((e.get("srg") or {}).get(i), (e.get("srg_ci95") or {}).get(i)) for i in imputers],
                     "randomization": None if not rnd.get("spearman") else {"passed": rnd.get("passed"), "rho": rnd["spearman"][-1]}})
    return rows
