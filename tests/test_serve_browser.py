"""The web app in a real browser: Debian's chromium driven by playwright against a live uvicorn server.

Opens the catalog, clicks into an item, checks that the recommendation images and their
heatmaps load (naturalWidth > 0), opens a pair explanation and sees both heatmaps and
the BiLRP links, then the run page. A full-page screenshot of every page is saved under
the test's temporary directory (printed at the end) for a person to look at.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``make
test`` installs Debian's ``chromium`` package when missing). Without it the test fails
with instructions; it is not skipped.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """uvicorn serving a copy of the tiny run (with metrics and faithfulness results) on a free loopback port."""
    import uvicorn

    from lrprec.serve.app import create_app
    from test_serve_api import make_served_run

    run = make_served_run(tiny_run, tmp_path_factory.mktemp("browser") / "run")
    app = create_app(run, warmup=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; uvicorn serves on this very socket (no race)
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _wait_images(page, selector: str, at_least: int = 1) -> int:
    """Wait until at least ``at_least`` images match and every one of them has loaded with naturalWidth > 0."""
    page.wait_for_function(
        """([sel, n]) => {
            const imgs = Array.from(document.querySelectorAll(sel));
            return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, at_least], timeout=TIMEOUT_MS)
    return page.eval_on_selector_all(selector, "imgs => imgs.length")


def _scroll_through(page) -> None:
    """Scroll to the bottom and back so lazy images start loading (full-page screenshots show them)."""
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 500) { window.scrollTo(0, y); await new Promise(r => setTimeout(r, 30)); }
        window.scrollTo(0, 0);
    }""")


def test_browse_recommend_and_explain_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=LAUNCH_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
            page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

            # catalog: thumbnails from the catalog's images
            page.goto(server + "/")
            assert page.title().startswith("Catalog")
            assert _wait_images(page, "#catalog-grid .tile img", at_least=8) >= 8
            page.screenshot(path=str(shots / "catalog.png"), full_page=True)

            # search narrows the grid
            first_id = page.get_attribute("#catalog-grid .tile", "data-item")
            page.fill("input[name=q]", first_id)
            page.click("form.bar button[type=submit]")
            page.wait_for_url("**/?q=*")
            assert page.eval_on_selector_all("#catalog-grid .tile", "t => t.length") == 1

            # click into the item: recommendations with images and pair heatmaps
            page.click(f"#catalog-grid .tile[data-item='{first_id}']")
            page.wait_for_url(f"**/item/{first_id}")
            n_recs = page.eval_on_selector_all("article.rec", "r => r.length")
            assert n_recs >= 1
            assert _wait_images(page, "article.rec img.recimg", at_least=n_recs) == n_recs
            _scroll_through(page)
            assert _wait_images(page, "article.rec img.heat", at_least=2 * n_recs) == 2 * n_recs
            page.screenshot(path=str(shots / "item.png"), full_page=True)

            # another user and relation through the form (auto-submits on change)
            relations = page.eval_on_selector_all("select[name=relation] option", "o => o.map(x => x.value)")
            with page.expect_navigation():
                page.select_option("select[name=relation]", relations[-1])
            assert f"relation={relations[-1]}" in page.url
            _wait_images(page, "article.rec img.recimg")

            # open the pair explanation of the first recommendation
            page.click("article.rec a.more >> nth=0")
            page.wait_for_url("**/pair?*")
            _wait_images(page, "#heat-a")
            _wait_images(page, "#heat-b")
            page.locator("#bilrp").scroll_into_view_if_needed()
            _wait_images(page, "#bilrp")
            sizes = page.eval_on_selector_all("#heat-a, #heat-b, #bilrp", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            assert sizes[0][0] > 0 and sizes[1][0] > 0 and sizes[2][0] > sizes[0][0]
            assert page.locator("table.probs tr").count() >= 2
            page.screenshot(path=str(shots / "pair.png"), full_page=True)

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
            page.screenshot(path=str(shots / "run.png"), full_page=True)

            # an unknown item gives a readable 404 page
            resp = page.goto(server + "/item/NO-SUCH-ITEM")
            assert resp.status == 404 and "unknown item id" in page.inner_text("main")
            errors = [e for e in errors if "NO-SUCH-ITEM" not in e and "404 (Not Found)" not in e]
        finally:
            browser.close()
    assert not errors, errors
    for name in ("catalog", "item", "pair", "run"):
        assert (shots / f"{name}.png").stat().st_size > 5_000
    print(f"\nscreenshots: {shots}")
    keep = os.environ.get("LRPREC_SCREENSHOTS")
    if keep:  # optional: copy them somewhere a person will look
        shutil.copytree(shots, Path(keep), dirs_exist_ok=True)
