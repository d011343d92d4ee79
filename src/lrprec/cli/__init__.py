"""The ``lrprec`` command: a thin layer over the Python API (one module per command group)."""
from __future__ import annotations

import importlib

from lrprec.cli._app import app

# Each module registers its commands on ``app`` when imported.
_COMMAND_MODULES = ("data", "train", "explain", "faithfulness", "recommend", "importers", "baselines", "serve", "demo", "audit", "correct")


def load_commands():
    """Import every command module (each registers its commands) and return the Typer app.

    A module that fails to import is an error, never a silently missing command."""
    for name in _COMMAND_MODULES:
        importlib.import_module(f"lrprec.cli.{name}")
    return app


def main() -> None:
    load_commands()()
