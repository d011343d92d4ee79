"""Screenshots of the web app for the README and the docs, taken in Debian's chromium by playwright.

    python docs/scripts/screenshot.py RUN OUT_DIR [--item ID] [--partner ID] [--relation R]

Serves RUN with uvicorn on a free loopback port (as ``tests/test_serve_browser.py`` does),
opens the item page of ``--item`` (its recommendations) and the pair page of ``--item`` and
``--partner`` (both images with their LRP heatmaps), and saves ``item.png`` and ``pair.png``
in OUT_DIR. Playwright never downloads a browser: it launches ``/usr/bin/chromium``
(``make browser`` installs it; ``LRPREC_CHROMIUM`` picks another binary).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

CHROMIUM = os.environ.get("LRPREC_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def serving(app):
    """uvicorn serving ``app`` on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def screenshots(run: str, out_dir: str, item: str, partner: str, relation: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from lrprec.serve.app import create_app

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = {"item": f"/item/{quote(item, safe='')}",
             "pair": f"/pair?a={quote(item)}&b={quote(partner)}&relation={quote(relation)}"}
    saved = []
    with serving(create_app(run)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        for name, path in pages.items():
            page.goto(base + path, wait_until="networkidle", timeout=120_000)
            saved.append(out / f"{name}.png")
            page.screenshot(path=str(saved[-1]), full_page=False)
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("out_dir")
    parser.add_argument("--item", required=True)
    parser.add_argument("--partner", required=True)
    parser.add_argument("--relation", default="buy_after_viewing")
    args = parser.parse_args()
    for path in screenshots(args.run, args.out_dir, args.item, args.partner, args.relation):
        print(path)


if __name__ == "__main__":
    main()
