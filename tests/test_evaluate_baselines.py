"""The [M15] baselines, features mode end to end on Amazon-format files, and the side-by-side table."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError
from lrprec.data.writer import write_catalog
from lrprec.evaluate.baselines import BASELINES, LazyFeatures, evaluate_baseline, random_logits
from lrprec.app.evaluation import compare_reports
from lrprec.evaluate.compare import compare_text


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from lrprec.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("bl") / "synth"
    generate(out, SynthConfig(items=120, users=2, image_size=24, pairs_per_relation=60, seed=0), progress=False)
    return out


def _acc(label: np.ndarray, logit: np.ndarray) -> float:
    return float(((logit > 0) == (label == 1)).mean())


# ---------------------------------------------------------------------------------------------
# random and category tree: exact behaviour
# ---------------------------------------------------------------------------------------------
def test_random_is_seeded_and_exact(synth):
    cat = Catalog(synth)
    pairs = cat.pairs("test")
    expect = np.random.default_rng(7).standard_normal(len(pairs))
    rep = evaluate_baseline(synth, "random", seed=7)
    assert rep["method"] == "random" and rep["split"] == "test" and rep["dim"] is None
    assert rep["overall"]["n"] == len(pairs)
    assert rep["overall"]["accuracy"] == pytest.approx(_acc(pairs.label, expect))
    for r in cat.relations:
        sel = pairs.relation == RELATIONS.index(r)
        assert rep["relations"][r]["accuracy"] == pytest.approx(_acc(pairs.label[sel], expect[sel]))
    again = evaluate_baseline(synth, "random", seed=7)
    assert again["relations"] == rep["relations"] and again["overall"] == rep["overall"]
    other = evaluate_baseline(synth, "random", seed=8)
    assert other["overall"] != rep["overall"] or other["relations"] != rep["relations"]
    np.testing.assert_array_equal(random_logits(pairs, 7), expect.astype(np.float32))
    # a relation filter scores the same pairs with the same scores
    one = evaluate_baseline(synth, "random", seed=7, relations=["also_bought"])
    assert list(one["relations"]) == ["also_bought"]
    assert one["relations"]["also_bought"] == rep["relations"]["also_bought"]


def test_category_tree_exact(synth):
    """CT's logit log T_r(c_b | c_a) − log U(c_b), recomputed here by counting with plain Python."""
    from collections import Counter

    cat = Catalog(synth)
    train = cat.pairs("train")
    trans = Counter((int(r), cat.categories[a], cat.categories[b]) for a, b, r in zip(train.a, train.b, train.relation))
    names = cat.category_names
    share = {c: float((cat.categories == c).mean()) for c in names}

    def logit(r: int, ca: str, cb: str) -> float:
        row = sum(trans[(r, ca, c)] + 0.5 for c in names)
        return np.log((trans[(r, ca, cb)] + 0.5) / row) - np.log(share[cb])

    for split in ("validation", "test"):
        pairs = cat.pairs(split)
        want = np.array([logit(int(r), cat.categories[a], cat.categories[b]) for a, b, r in zip(pairs.a, pairs.b, pairs.relation)])
        rep = evaluate_baseline(synth, "ct", split=split)
        assert rep["method"] == "category-tree"
        acc = float(((want > 0) == (pairs.label == 1)).mean())
        assert rep["overall"]["accuracy"] == pytest.approx(acc)
        for r in cat.relations:
            sel = pairs.relation == RELATIONS.index(r)
            assert rep["relations"][r]["accuracy"] == pytest.approx(float(((want[sel] > 0) == (pairs.label[sel] == 1)).mean()))
    # category negatives share their positive's category pair: CT cannot beat a coin there;
    # random negatives land in any category: CT separates substitutes (same category) from them
    rep = evaluate_baseline(synth, "category-tree")
    assert rep["protocols"]["category"]["overall"]["accuracy"] == pytest.approx(0.5)
    assert rep["protocols"]["random"]["relations"]["also_viewed"]["accuracy"] > 0.7


def test_ranking_baselines_rank_by_their_scores(synth):
    """Popularity ranks by training degree; every baseline's ranking report covers each relation."""
    cat = Catalog(synth)
    pop = evaluate_baseline(synth, "popularity")
    rnd = evaluate_baseline(synth, "random")
    for rep in (pop, rnd):
        assert set(rep["ranking"]["relations"]) == set(cat.relations)
        assert rep["truth"] is not None  # the synthetic catalog grades top-k lists
    # a random ranking puts the target at the median position on average
    assert abs(rnd["ranking"]["overall"]["median_rank"] - len(cat) / 2) < 0.15 * len(cat)


def test_bad_names_and_missing_features(synth):
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate_baseline(synth, "knn")
    with pytest.raises(ValueError, match="validation or test"):
        evaluate_baseline(synth, "random", split="train")
    with pytest.raises(CatalogError, match="unknown relation"):
        evaluate_baseline(synth, "random", relations=["bought_with"])
    with pytest.raises(CatalogError, match="features"):
        evaluate_baseline(synth, "wnn")  # an image catalog has no precomputed features
    assert BASELINES == ("random", "popularity", "category-tree", "wnn")


# ---------------------------------------------------------------------------------------------
# WNN learns a planted dimension
# ---------------------------------------------------------------------------------------------
PLANTED = 3


def _planted_catalog(out: Path, n_items: int = 150, clusters: int = 10, dims: int = 16, seed: int = 0) -> Path:
    """Items in clusters; feature PLANTED says the cluster, the others are noise of the same scale.
    Related (also_viewed) = every pair of the same cluster."""
    rng = np.random.default_rng(seed)
    cl = np.arange(n_items) % clusters
    x = rng.standard_normal((n_items, dims)).astype(np.float32)
    x[:, PLANTED] = np.linspace(-1.6, 1.6, clusters)[cl] + 0.03 * rng.standard_normal(n_items)
    ids = [f"I{k:04d}" for k in range(n_items)]
    a, b = [], []
    for c in range(clusters):
        m = np.flatnonzero(cl == c)
        for i in range(len(m)):
            for j in range(i + 1, len(m)):
                a.append(ids[m[i]])
                b.append(ids[m[j]])
    rel = pa.table({"item_a": a, "item_b": b, "relation": ["also_viewed"] * len(a), "user": [""] * len(a)})
    items = {"item_id": ids, "category": ["gadgets"] * n_items, "title": [""] * n_items, "image": [""] * n_items}
    return write_catalog(out, items=items, relations=rel, users=[], meta={"name": "planted", "source": "test"}, arrays={"features": x})


def test_wnn_learns_planted_dimension(tmp_path):
    from lrprec.evaluate.baselines import WNNConfig

    data = _planted_catalog(tmp_path / "planted")
    rep = evaluate_baseline(data, "wnn", wnn=WNNConfig(epochs=12, seed=0))
    assert rep["method"] == "wnn"
    assert rep["overall"]["accuracy"] > 0.85, rep["overall"]
    assert rep["overall"]["auc"] > 0.9
    top = rep["wnn"]["top_dimensions"]["also_viewed"]
    assert top[0]["dim"] == PLANTED
    assert top[0]["weight"] == max(t["weight"] for t in top)
    assert top[0]["share"] > 0.3  # the planted dimension carries most of the distance
    assert all(t["weight"] >= 0 for t in top)
    # random stays near chance on the same split; CT (one category) is exactly chance
    assert abs(evaluate_baseline(data, "random")["overall"]["accuracy"] - 0.5) < 0.2
    assert evaluate_baseline(data, "ct")["overall"]["accuracy"] == pytest.approx(0.5, abs=0.05)


def test_lazy_features_match_and_unmap(tmp_path):
    arr = np.arange(60, dtype=np.float32).reshape(12, 5)
    np.save(tmp_path / "f.npy", arr)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    lazy = LazyFeatures(mm)
    idx = np.array([7, 0, 7, 11, 3])
    np.testing.assert_array_equal(lazy.rows(idx), arr[idx])
    import torch

    t = lazy[torch.as_tensor(idx)]
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), arr[idx])
    np.testing.assert_array_equal(LazyFeatures(arr).rows(idx), arr[idx])
    assert lazy.rows(np.zeros(0, np.int64)).shape == (0, 5)
    with pytest.raises(IndexError):
        lazy.rows(np.array([12]))


# ---------------------------------------------------------------------------------------------
# features mode end to end on Amazon 2014 files (meta + .b), through the importer
# ---------------------------------------------------------------------------------------------
def _amazon_files(folder: Path, n: int = 120, clusters: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """meta (Python literal lines, gzip) and a .b file (10-byte ASIN + 4096 float32) with planted
    structure: items of one cluster share a feature centroid and relate to each other."""
    from lrprec.data.amazon_features import FEATURE_DIM, feature_dtype

    rng = np.random.default_rng(seed)
    cl = np.arange(n) % clusters
    asins = [f"B{k:09d}" for k in range(n)]
    cent = np.maximum(rng.standard_normal((clusters, FEATURE_DIM)), 0)
    x = np.maximum(cent[cl] + 0.5 * rng.standard_normal((n, FEATURE_DIM)), 0).astype("<f4")
    lines = []
    for k in range(n):
        mates = [j for j in np.flatnonzero(cl == cl[k]) if j != k]
        rel = {r: [asins[j] for j in rng.choice(mates, 2, replace=False)] for r in ("also_bought", "also_viewed")}
        top = "Clothing" if cl[k] % 2 else "Shoes"
        lines.append(repr({"asin": asins[k], "title": f"Item {k}'s \"best\" – café", "categories": [[top, "Leaf"]], "related": rel}))
    meta = folder / "meta_Clothing.json.gz"
    meta.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    rec = np.zeros(n, feature_dtype(FEATURE_DIM))
    rec["asin"] = [a.encode("ascii") for a in asins]
    rec["f"] = x
    b = folder / "image_features_Clothing.b"
    b.write_bytes(rec[rng.permutation(n)].tobytes())  # record order differs from meta order
    return meta, b


@pytest.fixture(scope="module")
def amazon_features(tmp_path_factory) -> Path:
    from lrprec.data.amazon import import_amazon2014

    folder = tmp_path_factory.mktemp("amz")
    meta, b = _amazon_files(folder)
    rep = import_amazon2014(meta, folder / "cat", features=b, progress=False)
    assert rep["items"] == 120 and rep["features_dim"] == 4096
    return folder / "cat"


@pytest.fixture(scope="module")
def features_run(amazon_features, tmp_path_factory) -> Path:
    from lrprec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("frun") / "k10"
    train(amazon_features, out, TrainConfig(backbone="features", dim=10, epochs=6, lr=1e-2, batch_size=128), progress=False, log=lambda m: None)
    return out


def test_features_mode_end_to_end(amazon_features, features_run):
    from lrprec.app.evaluation import evaluate_run

    cfg = json.loads((features_run / "config.json").read_text())
    assert cfg["backbone"] == "features" and cfg["backbone_config"] == {"out_dim": 4096}
    rep = evaluate_run(features_run)
    assert set(rep["relations"]) == {"also_bought", "also_viewed"}
    assert rep["overall"]["accuracy"] > 0.75, rep["overall"]  # chance is 0.5
    assert set(rep["relations"]["also_bought"]["by_category"]) == {"Clothing", "Shoes"}


def test_compare_runs_and_baselines(amazon_features, features_run, tmp_path):
    from lrprec.app.evaluation import write_baseline_report as write_report
    from lrprec.evaluate.baselines import WNNConfig

    wnn = evaluate_baseline(amazon_features, "wnn", wnn=WNNConfig(epochs=2))
    assert wnn["overall"]["accuracy"] > 0.6
    assert wnn["wnn"]["features_dim"] == 4096
    stored = write_report(wnn, tmp_path / "wnn.json")
    reports = compare_reports([features_run, "random", "baseline:ct", stored])
    assert list(reports) == ["k10", "random", "category-tree", "wnn"]
    assert reports["random"]["relations"].keys() == reports["k10"]["relations"].keys()
    text = compare_text(reports)
    for name in reports:
        assert name in text
    for r in ("also_viewed", "also_bought"):
        assert r in text
    assert "Clothing" in text and "Shoes" in text and "all" in text
    row = next(line for line in text.splitlines() if line.split()[:2] == ["all", "k10"])
    assert line_has_k(row, 10)
    assert f"{100 * reports['k10']['relations']['also_viewed']['accuracy']:.1f}" in row
    with pytest.raises(ValueError, match="neither"):
        compare_reports([features_run, "nonsense"])


def line_has_k(row: str, k: int) -> bool:
    return str(k) in row.split()[2:3]


def test_compare_text_many_runs_side_by_side():
    def rep(acc: float, dim, method=None) -> dict:
        cell = {"accuracy": acc, "auc": acc, "n": 10}
        return {"relations": {r: {**cell, "by_category": {"bags": cell, "shoes": cell}} for r in ("also_viewed", "bought_together")},
                "overall": cell, "dim": dim, "backbone": None if method else "features", "method": method, "split": "test"}

    text = compare_text({"random": rep(0.5, None, "random"), "k10": rep(0.8, 10), "k100": rep(0.9, 100)})
    lines = text.splitlines()
    assert sum(1 for line in lines if line.split()[:1] == ["bags"]) == 1
    assert any("k100" in line and "90.0*" in line for line in lines)
    assert any("k10 " in line and "80.0 " in line for line in lines)
    assert "also_viewed" in text and "bought_together" in text
    assert compare_text({}) == "no runs to compare"
    # reports with a ranking get the ranking side by side, the best MRR starred
    ranked = {n: {**r, "ranking": {"relations": {"also_viewed": {"recall@10": x, "mrr": x}}, "overall": {"recall@10": x, "mrr": x}}}
              for (n, r), x in zip({"random": rep(0.5, None, "random"), "k10": rep(0.8, 10)}.items(), (0.01, 0.2))}
    text = compare_text(ranked)
    assert "recall@10 / MRR" in text
    assert any(line.startswith("k10") and "0.200 / 0.200*" in line for line in text.splitlines())


def test_cli_baseline(synth, tmp_path):
    from lrprec.cli import load_commands

    app = load_commands()  # every command registered, ``baseline`` among them

    out = tmp_path / "ct.json"
    res = CliRunner().invoke(app, ["baseline", str(synth), "--method", "category-tree", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["method"] == "category-tree" and json.loads(out.read_text())["overall"] == rep["overall"]
    res = CliRunner().invoke(app, ["baseline", str(synth), "--method", "random"])
    assert res.exit_code == 0 and "baseline random" in res.stdout and "also_viewed" in res.stdout
    res = CliRunner().invoke(app, ["baseline", str(synth), "--method", "wnn"])
    assert res.exit_code == 2 and "features" in res.output
    res = CliRunner().invoke(app, ["baseline", str(tmp_path / "missing"), "--method", "random"])
    assert res.exit_code == 2 and "not found" in res.output


def test_wnn_on_a_runs_backbone_features(tiny_catalog, tiny_run):
    from lrprec.evaluate.baselines import WNNConfig

    rep = evaluate_baseline(tiny_catalog, "wnn", run=tiny_run, wnn=WNNConfig(epochs=1))
    assert rep["wnn"]["features"].startswith("run ") and rep["wnn"]["features_dim"] > 0
    assert 0.0 <= rep["overall"]["accuracy"] <= 1.0 and rep["overall"]["n"] == len(Catalog(tiny_catalog).pairs("test"))
    with pytest.raises(ValueError, match="wnn baseline only"):
        evaluate_baseline(tiny_catalog, "random", run=tiny_run)
