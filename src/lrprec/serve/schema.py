"""What the OpenAPI schema promises about errors: one body shape for every error, and the status codes each route can answer.

Every error the app sends — an unknown id (404), a bad parameter (422, with the per-field
``errors``), an over-long query string (414) or body (413), a busy explanation pool (503,
with ``Retry-After``), a bug (500) — is an :class:`ErrorBody`; the routes declare them with
:func:`error_responses`, so a client generated from the schema handles every answer.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    """One invalid parameter of a 422 answer."""

    loc: list[str | int] = Field(description="Where: ['query', 'k'], ['path', 'item_id'], ...")
    msg: str = Field(description="What is wrong, for people.")
    type: str = Field(description="pydantic's error type, e.g. 'less_than_equal'.")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="One line for people: what was wrong and, where it helps, what is accepted.")
    errors: list[FieldError] | None = Field(default=None, description="The invalid parameters (422 from parameter validation only).")


_WHY = {
    404: "Unknown item or user id, or no such file (or an item without an image).",
    413: "Request body larger than the server accepts.",
    414: "Query string longer than the server accepts.",
    422: "A parameter outside what the schema or this run accepts.",
    500: "A bug in lrprec (details are in the server log).",
    503: "The explanation pool is full: retry after the number of seconds in Retry-After.",
}


def error_responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the errors every route can answer (404, 413, 414, 422, 500) plus ``extra`` (503)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({404, 413, 414, 422, 500, *extra}):
        out[code] = {"model": ErrorBody, "description": _WHY[code]}
        if code == 503:
            out[code]["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}}
    return out
