"""The shared Typer app and the helpers every command uses: error handling and output."""
from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable

import click
import typer

from lrprec.errors import LrprecError
from lrprec.files import DirectoryLocked
from lrprec.jsonable import plain

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Explainable visual recommendation with LRP.")

# Errors a user can cause with bad input: shown as one line, exit code 2, no traceback.
# Anything else is a bug: "internal error", the traceback, exit code 1 (see lrprec.errors).
USER_ERRORS: tuple[type[BaseException], ...] = (LrprecError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
                                                IsADirectoryError, DirectoryLocked)
INTERNAL_ERROR_CODE = 1


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(*args: Any, target: typer.Typer | None = None, **kwargs: Any) -> Callable:
    """``app.command`` (or ``target.command`` for a sub-app) that turns user errors into a
    one-line message and exit code 2, and any other exception into "internal error" with its
    traceback and exit code 1."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
                raise
            except USER_ERRORS as exc:
                fail(str(exc))
            except Exception as exc:  # a bug: keep the traceback so it can be reported
                traceback.print_exc(file=sys.stderr)
                fail(f"internal error (a bug in lrprec; please report it with the traceback above): {type(exc).__name__}: {exc}",
                     INTERNAL_ERROR_CODE)

        return (target or app).command(*args, **kwargs)(wrapper)

    return deco


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``obj`` as JSON (``--json``) or through ``text`` for people."""
    if as_json or text is None:
        sys.stdout.write(json.dumps(plain(obj), indent=2) + "\n")
    else:
        sys.stdout.write(text(obj).rstrip("\n") + "\n")
