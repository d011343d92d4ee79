"""Explaining pairs of a trained run by id: files, JSON record, conservation, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lrprec.data.catalog import CatalogError
from lrprec.app.explanations import example_pairs, explain_ids, explain_recommendations
from lrprec.run import Run


@pytest.fixture(scope="module")
def run(tiny_run):
    return Run.load(tiny_run)


def _ids(run):
    p = run.catalog.pairs("test")
    k = int(np.flatnonzero(p.label == 1)[0])
    return run.catalog.item_ids[p.a[k]], run.catalog.item_ids[p.b[k]]


def test_record_files_and_shapes(run, tmp_path):
    a, b = _ids(run)
    rec = explain_ids(run, [(a, b)], relation="also_viewed", bilrp=True, out=tmp_path / "x")[0]
    assert set(rec) >= {"item_a", "item_b", "user", "relation", "probability", "target", "target_value", "relevance_sum", "files"}
    ra, rb = np.load(tmp_path / "x" / "relevance_a.npy"), np.load(tmp_path / "x" / "relevance_b.npy")
    assert ra.shape == rb.shape == (32, 32)
    assert rec["relevance_sum"]["a"] == pytest.approx(float(ra.sum()), rel=1e-4)
    # similarity: measured conservation = mean of the two image sums / S
    half = (rec["relevance_sum"]["a"] + rec["relevance_sum"]["b"]) / 2
    assert rec["conservation"] == pytest.approx(half / rec["target_value"], rel=1e-3)
    assert (tmp_path / "x" / "heatmaps.png").stat().st_size > 1000
    assert np.load(tmp_path / "x" / "bilrp.npy").shape == (64, 64)
    assert 0 <= rec["probability"] <= 1
    assert json.loads((tmp_path / "x" / "explanation.json").read_text())["relation"] == "also_viewed"


def test_symmetric_order_gives_the_same_relevance_for_the_same_item(run):
    a, b = _ids(run)
    # lrp0 on a model with biases still must not depend on which side an item sits
    r1 = explain_ids(run, [(a, b)], relation="also_viewed", rule="epsilon")[0]
    r2 = explain_ids(run, [(b, a)], relation="also_viewed", rule="epsilon")[0]
    assert r1["relevance_sum"]["a"] == pytest.approx(r2["relevance_sum"]["b"], rel=1e-4, abs=1e-6)
    assert r1["target_value"] == pytest.approx(r2["target_value"], rel=1e-5)


def test_bad_names_raise(run):
    a, b = _ids(run)
    with pytest.raises(CatalogError, match="unknown item"):
        explain_ids(run, [(a, "nope")])
    with pytest.raises(CatalogError, match="unknown user"):
        explain_ids(run, [(a, b)], user="ghost")
    with pytest.raises(ValueError, match="target"):
        explain_ids(run, [(a, b)], target="banana")
    with pytest.raises(ValueError):
        explain_ids(run, [(a, b)], rule="nonsense")
    with pytest.raises(ValueError, match="BiLRP"):
        explain_ids(run, [(a, b)], target="distance", bilrp=True)


def test_examples_cover_each_relation(run):
    ex = example_pairs(run, per_kind=1)
    assert {e["relation"] for e in ex} == set(run.relations)
    assert all(e["kind"] in ("true positive", "false positive", "false negative") for e in ex)


def test_recommendation_heatmaps_and_contact_sheet(run, tmp_path):
    a, b = _ids(run)
    c = run.catalog.item_ids[5]
    result = {"item": a, "user": None, "results": {"also_bought": [{"item": b}, {"item": c}]}}
    figs = explain_recommendations(run, result, tmp_path)
    assert (tmp_path / "contact_sheet.png").exists() and len(figs) == 3


def test_cli_explain_json_and_errors(tiny_run, tmp_path):
    from lrprec.cli import load_commands

    app = load_commands()

    run = Run.load(tiny_run)
    a, b = _ids(run)
    res = CliRunner().invoke(app, ["explain", str(tiny_run), a, b, "--json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["item_a"] == a and len(rec["files"]) >= 3
    for args, msg in ((["explain", str(tiny_run), a, "zzz"], "unknown item"), (["explain", str(tiny_run), a, b, "--rule", "bogus"], "bogus"),
                      (["explain", str(tiny_run), a, b, "--bilrp", "--target", "logit"], "BiLRP"), (["explain", str(tiny_run), a, b, "--user", "ghost"], "unknown user"),
                      (["explain", str(tiny_run), a, b, "--relation", "likes"], "unknown relation")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and msg in r.output, (args, r.output)
