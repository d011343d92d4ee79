"""The web app's JSON API and pages through FastAPI's test client: every endpoint, and the error cases.

Runs against a private copy of the session's tiny trained run (so files planted for the
traversal tests and the faithfulness results stay out of other tests' way).
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastapi.testclient import TestClient

from lrprec.run import Run

SECRET = b"\x89PNG not really, but a file outside the served folders"


def make_served_run(src: Path, dst: Path) -> Path:
    """Copy a trained run, evaluate it and add a small faithfulness result + curve PNG (what the run page shows)."""
    from lrprec.app.evaluation import evaluate_run

    shutil.copytree(src, dst)
    evaluate_run(dst, "test")
    faith = dst / "faithfulness"
    faith.mkdir(exist_ok=True)
    methods = {
        "lrp": {"aopc": {"morf": 0.31, "lrf": 0.02, "random": 0.11}, "aopc_ci95": {"morf": [0.25, 0.37], "random": [0.08, 0.14]},
                "gap": 0.20, "relevance_mass": 0.61, "pointing_game": 0.75},
        "random": {"aopc": {"morf": 0.10, "lrf": 0.10, "random": 0.11}, "aopc_ci95": {"morf": [0.07, 0.13], "random": [0.08, 0.14]},
                   "gap": -0.01, "relevance_mass": 0.2, "pointing_game": 0.25},
    }
    (faith / "faithfulness.json").write_text(json.dumps({"pairs": 4, "steps": 4, "region": 2, "methods": methods}))
    Image.new("RGB", (40, 30), (200, 50, 50)).save(faith / "faithfulness_probability.png")
    return dst


@pytest.fixture(scope="module")
def served_run(tiny_run, tmp_path_factory) -> Path:
    return make_served_run(tiny_run, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def app(served_run):
    from lrprec.serve.app import create_app

    return create_app(served_run)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def state(app):
    return app.state.lrprec


@pytest.fixture(scope="module")
def ids(state) -> dict:
    """Two items of different categories, and a user."""
    cat = state.catalog
    a = str(cat.item_ids[0])
    b = str(next(i for i, c in zip(cat.item_ids, cat.categories) if c != cat.categories[0]))
    return {"a": a, "b": b, "user": cat.user_ids[0], "category": str(cat.categories[0])}


def png_size(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as im:
        assert im.format == "PNG"
        return im.size


def assert_readable_error(resp, status: int, *words: str) -> None:
    """A JSON error with the given status whose message names the problem and holds no stack trace."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"]
    for w in words:
        assert w in body["detail"], body["detail"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text


# ---- meta -------------------------------------------------------------------------------------------------
def test_health_openapi_and_headers(client):
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    spec = client.get("/openapi.json").json()
    for path in ("/api/items", "/api/items/{item_id}", "/api/items/{item_id}/image.png", "/api/users", "/api/recommend",
                 "/api/pair", "/api/explain", "/api/explain/heatmap.png", "/api/bilrp", "/api/bilrp.png", "/api/run"):
        assert path in spec["paths"], path
    k = next(p for p in spec["paths"]["/api/recommend"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["maximum"] == 100
    assert client.get("/docs").status_code == 200


def test_run_summary_and_page(client, state):
    s = client.get("/api/run").json()
    assert s["relations"] == state.run.relations
    assert "test" in s["metrics"] and s["metrics"]["test"]["overall"]["n"] > 0
    assert set(s["faithfulness"]["methods"]) == {"lrp", "random"}
    assert s["figures"]["faithfulness"] == ["/files/run/faithfulness/faithfulness_probability.png"]
    assert "epsilon-plus-flat" in s["rules"] and s["index"]["note"]
    page = client.get("/run")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "Link prediction" in html and "test split" in html and state.run.relations[0] in html
    assert f"{len(state.catalog)} items, {len(state.catalog.user_ids)} users" in html
    assert html.index(">lrp<") < html.index(">random<")  # leaderboard: largest gap first
    assert "/files/run/faithfulness/faithfulness_probability.png" in html
    assert client.get("/files/run/faithfulness/faithfulness_probability.png").status_code == 200


# ---- items ------------------------------------------------------------------------------------------------
def test_items_search_filter_and_pagination(client, state, ids):
    r = client.get("/api/items", params={"limit": 5})
    body = r.json()
    assert r.status_code == 200 and len(body["items"]) == 5 and body["more"] is True
    assert body["items"][0]["item_id"] == ids["a"] and body["items"][0]["image"].endswith("/image.png")
    nxt = client.get("/api/items", params={"limit": 5, "offset": 5}).json()["items"]
    assert nxt[0]["item_id"] == str(state.catalog.item_ids[5])
    one = client.get("/api/items", params={"search": ids["a"].lower()}).json()["items"]
    assert [x["item_id"] for x in one] == [ids["a"]]
    cat = client.get("/api/items", params={"category": ids["category"], "limit": 500}).json()
    assert cat["items"] and all(x["category"] == ids["category"] for x in cat["items"]) and not cat["more"]
    title_word = str(state.catalog.titles[0]).split()[0]
    assert any(x["item_id"] == ids["a"] for x in client.get("/api/items", params={"search": title_word, "limit": 500}).json()["items"])
    assert client.get("/api/items", params={"search": "no-such-thing"}).json()["items"] == []
    assert_readable_error(client.get("/api/items", params={"category": "spaceships"}), 422, "unknown category", "spaceships")
    assert_readable_error(client.get("/api/items", params={"limit": 501}), 422, "limit", "500")
    assert_readable_error(client.get("/api/items", params={"limit": 0}), 422, "limit")
    assert_readable_error(client.get("/api/items", params={"offset": -1}), 422, "offset")
    assert_readable_error(client.get("/api/items", params={"limit": "many"}), 422, "limit", "integer")
    assert_readable_error(client.get("/api/items", params={"search": "x" * 201}), 422, "search")


def test_item_image_and_users(client, state, ids):
    r = client.get(f"/api/items/{ids['a']}")
    assert r.status_code == 200 and r.json()["category"] == ids["category"]
    img = client.get(f"/api/items/{ids['a']}/image.png", params={"size": 64})
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and png_size(img.content) == (64, 64)
    assert_readable_error(client.get("/api/items/NOPE-404"), 404, "unknown item id")
    assert_readable_error(client.get("/api/items/NOPE-404/image.png"), 404, "unknown item id")
    assert_readable_error(client.get(f"/api/items/{ids['a']}/image.png", params={"size": 5000}), 422, "size")
    users = client.get("/api/users").json()
    assert users["total"] == len(state.catalog.user_ids) and users["users"][0] == ids["user"]
    assert_readable_error(client.get("/api/users", params={"limit": 10_000}), 422, "limit")


# ---- recommend --------------------------------------------------------------------------------------------
def test_recommend_matches_the_python_api(client, state, ids):
    from lrprec.recommend.recommender import recommend

    got = client.get("/api/recommend", params={"item": ids["a"], "k": 5, "user": ids["user"]}).json()
    want = recommend(state.run, ids["a"], user=ids["user"], k=5, index=state.recommender.index)
    assert got["results"].keys() == want["results"].keys() == set(state.run.relations)
    for rel in want["results"]:
        assert [e["item"] for e in got["results"][rel]] == [e["item"] for e in want["results"][rel]]
        assert np.allclose([e["probability"] for e in got["results"][rel]], [e["probability"] for e in want["results"][rel]])
        assert all(e["item"] != ids["a"] for e in got["results"][rel])
    rel = state.run.relations[-1]
    one = client.get("/api/recommend", params={"item": ids["a"], "k": 3, "relation": rel, "per_category": "true"}).json()
    assert list(one["results"]) == [rel]
    groups = one["results"][rel]
    assert set(groups) <= set(state.catalog.category_names) and all(len(v) <= 3 for v in groups.values())
    for cat, entries in groups.items():
        assert all(state.catalog.categories[state.catalog.index_of(e["item"])] == cat for e in entries)


@pytest.mark.parametrize("params,status,words", [
    ({"k": 0}, 422, ("k", "greater than or equal to 1")),
    ({"k": 101}, 422, ("k", "less than or equal to 100")),
    ({"k": 10**12}, 422, ("k",)),
    ({"k": "ten"}, 422, ("k", "integer")),
    ({"relation": "likes"}, 422, ("unknown relation", "likes", "also_viewed")),
    ({"per_category": "maybe"}, 422, ("per_category",)),
    ({"user": "ghost-user"}, 404, ("unknown user", "ghost-user")),
    ({"item": "NOPE-404"}, 404, ("unknown item id",)),
    ({"item": ""}, 422, ("item",)),
    ({"item": "x" * 300}, 422, ("item", "256")),
])
def test_recommend_bad_input(client, ids, params, status, words):
    query = {"item": ids["a"], **params}
    assert_readable_error(client.get("/api/recommend", params=query), status, *words)


def test_recommend_requires_item(client):
    assert_readable_error(client.get("/api/recommend"), 422, "item", "required")


# ---- pair, explain, BiLRP ---------------------------------------------------------------------------------
def test_pair_probabilities(client, state, ids):
    from lrprec.app.explanations import pair_probabilities

    r = client.get("/api/pair", params={"a": ids["a"], "b": ids["b"], "user": ids["user"]}).json()
    rows = [state.catalog.index_of(ids["a"])], [state.catalog.index_of(ids["b"])], [state.catalog.user_index(ids["user"])]
    want = pair_probabilities(state.run, *(np.array(x) for x in rows))
    assert set(r["probabilities"]) == set(state.run.relations)
    for rel, p in want.items():
        assert r["probabilities"][rel] == pytest.approx(float(p[0]), abs=1e-6)
    assert r["most_probable"] == max(r["probabilities"], key=r["probabilities"].get)
    assert_readable_error(client.get("/api/pair", params={"a": ids["a"], "b": "NOPE-404"}), 404, "NOPE-404")
    assert_readable_error(client.get("/api/pair", params={"a": ids["a"]}), 422, "b", "required")


def test_explain_json_heatmaps_and_cache(client, state, ids):
    from lrprec.explain.targets import explain_pairs

    rel = state.run.relations[0]
    params = {"a": ids["a"], "b": ids["b"], "relation": rel, "rule": "epsilon", "target": "similarity"}
    rec = client.get("/api/explain", params=params).json()
    assert rec["relation"] == rel and rec["rule"] == "epsilon" and 0 <= rec["probability"] <= 1
    rows = np.array([state.catalog.index_of(ids["a"])]), np.array([state.catalog.index_of(ids["b"])])
    direct = explain_pairs(state.run.model, state.run.inputs(rows[0]), state.run.inputs(rows[1]), state.run.check_relation(rel), -1,
                           target="similarity", composite="epsilon")
    assert rec["relevance_sum"]["a"] == pytest.approx(float(direct.relevance_a.sum()), rel=1e-4, abs=1e-6)
    assert rec["relevance_sum"]["b"] == pytest.approx(float(direct.relevance_b.sum()), rel=1e-4, abs=1e-6)
    assert rec["target_value"] == pytest.approx(float(direct.target_value[0]), rel=1e-5)
    # the measured conservation: (Σ R_a + Σ R_b) / 2S for the similarity
    want = (rec["relevance_sum"]["a"] + rec["relevance_sum"]["b"]) / (2 * rec["target_value"])
    assert rec["conservation"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    hits = state.explanations.hits
    for side in ("a", "b"):
        img = client.get(rec["heatmaps"][side])
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert png_size(img.content) == (192, 192)
    assert state.explanations.hits >= hits + 2  # both heatmaps came from the cached explanation
    # default relation: the most probable one; every target works
    auto = client.get("/api/explain", params={"a": ids["a"], "b": ids["b"], "target": "distance"}).json()
    probs = client.get("/api/pair", params={"a": ids["a"], "b": ids["b"]}).json()["probabilities"]
    assert auto["relation"] == max(probs, key=probs.get) and auto["target"] == "distance"


@pytest.mark.parametrize("params,status,words", [
    ({"rule": "bogus"}, 422, ("unknown rule", "bogus", "epsilon-plus-flat")),
    ({"target": "beauty"}, 422, ("target", "similarity")),
    ({"relation": "likes"}, 422, ("unknown relation",)),
    ({"b": "NOPE-404"}, 404, ("unknown item id",)),
    ({"user": "ghost-user"}, 404, ("unknown user",)),
])
def test_explain_bad_input(client, ids, params, status, words):
    query = {"a": ids["a"], "b": ids["b"], **params}
    assert_readable_error(client.get("/api/explain", params=query), status, *words)
    assert_readable_error(client.get("/api/explain/heatmap.png", params={**query, "side": "a"}), status, *words)


def test_heatmap_side_is_checked(client, ids):
    assert_readable_error(client.get("/api/explain/heatmap.png", params={"a": ids["a"], "b": ids["b"], "side": "c"}), 422, "side")


def test_bilrp_links_and_image(client, state, ids):
    rel = state.run.relations[0]
    r = client.get("/api/bilrp", params={"a": ids["a"], "b": ids["b"], "relation": rel, "grid": 4, "links": 5}).json()
    assert r["grid"] == 4 and len(r["links"]) == 5
    vals = [abs(x["value"]) for x in r["links"]]
    assert vals == sorted(vals, reverse=True)
    assert all(0 <= x["patch_a"] < 16 and 0 <= x["patch_b"] < 16 for x in r["links"])
    img = client.get(r["image"])
    assert img.status_code == 200 and png_size(img.content) == (2 * 192 + 64, 192)
    assert_readable_error(client.get("/api/bilrp", params={"a": ids["a"], "b": ids["b"], "grid": 0}), 422, "grid")
    assert_readable_error(client.get("/api/bilrp", params={"a": ids["a"], "b": ids["b"], "grid": 99}), 422, "grid", "16")
    assert_readable_error(client.get("/api/bilrp.png", params={"a": ids["a"], "b": ids["b"], "links": 10_000}), 422, "links")
    assert_readable_error(client.get("/api/bilrp", params={"a": ids["a"], "b": ids["b"], "rule": "nope"}), 422, "unknown rule")


# ---- pages ------------------------------------------------------------------------------------------------
def test_pages_render(client, state, ids):
    cat = client.get("/", params={"q": ids["a"]})
    assert cat.status_code == 200 and f'data-item="{ids["a"]}"' in cat.text
    assert 'data-item="' in client.get("/", params={"category": ids["category"]}).text
    item = client.get(f"/item/{ids['a']}", params={"k": 3, "user": ids["user"]})
    assert item.status_code == 200 and item.text.count('class="rec card"') == 3
    assert "/api/explain/heatmap.png?" in item.text
    allrel = client.get(f"/item/{ids['a']}", params={"k": 2, "relation": "all", "per_category": "true"})
    assert allrel.status_code == 200 and all(f"<h2>{r}</h2>" in allrel.text for r in state.run.relations)
    empty = client.get("/pair")
    assert empty.status_code == 200 and "Explain a pair" in empty.text
    pair = client.get("/pair", params={"a": ids["a"], "b": ids["b"], "rule": "zplus"})
    assert pair.status_code == 200 and 'id="heat-a"' in pair.text and 'id="heat-b"' in pair.text and 'id="bilrp"' in pair.text
    assert "rule=zplus" in pair.text


@pytest.mark.parametrize("url,status,words", [
    ("/item/NOPE-404", 404, ("unknown item id",)),
    ("/item/{a}?k=1000", 422, ("k", "less than or equal to 100")),
    ("/item/{a}?rule=bogus", 422, ("unknown rule",)),
    ("/pair?a={a}&b=NOPE-404", 404, ("unknown item id",)),
    ("/pair?a={a}&b={a}&target=beauty", 422, ("target",)),
    ("/no/such/page", 404, ("not found",)),
])
def test_page_errors_are_html(client, ids, url, status, words):
    r = client.get(url.format(a=ids["a"]))
    assert r.status_code == status and "text/html" in r.headers["content-type"]
    for w in words:
        assert w in r.text
    assert "Traceback" not in r.text


# ---- files and traversal ------------------------------------------------------------------------------------
def _raw_status(app, path: str) -> int:
    """Status of a GET whose path reaches the app verbatim (no client-side normalization of ``..``)."""
    messages: list[dict] = []
    sent_request = False

    async def main() -> None:
        done = asyncio.Event()

        async def receive() -> dict:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # like a server: the client disconnects only after the response
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        await asyncio.wait_for(app(scope, receive, send), timeout=30)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(main())
    return next(m["status"] for m in messages if m["type"] == "http.response.start")


def test_files_are_served_only_from_inside(client, app, state, served_run, tmp_path):
    cat_root = Path(state.catalog.root)
    image_rel = str(state.catalog.image_paths[0])
    assert client.get(f"/files/catalog/{image_rel}").status_code == 200
    # plant image-typed files right outside the served folders: they exist, yet must stay unreachable
    outside_cat = cat_root.parent / "secret.png"
    outside_run = served_run.parent / "secret.png"
    outside_cat.write_bytes(SECRET)
    outside_run.write_bytes(SECRET)
    link = served_run / "faithfulness" / "escape.png"
    os.symlink(tmp_path / "target.png", link)
    (tmp_path / "target.png").write_bytes(SECRET)
    try:
        attempts = [
            "/files/catalog/..%2fsecret.png", "/files/catalog/%2e%2e%2fsecret.png", "/files/catalog/%2e%2e/secret.png",
            "/files/catalog/images/..%2f..%2fsecret.png", "/files/catalog/%252e%252e%252fsecret.png",
            "/files/catalog/..%5csecret.png", "/files/run/..%2fsecret.png", "/files/run/%2e%2e%2fsecret.png",
            "/files/catalog/" + "%2e%2e%2f" * 12 + "etc/passwd", "/files/catalog/%2fetc%2fpasswd", "/files/catalog//etc/passwd",
            "/files/run/faithfulness/escape.png",  # a symlink pointing outside
            "/files/run/config.json", "/files/run/model.safetensors", "/files/catalog/catalog.json", "/files/catalog/images.npy",
            "/files/catalog/", "/files/catalog/images/%00.png",
        ]
        for url in attempts:
            r = client.get(url)
            assert r.status_code == 404, (url, r.status_code)
            assert SECRET not in r.content
        for raw in ("/files/catalog/../secret.png", "/files/run/../secret.png", "/files/catalog/images/../../secret.png",
                    "/files/run/faithfulness/../../secret.png"):
            assert _raw_status(app, raw) == 404, raw
        assert _raw_status(app, f"/files/catalog/{image_rel}") == 200
    finally:
        outside_cat.unlink()
        outside_run.unlink()
        link.unlink()


def test_request_size_limits(client):
    assert_readable_error(client.post("/api/health", content=b"x" * 20_000), 413, "larger than")
    assert_readable_error(client.get("/api/items", params={"search": "x" * 13_000}), 414, "query string")
    r = client.post("/api/health", content=b"{}")
    assert r.status_code == 405 and "Traceback" not in r.text


def test_unexpected_errors_hide_the_stack(client, state, ids, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(state, "pair_probabilities", boom)
    r = client.get("/api/pair", params={"a": ids["a"], "b": ids["b"]})
    assert_readable_error(r, 500, "internal error")
    assert "secret internals" not in r.text
    page = client.get("/pair", params={"a": ids["a"], "b": ids["b"]})
    assert page.status_code == 500 and "secret internals" not in page.text and "text/html" in page.headers["content-type"]


# ---- rendering and the CLI ---------------------------------------------------------------------------------
def test_heatmap_colours_are_symmetric_red_blue():
    from lrprec.serve import heatmap

    assert heatmap.bwr(np.array([-1.0, 0.0, 1.0])).tolist() == [[0, 0, 255], [255, 255, 255], [255, 0, 0]]
    rel = np.zeros((3, 8, 8))
    rel[0, :4] = 1.0   # top half positive
    rel[0, 4:] = -0.5  # bottom half negative, half as strong
    with Image.open(io.BytesIO(heatmap.heatmap_png(rel, None, size=8))) as im:
        px = np.asarray(im.convert("RGB"))
    assert px[0, 0].tolist() == [255, 0, 0]
    assert px[7, 0][2] == 255 and px[7, 0][0] == px[7, 0][1] == 128
    with Image.open(io.BytesIO(heatmap.heatmap_png(rel, np.zeros((8, 8, 3), np.uint8), scale=2.0, size=16))) as im:
        assert im.size == (16, 16)
    assert png_size(heatmap.links_png(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8) * 255,
                                      [(0, 3, 1.0), (5, 2, -0.4)], grid=4, size=64, gap=10)) == (138, 64)
    with pytest.raises(ValueError):
        heatmap.relevance_map(np.zeros(5))


def test_cli_serve_is_registered_and_binds_loopback_by_default(monkeypatch):
    import inspect

    from typer.testing import CliRunner

    import lrprec.cli.data  # noqa: F401  a second command, so typer keeps subcommands
    import lrprec.cli.serve  # noqa: F401  registers the command
    from lrprec.cli._app import app
    from lrprec.serve import app as serve_app

    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0 and "127.0.0.1" in res.output and "--port" in res.output
    assert inspect.signature(serve_app.serve).parameters["host"].default == "127.0.0.1"
    res = CliRunner().invoke(app, ["serve", "/no/such/run"])
    assert res.exit_code == 2 and "not an lrprec run" in res.output
    with pytest.raises(ValueError, match="port"):
        serve_app.serve("/no/such/run", port=70000)
    called = {}
    monkeypatch.setattr(serve_app, "serve", lambda run, **kw: called.update(run=run, **kw))
    res = CliRunner().invoke(app, ["serve", "somewhere", "--port", "8123"])
    assert res.exit_code == 0 and called["host"] == "127.0.0.1" and called["port"] == 8123


def test_safe_file_unit(tmp_path):
    from lrprec.serve.params import IMAGE_SUFFIXES
    from lrprec.serve.state import NotFound, safe_file

    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    assert safe_file(tmp_path / "root", "sub/a.png", IMAGE_SUFFIXES) == (tmp_path / "root" / "sub" / "a.png").resolve()
    for bad in ("../b.png", "sub/../../b.png", str(tmp_path / "b.png"), "sub", "", "sub/a.png\x00", "sub/missing.png"):
        with pytest.raises(NotFound):
            safe_file(tmp_path / "root", bad, IMAGE_SUFFIXES)


def test_shared_model_left_untouched(state):
    """Serving leaves the model in eval mode with no gradients recorded (requests share it)."""
    assert not state.run.model.training
    assert all(p.grad is None for p in state.run.model.parameters())
    assert torch.is_grad_enabled()


def test_stored_index_is_used_and_a_stale_one_replaced(served_run, tmp_path):
    """A valid RUN/index is loaded at start; a stale one (other weights) is not trusted: an in-memory index is built."""
    from lrprec.recommend.recommender import build_index
    from lrprec.serve.app import create_app

    run_dir = tmp_path / "run"
    shutil.copytree(served_run, run_dir, ignore=shutil.ignore_patterns("index"))
    build_index(Run.load(run_dir), progress=False)
    app = create_app(run_dir)
    assert "loaded from" in app.state.lrprec.index_note
    meta_path = run_dir / "index" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta["weights_id"] = "someone-elses-weights"
    meta_path.write_text(json.dumps(meta))
    app = create_app(run_dir)
    note = app.state.lrprec.index_note
    assert "other model weights" in note and "built in memory" in note
    with TestClient(app) as c:
        item = str(app.state.lrprec.catalog.item_ids[3])
        r = c.get("/api/recommend", params={"item": item, "k": 2})
        assert r.status_code == 200 and all(len(v) == 2 for v in r.json()["results"].values())
        assert "other model weights" in c.get("/run").text


def test_lru_evicts_the_least_recently_used_and_counts():
    from lrprec.serve.state import LRU

    c = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1          # a is now the most recent
    c.put("c", 3)                   # evicts b
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3 and len(c) == 2
    assert (c.hits, c.misses) == (3, 1)
