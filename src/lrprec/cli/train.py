"""Training and link-prediction evaluation commands."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from lrprec.cli._app import command, emit


@command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="Catalog directory."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    backbone: str = typer.Option("small", help="small (default), vgg16."),
    mode: str = typer.Option("images", help="images (end-to-end) or features (precomputed features, [M15])."),
    weights: Path = typer.Option(None, help="Local torchvision VGG-16 state dict (never downloaded)."),
    dim: int = typer.Option(10, help="Embedding dimension K."),
    epochs: int = typer.Option(8),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3),
    relations: str = typer.Option(None, help="Comma-separated relations (default: all in the catalog)."),
    category: str = typer.Option(None, help="Train on pairs whose query item is in this category."),
    no_personalize: bool = typer.Option(False, "--no-personalize", help="One global θ per relation."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Keep the backbone fixed ([M15] setting)."),
    input_size: int = typer.Option(None, help="Resize images to this side (default: catalog size; 224 for vgg16)."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train the Siamese personalized model end-to-end; the best validation epoch is kept."""
    from lrprec.train import TrainConfig, train

    if mode not in ("images", "features"):
        raise ValueError(f"--mode must be images or features, got {mode!r}")
    cfg = TrainConfig(
        backbone="features" if mode == "features" else backbone, weights=str(weights) if weights else None, dim=dim, epochs=epochs,
        batch_size=batch_size, lr=lr, relations=[r.strip() for r in relations.split(",") if r.strip()] if relations else None,
        category=category, personalize=not no_personalize, freeze_backbone=freeze_backbone, seed=seed, input_size=input_size,
    )
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    result = train(data, out, cfg, log=log)
    emit(result, as_json, lambda r: f"best epoch {r['best']['epoch']} (validation accuracy {100 * r['best']['val_accuracy']:.1f}%); run saved in {r['run']}")


@command()
def evaluate(
    runs: list[Path] = typer.Argument(..., help="Run directory (several with --compare)."),
    split: str = typer.Option("test", help="validation or test."),
    compare: bool = typer.Option(False, "--compare", help="Lay several runs side by side."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy (P > 0.5) and ROC-AUC per relation and category: the paper's Table 1 layout."""
    from lrprec.evaluate.linkpred import evaluate_run, table1_text

    if len(runs) > 1 and not compare:
        raise ValueError("several runs given: add --compare to lay them side by side")
    reports = {str(r): evaluate_run(r, split) for r in runs}
    if len(runs) == 1:
        rep = next(iter(reports.values()))
        emit(rep, as_json, lambda d: table1_text(d, d.get("dim")))
    else:
        emit(reports, as_json, lambda ds: "\n\n".join(f"== {k}\n" + table1_text(d, d.get("dim")) for k, d in ds.items()))
