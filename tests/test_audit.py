"""Issue 26, discovery side: SpRAy clustering, the behavioural suspicion rule, the tint catalog,
the linear probe and the audit command's errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrprec.cli import load_commands
from lrprec.data.catalog import Catalog
from lrprec.data.synthetic import SynthConfig, generate
from lrprec.data.watermark import TINT_ALPHA, TINT_RGB, catalog_artifact, tint_images, untint_images, watermark_box


def _invoke(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


# ---- SpRAy on planted heatmap groups -------------------------------------------------------
def _planted(counts=(30, 25, 35), side=32, seed=0):
    """Heatmaps with one blob each at a group-specific place (plus noise and jitter)."""
    rng = np.random.default_rng(seed)
    centres = [(6, 6), (24, 10), (16, 26), (8, 24)]
    yy, xx = np.mgrid[0:side, 0:side]
    maps, labels = [], []
    for g, n in enumerate(counts):
        for _ in range(n):
            cy, cx = np.asarray(centres[g]) + rng.integers(-2, 3, size=2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
            maps.append(blob * rng.uniform(0.5, 2.0) + 0.05 * rng.random((side, side)))
            labels.append(g)
    return np.stack(maps), np.asarray(labels)


@pytest.mark.parametrize("counts", [(30, 25, 35), (20, 30, 25, 28)])
def test_spray_recovers_planted_groups_and_the_eigengap_counts_them(counts):
    from sklearn.metrics import adjusted_rand_score

    from lrprec.evaluate.audit import heatmap_features, spray

    maps, truth = _planted(counts)
    out = spray(heatmap_features(maps), n_neighbors=8, max_clusters=8)
    assert out["n_clusters"] == len(counts)
    assert adjusted_rand_score(truth, out["labels"]) == pytest.approx(1.0)
    # a sign flip does not change a strategy: |R| is clustered
    assert (spray(heatmap_features(-maps), n_neighbors=8)["labels"] == out["labels"]).all()


def test_one_strategy_is_split_in_two_and_judged_from_both_sides():
    """Heatmaps of one strategy (a global cast leaves them alike): the eigengap says one cluster; the audit splits them
    in two anyway (its behaviour tests need a contrast), and the split is suspicious only if it is from both sides."""
    from lrprec.evaluate.audit import THRESHOLD, _score_as_one_contrast, heatmap_features, spray

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    maps = np.stack([np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 30.0) + 0.05 * rng.random((32, 32)) for _ in range(60)])
    assert spray(heatmap_features(maps), n_neighbors=8)["n_clusters"] == 1
    out = spray(heatmap_features(maps), n_neighbors=8, min_clusters=2)
    assert out["n_clusters"] == 2 and out["forced_split"] and set(np.unique(out["labels"])) == {0, 1}
    assert not spray(heatmap_features(maps), n_neighbors=8, n_clusters=2, min_clusters=2)["forced_split"]  # asked for
    planted = spray(heatmap_features(_planted((30, 25, 35))[0]), n_neighbors=8, min_clusters=2)
    assert planted["n_clusters"] == 3 and not planted["forced_split"]  # the eigengap's own count stands

    def two(a, b):
        clusters = [{"id": 0, "score": a, "suspicious": a > THRESHOLD}, {"id": 1, "score": b, "suspicious": b > THRESHOLD}]
        _score_as_one_contrast(clusters)
        return clusters

    clean = two(0.077, -0.059)  # a clean catalog's forced split (session 11): one side above the threshold by chance
    assert [c["score"] for c in clean] == [-0.059, -0.059] and not any(c["suspicious"] for c in clean)
    assert clean[0]["score_alone"] == 0.077
    cast = two(0.419, 0.421)  # the paper-like tint: removing the contrast moves the outputs for free from both sides
    assert all(c["suspicious"] and c["score"] == 0.419 for c in cast)


def test_focus_region_holds_the_mass_and_respects_the_area_cap():
    from lrprec.evaluate.audit import focus_region

    region = np.zeros((16, 16))
    region[:3, :3] = 1.0
    region += 1e-4
    f = focus_region(region, mass=0.5)
    assert f[:3, :3].sum() == f.sum() and 1 <= f.sum() <= 9
    assert focus_region(np.ones((16, 16)), mass=0.9, max_area=0.25).sum() == 64


def test_the_suspicion_rule_separates_an_artifact_from_a_legitimate_feature():
    from lrprec.evaluate.audit import THRESHOLD, effect_and_cost, suspicion

    rng = np.random.default_rng(0)
    label = np.repeat([1, 0], 200)
    evidence = np.where(label == 1, 0.8, 0.2) + rng.normal(0, 0.05, 400)  # a legitimate feature: right on every pair
    shortcut = rng.choice([-0.12, 0.12], 400)  # an artifact: pushes P either way, unrelated to the label
    p = np.clip(0.5 + (evidence - 0.5) * 0.6 + shortcut, 0.01, 0.99)
    no_artifact = np.clip(0.5 + (evidence - 0.5) * 0.6, 0.01, 0.99)  # the artifact removed: outputs move, accuracy gains
    no_feature = np.clip(0.5 + shortcut, 0.01, 0.99)  # the feature removed: outputs move, accuracy falls to chance
    artifact, legit = effect_and_cost(p, no_artifact, label), effect_and_cost(p, no_feature, label)
    assert artifact["effect"] > 0.1 and artifact["cost"] <= 0 and legit["cost"] > 0.2
    assert suspicion({"region": artifact}) > THRESHOLD >= suspicion({"region": legit})
    assert suspicion({"region": effect_and_cost(p, p, label)}) <= THRESHOLD  # removing what the model ignores
    assert suspicion({"region": legit, "latent": artifact}) > THRESHOLD  # either removal can expose it


def test_an_exact_tie_goes_to_the_cluster_whose_region_moves_the_outputs():
    from lrprec.evaluate.audit import _top

    def cluster(i, score, region):
        return {"id": i, "score": score, "tests": {"region": {"effect": region, "cost": 0.0}, "latent": {"effect": score, "cost": 0.0}}}

    assert _top([cluster(0, 0.35, 0.003), cluster(1, 0.35, 0.19)]) == 1  # a two-way split: one concept direction
    # paper-like seed 1 (session 10): the complement won by 0.0007 and its region test was negative
    assert _top([cluster(0, 0.4350, 0.374), cluster(1, 0.4357, -0.067)]) == 0
    assert _top([cluster(0, 0.36, 0.003), cluster(1, 0.35, 0.19)]) == 0  # no tie: the score decides
    assert _top([]) is None


# ---- the tint catalog -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tint_catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("tint") / "cat"
    generate(out, SynthConfig(items=300, users=3, image_size=32, pairs_per_relation=300, seed=4, spurious=0.9, spurious_kind="tint"),
             progress=False)
    return out


def test_tint_catalog_tags_agree_with_training_labels_only(tint_catalog, tmp_path):
    cat = Catalog(tint_catalog)
    tags = np.load(tint_catalog / "shortcut_tags.npy")
    assert cat.meta["shortcut"]["kind"] == "tint" and 0.4 < tags.mean() < 0.6
    train = cat.pairs("train")
    assert (tags[train.a] == tags[train.b]).mean() > 0.85
    for split in ("validation", "test"):
        p = cat.pairs(split)
        pos = p.label == 1
        assert abs((tags[p.a[pos]] == tags[p.b[pos]]).mean() - 0.5) < 0.05
    # the same items as the mark catalog: only the tagged images differ, by the cast
    generate(tmp_path / "mark", SynthConfig(items=300, users=3, image_size=32, pairs_per_relation=300, seed=4, spurious=0.9), progress=False)
    mark_cat = Catalog(tmp_path / "mark")
    o, m = watermark_box(32)
    plain = np.asarray(cat.images)[tags == 0]
    assert (plain == np.asarray(mark_cat.images)[tags == 0]).all()
    tinted = np.asarray(cat.images)[tags == 1].astype(np.float64)
    want = (1 - TINT_ALPHA) * np.asarray(mark_cat.images)[tags == 1].astype(np.float64) + TINT_ALPHA * np.asarray(TINT_RGB)
    outside = np.ones((32, 32), bool)
    outside[o:o + m, o:o + m] = False  # the mark catalog's watermark sits there
    assert np.abs(tinted[:, outside] - want[:, outside]).max() <= 0.5 + 1e-9
    assert (cat.masks[tags == 1] == Catalog(tmp_path / "mark").masks[tags == 1])[:, outside].all()


def test_tint_counterfactuals_apply_and_remove_the_cast(tint_catalog):
    cat = Catalog(tint_catalog)
    art = catalog_artifact(cat.root, cat.meta, cat.images)
    rows = np.arange(60)
    images = np.asarray(cat.images[rows])
    tagged = art.tags[rows] == 1
    on, off = art.stamp(images, rows), art.remove(images, rows)
    assert (on[tagged] == images[tagged]).all() and (off[~tagged] == images[~tagged]).all()  # idempotent where already so
    # the catalog's tagged images are exactly the tint of their untinted selves, to within one grey level
    assert np.abs(tint_images(off[tagged]).astype(int) - images[tagged].astype(int)).max() <= 1
    assert np.abs(untint_images(tint_images(images)).astype(int) - images.astype(int)).max() <= 1
    assert np.abs(off[tagged].mean((0, 1, 2)) - on[tagged].mean((0, 1, 2))).max() > 10  # the cast is visible
    with pytest.raises(Exception, match="rows"):
        art.stamp(images)


def test_mark_augment_redraws_the_tint_in_training_batches(tint_catalog):
    """The oracle (--mark-augment) on a tint catalog: every re-drawn image is its tinted or untinted self."""
    from lrprec.train.batches import _EpochBatches, _Norm

    cat = Catalog(tint_catalog)
    art = catalog_artifact(cat.root, cat.meta, cat.images)
    pairs = cat.pairs("train").take(np.arange(64))
    norm = _Norm((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # inputs = raw pixel values
    ds = _EpochBatches(pairs, 64, 1, 0, 0, 1, tint_catalog / "images.npy", norm, None, None, mark_augment=(1.0, art, (0, 0)))
    got = ds[0]["x"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    rows = np.concatenate([pairs.a, pairs.b])
    raw = np.asarray(cat.images[rows])
    on, off = art.stamp(raw, rows), art.remove(raw, rows)
    is_on = (got == on).all((1, 2, 3))
    assert (is_on | (got == off).all((1, 2, 3))).all() and 0.3 < is_on.mean() < 0.7
    assert (is_on != (art.tags[rows] == 1)).any()  # tints are moved off tagged images and onto untagged ones


def test_fingerprints_of_catalogs_without_a_tint_do_not_change(tmp_path):
    generate(tmp_path / "a", SynthConfig(items=40, users=2, image_size=16, pairs_per_relation=20, seed=1), progress=False)
    meta = json.loads((tmp_path / "a" / "catalog.json").read_text())
    assert "spurious_kind" not in meta["config"] and meta["fingerprint"] == "bae35648a3486e8d"  # as made before tints existed


# ---- the linear probe -----------------------------------------------------------------------
def test_linear_probe_decodes_a_planted_tag_and_not_a_random_one():
    from lrprec.evaluate.probe import linear_probe

    rng = np.random.default_rng(0)
    tag = rng.integers(0, 2, 600)
    feats = rng.normal(size=(600, 16))
    feats[:, 3] += 1.5 * tag
    planted = linear_probe(feats, tag)
    random = linear_probe(feats, rng.integers(0, 2, 600))
    assert planted["accuracy"] > 0.7 and abs(random["accuracy"] - random["chance"]) < 0.07 and 0.5 <= random["chance"] < 0.56


# ---- the audit end to end and its errors --------------------------------------------------------
@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory):
    """A Clever Hans: on the 32 px shortcut catalog three epochs leave a model that decides by the mark."""
    from lrprec.train import TrainConfig, train

    root = tmp_path_factory.mktemp("hans")
    generate(root / "cat", SynthConfig(items=300, users=3, image_size=32, pairs_per_relation=300, seed=4, spurious=0.9), progress=False)
    train(root / "cat", root / "run", TrainConfig(epochs=3, seed=0), progress=False, log=lambda m: None)
    return root / "run"


@pytest.mark.slow
def test_audit_flags_the_mark_on_a_clever_hans(shortcut_run):
    from lrprec.evaluate.audit import audit_run

    r = audit_run(shortcut_run, pairs=64)
    doc = json.loads((shortcut_run / "audit" / "audit.json").read_text())
    assert doc["clusters"] and doc["split"] == "validation" and doc["layer"] is None and doc["weights_id"]
    assert doc["flagged"] is not None and doc["flagged"] == r["flagged"]
    tags = np.load(Catalog(json.loads((shortcut_run / "config.json").read_text())["catalog"]).root / "shortcut_tags.npy")
    for c in doc["clusters"]:
        region = np.load(shortcut_run / "audit" / c["region"])
        assert region.shape == (32, 32) and c["size"] == len(c["members"]) and set(c["prototypes"]) <= set(c["members"])
    # the flagged cluster's strategy is the mark: its members are (mostly) marked items or its focus is the corner
    top = next(c for c in doc["clusters"] if c["id"] == doc["flagged"])
    o, m = watermark_box(32)
    region = np.load(shortcut_run / "audit" / top["region"])
    marked_share = tags[top["members"]].mean()
    assert marked_share > 0.8 or marked_share < 0.2 or region[:o + m + 2, :o + m + 2].sum() / region.sum() > 0.3


@pytest.mark.slow
def test_audit_cli_errors(shortcut_run, tiny_catalog, tmp_path):
    r = _invoke("audit", str(shortcut_run), "--split", "train")
    assert r.exit_code == 2 and "--split" in r.output
    r = _invoke("audit", str(shortcut_run), "--pairs", "0")
    assert r.exit_code == 2 and "--pairs" in r.output
    r = _invoke("audit", str(shortcut_run), "--clusters", "0")
    assert r.exit_code == 2 and "--clusters" in r.output
    # a run whose catalog lost its validation split
    cat_copy, run_copy = tmp_path / "cat", tmp_path / "run"
    cfg = json.loads((shortcut_run / "config.json").read_text())
    shutil.copytree(cfg["catalog"], cat_copy)
    shutil.copytree(shortcut_run, run_copy)
    (cat_copy / "splits" / "validation.parquet").unlink()
    cfg["catalog"] = str(cat_copy)
    (run_copy / "config.json").write_text(json.dumps(cfg))
    r = _invoke("audit", str(run_copy))
    assert r.exit_code == 2 and "validation" in r.output and "Traceback" not in r.output


def test_audit_refuses_a_features_mode_run(tiny_catalog, tmp_path):
    from lrprec.train import TrainConfig, train

    cat = tmp_path / "cat"
    shutil.copytree(tiny_catalog, cat)
    np.save(cat / "features.npy", np.random.default_rng(0).normal(size=(len(Catalog(cat)), 8)).astype(np.float32))
    train(cat, tmp_path / "frun", TrainConfig(backbone="features", epochs=1, dim=4), progress=False, log=lambda m: None)
    r = _invoke("audit", str(tmp_path / "frun"))
    assert r.exit_code == 2 and "features" in r.output


@pytest.mark.slow
def test_audit_report_section_and_web_page(shortcut_run):
    from fastapi.testclient import TestClient

    from lrprec.evaluate.audit import audit_run
    from lrprec.report.html import write_report
    from lrprec.serve.app import create_app

    client = TestClient(create_app(shortcut_run))
    if not (shortcut_run / "audit" / "audit.json").exists():
        assert "No audit yet" in client.get("/audit").text
        audit_run(shortcut_run, pairs=64)
    doc = json.loads((shortcut_run / "audit" / "audit.json").read_text())
    html = write_report(shortcut_run).read_text()
    page = client.get("/audit")
    assert page.status_code == 200
    for c in doc["clusters"]:
        assert f"audit/{c['figure']}" in html and f"/files/run/audit/{c['figure']}" in page.text
        assert client.get(f"/files/run/audit/{c['figure']}").headers["content-type"] == "image/png"
        assert f"--cluster {c['id']}" in page.text
