"""The generic csv/parquet importer and the shared import report."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

import lrprec.cli.importers  # noqa: F401  (registers ``lrprec import``)
from lrprec.cli._app import app
from lrprec.data.catalog import Catalog
from lrprec.data.importing.sources import read_item_sources
from lrprec.data.importing.text import clean_text
from lrprec.data.tables import import_table

ITEMS_CSV = """item_id,category,title,image
0001,shirt,"A ""quoted"" shirt, café",
0002,shirt,Plain shirt,
0003,shoe,Boot 中文,
0001,hat,duplicate id,
,shoe,no id,
0004,,no category,
"""
RELATIONS_CSV = """item_i,item_j,relation,user_id
0001,0002,also_viewed,
0002,0001,also_viewed,
0001,0003,also_buy,alice
0001,0003,also_bought,alice
0003,0003,bought_together,
0001,9999,bought_together,
0002,0003,,
0004,0001,buy_after_viewing,bob
"""


def write(tmp: Path, items: str = ITEMS_CSV, relations: str = RELATIONS_CSV) -> tuple[Path, Path]:
    (tmp / "items.csv").write_text(items)
    (tmp / "relations.csv").write_text(relations)
    return tmp / "items.csv", tmp / "relations.csv"


def test_csv_counts(tmp_path):
    items, rels = write(tmp_path)
    rep = import_table(items, rels, tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == ["0001", "0002", "0003", "0004"]  # ids stay strings, zeros kept
    assert list(cat.categories) == ["shirt", "shirt", "shoe", "unknown"]
    assert cat.titles[0] == 'A "quoted" shirt, café'
    t = cat.relation_table().to_pydict()
    assert set(zip(t["item_a"], t["item_b"], t["relation"], t["user"])) == {
        ("0001", "0002", "also_viewed", ""), ("0002", "0001", "also_viewed", ""),
        ("0001", "0003", "also_bought", "alice"), ("0004", "0001", "buy_after_viewing", "bob")}
    assert cat.user_ids == ["alice", "bob"]
    sk = rep["skipped"]
    assert (sk["items_duplicate"], sk["items_missing_id"], sk["items_without_category"]) == (1, 1, 1)
    assert (sk["relations_missing_field"], sk["relations_self"], sk["relations_unknown_item"], sk["personal_pairs_duplicate"]) == (1, 1, 1, 1)
    assert rep["skipped_total"] == 7
    assert "row 5" in rep["notes"]["items_missing_id"] and "row 7" in rep["notes"]["relations_missing_field"]
    assert rep["personalized_relations"] == 2 and cat.meta["import_report"]["items"] == 4


def test_parquet_with_alias_columns(tmp_path):
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "category": ["x", "x", "y"]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"item_a": ["a", "b", "c"], "item_b": ["b", "c", "a"], "relation": ["also_viewed", "bought_together", "also_view"],
                             "user": ["", "u", None]}), tmp_path / "rel.parquet")
    rep = import_table(tmp_path / "items.parquet", tmp_path / "rel.parquet", tmp_path / "cat")
    assert rep["items"] == 3 and rep["relations"] == {"also_viewed": 2, "bought_together": 1} and rep["users"] == 1


def test_unknown_relation_error_or_skip(tmp_path):
    rel = RELATIONS_CSV + "0001,0002,similar_to,\n0002,0001,similar_to,\n0002,0003,complementary,\n"
    items, rels = write(tmp_path, relations=rel)
    with pytest.raises(ValueError, match=r"unknown relation names 'similar_to' \(2 rows, first at data row 9\)"):
        import_table(items, rels, tmp_path / "cat")
    assert not (tmp_path / "cat").exists()
    rep = import_table(items, rels, tmp_path / "cat", skip_unknown_relations=True)
    assert rep["skipped"]["relations_unknown_name"] == 3


def test_image_column_and_folder(tmp_path):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "pics" / "first.png")
    Image.new("RGB", (10, 10), (0, 255, 0)).save(tmp_path / "pics" / "0002.jpg")
    items = "item_id,category,image\n0001,shirt,first.png\n0002,shirt,\n0003,shoe,gone.png\n"
    rels = "item_i,item_j,relation\n0001,0002,also_viewed\n0002,0003,also_viewed\n"
    i, r = write(tmp_path, items, rels)
    rep = import_table(i, r, tmp_path / "cat", images=tmp_path / "pics", image_size=8)
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == ["0001", "0002"] and cat.images.shape == (2, 8, 8, 3)
    assert tuple(cat.images[0, 4, 4]) == (255, 0, 0) and tuple(cat.images[1, 4, 4])[1] > 200
    assert rep["skipped"]["images_missing"] == 1 and rep["skipped"]["relations_dropped_item"] == 1


def test_missing_images_kept_as_placeholders_are_recorded(tmp_path):
    """--keep-missing-images: the gray placeholders are marked in items_source.parquet (the web app draws cards for them)."""
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "pics" / "first.png")
    items = "item_id,category,image\n0001,shirt,first.png\n0002,shirt,\n0003,shoe,gone.png\n"
    rels = "item_i,item_j,relation\n0001,0002,also_viewed\n0002,0003,also_viewed\n"
    i, r = write(tmp_path, items, rels)
    import_table(i, r, tmp_path / "cat", images=tmp_path / "pics", image_size=8, keep_missing_images=True)
    assert list(Catalog(tmp_path / "cat").item_ids) == ["0001", "0002", "0003"]
    src = read_item_sources(tmp_path / "cat")
    assert src == {"0002": {"image_missing": True}, "0003": {"image_missing": True}}


def test_table_text_fields_are_cleaned(tmp_path):
    items = ('item_id,category,title\n'
             'a&amp;1,Shoes &amp; Boots,"Boot <i>Pro</i> &quot;X&quot;"\n'
             'b2,Shoes & Boots,"  two   spaces\tand tab "\n'
             'c3,<br>,Plain\n')
    rels = "item_i,item_j,relation\na&amp;1,b2,also_viewed\nb2,c3,also_viewed\n"
    i, r = write(tmp_path, items, rels)
    rep = import_table(i, r, tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    assert list(cat.item_ids) == ["a&amp;1", "b2", "c3"]  # ids are never rewritten
    assert list(cat.titles) == ['Boot Pro "X"', "two spaces and tab", "Plain"]
    assert list(cat.categories) == ["Shoes & Boots", "Shoes & Boots", "unknown"]  # "<br>" cleans to nothing
    assert rep["cleaned"] == {"title": 2, "category": 2} and rep["skipped"]["items_without_category"] == 1
    assert read_item_sources(tmp_path / "cat")["b2"] == {"title_raw": "  two   spaces\tand tab "}


@pytest.mark.parametrize("raw,clean", [
    ("Women&#39;s &quot;Luxe&quot; Dress &amp; Belt <span>size</span>", 'Women\'s "Luxe" Dress & Belt size'),
    ("Caf&eacute; &#x2013; &euro;5", "Café – €5"),
    ("AT&amp;amp;T", "AT&T"),  # escaped twice
    ("AT&T and R&D", "AT&T and R&D"),  # a bare & is text
    ("size < 5 and x<y", "size < 5 and x<y"),  # no tag: "<" not followed by a letter, or no ">"
    ("&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>"),  # escaped markup is text, shown as such
    ("line<br/>break<br>here", "line break here"),
    ("a<!-- hidden -->b", "a b"),
    ("  tabs\tand\nnewlines\u00a0nbsp  ", "tabs and newlines nbsp"),
    ("ctrl\x07char", "ctrlchar"),
    ("中文 “quoted” 😀", "中文 “quoted” 😀"),
    ("", ""),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize("case,expect", [
    ("no_category_column", "no 'category' column"),
    ("no_relation_column", "no 'relation' column"),
    ("wrong_suffix", "must be a .csv"),
    ("empty_items", "empty"),
    ("missing_items", "not found"),
    ("header_only", "holds no items"),
    ("not_parquet", "not a readable parquet"),
])
def test_cli_bad_tables(tmp_path, case, expect):
    items, rels = write(tmp_path)
    if case == "no_category_column":
        items.write_text("item_id,kind\n1,x\n")
    elif case == "no_relation_column":
        rels.write_text("item_i,item_j,rel\n1,2,also_viewed\n")
    elif case == "wrong_suffix":
        items = items.rename(tmp_path / "items.txt")
    elif case == "empty_items":
        items.write_text("")
    elif case == "missing_items":
        items = tmp_path / "nope.csv"
    elif case == "header_only":
        items.write_text("item_id,category\n")
    elif case == "not_parquet":
        (tmp_path / "items.parquet").write_text("item_id,category\n1,x\n")
        items = tmp_path / "items.parquet"
    res = CliRunner().invoke(app, ["import", "table", "--items", str(items), "--relations", str(rels), "--out", str(tmp_path / "cat")])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and expect in res.stderr, res.stderr
    assert not (tmp_path / "cat").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cat.")]


def test_cli_table_json(tmp_path):
    items, rels = write(tmp_path)
    res = CliRunner().invoke(app, ["import", "table", "--items", str(items), "--relations", str(rels), "--out", str(tmp_path / "cat"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["source"] == "table" and rep["items"] == 4 and rep["skipped"]["relations_unknown_item"] == 1
