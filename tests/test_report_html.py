"""The HTML report: rendered from Jinja2 templates, user data escaped, the templates shipped with the package."""
from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from lrprec.report import Section, write_report
from lrprec.report.html import evaluation_html

EVIL = "<script>alert('x')</script>"


def _metrics() -> dict:
    cell = {"accuracy": 0.75, "auc": 0.8125, "n": 8}
    return {"relations": {"also_bought": {**cell, "by_category": {"bag": cell, "hat<i>": {"accuracy": None}}}},
            "overall": {"accuracy": 0.75, "auc": 0.8125, "n": 8}, "personalized": {"accuracy": 0.5, "n": 4}, "dim": 10,
            "head": "metric", "train_negatives": "category",
            "ranking": {"n_items": 50, "relations": {"also_bought": {"recall@10": 0.5, "recall@50": 1.0, "ndcg@10": 0.25, "mrr": 0.125,
                                                                     "median_rank": 7.0, "n": 8}},
                        "overall": {"recall@10": 0.5, "recall@50": 1.0, "ndcg@10": 0.25, "mrr": 0.125, "median_rank": 7.0, "n": 8}},
            "truth": {"k": 10, "queries": 5, "relations": {"also_bought": {"precision": 0.9, "right_side": 1.0, "ideal": 1.0, "chance": 0.2,
                                                                            "users_precision": 0.5, "users_min_precision": 0.25}}}}


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "recommendations").mkdir(parents=True)
    (run / "explain" / "examples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"backbone": "small", "dim": 10, "relations": ["also_bought"], "catalog": "data/<cat>"}))
    (run / "metrics.json").write_text(json.dumps({"test": _metrics()}))
    pick = {"item": f"I2{EVIL}", "probability": 0.875, "image": str(run / "img" / 'a"b.png')}
    (run / "recommendations" / "recommendations.json").write_text(json.dumps([
        {"item": "I1<b>", "title": f"bag {EVIL} & co", "user": "U1", "query_image": str(run / "img" / "q.png"),
         "per_category": {"also_bought": {"hat": [pick]}}, "figures": []}]))
    (run / "explain" / "examples" / "examples.json").write_text(json.dumps([
        {"kind": "true positive", "relation": "also_bought", "user": None, "probability": 0.9, "conservation": 0.99,
         "rule": "epsilon-plus-flat", "files": [str(run / "explain" / "examples" / "p" / "heatmaps.png")]}]))
    return run


def test_report_escapes_user_data(tmp_path):
    run = _run(tmp_path)
    html = write_report(run, title=f"t{EVIL}", extra=[Section("extra", "More", "<p id='raw'>raw markup</p>")]).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html  # title, item title and item id, escaped
    assert "query I1&lt;b&gt; (bag &lt;script&gt;" in html and "&amp; co" in html
    assert 'alt="I2&lt;script&gt;' in html and 'a&#34;b.png"' in html and "catalog data/&lt;cat&gt;" in html
    assert "<td>hat&lt;i&gt;</td>" in html
    # the sections and their numbers, as before the move to templates
    for section in ("table1", "explanations", "recommendations", "extra"):
        assert f'<section id="{section}">' in html
    assert "<p id='raw'>raw markup</p>" in html  # a caller's section body is HTML, kept as is
    assert "Overall accuracy <b>75.0%</b>, ROC-AUC 0.812 on 8 test pairs" in html and "User-carrying pairs: 50.0% (n = 4)." in html
    assert '<td>75.0 <span class="muted">(0.812)</span></td>' in html and "<td>–</td>" in html
    assert "<td><b>0.500</b></td>" in html and "<td>7</td>" in html  # ranking: the model's scores bold, median rank
    assert "0.50 (min 0.25)" in html and "ranked among all 50 items" in html
    assert "true positive: P = 0.900, user global, conservation Σ R / S = 0.99" in html
    assert "P = 0.88" in html and 'src="img/q.png"' in html


def test_evaluation_html_for_the_run_page():
    """The web run page embeds the same tables; headings at the level asked for."""
    out = evaluation_html("val<x>", _metrics(), {"random": {"ranking": _metrics()["ranking"]}}, level=4)
    assert "<h4>val&lt;x&gt; split, category negatives</h4>" in out and "val&lt;x&gt; split: ranking over the whole catalog" in out
    assert "<td></td><td>random</td><td>0.500</td>" in out  # a baseline's row: no relation, plain scores
    assert "<x>" not in out
    # a metrics file without a field the tables show: KeyError, which the run page catches per split
    broken = _metrics()
    del broken["overall"]["auc"]
    with pytest.raises(KeyError, match="auc"):
        evaluation_html("test", broken)


def test_report_templates_are_package_data():
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lrprec"]
    templates = root / "src" / "lrprec" / "report" / "templates"
    names = [p.relative_to(root / "src" / "lrprec").as_posix() for p in templates.iterdir()]
    assert {"report/templates/report.html", "report/templates/_sections.html", "report/templates/_evaluation.html"} <= set(names)
    for name in names:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


def test_report_of_a_run_whose_config_has_null_fields(tmp_path):
    """A hand-edited or foreign config.json with ``null`` values still gives a report (it used to crash on relations)."""
    run = _run(tmp_path)
    (run / "config.json").write_text(json.dumps({"backbone": None, "dim": None, "relations": None, "catalog": None}))
    html = write_report(run).read_text()
    assert "also_bought" in html  # the metrics still show
