"""The shared Typer app and the helpers every command uses: error handling and output."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Explainable visual recommendation with LRP.")

# Errors a user can cause with bad input: shown as one line, exit code 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, PermissionError, NotADirectoryError, IsADirectoryError)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(*args: Any, target: typer.Typer | None = None, **kwargs: Any) -> Callable:
    """``app.command`` (or ``target.command`` for a sub-app) that turns user errors into a
    one-line message and exit code 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except typer.Exit:
                raise
            except USER_ERRORS as exc:
                msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                fail(str(msg))

        return (target or app).command(*args, **kwargs)(wrapper)

    return deco


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``obj`` as JSON (``--json``) or through ``text`` for people."""
    if as_json or text is None:
        sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    else:
        sys.stdout.write(text(obj).rstrip("\n") + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np
    from pathlib import Path

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
