"""The JSON API under ``/api`` (and the run/catalog files): thin routes over :class:`ServeState`."""
from __future__ import annotations

import json
from typing import Annotated, Callable, Literal

import numpy as np
import torch
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from lrprec.data.catalog import CatalogError
from lrprec.explain.composites import COMPOSITES
from lrprec.jsonable import plain
from lrprec.serve import heatmap
from lrprec.serve.params import (IMAGE_SUFFIXES, MAX_ID_LEN, MAX_K, MAX_LIMIT, MAX_OFFSET, MAX_SEARCH_LEN, PNG_HEADERS, RUN_SUFFIXES, Grid,
                                 ItemId, Links, TargetName, UserId, choice_query)
from lrprec.serve.schema import error_responses
from lrprec.serve.state import BadParam, NotFound, ServeState, safe_file
from lrprec.serve.urls import bilrp_png_url, heatmap_url, item_url


def item_listing(state: ServeState, search: str | None, category: str | None, limit: int, offset: int) -> dict:
    """One page of the catalog listing (JSON-ready): the API's /api/items and the catalog page."""
    from lrprec.data.catalog import search_items

    try:
        rows = search_items(state.catalog, category or None, search or None, offset + limit + 1)
    except CatalogError as exc:
        raise BadParam(str(exc)) from None
    more = len(rows) > offset + limit
    rows = rows[offset:offset + limit]
    return plain({"offset": offset, "limit": limit, "more": more,
                  "items": [{**r, "image": state.card(r["item_id"])["image"], "url": item_url(r["item_id"])} for r in rows]})


def json_bytes(obj: object) -> bytes:
    """``obj`` (JSON-ready) encoded as FastAPI encodes a route's dict: compact UTF-8 JSON."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def cached_json(state: ServeState, key: tuple, make: Callable[[], object]) -> Response:
    """A JSON answer from the server's cache of encoded answers (pages of the catalog: they never change while serving);
    a miss is computed on a thread, not on the event loop."""
    body = state.json_pages.get(key)
    if body is None:
        body = await run_in_threadpool(lambda: json_bytes(make()))
        state.json_pages.put(key, body)
    return Response(body, media_type="application/json")


def api_router(state: ServeState) -> APIRouter:
    """The JSON API and the file routes, answered from ``state``."""
    run = state.run
    router = APIRouter(responses=error_responses())
    busy = error_responses(503)
    png = {200: {"content": {"image/png": {}}, "description": "A PNG image."}}
    # the values this run accepts, listed in the schema (empty: the default); the code checks them too
    category_q = choice_query(["", *state.catalog.category_names], "A category of the catalog; empty or absent: every category.", MAX_ID_LEN)
    relation_all_q = choice_query(["", "all", *run.relations], "A trained relation, or 'all' (default).")
    relation_q = choice_query(["", *run.relations], "A trained relation; empty or absent: the pair's most probable one.")
    rule_q = choice_query(["", *COMPOSITES], "LRP rule/composite; empty or absent: the default.")

    # ---- JSON API --------------------------------------------------------------------------------------
    @router.get("/api/health", tags=["meta"], summary="Liveness check (also the benchmark's baseline endpoint).")
    async def api_health() -> dict:
        return {"status": "ok", "run": run.path.name, "version": run.version, "explain_pool": state.pool.stats()}

    @router.get("/api/run", tags=["meta"], summary="The run: config, relations, rules, metrics, faithfulness results, figures.")
    def api_run() -> dict:
        return state.run_summary()

    # Browsing answers from memory (cached encoded pages and thumbnails, small lookups): async routes on the event loop,
    # no hop to the thread pool; only a thumbnail's first encoding goes to a thread.
    @router.get("/api/items", tags=["items"], summary="Browse and search items by id/title substring and category.")
    async def api_items(
        search: Annotated[str | None, Query(max_length=MAX_SEARCH_LEN, description="Case-insensitive substring of id or title.")] = None,
        category: str | None = category_q,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict:
        return await cached_json(state, ("items", search, category, limit, offset), lambda: item_listing(state, search, category, limit, offset))  # type: ignore[return-value]

    @router.get("/api/items/{item_id:path}/image.png", tags=["items"], summary="An item's image as PNG (from the catalog).",
             response_class=Response, responses=png)
    async def api_item_image(item_id: str, size: Annotated[int, Query(ge=16, le=512)] = heatmap.DISPLAY) -> Response:
        row = state.item_row(item_id)
        png = state.pngs.get(("thumb", row, size)) or await run_in_threadpool(state.thumbnail, row, size)
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    @router.get("/api/items/{item_id:path}", tags=["items"], summary="One item: id, category, title, image URL (null: no image).")
    async def api_item(item_id: str) -> dict:
        card = state.card(item_id)
        out = {"item_id": item_id, "category": card["category"], "title": card["title"], "image": card["image"], "url": item_url(item_id)}
        if card["source_image"]:
            out["source_image"] = card["source_image"]
        return out

    @router.get("/api/users", tags=["items"], summary="User ids (for personalized recommendations and explanations).")
    async def api_users(limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict:
        users = state.catalog.user_ids
        return {"total": len(users), "offset": offset, "users": list(users[offset:offset + limit])}

    # Recommendations (a few ms of numpy on the index) run on the event loop too: on the thread pool, dozens of threads
    # contending for the GIL stalled the event loop (lock convoys) and every cheap request with it.
    @router.get("/api/recommend", tags=["recommend"], summary="Top-k items j ≠ item by P_u(r_ij), per relation (or per category, eq 5).")
    async def api_recommend(
        item: ItemId,
        user: UserId = None,
        relation: str | None = relation_all_q,
        k: Annotated[int, Query(ge=1, le=MAX_K, description=f"Items per relation (per category with per_category); at most {MAX_K}.")] = 10,
        per_category: Annotated[bool, Query(description="The top k of every category (the paper's eq 5).")] = False,
    ) -> dict:
        return plain(state.recommend(item, user, relation, k, per_category))

    @router.get("/api/pair", tags=["explain"], summary="P(related) of two items under every trained relation.")
    def api_pair(a: ItemId, b: ItemId, user: UserId = None) -> dict:
        ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
        probs = state.pair_probabilities(ra, rb, u)
        best = max(probs, key=probs.get) if probs else None
        return plain({"item_a": a, "item_b": b, "user": user or None, "probabilities": probs, "most_probable": best})

    def _pair(a: str, b: str, user: str | None, relation: str | None, rule: str | None) -> tuple[int, int, int, int, str]:
        """Rows of a pair and its user, the relation (-1: the pair's most probable one) and the rule, checked here (cheap)."""
        ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
        rule_name = state.rule(rule)
        return ra, rb, state.relation(relation) if relation else -1, u, rule_name

    async def _explain_one(a: str, b: str, user: str | None, relation: str | None, rule: str | None, target: str) -> dict:
        ra, rb, rel, u, rule_name = _pair(a, b, user, relation, rule)
        return (await state.explain_async([(ra, rb)], rel, u, rule_name, target))[0]

    @router.get("/api/explain", tags=["explain"], summary="First-order LRP explanation of a pair: values and heatmap URLs.", responses=busy)
    async def api_explain(a: ItemId, b: ItemId, user: UserId = None, relation: str | None = relation_q, rule: str | None = rule_q,
                          target: TargetName = "similarity") -> dict:
        rec = await _explain_one(a, b, user, relation, rule, target)
        out = {k: v for k, v in rec.items() if not k.startswith("_")}
        out["heatmaps"] = {s: heatmap_url(a, b, s, rec["relation"], user, rec["rule"], target) for s in ("a", "b")}
        return plain(out)

    @router.get("/api/explain/heatmap.png", tags=["explain"], summary="One image's relevance heatmap (red +, blue −) as PNG.",
             response_class=Response, responses={**png, **busy})
    async def api_heatmap(a: ItemId, b: ItemId, side: Annotated[Literal["a", "b"], Query(description="Which image of the pair.")],
                          user: UserId = None, relation: str | None = relation_q, rule: str | None = rule_q,
                          target: TargetName = "similarity") -> Response:
        rec = await _explain_one(a, b, user, relation, rule, target)
        return Response(rec["_png"][side], media_type="image/png", headers=PNG_HEADERS)

    @router.get("/api/bilrp", tags=["explain"], summary="BiLRP: which patch of image a matches which patch of image b (strongest links).",
                responses=busy)
    async def api_bilrp(a: ItemId, b: ItemId, user: UserId = None, relation: str | None = relation_q, rule: str | None = rule_q,
                        grid: Grid = 8, links: Links = 12) -> dict:
        from lrprec.explain.bilrp import top_links

        ra, rb, rel, u, rule_name = _pair(a, b, user, relation, rule)
        m, relation = await state.bilrp_async(ra, rb, rel, u, rule_name, grid)
        top = top_links(torch.from_numpy(m), links)
        return plain({"item_a": a, "item_b": b, "user": user or None, "relation": relation, "rule": rule_name, "grid": grid,
                      "sum": float(m.sum()), "links": [{"patch_a": p, "patch_b": q, "value": v} for p, q, v in top],
                      "image": bilrp_png_url(a, b, relation, user, rule_name, grid, links)})

    @router.get("/api/bilrp.png", tags=["explain"], summary="The strongest BiLRP links drawn between the two images, PNG.",
             response_class=Response, responses={**png, **busy})
    async def api_bilrp_png(a: ItemId, b: ItemId, user: UserId = None, relation: str | None = relation_q, rule: str | None = rule_q,
                            grid: Grid = 8, links: Links = 12) -> Response:
        ra, rb, rel, u, rule_name = _pair(a, b, user, relation, rule)
        m, relation = await state.bilrp_async(ra, rb, rel, u, rule_name, grid)
        key = ("bilrp", ra, rb, u, relation, rule_name, grid, links)
        png = state.pngs.get(key)
        if png is None:
            png = await run_in_threadpool(_links_png, ra, rb, m, grid, links)
            state.pngs.put(key, png)
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    def _links_png(ra: int, rb: int, m: np.ndarray, grid: int, links: int) -> bytes:
        from lrprec.explain.bilrp import top_links

        ia, ib = state.item_image(ra), state.item_image(rb)
        if ia is None or ib is None:
            raise NotFound("an item of this pair has no image")
        return heatmap.links_png(ia, ib, top_links(torch.from_numpy(m), links), grid)

    # ---- files of the run and its catalog -----------------------------------------------------------------
    files = {200: {"content": {t: {} for t in ("image/png", "image/jpeg", "image/webp", "image/gif", "text/html")}, "description": "The file."}}

    @router.get("/files/run/{path:path}", tags=["files"], summary="A figure or the report of the run directory.",
                response_class=FileResponse, responses=files)
    def run_file(path: str) -> FileResponse:
        return FileResponse(safe_file(run.path, path, RUN_SUFFIXES))

    @router.get("/files/catalog/{path:path}", tags=["files"], summary="An image file of the catalog directory.",
                response_class=FileResponse, responses=files)
    def catalog_file(path: str) -> FileResponse:
        return FileResponse(safe_file(run.catalog.root, path, IMAGE_SUFFIXES))

    return router
