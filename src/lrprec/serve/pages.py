"""The HTML pages (catalog, item, pair, run), rendered with Jinja2 from :class:`ServeState` calls."""
from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any, Callable

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from lrprec.data.catalog import RELATIONS, CatalogError
from lrprec.report.faithfulness import leaderboard_rows
from lrprec.serve.api import item_listing
from lrprec.serve.params import (MAX_ID_LEN, MAX_K, MAX_LIMIT, MAX_OFFSET, MAX_SEARCH_LEN, TARGETS, WARM_BATCH, Grid, Links, RelationName,
                                 RuleName, TargetName, UserId)
from lrprec.serve.pool import Busy
from lrprec.serve.state import ServeState
from lrprec.serve.urls import _qs

log = logging.getLogger("lrprec.serve")


def pages_router(state: ServeState, page: Callable[..., HTMLResponse]) -> APIRouter:
    """The HTML pages, answered from ``state``; ``page(request, template, **ctx)`` renders one."""
    run = state.run
    router = APIRouter()

    # ---- pages -------------------------------------------------------------------------------------------------
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def catalog_page(
        request: Request,
        q: Annotated[str | None, Query(max_length=MAX_SEARCH_LEN)] = None,
        category: Annotated[str | None, Query(max_length=MAX_ID_LEN)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 48,
    ) -> HTMLResponse:
        listing = item_listing(state, q, category, limit, offset)
        nav = {"prev": "/?" + _qs(q=q, category=category, offset=max(0, offset - limit), limit=limit) if offset > 0 else None,
               "next": "/?" + _qs(q=q, category=category, offset=offset + limit, limit=limit) if listing["more"] else None}
        return page(request, "catalog.html", listing=listing, q=q or "", category=category or "",
                    categories=state.catalog.category_names, nav=nav, n_items=len(state.catalog))

    @router.get("/item/{item_id:path}", response_class=HTMLResponse, include_in_schema=False)
    def item_page(
        request: Request,
        item_id: str,
        user: UserId = None,
        relation: Annotated[str | None, Query(max_length=64)] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 6,
        per_category: bool = False,
        rule: RuleName = None,
        target: TargetName = "similarity",
    ) -> HTMLResponse:
        row = state.item_row(item_id)
        state.user_row(user)
        relation = relation or run.relations[0]
        rule_name = state.rule(rule)
        result = state.recommend(item_id, user or None, relation, k, per_category)
        sections = []
        for rel, res in result["results"].items():
            groups = list(res.items()) if isinstance(res, dict) else [(None, res)]
            sections.append({"relation": rel, "groups": groups, "empty": not any(entries for _, entries in groups)})
            if state.has_pixels:  # one batched LRP pass for the heatmaps this page shows (the rest load lazily)
                rows = [(row, state.item_row(e["item"])) for _, entries in groups for e in entries][:WARM_BATCH]
                if rows:  # through the explanation pool; when it is full the heatmaps load lazily instead
                    with contextlib.suppress(Busy):
                        state.explain(rows, state.relation(rel), state.user_row(user), rule_name, target)
        c = state.catalog
        item = {"item_id": item_id, "category": str(c.categories[row]), "title": str(c.titles[row] or "")}
        return page(request, "item.html", item=item, result=result, sections=sections, user=user or "", relation=relation,
                    k=k, per_category=per_category, rule=rule_name, target=target, rules=state.rules(),
                    users=state.catalog.user_ids[:MAX_LIMIT], n_users=len(state.catalog.user_ids), heatmaps=state.has_pixels,
                    max_k=MAX_K, targets=TARGETS)

    @router.get("/pair", response_class=HTMLResponse, include_in_schema=False)
    def pair_page(
        request: Request,
        a: Annotated[str | None, Query(max_length=MAX_ID_LEN)] = None,
        b: Annotated[str | None, Query(max_length=MAX_ID_LEN)] = None,
        user: UserId = None,
        relation: RelationName = None,
        rule: RuleName = None,
        target: TargetName = "similarity",
        grid: Grid = 8,
        links: Links = 12,
    ) -> HTMLResponse:
        rule_name = state.rule(rule)
        ctx: dict[str, Any] = {"a": a or "", "b": b or "", "user": user or "", "relation": relation or "", "rule": rule_name,
                               "target": target, "grid": grid, "links": links, "rules": state.rules(), "targets": TARGETS,
                               "users": state.catalog.user_ids[:MAX_LIMIT], "heatmaps": state.has_pixels, "examples": _examples()}
        if a and b:
            ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
            probs = state.pair_probabilities(ra, rb, u)
            chosen = relation or max(probs, key=probs.get)
            state.relation(chosen)
            c = state.catalog
            ctx.update(probabilities=probs, chosen=chosen,
                       items=[{"item_id": x, "category": str(c.categories[r]), "title": str(c.titles[r] or "")} for x, r in ((a, ra), (b, rb))])
            if state.has_pixels:
                # through the explanation pool: a full pool answers 503 + Retry-After (the error page)
                ctx["explanation"] = state.explain([(ra, rb)], state.relation(chosen), u, rule_name, target)[0]
                ctx["bilrp"] = state.has_image(ra) and state.has_image(rb)
        return page(request, "pair.html", **ctx)

    def _examples() -> list[dict]:
        """A few related test pairs to click on from the empty pair page."""
        try:
            p = state.catalog.pairs("test")
        except CatalogError:
            return []
        trained = [RELATIONS.index(r) for r in run.relations]
        idx = np.flatnonzero((p.label == 1) & np.isin(p.relation, trained))[:6]
        users = [""] + list(state.catalog.user_ids)
        return [{"a": str(state.catalog.item_ids[p.a[k]]), "b": str(state.catalog.item_ids[p.b[k]]),
                 "relation": RELATIONS[p.relation[k]], "user": users[p.user[k] + 1] or None} for k in idx]

    @router.get("/run", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request) -> HTMLResponse:
        from lrprec.report.html import evaluation_html, read_baselines

        summary = state.run_summary()
        metrics = summary.get("metrics") or {}
        baselines = read_baselines(state.run.path)
        tables = []
        for split, rep in metrics.items():
            try:
                tables.append((split, evaluation_html(split, rep, baselines.get(split), level=4)))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("cannot render metrics of split %s: %s", split, exc)
        board = leaderboard_rows(summary.get("faithfulness"))
        return page(request, "run.html", s=summary, tables=tables, board=board)

    @router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request) -> HTMLResponse:
        """The run's audit (``lrprec audit``): each cluster's mean heatmap and prototypes, to confirm or reject."""
        import json

        path = run.path / "audit" / "audit.json"
        audit = None
        if path.is_file():
            try:
                audit = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", path, exc)
        clusters = []
        for c in (audit or {}).get("clusters", []):
            ids = state.catalog.item_ids
            protos = [str(ids[i]) for i in c.get("prototypes", []) if 0 <= i < len(ids)]
            clusters.append({**c, "prototype_ids": protos,
                             "figure_url": f"/files/run/audit/{c['figure']}" if c.get("figure") else None})
        return page(request, "audit.html", audit=audit, clusters=clusters, run_name=run.path.name)

    return router
