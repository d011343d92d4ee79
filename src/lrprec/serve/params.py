"""Bounds of every request parameter, and the annotated query types the routes share.

Everything a client sends is bounded here (ids, k, limits, grids, body and query sizes), so
the API and the pages enforce the same limits.
"""
from __future__ import annotations

from typing import Annotated, Any, Iterable, Literal

from fastapi import Query

MAX_K = 100
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
MAX_ID_LEN = 256
MAX_SEARCH_LEN = 200
MAX_LINKS = 200
MAX_GRID = 16
MAX_BODY_BYTES = 16 * 1024
#: Longer than the longest query the schema allows (three 256-character ids of 4-byte characters, percent-encoded: 9,216
#: bytes), so a schema-valid request is never refused as too long (tests/test_serve_schema.py checks it).
MAX_QUERY_BYTES = 12 * 1024
CACHE_ENTRIES = 1024
#: Byte budgets of the in-memory caches (explanations with their PNGs, BiLRP matrices, other PNGs): memory stays flat.
CACHE_BYTES = 64 * 1024 * 1024
#: The explanation pool: computations at once, and requests that may wait; past both the API answers 503 + Retry-After.
EXPLAIN_WORKERS = 1
EXPLAIN_QUEUE = 8
#: Added to the CPU priority ("nice") of the explanation worker processes of ``lrprec serve``: when the cores are busy the
#: kernel runs browsing and recommendations first, explanations with what is left.
EXPLAIN_NICE = 10
#: Seconds an idle keep-alive connection stays open (uvicorn's default is 5 s, the same as common clients' idle expiry:
#: a client then reuses a connection the server is closing and sees "server disconnected"; longer than those clients).
KEEP_ALIVE_SECONDS = 30
#: Pairs explained in one batch when a page shows many heatmaps (the rest load lazily).
WARM_BATCH = 64
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
RUN_SUFFIXES = IMAGE_SUFFIXES | {".html"}
TARGETS = ("similarity", "distance", "logit")
PNG_HEADERS = {"Cache-Control": "private, max-age=3600"}

ItemId = Annotated[str, Query(min_length=1, max_length=MAX_ID_LEN, description="An item id of the catalog.")]
UserId = Annotated[str | None, Query(max_length=MAX_ID_LEN, description="A user id; empty or absent: the global θ.")]
RelationName = Annotated[str | None, Query(max_length=64, description="A trained relation (default depends on the endpoint).")]
RuleName = Annotated[str | None, Query(max_length=64, description="LRP rule/composite: lrp0, epsilon, gamma, zplus, epsilon-plus-flat, epsilon-gamma-box.")]
TargetName = Annotated[Literal["similarity", "distance", "logit"], Query(description="The explained quantity.")]
Grid = Annotated[int, Query(ge=1, le=MAX_GRID, description="Patch grid side (grid×grid patches per image).")]
Links = Annotated[int, Query(ge=1, le=MAX_LINKS, description="Strongest links to return/draw.")]


def choice_query(values: Iterable[str], description: str, max_length: int = 64) -> Any:
    """An optional query parameter whose schema lists the values this run accepts (``enum``); the code checks them."""
    return Query(None, max_length=max_length, description=description, json_schema_extra={"enum": list(dict.fromkeys(values))})
