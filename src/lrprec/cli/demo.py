"""The one-shot demo command."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command


@command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for the catalog, the run and the report."),
    quick: bool = typer.Option(False, "--quick", help="A tiny catalog and 3 epochs: every stage in about a minute, numbers near chance (the tests)."),
    full: bool = typer.Option(False, "--full", help="The README's full-run settings: the default 2,000-item catalog, 20 epochs, "
                              "the 2,000-item shortcut catalog for 10 epochs (about 15 minutes on 2 CPU cores)."),
    seed: int = typer.Option(0),
    ablation: bool = typer.Option(False, "--ablation", help="Also train frozen-backbone and non-personalized variants and compare."),
    guidance: bool = typer.Option(True, "--guidance/--no-guidance", help="Train without and with explanation guidance on a shortcut catalog, "
                                  "audit the unguided model and correct it (report sections)."),
    parallel: bool = typer.Option(True, "--parallel/--sequential", help="Train the guidance section in a second process beside the main "
                                  "pipeline, torch's threads split between the two (faster on 2+ cores); --sequential: one process, all threads."),
) -> None:
    """Synthetic catalog → training → evaluation → explanations → HTML report."""
    from lrprec.demo import run_demo

    path = run_demo(out, quick=quick, seed=seed, ablation=ablation, guidance=guidance, log=typer.echo, full=full, parallel=parallel)
    typer.echo(f"open {path.resolve()}")
