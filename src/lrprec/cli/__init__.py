"""The ``lrprec`` command: a thin layer over the Python API (one module per command group)."""
from __future__ import annotations

import importlib

from lrprec.cli._app import app

# Each module registers its commands on ``app`` when imported.
_COMMAND_MODULES = ("data", "train", "explain", "faithfulness", "recommend", "importers", "serve", "demo")


def main() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"lrprec.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lrprec.cli.{name}":
                raise
    app()
