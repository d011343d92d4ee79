"""The web UI and JSON API over a trained run (``lrprec serve RUN``): browse, recommend, explain."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app", "serve"]


def create_app(run_path: Any, **kwargs: Any) -> "FastAPI":
    """See :func:`lrprec.serve.app.create_app` (imported lazily: FastAPI is only needed to serve)."""
    from lrprec.serve.app import create_app as _create

    return _create(run_path, **kwargs)


def serve(run_path: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """See :func:`lrprec.serve.app.serve`."""
    from lrprec.serve.app import serve as _serve

    _serve(run_path, host=host, port=port, **kwargs)
