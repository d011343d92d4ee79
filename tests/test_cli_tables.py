"""The CLI's human tables: a header, titles beside ids, columns aligned for any text; ``--json`` unchanged."""
from __future__ import annotations

import json
import unicodedata

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from lrprec.cli import load_commands
from lrprec.cli._tables import Col, table_text
from lrprec.cli.recommend import _results_text
from lrprec.data.writer import write_catalog

TITLES = ['Women\'s "Luxe" Dress & Belt size', "中文标题 wide characters", "x" * 150, "[bold]not markup[/bold]", ""]
CATEGORIES = ["Clothing, Shoes & Jewelry Extra Long Category Name", "短", "Toys", "Home", "Books"]


def cells(text: str) -> int:
    """Terminal cells of a string (East Asian wide/full-width characters take two), from unicodedata alone."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def column_start(line: str, needle: str) -> int:
    """Cell offset at which ``needle`` starts in ``line``."""
    return cells(line[: line.index(needle)])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cat"
    ids = [f"ITEM{k:02d}" for k in range(5)]
    rel = pa.table({"item_a": ids[:4] * 3, "item_b": ids[1:] * 3, "relation": ["also_viewed"] * 12, "user": [""] * 12})
    write_catalog(out, items={"item_id": ids, "category": CATEGORIES, "title": TITLES, "image": [""] * 5},
                  relations=rel.slice(0, 4), users=[], meta={"name": "cli"})
    return out


def run(*args):
    r = CliRunner().invoke(load_commands(), [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_items_table_is_aligned_with_a_header(catalog):
    lines = run("items", catalog).splitlines()
    header = lines[0]
    assert header.split() == ["item_id", "category", "title"]
    starts = {column_start(header, "category"), column_start(header, "title")}
    rows = [l for l in lines[2:] if l.startswith("ITEM")]
    assert len(rows) == 5
    for k, line in enumerate(rows):
        assert line.startswith(f"ITEM{k:02d}")
        cat = CATEGORIES[k][:10]
        assert column_start(line, cat) == column_start(header, "category")
        if TITLES[k]:
            assert column_start(line, TITLES[k][:5]) == column_start(header, "title")
    assert len(starts) == 2
    assert "[bold]not markup[/bold]" in "\n".join(rows)  # text is shown as is, never read as markup
    assert "…" in rows[2] and len(rows[2]) < 200  # the 150-character title is cut, not wrapped into the next line
    assert "Clothing, Shoes & JewelryWomen" not in "\n".join(lines)


def test_items_json_is_unchanged(catalog):
    rows = json.loads(run("items", catalog, "--json"))
    assert rows == [{"item_id": f"ITEM{k:02d}", "category": CATEGORIES[k], "title": TITLES[k]} for k in range(5)]


def test_pairs_table_has_header_and_titles(catalog):
    out = run("pairs", catalog, "--split", "train", "--limit", "0")
    lines = out.splitlines()
    assert lines[0].split() == ["item_a", "title_a", "item_b", "title_b", "relation", "user", "label"]
    body = [l for l in lines[2:] if l.startswith("ITEM")]
    assert body
    rel_col = column_start(lines[0], "relation")
    for line in body:
        a = line.split()[0]
        title = TITLES[int(a[4:])]
        if title:
            assert title[:5] in line
        assert column_start(line, "also_viewed") == rel_col
    data = json.loads(run("pairs", catalog, "--split", "train", "--limit", "0", "--json"))
    assert set(data[0]) == {"item_a", "item_b", "relation", "user", "label"}  # --json keeps its fields


def test_recommend_text_puts_titles_beside_ids():
    result = {"item": "Q1", "user": None, "results": {
        "also_viewed": [{"rank": 1, "item": "R1", "category": "Toys", "probability": 0.91, "distance": 0.1},
                        {"rank": 2, "item": "R2", "category": "短", "probability": 0.5, "distance": 1.25}],
        "also_bought": {"Toys": [{"rank": 1, "item": "R1", "category": "Toys", "probability": 0.7, "distance": 0.4}]}}}
    titles = {"Q1": "Query & title", "R1": "中文标题 wide", "R2": "second"}
    text = _results_text(result, titles)
    lines = text.splitlines()
    assert lines[0] == "recommendations for Q1 (Query & title)"
    assert "also_viewed:" in lines and "also_bought:" in lines and "Toys:" in lines
    header = next(l for l in lines if l.split()[:3] == ["#", "item", "title"])
    r1 = next(l for l in lines if " R1 " in f" {l} ")
    r2 = next(l for l in lines if " R2 " in f" {l} ")
    assert column_start(r1, "中文") == column_start(r2, "second") == column_start(header, "title")
    assert column_start(r1, "0.910") + 5 == column_start(r2, "0.500") + 5  # right-aligned numbers


def test_table_text_empty_and_width():
    assert table_text([Col("a")], [], empty="(no rows)") == "(no rows)"
    out = table_text([Col("id"), Col("title", max_width=20)], [("X", "y" * 100)], width=80)
    assert max(len(l) for l in out.splitlines()) <= 80 and "…" in out
