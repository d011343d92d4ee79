"""The audit command: SpRAy clusters of a run's LRP heatmaps, judged by behaviour on held-out pairs (issue 26)."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command, emit


@command("audit")
def audit_cmd(
    run: Path = typer.Argument(..., help="Run directory (trained on images)."),
    split: str = typer.Option("validation", "--split", help="Pairs explained and scored: validation (default) or test."),
    pairs: int = typer.Option(256, "--pairs", help="Pairs explained (evenly spaced; both images of each are clustered)."),
    clusters: int = typer.Option(None, "--clusters", help="Number of clusters (default: chosen by the eigengap)."),
    composite: str = typer.Option(None, "--composite", help="LRP composite (default: the library's default composite)."),
    out: Path = typer.Option(None, "--out", help="Where to write the audit JSON (default: RUN/audit/audit.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
) -> None:
    """Find candidate Clever Hans strategies: cluster the LRP heatmaps of validation pairs (SpRAy) and flag a cluster
    whose removal moves the outputs without costing validation accuracy."""
    from lrprec.evaluate.audit import audit_run, audit_text

    if clusters is not None and clusters < 1:
        from lrprec.errors import UsageError

        raise UsageError(f"--clusters must be at least 1, got {clusters}")
    emit(audit_run(run, split=split, pairs=pairs, composite=composite, n_clusters=clusters, out=out,
                   log=(lambda m: typer.echo(m, err=True)) if not as_json else None), as_json, audit_text)
