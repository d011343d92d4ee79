"""``lrprec serve``: the web UI and JSON API over a trained run (see :mod:`lrprec.serve.app`)."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command
from lrprec.errors import UsageError


@command("serve")
def serve_cmd(
    run: Path = typer.Argument(..., help="Run directory (from 'lrprec train'; 'lrprec index RUN' first for large catalogs)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default keeps the app on this machine."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug."),
    explain_workers: int = typer.Option(1, "--explain-workers", help="Explanations (LRP, BiLRP) computed at once."),
    explain_queue: int = typer.Option(8, "--explain-queue", help="Explanation requests that may wait; past that the API answers 503 + Retry-After."),
) -> None:
    """Browse the catalog, get recommendations and see their LRP heatmaps in the browser (JSON API under /api, docs at /docs)."""
    from lrprec.serve.app import serve

    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise UsageError(f"unknown --log-level {log_level!r}; choose critical, error, warning, info or debug")
    serve(run, host=host, port=port, log_level=log_level, echo=lambda m: typer.echo(m, err=True), explain_workers=explain_workers,
          explain_queue=explain_queue)
