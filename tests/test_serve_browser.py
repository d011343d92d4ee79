"""The web app in a real browser: Debian's chromium driven by playwright against live uvicorn servers.

Two runs are served:

* an **image run** (the tiny synthetic run, evaluated, with faithfulness results) over a copy
  of its catalog in which two items have no image (gray placeholders of ``import
  --keep-missing-images``), and
* a **features-only run** (Amazon 2014 ``.b`` features, ``train --mode features``; built by
  :func:`test_serve_catalogs.make_features_run` from files written in the public formats).

``test_every_page_loads_cleanly`` visits every page of both (catalog, item pages with and
without an image, the empty and the filled pair page, the run page, the API docs) and fails
on any console error, page error, failed HTTP response or broken image (an ``<img>`` that
finished loading with no pixels). The interaction test clicks through the image run as a
person would. With ``LRPREC_SCREENSHOTS=DIR`` set, a full-page screenshot of every page is
saved there for a person to look at.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``make test``
installs Debian's ``chromium`` package when missing). Without it the test fails with
instructions; it is not skipped.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

CHROMIUM = os.environ.get("LRPREC_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


def _chromium() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Debian chromium not found at {CHROMIUM}: the browser test needs it. Install it with "
                    "'make browser' (or 'apt-get update && apt-get install -y chromium'); "
                    "set LRPREC_CHROMIUM to use another binary. Playwright must not download its own browser.",
                    pytrace=False)
    return CHROMIUM


@contextlib.contextmanager
def _serving(app):
    """uvicorn serving ``app`` on a free loopback port (the OS picks it; uvicorn serves on that very socket)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def image_run(tiny_run, tmp_path_factory):
    """The tiny run (evaluated, with faithfulness results) over a catalog copy where items 1 and 2 have no image."""
    from test_serve_api import make_served_run
    from test_serve_catalogs import make_partly_missing

    folder = tmp_path_factory.mktemp("browser-img")
    return make_partly_missing(make_served_run(tiny_run, folder / "run"), folder)


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    """A features-only run (Amazon 2014 meta + .b, train --mode features), evaluated, with faithfulness results."""
    from test_serve_api import make_served_run
    from test_serve_catalogs import make_features_run

    folder = tmp_path_factory.mktemp("browser-feat")
    return make_served_run(make_features_run(folder / "src"), folder / "run")


@pytest.fixture(scope="module")
def servers(image_run, features_run):
    from lrprec.serve.app import create_app

    with _serving(create_app(image_run, warmup=True)) as img, _serving(create_app(features_run)) as feat:
        yield {"image": img, "features": feat}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=LAUNCH_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def shots():
    """Where full-page screenshots go: ``$LRPREC_SCREENSHOTS`` when set, else None (none are taken: faster)."""
    keep = os.environ.get("LRPREC_SCREENSHOTS")
    if not keep:
        return None
    Path(keep).mkdir(parents=True, exist_ok=True)
    return Path(keep)


def _shot(page, shots: Path | None, name: str) -> None:
    if shots is not None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


class Watched:
    """A page whose console errors, page errors and failed responses are collected."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text} at {msg.location.get('url')}")
                     if msg.type == "error" else None)
        self.page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        # a request the browser itself cancelled because the page navigated on (net::ERR_ABORTED: a lazy
        # heatmap still loading when the test moves to the next page) is no failure of the app
        self.page.on("requestfailed", lambda r: None if "ERR_ABORTED" in str(r.failure) else self.errors.append(f"request failed: {r.url} ({r.failure})"))

    def close(self) -> None:
        self.page.close()


def _scroll_through(page) -> None:
    """Scroll to the bottom and back so lazy images start loading (full-page screenshots show them)."""
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 500) { window.scrollTo(0, y); await new Promise(r => setTimeout(r, 30)); }
        window.scrollTo(0, document.body.scrollHeight); await new Promise(r => setTimeout(r, 30));
        window.scrollTo(0, 0);
    }""")


def _broken_images(page) -> list[str]:
    """Wait until every <img> has finished loading, then list those without pixels (broken)."""
    _scroll_through(page)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=TIMEOUT_MS)
    return page.evaluate("() => Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")


def _wait_images(page, selector: str, at_least: int = 1) -> int:
    """Wait until at least ``at_least`` images match and every one of them has loaded with naturalWidth > 0."""
    page.wait_for_function(
        """([sel, n]) => {
            const imgs = Array.from(document.querySelectorAll(sel));
            return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, at_least], timeout=TIMEOUT_MS)
    return page.eval_on_selector_all(selector, "imgs => imgs.length")


def _pages(base: str, run) -> dict[str, str]:
    """Every page of a served run: name -> URL."""
    ids = [str(i) for i in run.catalog.item_ids]
    p = run.catalog.pairs("test")
    k = next(k for k in range(len(p)) if p.label[k] == 1)
    a, b = ids[p.a[k]], ids[p.b[k]]
    return {
        "catalog": base + "/",
        "catalog-search": base + "/?q=" + quote(ids[0]),
        "item": base + "/item/" + quote(ids[0], safe=""),
        "item-noimage": base + "/item/" + quote(ids[1], safe=""),
        "pair-empty": base + "/pair",
        "pair": base + f"/pair?a={quote(a)}&b={quote(b)}",
        "pair-noimage": base + f"/pair?a={quote(ids[1])}&b={quote(ids[0])}",
        "run": base + "/run",
        "docs": base + "/docs",
    }


@pytest.mark.parametrize("kind", ["image", "features"])
def test_every_page_loads_cleanly(kind, servers, browser, image_run, features_run, shots):
    """0 console errors and 0 broken images on every page of the run."""
    from lrprec.run import Run

    run = image_run if kind == "image" else Run.load(features_run)
    w = Watched(browser)
    problems: dict[str, list[str]] = {}
    placeholders = 0
    try:
        for name, url in _pages(servers[kind], run).items():
            w.errors.clear()
            resp = w.page.goto(url, wait_until="load")
            assert resp is not None and resp.status == 200, (name, resp and resp.status)
            if name == "docs":  # Swagger UI renders the operations from /openapi.json (or the local list)
                w.page.wait_for_selector(".opblock, .api-op", timeout=TIMEOUT_MS)
            broken = _broken_images(w.page)
            w.page.wait_for_load_state("networkidle")
            placeholders += w.page.locator(".ph").count()
            if kind == "features" and name != "docs":
                assert w.page.locator("img[src*='/image.png'], img[src*='heatmap'], img[src*='bilrp']").count() == 0, name
                assert w.page.locator("select[name=rule], select[name=target]").count() == 0, name
            _shot(w.page, shots, f"{kind}-{name}")
            if broken or w.errors:
                problems[name] = [f"broken image {s}" for s in broken] + list(w.errors)
    finally:
        w.close()
    assert not problems, problems
    assert placeholders > 0  # the items without images were drawn as placeholder cards


def test_browse_recommend_and_explain_in_chromium(servers, browser, image_run, shots):
    """The image run as a person uses it: search, open an item, change the relation, open a pair, change the rule."""
    server = servers["image"]
    missing = {str(image_run.catalog.item_ids[k]) for k in (1, 2)}
    w = Watched(browser)
    page = w.page
    try:
        # catalog: thumbnails from the catalog's images, placeholder cards for the two without
        page.goto(server + "/")
        assert page.title().startswith("Catalog")
        assert _wait_images(page, "#catalog-grid .tile img", at_least=8) >= 8
        assert {page.get_attribute(f"#catalog-grid .tile[data-item='{i}'] .ph", "data-placeholder") for i in missing} == missing

        # search narrows the grid
        first_id = page.get_attribute("#catalog-grid .tile", "data-item")
        page.fill("input[name=q]", first_id)
        page.click("form.bar button[type=submit]")
        page.wait_for_url("**/?q=*")
        assert page.eval_on_selector_all("#catalog-grid .tile", "t => t.length") == 1

        # click into the item: recommendations with images (or placeholder cards) and pair heatmaps
        page.click(f"#catalog-grid .tile[data-item='{first_id}']")
        page.wait_for_url(f"**/item/{first_id}")
        n_recs = page.eval_on_selector_all("article.rec", "r => r.length")
        assert n_recs >= 1
        n_ph = page.locator("article.rec .ph.recimg").count()
        assert _wait_images(page, "article.rec img.recimg", at_least=n_recs - n_ph) == n_recs - n_ph
        _scroll_through(page)
        assert _wait_images(page, "article.rec img.heat", at_least=2 * n_recs) == 2 * n_recs
        _shot(page, shots, "interact-item")

        # another relation through the form (auto-submits on change)
        relations = page.eval_on_selector_all("select[name=relation] option", "o => o.map(x => x.value)")
        with page.expect_navigation():
            page.select_option("select[name=relation]", relations[-1])
        assert f"relation={relations[-1]}" in page.url

        # open the pair explanation of the first recommendation
        page.click("article.rec a.more >> nth=0")
        page.wait_for_url("**/pair?*")
        _wait_images(page, "#heat-a")
        _wait_images(page, "#heat-b")
        if page.locator("#bilrp").count():
            page.locator("#bilrp").scroll_into_view_if_needed()
            _wait_images(page, "#bilrp")
            sizes = page.eval_on_selector_all("#heat-a, #heat-b, #bilrp", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            assert sizes[0][0] > 0 and sizes[1][0] > 0 and sizes[2][0] > sizes[0][0]
        assert page.locator("table.probs tr").count() >= 2

        # a different rule re-renders the heatmaps
        with page.expect_navigation():
            page.select_option("select[name=rule]", "lrp0")
        assert "rule=lrp0" in page.url
        _wait_images(page, "#heat-a")
        _wait_images(page, "#heat-b")

        # the run page: evaluation table, leaderboard, curves
        page.click("header nav a[href='/run']")
        page.wait_for_url("**/run")
        assert page.locator("#evaluation table").count() >= 1
        assert page.locator("table.leaderboard tr").count() == 3
        _wait_images(page, "#faithfulness img.fig")
        assert not w.errors, w.errors

        # an unknown item gives a readable 404 page (its own 404 is the only error it may log)
        resp = page.goto(server + "/item/NO-SUCH-ITEM")
        assert resp.status == 404 and "unknown item id" in page.inner_text("main")
        assert all("NO-SUCH-ITEM" in e or "404 (Not Found) at " + server + "/item/NO-SUCH-ITEM" in e for e in w.errors), w.errors
    finally:
        w.close()
