"""The web app on catalogs that are not the synthetic one: a features-only run (Amazon 2014 ``.b``
features, no pixels) and an image run whose catalog lacks some images.

The features-only run is built here from files written in the public formats: a tiny
``meta_<Cat>.json.gz`` (Python-literal lines, titles with HTML entities and tags, half the
items with an ``imUrl``) and an ``image_features_<Cat>.b`` of 64-dim records (the importer
takes any record width through ``feature_dim``; the real files have 4096), imported with
``import_amazon2014(features=...)`` and trained with ``backbone="features"`` (``train --mode
features``). Seconds to build.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastapi.testclient import TestClient

from lrprec.data.amazon import import_amazon2014
from lrprec.data.amazon_features import feature_dtype
from lrprec.data.importing.sources import SOURCES_FILE
from lrprec.run import Run

FEATURE_DIM = 64
N_ITEMS = 32
CATEGORIES = ("Clothing, Shoes &amp; Jewelry", "Sports &amp; Outdoors")
MISSING = (1, 2)  # item rows of the image catalog whose image is made a placeholder


def asin(k: int) -> str:
    return f"B{k:09d}"


def write_features_source(folder: Path, n: int = N_ITEMS, dim: int = FEATURE_DIM, seed: int = 0) -> tuple[Path, Path]:
    """meta (2014 literal lines) and .b features for ``n`` items in 4 clusters; related items share a cluster."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n) % 4
    lines = []
    for k in range(n):
        same = [j for j in range(n) if cluster[j] == cluster[k] and j != k]
        other = [j for j in range(n) if cluster[j] != cluster[k]]
        rec = {
            "asin": asin(k),
            "title": f"Women&#39;s &quot;Luxe&quot; Dress &amp; Belt <span>size {k}</span>" if k % 2 == 0 else f"Trail shoe no. {k}",
            "categories": [[CATEGORIES[k % 2 == 1], "More"]],
            "related": {"also_bought": [asin(j) for j in same[:4]], "also_viewed": [asin(j) for j in other[k % 5::7]]},
        }
        if k % 2 == 0:
            rec["imUrl"] = f"http://ecx.images-amazon.com/images/I/{k:04d}.jpg"
        lines.append(repr(rec))
    meta = folder / "meta_Clothing.json.gz"
    meta.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    centres = rng.normal(size=(4, dim)).astype("<f4")
    rec = np.zeros(n, dtype=feature_dtype(dim))
    rec["asin"] = [asin(k).encode("ascii") for k in range(n)]
    rec["f"] = np.abs(centres[cluster] + 0.3 * rng.normal(size=(n, dim))).astype("<f4")  # fc7 features are ReLU outputs
    b = folder / "image_features_Clothing.b"
    b.write_bytes(rec.tobytes())
    return meta, b


def make_features_run(folder: Path) -> Path:
    """Import the files above (``--features``) and train a tiny features-mode run; returns the run folder."""
    from lrprec.train import TrainConfig, train

    folder.mkdir(parents=True, exist_ok=True)
    meta, b = write_features_source(folder)
    import_amazon2014(meta, folder / "catalog", features=b, feature_dim=FEATURE_DIM, progress=False)
    run = folder / "run"
    train(folder / "catalog", run, TrainConfig(backbone="features", epochs=2, batch_size=64, dim=8, seed=0), progress=False, log=lambda m: None)
    return run


def make_partly_missing(run: Path, folder: Path, rows: tuple[int, ...] = MISSING) -> Run:
    """The run over a private copy of its catalog in which the items ``rows`` have a gray placeholder image
    (as ``import --keep-missing-images`` marks them in items_source.parquet)."""
    src = Run.load(run).catalog.root
    dst = folder / "catalog"
    shutil.copytree(src, dst)
    ids = Run.load(run, catalog=dst).catalog.item_ids
    pq.write_table(pa.table({"item_id": pa.array([str(i) for i in ids]), "title_raw": pa.array([""] * len(ids)),
                             "image_url": pa.array([""] * len(ids)), "image_missing": pa.array([k in rows for k in range(len(ids))])}),
                   dst / SOURCES_FILE)
    return Run.load(run, catalog=dst)


@pytest.fixture(scope="module")
def features_run(tmp_path_factory) -> Path:
    return make_features_run(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def fclient(features_run):
    from lrprec.serve.app import create_app

    with TestClient(create_app(features_run), raise_server_exceptions=False) as c:
        yield c


def test_features_import_cleans_titles_and_keeps_sources(features_run):
    run = Run.load(features_run)
    cat = run.catalog
    assert run.model.backbone.kind == "features" and cat.images is None
    assert cat.titles[0] == 'Women\'s "Luxe" Dress & Belt size 0'
    assert set(cat.category_names) == {"Clothing, Shoes & Jewelry", "Sports & Outdoors"}
    rep = cat.meta["import_report"]
    assert rep["cleaned"] == {"title": N_ITEMS // 2, "category": N_ITEMS}


def test_features_pages_show_placeholders_not_images(fclient, features_run):
    cat = Run.load(features_run).catalog
    a, b = str(cat.item_ids[0]), str(cat.item_ids[1])
    home = fclient.get("/")
    assert home.status_code == 200
    assert "/image.png" not in home.text  # no <img> pointing at an image that does not exist
    assert home.text.count('class="ph ph128') == len(cat)
    assert "&amp;quot;" not in home.text and "&lt;span" not in home.text  # clean titles, escaped once by Jinja
    item = fclient.get(f"/item/{a}")
    assert item.status_code == 200 and "/image.png" not in item.text and "/heatmap.png" not in item.text
    assert 'name="rule"' not in item.text and 'name="target"' not in item.text and 'id="no-heatmaps"' in item.text
    assert 'href="http://ecx.images-amazon.com/images/I/0000.jpg"' in item.text  # the metadata's image link on the card
    pair = fclient.get("/pair", params={"a": a, "b": b})
    assert pair.status_code == 200 and "/image.png" not in pair.text and "bilrp" not in pair.text
    assert 'name="rule"' not in pair.text and "P(related) per relation" in pair.text
    assert fclient.get("/run").status_code == 200


def test_features_api_reports_no_image(fclient, features_run):
    cat = Run.load(features_run).catalog
    a = str(cat.item_ids[0])
    one = fclient.get(f"/api/items/{a}").json()
    assert one["image"] is None and one["source_image"].endswith("/0000.jpg")
    assert all(x["image"] is None for x in fclient.get("/api/items").json()["items"])
    r = fclient.get(f"/api/items/{a}/image.png")
    assert r.status_code == 404 and "has no image" in r.json()["detail"]
    r = fclient.get("/api/explain", params={"a": a, "b": str(cat.item_ids[1])})
    assert r.status_code == 422 and "precomputed features" in r.json()["detail"]


def test_image_run_with_missing_images(tiny_run, tmp_path):
    from lrprec.serve.app import create_app

    run = make_partly_missing(tiny_run, tmp_path)
    ids = [str(i) for i in run.catalog.item_ids]
    with TestClient(create_app(run), raise_server_exceptions=False) as c:
        items = {x["item_id"]: x["image"] for x in c.get("/api/items", params={"limit": 8}).json()["items"]}
        assert [k for k, v in items.items() if v is None] == [ids[k] for k in MISSING]
        assert c.get(f"/api/items/{ids[1]}/image.png").status_code == 404
        assert c.get(f"/api/items/{ids[0]}/image.png").status_code == 200
        home = c.get("/").text
        assert f'data-placeholder="{ids[1]}"' in home and f'src="/api/items/{ids[1]}/image.png' not in home
        assert f'src="/api/items/{ids[0]}/image.png?size=128"' in home
        pair = c.get("/pair", params={"a": ids[1], "b": ids[0]}).text
        assert 'id="heat-a"' in pair and 'id="bilrp"' not in pair and "has no image" in pair


def test_favicon_and_offline_docs(fclient):
    r = fclient.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    docs = fclient.get("/docs")
    assert docs.status_code == 200
    assert "http://" not in docs.text and "https://" not in docs.text  # nothing from the internet
    csp = docs.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "cdn" not in csp
    from lrprec.serve.app import swagger_ui_assets

    if swagger_ui_assets() is not None:  # Swagger UI from the installed package's files
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert fclient.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert fclient.get("/docs-assets/swagger-ui.css").status_code == 200
    else:  # the local list of endpoints
        assert "/api/recommend" in docs.text and "/openapi.json" in docs.text


def test_docs_fallback_lists_the_endpoints(features_run, monkeypatch):
    import lrprec.serve.app as serve_app

    monkeypatch.setattr(serve_app, "swagger_ui_assets", lambda: None)
    with TestClient(serve_app.create_app(features_run), raise_server_exceptions=False) as c:
        docs = c.get("/docs")
        assert docs.status_code == 200 and "<script" not in docs.text.replace('<script src="/static/app.js" defer></script>', "")
        for path in ("/api/items", "/api/recommend", "/api/pair"):
            assert f"<code>{path}</code>" in docs.text
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 404
