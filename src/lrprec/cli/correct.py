"""``lrprec correct``: remove the artifact an audit found (a thin layer over :mod:`lrprec.train.correct`)."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command, emit


@command("correct")
def correct_cmd(
    run: Path = typer.Argument(..., help="Run to correct (trained on images)."),
    out: Path = typer.Option(..., "--out", help="New run directory to write (a normal run: evaluate, explain, serve read it)."),
    audit: Path = typer.Option(None, "--audit", help="Audit JSON (default RUN/audit/audit.json, from 'lrprec audit RUN')."),
    cluster: int = typer.Option(None, "--cluster", help="Cluster id to remove (default: the audit's highest-scoring suspicious one)."),
    method: str = typer.Option("auto", "--method", help="auto (the default, chosen on validation: augment --from-scratch with the "
                               "discovered artifact where flipping it moves validation outputs without costing accuracy, else a-clarc "
                               "--project --refit --from-scratch), p-clarc (projection at inference, no training), rr-clarc (fine-tune "
                               "with the gradient penalty along the concept), a-clarc (fine-tune with the concept moved in latent space) "
                               "or augment (re-draw the discovered artifact: its pasted region, or its colour transform for a global "
                               "artifact, whichever scores higher on validation pairs)."),
    epochs: int = typer.Option(None, "--epochs", help="Fine-tuning epochs (default: 0 for p-clarc, 5 otherwise; --from-scratch: the run's)."),
    weight: float = typer.Option(1.0, "--weight", help="λ of the RR-ClArC penalty."),
    share: float = typer.Option(0.5, "--share", help="A-ClArC / augment: probability of re-drawing an image's artifact."),
    max_dirs: int = typer.Option(3, "--max-dirs", help="Cap on concept directions."),
    project: bool = typer.Option(None, "--project/--no-project", help="Keep the projection at inference (default: p-clarc only)."),
    lr: float = typer.Option(None, "--lr", help="Fine-tuning learning rate (default: the run's)."),
    refit: bool = typer.Option(False, "--refit", help="Refit the concept on the current backbone after every epoch."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Retrain from the run's seed for its epochs (one training) instead of fine-tuning."),
    erase: bool = typer.Option(True, "--erase/--no-erase", help="augment: afterwards erase the artifact's directions from the features "
                               "the head reads (fitted on counterfactual pairs, as many as a validation probe needs; kept when it costs "
                               "≤ 0.5 points of validation accuracy)."),
    keep_worse: bool = typer.Option(False, "--keep-worse", help="Write the corrected run even if it is more than 1 point worse on "
                                    "validation pairs than RUN (refused by default: nothing is written)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove a Clever Hans the audit found: fit the flagged cluster's concept direction(s) in the
    backbone's features and project them out (P-ClArC), train against them (RR-/A-ClArC), or re-draw
    the discovered artifact while retraining (augment: pasted pixels, or a colour transform for a global
    artifact; the default where the artifact's flip scores on validation pairs)."""
    from lrprec.train.correct import CorrectConfig, correct

    cfg = CorrectConfig(method=method, audit=str(audit) if audit else None, cluster=cluster, epochs=epochs, weight=weight, share=share,
                        max_dirs=max_dirs, project=project, lr=lr, overwrite=overwrite,
                        refit=refit, from_scratch=from_scratch, erase=erase, keep_worse=keep_worse)
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    summary = correct(run, out, cfg, log=log)
    emit(summary, as_json, lambda s: f"{s['method']}: validation accuracy {100 * s['val_accuracy_before']:.1f}% -> "
                                     f"{100 * s['val_accuracy']:.1f}%; run saved in {out}")
