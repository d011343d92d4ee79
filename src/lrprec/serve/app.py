"""The web app: catalog, item, pair and run pages plus a JSON API under ``/api`` (``lrprec serve``).

:func:`create_app` loads the run (model + catalog) and its recommendation index once;
requests then call the same Python API as the CLI — :class:`lrprec.recommend.recommender.Recommender`
for recommendations, :func:`lrprec.explain.service.pair_probabilities` for pair scores,
:func:`lrprec.explain.targets.explain_pairs` and :func:`lrprec.explain.bilrp.bilrp` for
relevance — and only render the results (PNG via :mod:`lrprec.serve.heatmap`, HTML via
Jinja2). Heatmaps are computed on request, batched where a page needs many, and kept in
an in-memory LRU cache.

Safety: the server binds 127.0.0.1 unless told otherwise; files are served only from the
run and catalog directories (resolved, checked to stay inside, image/report types only);
unknown ids give 404, bad parameters 422 with a readable message, unexpected errors a
500 without a stack trace; query strings, bodies, k, limits and grids are bounded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Callable, Hashable, Literal
from urllib.parse import quote, urlencode

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrprec.data.catalog import RELATIONS, CatalogError
from lrprec.data.tables import read_item_sources
from lrprec.errors import LrprecError, UsageError
from lrprec.jsonable import plain
from lrprec.run import Run
from lrprec.serve import heatmap

log = logging.getLogger("lrprec.serve")

HERE = Path(__file__).resolve().parent
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


class NotFound(LookupError):
    """An unknown id or file: answered with 404."""


class BadParam(LrprecError):
    """A parameter the model or catalog cannot take: answered with 422."""


class LRU:
    """A thread-safe least-recently-used cache of at most ``maxsize`` entries."""

    def __init__(self, maxsize: int):
        self.maxsize = max(1, int(maxsize))
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def safe_file(root: Path, relative: str, suffixes: frozenset[str]) -> Path:
    """``root/relative`` if it resolves (symlinks followed) to a file inside ``root`` with an allowed suffix, else NotFound."""
    if not relative or "\x00" in relative or len(relative) > 1024:
        raise NotFound("no such file")
    base = root.resolve()
    try:
        path = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        raise NotFound("no such file") from None
    if not path.is_relative_to(base) or path.suffix.lower() not in suffixes or not path.is_file():
        raise NotFound("no such file")
    return path


# ---- URLs the templates and the JSON use ----------------------------------------------------------
def _qs(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "", False)})


def item_url(item_id: str) -> str:
    return "/item/" + quote(str(item_id), safe="")


def image_url(item_id: str, size: int | None = None) -> str:
    return "/api/items/" + quote(str(item_id), safe="") + "/image.png" + (f"?size={size}" if size else "")


def heatmap_url(a: str, b: str, side: str, relation: str, user: str | None, rule: str, target: str) -> str:
    return "/api/explain/heatmap.png?" + _qs(a=a, b=b, side=side, relation=relation, user=user, rule=rule, target=target)


def pair_url(a: str, b: str, user: str | None = None, relation: str | None = None, rule: str | None = None, target: str | None = None) -> str:
    return "/pair?" + _qs(a=a, b=b, user=user, relation=relation, rule=rule, target=target)


def bilrp_png_url(a: str, b: str, relation: str, user: str | None, rule: str, grid: int, links: int) -> str:
    return "/api/bilrp.png?" + _qs(a=a, b=b, relation=relation, user=user, rule=rule, grid=grid, links=links)


# ---- the loaded run -----------------------------------------------------------------------------------
class ServeState:
    """The run, its recommender and the caches, shared by all requests (loaded once at start)."""

    def __init__(self, run: Run, index: Any = None, cache_entries: int = CACHE_ENTRIES):
        self.run = run
        self.catalog = run.catalog
        self.compute_lock = threading.Lock()  # one LRP computation at a time: bounded memory, no duplicate work
        self.explanations = LRU(cache_entries)
        self.bilrp_cache = LRU(max(8, cache_entries // 8))
        self.pngs = LRU(cache_entries)
        self.has_pixels = run.model.backbone.kind == "image"
        self.sources = read_item_sources(self.catalog.root)  # raw titles, image URLs, placeholder flags
        self._has_image: dict[int, bool] = {}
        self.recommender: Any = None
        self.index_note = ""
        self._open_recommender(index)

    # -- set-up --------------------------------------------------------------------------------------
    def _open_recommender(self, index: Any) -> None:
        """Load ``RUN/index`` (or build one in memory when it is missing or stale) and warm its vector indexes."""
        try:
            from lrprec.recommend.recommender import IndexMissingError, Recommender, StaleIndexError, build_index, load_index
        except ImportError as exc:  # pragma: no cover - the recommender ships with lrprec
            self.index_note = f"recommendations unavailable: {exc}"
            return
        if index is None:
            try:
                index = load_index(self.run)
                self.index_note = f"{index.backend} index loaded from {index.path}"
            except (IndexMissingError, StaleIndexError) as exc:
                log.warning("%s; building an in-memory index for this session", exc)
                index = build_index(self.run, progress=False, save=False)
                self.index_note = f"{exc}. Serving from an index ({index.backend}) built in memory at start."
        else:
            self.index_note = f"{index.backend} index given by the caller"
        for rel in index.relations:  # build the per-relation search structures now, not inside concurrent requests
            index.get(rel)
        self.recommender = Recommender(self.run, index)

    def warmup(self) -> None:
        """Run one pair explanation (not cached) so torch's lazy initialisation happens before the first request."""
        if self.has_pixels and len(self.catalog) >= 2:
            from lrprec.explain.targets import explain_pairs

            x = self.run.inputs(np.array([0, 1]))
            explain_pairs(self.run.model, x[:1], x[1:], self.run.check_relation(self.run.relations[0]), -1, composite=self.default_rule)

    @property
    def default_rule(self) -> str:
        from lrprec.explain.composites import DEFAULT_COMPOSITE

        return DEFAULT_COMPOSITE

    # -- checks ---------------------------------------------------------------------------------------
    def item_row(self, item_id: str) -> int:
        try:
            return self.catalog.index_of(item_id)
        except CatalogError:
            raise NotFound(f"unknown item id {item_id!r}") from None

    def user_row(self, user: str | None) -> int:
        if user in (None, ""):
            return -1
        row = self.catalog.user_index(user, strict=False)
        if row < 0:
            raise NotFound(f"unknown user id {user!r}")
        return row

    def relation(self, name: str) -> int:
        try:
            return self.run.check_relation(name)
        except CatalogError as exc:
            raise BadParam(str(exc)) from None

    def rule(self, name: str | None) -> str:
        from lrprec.explain.composites import get_composite

        name = name or self.default_rule
        try:
            get_composite(name)
        except LrprecError:
            from lrprec.explain.composites import COMPOSITES

            raise BadParam(f"unknown rule {name!r}; known rules: {', '.join(COMPOSITES)}") from None
        return name

    def rules(self) -> dict[str, str]:
        from lrprec.explain.composites import COMPOSITES

        return {k: c.description for k, c in COMPOSITES.items()}

    def need_pixels(self) -> None:
        if not self.has_pixels:
            raise BadParam("this run reads precomputed features: there are no pixels to draw heatmaps on")

    # -- images -----------------------------------------------------------------------------------------
    def item_image(self, row: int) -> np.ndarray | None:
        """uint8 (H, W, 3) image of an item: the catalog's decode cache, else its image file (inside the catalog)."""
        images = self.catalog.images
        if images is not None:
            return np.asarray(images[row])
        rel = str(self.catalog.image_paths[row] or "")
        if not rel:
            return None
        try:
            path = safe_file(self.catalog.root, rel, IMAGE_SUFFIXES)
        except NotFound:
            return None
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError:
            return None

    def has_image(self, row: int) -> bool:
        """Whether the item has a real image to show (not none, not the import's gray placeholder)."""
        known = self._has_image.get(row)
        if known is None:
            item_id = str(self.catalog.item_ids[row])
            if self.sources.get(item_id, {}).get("image_missing"):
                known = False
            elif self.catalog.images is not None:
                known = True
            else:
                try:
                    safe_file(self.catalog.root, str(self.catalog.image_paths[row] or ""), IMAGE_SUFFIXES)  # an image file inside the catalog
                    known = True
                except NotFound:
                    known = False
            self._has_image[row] = known
        return known

    def card(self, item_id: str) -> dict:
        """What a page shows of an item: id, title, category, its image URL (None: draw a placeholder card)
        and the image link of the source metadata, if any."""
        row = self.item_row(item_id)
        c = self.catalog
        link = str(self.sources.get(item_id, {}).get("image_url") or "")
        return {"item_id": item_id, "title": str(c.titles[row] or ""), "category": str(c.categories[row]),
                "image": image_url(item_id) if self.has_image(row) else None,
                "source_image": link if link.lower().startswith(("https://", "http://")) else None}  # never javascript: etc.

    def thumbnail(self, row: int, size: int) -> bytes:
        key = ("thumb", row, size)
        png = self.pngs.get(key)
        if png is None:
            img = self.item_image(row) if self.has_image(row) else None
            if img is None:
                raise NotFound(f"item {self.catalog.item_ids[row]!r} has no image")
            png = heatmap.item_png(img, size)
            self.pngs.put(key, png)
        return png

    # -- model calls -------------------------------------------------------------------------------------
    def pair_probabilities(self, a: int, b: int, user: int) -> dict[str, float]:
        from lrprec.explain.service import pair_probabilities

        probs = pair_probabilities(self.run, np.array([a]), np.array([b]), np.array([user]))
        return {r: float(p[0]) for r, p in probs.items()}

    def explain(self, pairs: list[tuple[int, int]], rel: int, user: int, rule: str, target: str) -> list[dict]:
        """Explanation records (with both heatmap PNGs under ``_png``) for pairs of rows; one batched LRP pass for the misses."""
        self.need_pixels()
        keys = [(a, b, rel, user, rule, target) for a, b in pairs]
        found = {k: self.explanations.get(k) for k in dict.fromkeys(keys)}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            with self.compute_lock:
                todo = []
                for k in missing:  # another request may have computed them meanwhile
                    v = self.explanations.get(k)
                    if v is None:
                        todo.append(k)
                    else:
                        found[k] = v
                for s in range(0, len(todo), WARM_BATCH):
                    for k, v in zip(todo[s:s + WARM_BATCH], self._compute_explanations(todo[s:s + WARM_BATCH])):
                        self.explanations.put(k, v)
                        found[k] = v
        return [found[k] for k in keys]

    def _compute_explanations(self, keys: list[tuple]) -> list[dict]:
        from lrprec.explain.targets import explain_pairs

        a = np.array([k[0] for k in keys], np.int64)
        b = np.array([k[1] for k in keys], np.int64)
        _, _, rel, user, rule, target = keys[0]
        n = len(keys)
        try:
            e = explain_pairs(self.run.model, self.run.inputs(a), self.run.inputs(b), torch.full((n,), rel, dtype=torch.long),
                              torch.full((n,), user, dtype=torch.long), target=target, composite=rule, batch_size=32)
        except LrprecError as exc:
            raise BadParam(str(exc)) from None
        ra = e.relevance_a.detach().float().sum(1).numpy()
        rb = e.relevance_b.detach().float().sum(1).numpy()
        users = [""] + list(self.catalog.user_ids)
        out = []
        for k in range(n):
            scale = float(max(np.abs(ra[k]).max(), np.abs(rb[k]).max()))
            out.append({
                "item_a": str(self.catalog.item_ids[a[k]]), "item_b": str(self.catalog.item_ids[b[k]]),
                "user": users[user + 1] or None, "relation": RELATIONS[rel], "rule": rule, "target": target,
                "probability": float(e.probability[k]), "logit": float(e.logit[k]), "target_value": float(e.target_value[k]),
                "relevance_sum": {"a": float(ra[k].sum()), "b": float(rb[k].sum())}, "absorbed": float(e.absorbed[k]), "conservation": float(e.conservation[k]),
                "_png": {"a": heatmap.heatmap_png(ra[k], self.item_image(int(a[k])), scale),
                         "b": heatmap.heatmap_png(rb[k], self.item_image(int(b[k])), scale)},
            })
        return out

    def bilrp(self, a: int, b: int, rel: int, user: int, rule: str, grid: int) -> np.ndarray:
        """BiLRP patch-to-patch relevance (grid², grid²) of one pair, cached."""
        self.need_pixels()
        key = (a, b, rel, user, rule, grid)
        m = self.bilrp_cache.get(key)
        if m is None:
            from lrprec.explain.bilrp import bilrp

            size = int(self.run.inputs(np.array([a])).shape[-1])
            if grid > size:
                raise BadParam(f"grid {grid} is larger than the {size}x{size} model input")
            with self.compute_lock:
                m = self.bilrp_cache.get(key)
                if m is None:
                    try:
                        m = bilrp(self.run.model, self.run.inputs(np.array([a])), self.run.inputs(np.array([b])),
                                  torch.tensor([rel]), torch.tensor([user]), composite=rule, grid=grid)[0].detach().float().numpy()
                    except LrprecError as exc:
                        raise BadParam(str(exc)) from None
                    self.bilrp_cache.put(key, m)
        return m

    def recommend(self, item: str, user: str | None, relation: str | None, k: int, per_category: bool) -> dict:
        if self.recommender is None:
            raise BadParam(self.index_note or "recommendations are unavailable")
        self.item_row(item)
        self.user_row(user)
        relations = None if relation in (None, "", "all") else [relation]
        if relations:
            self.relation(relation)  # type: ignore[arg-type]
        try:
            return self.recommender.recommend(item, user=user or None, relations=relations, k=k, per_category=per_category)
        except LrprecError as exc:
            raise BadParam(str(exc)) from None

    # -- run artifacts -------------------------------------------------------------------------------------
    def _json_file(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None

    def figures(self, folder: str) -> list[str]:
        """URLs of the PNG figures in ``RUN/folder`` (sorted)."""
        root = self.run.path / folder
        if not root.is_dir():
            return []
        order = ("probability", "logit", "still_related", "predicted_relation", "training")

        def rank(p: Path) -> tuple[int, str]:
            return next((k for k, word in enumerate(order) if word in p.stem), len(order)), p.name

        return [f"/files/run/{quote(folder)}/{quote(p.name)}" for p in sorted(root.glob("*.png"), key=rank) if p.is_file()]

    def run_summary(self) -> dict:
        """Config, link-prediction metrics, faithfulness results and figures the run holds (read per request)."""
        run = self.run
        faith = self._json_file(run.path / "faithfulness" / "faithfulness.json")
        if isinstance(faith, dict):
            faith = {k: v for k, v in faith.items() if k not in ("files",)}
        index_meta = getattr(getattr(self.recommender, "index", None), "meta", None)
        return plain({
            "run": run.path.name,
            "version": run.version,
            "config": {k: v for k, v in run.config.items() if k != "catalog"},
            "catalog": {"name": self.catalog.name, "items": len(self.catalog), "users": len(self.catalog.user_ids),
                        "categories": self.catalog.category_names, "image_size": self.catalog.image_size},
            "relations": run.relations,
            "rules": self.rules(),
            "default_rule": self.default_rule,
            "targets": list(TARGETS),
            "heatmaps": self.has_pixels,
            "index": {"note": self.index_note, "meta": index_meta},
            "metrics": self._json_file(run.path / "metrics.json"),
            "history": self._json_file(run.path / "history.json"),
            "faithfulness": faith,
            "figures": {"training": self.figures("figures"), "faithfulness": self.figures("faithfulness")},
            "report": "/files/run/report.html" if (run.path / "report.html").is_file() else None,
        })


# ---- middleware ---------------------------------------------------------------------------------------------
class LimitsMiddleware:
    """Bounds request sizes (query string, body) and adds defensive response headers."""

    SECURITY_HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'"),
    ]

    DOCS_CSP = (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                b"script-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'")

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, max_query: int = MAX_QUERY_BYTES):
        self.app, self.max_body, self.max_query = app, max_body, max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            await _send_json(send, 414, f"query string longer than {self.max_query} bytes")
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, f"request body larger than {self.max_body} bytes")
            return
        started = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        # /docs (Swagger UI from local assets) needs its inline start-up script; nothing may come from elsewhere.
        extra = self.SECURITY_HEADERS if scope.get("path") != "/docs" else [*self.SECURITY_HEADERS[:3], self.DOCS_CSP]

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body larger than {self.max_body} bytes")


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- the app ------------------------------------------------------------------------------------------------
def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
        msg = str(err.get("msg", "invalid value"))
        given = err.get("input")
        shown = f" (got {given!r})" if isinstance(given, (str, int, float)) and len(repr(given)) <= 60 else ""
        parts.append(f"{loc or 'request'}: {msg}{shown}")
    return "; ".join(parts) or "invalid request"


def _is_page(request: Request) -> bool:
    p = request.url.path
    return not (p.startswith("/api") or p.startswith("/files") or p.startswith("/static") or p in ("/openapi.json", "/docs", "/favicon.ico"))


def create_app(run_path: str | os.PathLike | Run, *, index: Any = None, cache_entries: int = CACHE_ENTRIES,
               warmup: bool = False) -> FastAPI:
    """The FastAPI app for a run directory: loads the run and its index once, then serves pages and ``/api``.

    ``index`` (a :class:`lrprec.recommend.recommender.RecIndex`) skips loading ``RUN/index``;
    without a usable stored index one is built in memory at start (with a notice).
    ``warmup`` explains one pair at start, so the first page does not pay torch's first-call cost.
    """
    run = run_path if isinstance(run_path, Run) else Run.load(run_path)
    state = ServeState(run, index=index, cache_entries=cache_entries)
    if warmup:
        state.warmup()
    app = FastAPI(
        title="lrprec",
        version=str(run.config.get("lrprec_version", "")),
        description="Recommend related items and explain every prediction with LRP heatmaps on both images. "
                    f"Serving run `{run.path.name}` ({len(run.catalog)} items).",
        docs_url=None, redoc_url=None,  # /docs below serves Swagger UI from local files (works offline)
    )
    app.state.lrprec = state
    app.add_middleware(LimitsMiddleware)
    swagger = swagger_ui_assets()
    if swagger is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger), name="docs-assets")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(item_url=item_url, image_url=image_url, heatmap_url=heatmap_url, pair_url=pair_url,
                                 bilrp_png_url=bilrp_png_url, run_name=run.path.name, relations=run.relations, card=state.card,
                                 heatmaps_off=not state.has_pixels)
    templates.env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.1f}"
    templates.env.filters["num"] = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def error(request: Request, status: int, message: str) -> Response:
        if _is_page(request):
            return page(request, "error.html", status=status, status_code=status, message=message)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return error(request, 404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(BadParam)
    async def _bad_param(request: Request, exc: BadParam) -> Response:
        return error(request, 422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message = _validation_message(exc)
        if _is_page(request):
            return page(request, "error.html", status=422, status_code=422, message=message)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": message, "errors": plain(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        resp = error(request, exc.status_code, message)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s", request.url.path)
        return error(request, 500, "internal error (details are in the server log)")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(HERE / "static" / "favicon.png", media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """Swagger UI from an installed copy of its files; without one, a plain local list of the endpoints."""
        if swagger is not None:
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="lrprec API",
                                       swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                       swagger_favicon_url="/favicon.ico", swagger_ui_parameters={"validatorUrl": None})
        return page(request, "docs.html", endpoints=api_endpoints(app.openapi()))

    # ---- JSON API --------------------------------------------------------------------------------------
    @app.get("/api/health", tags=["meta"], summary="Liveness check (also the benchmark's baseline endpoint).")
    async def api_health() -> dict:
        return {"status": "ok", "run": run.path.name, "version": run.version}

    @app.get("/api/run", tags=["meta"], summary="The run: config, relations, rules, metrics, faithfulness results, figures.")
    def api_run() -> dict:
        return state.run_summary()

    @app.get("/api/items", tags=["items"], summary="Browse and search items by id/title substring and category.")
    def api_items(
        search: Annotated[str | None, Query(max_length=MAX_SEARCH_LEN, description="Case-insensitive substring of id or title.")] = None,
        category: Annotated[str | None, Query(max_length=MAX_ID_LEN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict:
        return _items(search, category, limit, offset)

    def _items(search: str | None, category: str | None, limit: int, offset: int) -> dict:
        from lrprec.data.catalog import search_items

        try:
            rows = search_items(state.catalog, category or None, search or None, offset + limit + 1)
        except CatalogError as exc:
            raise BadParam(str(exc)) from None
        more = len(rows) > offset + limit
        rows = rows[offset:offset + limit]
        return plain({"offset": offset, "limit": limit, "more": more,
                      "items": [{**r, "image": state.card(r["item_id"])["image"], "url": item_url(r["item_id"])} for r in rows]})

    @app.get("/api/items/{item_id:path}/image.png", tags=["items"], summary="An item's image as PNG (from the catalog).",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def api_item_image(item_id: str, size: Annotated[int, Query(ge=16, le=512)] = heatmap.DISPLAY) -> Response:
        return Response(state.thumbnail(state.item_row(item_id), size), media_type="image/png", headers=PNG_HEADERS)

    @app.get("/api/items/{item_id:path}", tags=["items"], summary="One item: id, category, title, image URL (null: no image).")
    def api_item(item_id: str) -> dict:
        card = state.card(item_id)
        out = {"item_id": item_id, "category": card["category"], "title": card["title"], "image": card["image"], "url": item_url(item_id)}
        if card["source_image"]:
            out["source_image"] = card["source_image"]
        return out

    @app.get("/api/users", tags=["items"], summary="User ids (for personalized recommendations and explanations).")
    def api_users(limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict:
        users = state.catalog.user_ids
        return {"total": len(users), "offset": offset, "users": list(users[offset:offset + limit])}

    @app.get("/api/recommend", tags=["recommend"], summary="Top-k items j ≠ item by P_u(r_ij), per relation (or per category, eq 5).")
    def api_recommend(
        item: ItemId,
        user: UserId = None,
        relation: Annotated[str | None, Query(max_length=64, description="A trained relation or 'all' (default).")] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K, description=f"Items per relation (per category with per_category); at most {MAX_K}.")] = 10,
        per_category: Annotated[bool, Query(description="The top k of every category (the paper's eq 5).")] = False,
    ) -> dict:
        return plain(state.recommend(item, user, relation, k, per_category))

    @app.get("/api/pair", tags=["explain"], summary="P(related) of two items under every trained relation.")
    def api_pair(a: ItemId, b: ItemId, user: UserId = None) -> dict:
        ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
        probs = state.pair_probabilities(ra, rb, u)
        best = max(probs, key=probs.get) if probs else None
        return plain({"item_a": a, "item_b": b, "user": user or None, "probabilities": probs, "most_probable": best})

    def _explain_one(a: str, b: str, user: str | None, relation: str | None, rule: str | None, target: str) -> dict:
        ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
        rule_name = state.rule(rule)
        if relation in (None, ""):
            probs = state.pair_probabilities(ra, rb, u)
            relation = max(probs, key=probs.get)
        rel = state.relation(relation)
        return state.explain([(ra, rb)], rel, u, rule_name, target)[0]

    @app.get("/api/explain", tags=["explain"], summary="First-order LRP explanation of a pair: values and heatmap URLs.")
    def api_explain(a: ItemId, b: ItemId, user: UserId = None, relation: RelationName = None, rule: RuleName = None,
                    target: TargetName = "similarity") -> dict:
        rec = _explain_one(a, b, user, relation, rule, target)
        out = {k: v for k, v in rec.items() if not k.startswith("_")}
        out["heatmaps"] = {s: heatmap_url(a, b, s, rec["relation"], user, rec["rule"], target) for s in ("a", "b")}
        return plain(out)

    @app.get("/api/explain/heatmap.png", tags=["explain"], summary="One image's relevance heatmap (red +, blue −) as PNG.",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def api_heatmap(a: ItemId, b: ItemId, side: Annotated[Literal["a", "b"], Query(description="Which image of the pair.")],
                    user: UserId = None, relation: RelationName = None, rule: RuleName = None, target: TargetName = "similarity") -> Response:
        rec = _explain_one(a, b, user, relation, rule, target)
        return Response(rec["_png"][side], media_type="image/png", headers=PNG_HEADERS)

    def _bilrp(a: str, b: str, user: str | None, relation: str | None, rule: str | None, grid: int) -> tuple[np.ndarray, str, str]:
        ra, rb, u = state.item_row(a), state.item_row(b), state.user_row(user)
        rule_name = state.rule(rule)
        if relation in (None, ""):
            probs = state.pair_probabilities(ra, rb, u)
            relation = max(probs, key=probs.get)
        return state.bilrp(ra, rb, state.relation(relation), u, rule_name, grid), relation, rule_name

    @app.get("/api/bilrp", tags=["explain"], summary="BiLRP: which patch of image a matches which patch of image b (strongest links).")
    def api_bilrp(a: ItemId, b: ItemId, user: UserId = None, relation: RelationName = None, rule: RuleName = None,
                  grid: Grid = 8, links: Links = 12) -> dict:
        from lrprec.explain.bilrp import top_links

        m, relation, rule_name = _bilrp(a, b, user, relation, rule, grid)
        top = top_links(torch.from_numpy(m), links)
        return plain({"item_a": a, "item_b": b, "user": user or None, "relation": relation, "rule": rule_name, "grid": grid,
                      "sum": float(m.sum()), "links": [{"patch_a": p, "patch_b": q, "value": v} for p, q, v in top],
                      "image": bilrp_png_url(a, b, relation, user, rule_name, grid, links)})

    @app.get("/api/bilrp.png", tags=["explain"], summary="The strongest BiLRP links drawn between the two images, PNG.",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def api_bilrp_png(a: ItemId, b: ItemId, user: UserId = None, relation: RelationName = None, rule: RuleName = None,
                      grid: Grid = 8, links: Links = 12) -> Response:
        from lrprec.explain.bilrp import top_links

        m, relation, rule_name = _bilrp(a, b, user, relation, rule, grid)
        key = ("bilrp", a, b, user, relation, rule_name, grid, links)
        png = state.pngs.get(key)
        if png is None:
            ia, ib = state.item_image(state.item_row(a)), state.item_image(state.item_row(b))
            if ia is None or ib is None:
                raise NotFound("an item of this pair has no image")
            png = heatmap.links_png(ia, ib, top_links(torch.from_numpy(m), links), grid)
            state.pngs.put(key, png)
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    # ---- files of the run and its catalog -----------------------------------------------------------------
    @app.get("/files/run/{path:path}", tags=["files"], summary="A figure or the report of the run directory.")
    def run_file(path: str) -> FileResponse:
        return FileResponse(safe_file(run.path, path, RUN_SUFFIXES))

    @app.get("/files/catalog/{path:path}", tags=["files"], summary="An image file of the catalog directory.")
    def catalog_file(path: str) -> FileResponse:
        return FileResponse(safe_file(run.catalog.root, path, IMAGE_SUFFIXES))

    # ---- pages -------------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def catalog_page(
        request: Request,
        q: Annotated[str | None, Query(max_length=MAX_SEARCH_LEN)] = None,
        category: Annotated[str | None, Query(max_length=MAX_ID_LEN)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 48,
    ) -> HTMLResponse:
        listing = _items(q, category, limit, offset)
        nav = {"prev": "/?" + _qs(q=q, category=category, offset=max(0, offset - limit), limit=limit) if offset > 0 else None,
               "next": "/?" + _qs(q=q, category=category, offset=offset + limit, limit=limit) if listing["more"] else None}
        return page(request, "catalog.html", listing=listing, q=q or "", category=category or "",
                    categories=state.catalog.category_names, nav=nav, n_items=len(state.catalog))

    @app.get("/item/{item_id:path}", response_class=HTMLResponse, include_in_schema=False)
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
                if rows:
                    state.explain(rows, state.relation(rel), state.user_row(user), rule_name, target)
        c = state.catalog
        item = {"item_id": item_id, "category": str(c.categories[row]), "title": str(c.titles[row] or "")}
        return page(request, "item.html", item=item, result=result, sections=sections, user=user or "", relation=relation,
                    k=k, per_category=per_category, rule=rule_name, target=target, rules=state.rules(),
                    users=state.catalog.user_ids[:MAX_LIMIT], n_users=len(state.catalog.user_ids), heatmaps=state.has_pixels,
                    max_k=MAX_K, targets=TARGETS)

    @app.get("/pair", response_class=HTMLResponse, include_in_schema=False)
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

    @app.get("/run", response_class=HTMLResponse, include_in_schema=False)
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
        board = _leaderboard(summary.get("faithfulness"))
        return page(request, "run.html", s=summary, tables=tables, board=board)

    return app


DOCS_ASSETS = "/docs-assets"


def swagger_ui_assets() -> Path | None:
    """The folder of Swagger UI's files shipped by the ``swagger-ui-py`` package, or None when it is not installed.

    Found without importing the package (its import pulls in YAML support the app does not need).
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("swagger_ui")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(root) / "static"
        if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file():
            return folder
    return None


def api_endpoints(schema: dict) -> list[dict]:
    """The API's operations (method, path, summary, parameters) from its OpenAPI schema, for the local docs page."""
    out = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            params = [{"name": p.get("name"), "in": p.get("in"), "required": bool(p.get("required")),
                       "description": p.get("description") or ""} for p in op.get("parameters", [])]
            out.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""), "tag": (op.get("tags") or [""])[0],
                        "params": params})
    return out


def _leaderboard(result: dict | None) -> list[dict]:
    """Faithfulness rows, most faithful first (largest SRG under the first imputer, else MoRF − random gap), as the CLI orders them."""
    if not result or not isinstance(result.get("methods"), dict):
        return []
    imputers = list(result.get("imputers") or [])
    rows = []
    for name, e in result["methods"].items():
        aopc = e.get("aopc", {})
        rnd = e.get("randomization") or {}
        rows.append({"method": name, "morf": aopc.get("morf"), "lrf": aopc.get("lrf"), "random": aopc.get("random"),
                     "morf_ci": (e.get("aopc_ci95") or {}).get("morf"), "gap": e.get("gap"),
                     "mass": e.get("relevance_mass"), "pointing": e.get("pointing_game"),
                     "srg": [((e.get("srg") or {}).get(i), (e.get("srg_ci95") or {}).get(i)) for i in imputers],
                     "randomization": None if not rnd.get("spearman") else {"passed": rnd.get("passed"), "rho": rnd["spearman"][-1]}})

    def key(r: dict) -> float:
        v = r["srg"][0][0] if r["srg"] and r["srg"][0][0] is not None else (r["gap"] if r["gap"] is not None else r["morf"])
        return -(v if v is not None else -math.inf)

    return sorted(rows, key=key)


def serve(run_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          echo: Callable[[str], None] | None = None) -> None:
    """Load the run and serve the app with uvicorn until interrupted (binds loopback unless ``host`` says otherwise)."""
    import uvicorn

    say = echo or (lambda m: print(m, file=sys.stderr))
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: binding {host}: the app will be reachable from other machines; it has no authentication")
    app = create_app(run_path, warmup=True)
    state: ServeState = app.state.lrprec
    say(f"lrprec: serving run {state.run.path} ({len(state.catalog)} items); {state.index_note}")
    shown = f"[{host}]" if ":" in host else host
    say(f"open http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
