"""``lrprec baseline``: the [M15] baselines (random, popularity, category tree, WNN) in the Table 1 layout, with their ranking."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command, emit


@command("baseline")
def baseline_cmd(
    data: Path = typer.Argument(..., help="Catalog directory."),
    method: str = typer.Option(..., "--method", help="random, popularity, category-tree (ct) or wnn (weighted nearest neighbour, features mode)."),
    split: str = typer.Option("test", help="validation or test."),
    relations: str = typer.Option(None, help="Comma-separated relations (default: all in the catalog)."),
    seed: int = typer.Option(0, help="Seed of the random scores / of WNN's training."),
    run: Path = typer.Option(None, "--run", help="WNN on this trained run's backbone features (for catalogs without precomputed features)."),
    epochs: int = typer.Option(10, help="WNN training epochs (best validation epoch kept)."),
    batch_size: int = typer.Option(256, help="WNN batch size."),
    lr: float = typer.Option(0.05, help="WNN learning rate (Adam)."),
    out: Path = typer.Option(None, "--out", help="Also write the report as JSON to this file (for 'lrprec evaluate --compare')."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score a baseline on the catalog's split, in the same report shape as 'lrprec evaluate'.

    The low-rank model at K = 10 / 100 is 'lrprec train DATA --mode features --dim K'."""
    from lrprec.app.evaluation import write_baseline_report
    from lrprec.evaluate.baselines import WNNConfig, baseline_name, evaluate_baseline
    from lrprec.evaluate.linkpred import evaluation_text

    name = baseline_name(method)
    rels = [r.strip() for r in relations.split(",") if r.strip()] if relations else None
    log = (lambda m: typer.echo(m, err=True))
    wnn = WNNConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed) if name == "wnn" else None
    report = evaluate_baseline(data, name, split=split, seed=seed, relations=rels, run=run, wnn=wnn, log=log)
    if out is not None:
        write_baseline_report(report, out)

    def text(r: dict) -> str:
        lines = [f"baseline {r['method']} on {r['catalog']} ({r['split']} split)", evaluation_text(r)]
        if "wnn" in r:
            w = r["wnn"]
            lines.append(f"WNN: best epoch {w['best_epoch']}/{w['epochs']} (validation accuracy {100 * w['val_accuracy']:.1f}%), {w['features_dim']} feature dims")
            for rel, tops in w["top_dimensions"].items():
                lines.append(f"  {rel:<18} c={w['shift'][rel]:.3f}  top dims " + ", ".join(f"{t['dim']} ({100 * t['share']:.1f}%)" for t in tops[:5]))
        if out is not None:
            lines.append(f"report written to {out}")
        return "\n".join(lines)

    emit(report, as_json, text)
