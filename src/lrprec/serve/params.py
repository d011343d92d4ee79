"""Bounds of every request parameter, and the annotated query types the routes share.

Everything a client sends is bounded here (ids, k, limits, grids, body and query sizes), so
the API and the pages enforce the same limits.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query

MAX_K = 100
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
MAX_ID_LEN = 256
MAX_SEARCH_LEN = 200
MAX_LINKS = 200
MAX_GRID = 16
MAX_BODY_BYTES = 16 * 1024
MAX_QUERY_BYTES = 4096
CACHE_ENTRIES = 1024
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
