"""The web app: catalog, item, pair and run pages plus a JSON API under ``/api`` (``lrprec serve``).

:func:`create_app` loads the run (model + catalog) and its recommendation index once;
requests then call the same Python API as the CLI — :class:`lrprec.recommend.recommender.Recommender`
for recommendations, :func:`lrprec.app.explanations.pair_probabilities` for pair scores,
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

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrprec.errors import UsageError
from lrprec.jsonable import plain
from lrprec.run import Run
from lrprec.serve.api import api_router
from lrprec.serve.middleware import LimitsMiddleware
from lrprec.serve.pages import pages_router
from lrprec.serve.params import CACHE_BYTES, CACHE_ENTRIES, EXPLAIN_NICE, EXPLAIN_QUEUE, EXPLAIN_WORKERS, KEEP_ALIVE_SECONDS
from lrprec.serve.pool import Busy
from lrprec.serve.state import BadParam, NotFound, ServeState
from lrprec.serve.urls import bilrp_png_url, heatmap_url, image_url, item_url, pair_url

log = logging.getLogger("lrprec.serve")
HERE = Path(__file__).resolve().parent


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


def create_app(run_path: str | os.PathLike | Run, *, index: Any = None, cache_entries: int = CACHE_ENTRIES, cache_bytes: int = CACHE_BYTES,
               explain_workers: int = EXPLAIN_WORKERS, explain_queue: int = EXPLAIN_QUEUE, explain_processes: bool = False,
               explain_nice: int = EXPLAIN_NICE, warmup: bool = False) -> FastAPI:
    """The FastAPI app for a run directory: loads the run and its index once, then serves pages and ``/api``.

    ``index`` (a :class:`lrprec.recommend.recommender.RecIndex`) skips loading ``RUN/index``;
    without a usable stored index one is built in memory at start (with a notice).
    ``explain_workers``/``explain_queue`` size the explanation pool (past both: 503 + Retry-After); with
    ``explain_processes`` its workers are processes (each loads the run; ``explain_nice`` lowers their CPU priority),
    else threads of this process;
    ``cache_bytes`` bounds each in-memory cache.
    ``warmup`` explains one pair at start, so the first page does not pay torch's first-call cost.
    """
    run = run_path if isinstance(run_path, Run) else Run.load(run_path)
    state = ServeState(run, index=index, cache_entries=cache_entries, cache_bytes=cache_bytes, explain_workers=explain_workers,
                       explain_queue=explain_queue, explain_processes=explain_processes, explain_nice=explain_nice)
    if warmup:
        state.warmup()
    app = FastAPI(
        title="lrprec",
        version=str(run.config.get("lrprec_version", "")),
        description="Recommend related items and explain every prediction with LRP heatmaps on both images. "
                    f"Serving run `{run.path.name}` ({len(run.catalog)} items).",
        docs_url=None, redoc_url=None,  # /docs below serves Swagger UI from local files (works offline)
        lifespan=_lifespan,
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

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> Response:
        resp = error(request, 503, str(exc))
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

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

    app.include_router(api_router(state))
    app.include_router(pages_router(state, page))
    return app


DOCS_ASSETS = "/docs-assets"


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # uvicorn has already answered the requests in flight (graceful shutdown); finish what the explanation pool still holds
    pool = app.state.lrprec.pool
    pool.drain(timeout=60)
    pool.close()


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


def serve(run_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          echo: Callable[[str], None] | None = None, explain_workers: int = EXPLAIN_WORKERS, explain_queue: int = EXPLAIN_QUEUE,
          drain_seconds: float = 30.0, explain_nice: int = EXPLAIN_NICE, keep_alive: int = KEEP_ALIVE_SECONDS) -> None:
    """Load the run and serve the app with uvicorn until interrupted (binds loopback unless ``host`` says otherwise).

    On SIGTERM or Ctrl-C the server stops accepting connections and answers the requests in flight
    (for at most ``drain_seconds``) before it exits. Explanations run in ``explain_workers`` worker processes
    (priority lowered by ``explain_nice``), so they never hold this process's GIL; idle keep-alive connections
    stay open ``keep_alive`` seconds."""
    import uvicorn

    say = echo or (lambda m: print(m, file=sys.stderr))
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: binding {host}: the app will be reachable from other machines; it has no authentication")
    if explain_workers < 1 or explain_queue < 0:
        raise UsageError(f"--explain-workers must be >= 1 and --explain-queue >= 0, got {explain_workers}, {explain_queue}")
    app = create_app(run_path, warmup=True, explain_workers=explain_workers, explain_queue=explain_queue, explain_processes=True,
                     explain_nice=explain_nice)
    state: ServeState = app.state.lrprec
    say(f"lrprec: serving run {state.run.path} ({len(state.catalog)} items); {state.index_note}")
    shown = f"[{host}]" if ":" in host else host
    say(f"open http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_seconds, timeout_keep_alive=keep_alive)
