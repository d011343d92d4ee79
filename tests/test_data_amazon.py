"""Amazon 2014/2018 importers on fixture files written here in the exact public formats."""
from __future__ import annotations

import ast
import gzip
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import lrprec.cli.importers  # noqa: F401  (registers ``lrprec import``)
from lrprec.cli._app import app
from lrprec.data.amazon import import_amazon2014, import_amazon2018
from lrprec.data.amazon_features import FEATURE_DIM, feature_dtype
from lrprec.data.pyliteral import parse_literal
from lrprec.data.catalog import Catalog

A = [f"B00000000{k}" for k in range(1, 7)]  # A[0] .. A[5]: six real-looking 10-character ASINs

# One Python-literal dict per line, as in meta_<Cat>.json.gz (repr, not JSON): unicode, nested
# quotes, items without 'related', a malformed line, a blank line, a duplicate ASIN, no asin.
META_2014 = [
    {"asin": A[0], "title": 'Men\'s "Classic" Tee – café', "imUrl": "http://ecx.images-amazon.com/images/I/51a.jpg",
     "categories": [["Clothing", "Men", "Shirts"], ["Clothing", "Novelty"]], "salesRank": {"Clothing": 12},
     "related": {"also_bought": [A[1], A[2], "ZZZZZZZZZZ"], "also_viewed": [A[3]], "bought_together": [A[1]]}},
    {"asin": A[1], "title": "Ünïcödé 中文 “quoted” \\ backslash", "categories": [["Shoes", "Boots"]], "price": 3.5,
     "related": {"also_viewed": [A[0], A[2]], "buy_after_viewing": [A[4]]}},
    {"asin": A[2], "title": "no related field", "categories": [["Clothing"]]},
    "{'asin': 'BROKEN0001', 'title': 'unterminated}",
    {"asin": A[3], "title": "It's a \"boot\"", "categories": [["Shoes"]], "related": {"also_bought": [A[0], A[3]]}},
    {"asin": A[0], "title": "duplicate of the first", "categories": [["Toys"]], "related": {"also_bought": [A[4]]}},
    "",
    {"asin": A[4], "title": None, "categories": [["Shoes", "Sneakers"]], "related": {"also_viewed": [A[3], A[3]]}},
    {"title": "a record without asin", "categories": [["Clothing"]]},
    {"asin": A[5], "title": "no categories", "related": {"bought_together": [A[2]]}},
]
MALFORMED_LINE = 4  # 1-based line of the broken record


def write_meta_2014(path: Path, records=META_2014, gz: bool = True) -> Path:
    text = "\n".join(r if isinstance(r, str) else repr(r) for r in records) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


REVIEWS = [
    {"reviewerID": "U1", "asin": A[0], "unixReviewTime": 100, "reviewText": "great \"tee\""},
    {"reviewerID": "U1", "asin": A[2], "unixReviewTime": 300},
    {"reviewerID": "U1", "asin": A[1], "unixReviewTime": 200},
    {"reviewerID": "U1", "asin": A[1], "unixReviewTime": 250},  # same item again: no pair
    {"reviewerID": "U2", "asin": A[3], "unixReviewTime": 50},
    {"reviewerID": "U2", "asin": "ZZZZZZZZZZ", "unixReviewTime": 60},  # not in meta
    {"reviewerID": "U2", "asin": A[4], "unixReviewTime": 70},
    {"reviewerID": "U3", "asin": A[5], "unixReviewTime": 10},  # one review: no pair
    "this is not json",
    {"reviewerID": "U4", "asin": A[0]},  # no time
    "{\"reviewerID\": \"U5\", \"asin\": \"%s\", \"unixReviewTime\": NaN}" % A[0],  # json.loads accepts NaN; not a time
]


def write_reviews(path: Path, records=REVIEWS) -> Path:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    return path


def write_b(path: Path, asins: list[str], truncate: int = 0, dim: int = FEATURE_DIM) -> Path:
    """A .b file: per record 10 ASCII bytes + dim little-endian float32; feature 0 = record number."""
    rec = np.zeros(len(asins), dtype=feature_dtype(dim))
    rec["asin"] = [a.encode("ascii") for a in asins]
    rec["f"] = np.arange(len(asins), dtype="<f4")[:, None] + np.linspace(0, 1, dim, dtype="<f4")[None, :]
    data = rec.tobytes()
    path.write_bytes(data[: len(data) - truncate] if truncate else data)
    return path


def _relations(cat: Catalog) -> set[tuple[str, str, str, str]]:
    t = cat.relation_table().to_pydict()
    return set(zip(t["item_a"], t["item_b"], t["relation"], t["user"]))


# ---------------------------------------------------------------------------------------------
# parse_literal is ast.literal_eval, only faster
# ---------------------------------------------------------------------------------------------
LITERALS = [
    "{'a': 'x', 'b': [1, 2.5, -3, 1e5], 'c': None, 'd': True, 'e': False}",
    "{'t': \"Men's \\\"x\\\" shirt\", 'u': 'caf\\xe9 \\u2013', 'v': 'None of these', 'w': 'True story'}",
    "{'a': 'Café – “q” 中文 😀'}", "{'a': (1, 2)}", "{1: 'a'}", "{'a': u'x'}", "{'a': 'x' 'y'}", "{'a': 1,}",
    "{'a': 'it\\'s'}", "{'a': \"it's\", 'b': \"'\"}", "{'a': 'tab\there'}", "{'a': '\\N{BULLET}'}", "{'a': \"x\\\\\"}",
    "{'a': {'b': [[], {}]}}", "{\"a\": 'b', 'c': \"d\", 'e': -1.5e-3}", "[1, 2]", "'just a string'",
    # rejected by ast.literal_eval, so rejected here too
    "{'a': true}", "{'a': NaN}", "{'a': 007}", "{'a': 'x'", "{'a': 10**3}", "{'a': __import__('os')}",
    "{'a': \"x\", 'b': 1eTrue}", "{'a': \"x\", 'b': e}", "{'a': 'x\x00'}", "{'a': \"x\"} # c", "",
]


def _outcome(fn, line):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = fn(line)
            return ("ok", repr(v), type(v))
        except Exception:  # noqa: BLE001 - only whether it fails matters here
            return ("error",)


@pytest.mark.parametrize("line", LITERALS)
def test_parse_literal_matches_literal_eval(line):
    assert _outcome(parse_literal, line) == _outcome(ast.literal_eval, line)


def test_parse_literal_fuzz_matches_literal_eval():
    rng = random.Random(0)
    alphabet = list("ab '\"\\\té–中😀TrueFalseNonenull{}[]:,0123456789.-eE_u")

    def s() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 7)))

    def v(d: int = 0):
        k = rng.randrange(7 if d < 2 else 4)
        return [s, lambda: rng.choice([True, False, None]), lambda: rng.randrange(-999, 999), lambda: rng.choice([0.5, -1e-7, 1e300]),
                lambda: [v(d + 1) for _ in range(rng.randrange(3))], lambda: {s(): v(d + 1) for _ in range(rng.randrange(3))},
                lambda: (v(d + 1),)][k]()

    for _ in range(3000):
        line = repr({s(): v() for _ in range(rng.randrange(1, 4))})
        if rng.random() < 0.5:  # a random edit: most become malformed, some stay valid
            p = rng.randrange(len(line))
            line = line[:p] + rng.choice(alphabet) + line[p + rng.randrange(2):]
        assert _outcome(parse_literal, line) == _outcome(ast.literal_eval, line), line


# ---------------------------------------------------------------------------------------------
# Amazon 2014
# ---------------------------------------------------------------------------------------------
def test_meta_2014_counts(tmp_path):
    meta = write_meta_2014(tmp_path / "meta_Clothing.json.gz")
    rep = import_amazon2014(meta, tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == A  # first appearance order, duplicate dropped
    assert list(cat.categories) == ["Clothing", "Shoes", "Clothing", "Shoes", "Shoes", "unknown"]
    assert cat.titles[0] == 'Men\'s "Classic" Tee – café'
    assert cat.titles[1] == "Ünïcödé 中文 “quoted” \\ backslash"
    assert cat.titles[4] == ""
    assert _relations(cat) == {
        (A[0], A[1], "also_bought", ""), (A[0], A[2], "also_bought", ""), (A[3], A[0], "also_bought", ""),
        (A[0], A[3], "also_viewed", ""), (A[1], A[0], "also_viewed", ""), (A[1], A[2], "also_viewed", ""), (A[4], A[3], "also_viewed", ""),
        (A[0], A[1], "bought_together", ""), (A[5], A[2], "bought_together", ""),
        (A[1], A[4], "buy_after_viewing", ""),
    }
    assert rep["items"] == 6 and rep["users"] == 0 and rep["categories"] == 3
    assert rep["relations"] == {"also_viewed": 4, "buy_after_viewing": 1, "also_bought": 3, "bought_together": 2}
    sk = rep["skipped"]
    assert (sk["meta_malformed_lines"], sk["meta_missing_asin"], sk["items_duplicate"], sk["items_without_category"]) == (1, 1, 1, 1)
    assert (sk["relations_unknown_item"], sk["relations_self"], sk["relations_duplicate"]) == (1, 1, 1)
    assert rep["skipped_total"] == 7
    assert f"line {MALFORMED_LINE}" in rep["notes"]["meta_malformed_lines"]
    assert rep["read"]["meta_lines"] == len(META_2014)
    # stored for `lrprec info`, and the split exists
    assert cat.meta["import_report"]["skipped"] == sk
    assert cat.describe()["import_report"]["items"] == 6
    assert len(cat.pairs("train")) > 0


def test_plain_file_and_category_level(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json", gz=False)
    import_amazon2014(meta, tmp_path / "cat", category_level=1)
    cat = Catalog(tmp_path / "cat")
    assert list(cat.categories) == ["Men", "Boots", "Clothing", "Shoes", "Sneakers", "unknown"]


def test_reviews_give_users_and_personalized_pairs(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    reviews = write_reviews(tmp_path / "reviews.json.gz")
    rep = import_amazon2014(meta, tmp_path / "cat", reviews=reviews)
    cat = Catalog(tmp_path / "cat")
    assert cat.user_ids == ["U1", "U2"]
    personal = {r for r in _relations(cat) if r[3]}
    # U1 by time: A0 (100), A1 (200), A1 (250), A2 (300); U2: A3, (unknown), A4
    assert personal == {(A[0], A[1], "also_bought", "U1"), (A[1], A[2], "also_bought", "U1"), (A[3], A[4], "also_bought", "U2")}
    assert rep["users"] == 2 and rep["personalized_relations"] == 3
    sk = rep["skipped"]
    assert (sk["reviews_malformed_lines"], sk["reviews_missing_field"], sk["reviews_unknown_item"]) == (1, 2, 1)
    assert (sk["personal_pairs_same_item"], sk["users_without_pairs"]) == (1, 1)
    assert rep["relations"]["also_bought"] == 3 + 3


def test_features_b_file(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    reviews = write_reviews(tmp_path / "reviews.json.gz")
    # A[5] has no record; one record for an unknown ASIN, a repeated A[1], and a truncated tail
    order = [A[3], A[0], "XUNKNOWN01", A[1], A[2], A[1], A[4], A[0]]
    feats = write_b(tmp_path / "image_features_Clothing.b", order, truncate=100)
    rep = import_amazon2014(meta, tmp_path / "cat", reviews=reviews, features=feats)
    cat = Catalog(tmp_path / "cat")
    # items follow their record order in the .b file; A[5] (no features) is dropped
    assert list(cat.item_ids) == [A[3], A[0], A[1], A[2], A[4]]
    f = cat.features
    assert f.shape == (5, FEATURE_DIM) and f.dtype == np.float32
    np.testing.assert_array_equal(f[:, 0], [0, 1, 3, 4, 6])  # first record of each ASIN
    np.testing.assert_allclose(f[2, -1], 3 + 1.0)
    sk = rep["skipped"]
    assert sk["features_truncated_records"] == 1 and sk["features_unknown_item"] == 1 and sk["features_duplicate_records"] == 1
    assert sk["items_without_features"] == 1
    assert sk["relations_dropped_item"] == 1  # A[5] -> A[2] bought_together
    assert rep["read"]["features_records"] == 7  # the eighth is truncated
    assert rep["features_dim"] == FEATURE_DIM and rep["items"] == 5
    assert "truncated" in rep["notes"]["features_truncated_records"]


def _write_images(folder: Path) -> None:
    """A[0] jpg by id, A[1] RGBA png, A[2] by its image-URL file name, A[3] garbage, A[4] missing, A[5] truncated jpg."""
    folder.mkdir()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(folder / f"{A[0]}.jpg")
    Image.new("RGBA", (16, 32), (0, 0, 255, 128)).save(folder / f"{A[1]}.png")
    Image.new("RGB", (30, 30), (0, 200, 0)).save(folder / f"{A[2]}.webp")
    (folder / f"{A[3]}.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(folder / "big.jpg")
    data = (folder / "big.jpg").read_bytes()
    (folder / f"{A[5]}.jpg").write_bytes(data[: len(data) // 2])
    (folder / "big.jpg").unlink()


def test_images_drop_missing_and_corrupt(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    _write_images(tmp_path / "img")
    rep = import_amazon2014(meta, tmp_path / "cat", images=tmp_path / "img", image_size=16)
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == A[:3]
    assert cat.images.shape == (3, 16, 16, 3) and cat.images.dtype == np.uint8
    sk = rep["skipped"]
    assert (sk["images_missing"], sk["images_corrupt"], sk["items_dropped_no_image"]) == (1, 2, 3)
    assert rep["images"]["first_missing"] == [A[4]] and set(rep["images"]["first_corrupt"]) == {A[3], A[5]}
    assert cat.meta["image_size"] == 16
    assert np.abs(cat.images[0, 8, 8].astype(int) - (200, 10, 10)).max() <= 12  # the red image, centred
    assert tuple(cat.images[0, 0, 0]) == (255, 255, 255)  # white letterbox


def test_images_keep_missing_as_placeholder(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    _write_images(tmp_path / "img")
    rep = import_amazon2014(meta, tmp_path / "cat", images=tmp_path / "img", image_size=16, keep_missing_images=True)
    cat = Catalog(tmp_path / "cat")
    assert len(cat) == 6 and cat.images.shape == (6, 16, 16, 3)
    assert (np.asarray(cat.images[3]) == 128).all() and (np.asarray(cat.images[4]) == 128).all()
    assert rep["skipped"]["items_dropped_no_image"] == 0 and rep["images"]["policy"] == "placeholder"


# ---------------------------------------------------------------------------------------------
# Amazon 2018
# ---------------------------------------------------------------------------------------------
META_2018 = [
    {"asin": A[0], "title": "Tee “2018” \"q\"", "category": ["Clothing, Shoes & Jewelry", "Men"], "imageURL": ["https://x/I/1.jpg"],
     "also_buy": [A[1], "ZZZZZZZZZZ"], "also_view": [A[2]], "main_cat": "Fashion"},
    {"asin": A[1], "title": "no category", "category": [], "main_cat": "Amazon Fashion", "also_view": [A[0]]},
    {"asin": A[2], "title": "html main_cat", "category": [], "main_cat": "<img src=\"x\">", "also_buy": [A[0]]},
    {"asin": A[0], "title": "duplicate line", "category": ["Other"]},
]


def write_meta_2018(path: Path) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in META_2018]
    lines.insert(2, "{'asin': 'python literal, not JSON'}")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_amazon2018(tmp_path):
    meta = write_meta_2018(tmp_path / "meta_Fashion.json.gz")
    reviews = write_reviews(tmp_path / "Fashion.json.gz", [
        {"reviewerID": "U9", "asin": A[2], "unixReviewTime": 5, "verified": True},
        {"reviewerID": "U9", "asin": A[0], "unixReviewTime": 5, "verified": False},  # same time: file order
    ])
    rep = import_amazon2018(meta, tmp_path / "cat", reviews=reviews)
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == A[:3]
    assert list(cat.categories) == ["Clothing, Shoes & Jewelry", "Amazon Fashion", "unknown"]
    assert _relations(cat) == {(A[0], A[1], "also_bought", ""), (A[0], A[2], "also_viewed", ""), (A[1], A[0], "also_viewed", ""),
                               (A[2], A[0], "also_bought", ""), (A[2], A[0], "also_bought", "U9")}
    sk = rep["skipped"]
    assert (sk["meta_malformed_lines"], sk["items_duplicate"], sk["relations_unknown_item"], sk["items_without_category"]) == (1, 1, 1, 1)
    assert "line 3" in rep["notes"]["meta_malformed_lines"]


# Real 2018 metadata carries HTML: entities (some escaped twice), tags, runs of whitespace.
META_2018_HTML = [
    {"asin": A[0], "title": "Women&#39;s &quot;Luxe&quot; Dress &amp; Belt <span>size</span>",
     "category": ["Clothing, Shoes &amp; Jewelry", "Women"], "imageURLHighRes": ["https://m.media-amazon.com/images/I/1.jpg"],
     "also_buy": [A[1]]},
    {"asin": A[1], "title": "Plain tee", "category": ["Clothing, Shoes &amp; Jewelry"], "also_view": [A[0], A[2]]},
    {"asin": A[2], "title": "  Caf&eacute;\n<b>Mug</b>&nbsp;&amp;amp;  saucer, size < 5 ", "category": ["Home &amp; Kitchen"],
     "imageURL": ["https://m.media-amazon.com/images/I/3.jpg"], "also_buy": [A[0]]},
]


def test_amazon2018_titles_are_cleaned_and_counted(tmp_path):
    meta = tmp_path / "meta_Clothing.json.gz"
    meta.write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in META_2018_HTML) + "\n").encode()))
    rep = import_amazon2018(meta, tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    assert list(cat.titles) == ['Women\'s "Luxe" Dress & Belt size', "Plain tee", "Café Mug & saucer, size < 5"]
    assert list(cat.categories) == ["Clothing, Shoes & Jewelry", "Clothing, Shoes & Jewelry", "Home & Kitchen"]
    assert rep["cleaned"] == {"title": 2, "category": 3}  # per item whose value changed
    assert cat.meta["import_report"]["cleaned"] == rep["cleaned"]
    from lrprec.data.importing.sources import read_item_sources

    src = read_item_sources(tmp_path / "cat")
    assert src[A[0]] == {"title_raw": META_2018_HTML[0]["title"], "image_url": "https://m.media-amazon.com/images/I/1.jpg"}
    assert A[1] not in src  # nothing to keep for a clean item without image
    assert src[A[2]]["title_raw"] == META_2018_HTML[2]["title"].strip() and src[A[2]]["image_url"].endswith("/3.jpg")
    text = _cli("amazon2018", "--meta", meta, "--out", tmp_path / "cat2", "--no-progress")
    assert text.exit_code == 0 and "cleaned   title 2, category 3" in text.stdout
    from lrprec.cli import load_commands

    items = CliRunner().invoke(load_commands(), ["items", str(tmp_path / "cat")])
    assert items.exit_code == 0 and "&#39;" not in items.stdout and "<span>" not in items.stdout
    assert 'Women\'s "Luxe" Dress & Belt size' in items.stdout


def test_amazon2014_clean_catalog_counts_nothing(tmp_path):
    """Titles without HTML are kept byte for byte (quotes, unicode, backslashes) and nothing is counted."""
    meta = write_meta_2014(tmp_path / "meta.json.gz", [r for r in META_2014 if isinstance(r, dict) and r.get("asin") in (A[0], A[1], A[3])])
    rep = import_amazon2014(meta, tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    assert list(cat.titles) == ['Men\'s "Classic" Tee – café', "Ünïcödé 中文 “quoted” \\ backslash", 'It\'s a "boot"']
    assert rep["cleaned"] == {"title": 0, "category": 0}


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, non-zero exit, nothing at --out
# ---------------------------------------------------------------------------------------------
def _cli(*args: str):
    return CliRunner().invoke(app, ["import", *map(str, args)])


def _assert_clean(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_cli_json_report(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    res = _cli("amazon2014", "--meta", meta, "--out", tmp_path / "cat", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["items"] == 6 and rep["skipped"]["meta_malformed_lines"] == 1
    text = _cli("amazon2014", "--meta", meta, "--out", tmp_path / "cat2", "--no-progress")
    assert text.exit_code == 0 and "meta_malformed_lines" in text.stdout and "6 items" in text.stdout


@pytest.mark.parametrize("case", ["reviews_as_meta", "meta2018_as_2014", "meta2014_as_2018", "empty", "missing", "blank_lines", "text_as_b", "gzip_b", "b_other_category", "b_as_meta"])
def test_cli_bad_input(tmp_path, case):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    out = tmp_path / "cat"
    cmd, expect = "amazon2014", ""
    args: list = ["--meta", meta]
    if case == "reviews_as_meta":
        args = ["--meta", write_reviews(tmp_path / "reviews.json.gz")]
        expect = "reviews"
    elif case == "meta2018_as_2014":
        args = ["--meta", write_meta_2018(tmp_path / "m18.json.gz")]
        expect = "amazon2018"
    elif case == "meta2014_as_2018":
        cmd, expect = "amazon2018", "no readable"
    elif case == "empty":
        (tmp_path / "empty.json.gz").write_bytes(b"")
        args, expect = ["--meta", tmp_path / "empty.json.gz"], "empty"
    elif case == "missing":
        args, expect = ["--meta", tmp_path / "nope.json.gz"], "not found"
    elif case == "blank_lines":
        (tmp_path / "blank.json").write_text("\n\n  \n")
        args, expect = ["--meta", tmp_path / "blank.json"], "no readable"
    elif case == "text_as_b":
        (tmp_path / "f.b").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(40000)))
        args, expect = ["--meta", meta, "--features", tmp_path / "f.b"], "image-features"
    elif case == "gzip_b":
        (tmp_path / "f.b").write_bytes(gzip.compress(write_b(tmp_path / "raw.b", A).read_bytes()))
        args, expect = ["--meta", meta, "--features", tmp_path / "f.b"], "gunzip"
    elif case == "b_as_meta":
        args, expect = ["--meta", write_b(tmp_path / "f.b", A[:2])], "binary"
    elif case == "b_other_category":
        args, expect = ["--meta", meta, "--features", write_b(tmp_path / "f.b", ["XXXXXXXXX1", "XXXXXXXXX2"], dim=FEATURE_DIM)], "matches"
    res = _cli(cmd, *args, "--out", out, "--no-progress")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and expect in res.stderr, res.stderr
    assert "Traceback" not in res.output
    _assert_clean(out)


def test_out_taken_and_no_relations(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    res = _cli("amazon2014", "--meta", meta, "--out", tmp_path / "taken")
    assert res.exit_code == 2 and "not empty" in res.stderr
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    lonely = write_meta_2014(tmp_path / "lonely.json", [{"asin": A[0], "title": "alone", "categories": [["X"]]}], gz=False)
    res = _cli("amazon2014", "--meta", lonely, "--out", tmp_path / "cat")
    assert res.exit_code == 2 and "no relations" in res.stderr
    _assert_clean(tmp_path / "cat")


def test_truncated_gzip_is_counted(tmp_path):
    meta = write_meta_2014(tmp_path / "meta.json.gz")
    data = meta.read_bytes()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) - 12])  # drop the gzip trailer and the last bytes of data
    rep = import_amazon2014(cut, tmp_path / "cat")
    assert rep["skipped"]["meta_truncated_gzip"] == 1
    assert "ends early" in rep["notes"]["meta_truncated_gzip"]


def test_amazon2018_images_by_url_name(tmp_path):
    meta = write_meta_2018(tmp_path / "meta_Fashion.json.gz")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "img" / "1.jpg")  # A[0]: file name of its imageURL
    Image.new("RGB", (8, 8), (4, 5, 6)).save(tmp_path / "img" / f"{A[1]}.png")  # A[1]: by id
    rep = import_amazon2018(meta, tmp_path / "cat", images=tmp_path / "img", image_size=8)
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == A[:2] and cat.images.shape == (2, 8, 8, 3)
    assert rep["skipped"]["images_missing"] == 1 and rep["skipped"]["relations_dropped_item"] == 2
    assert rep["relations"] == {"also_viewed": 1, "also_bought": 1}
