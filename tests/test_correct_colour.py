"""A global artifact discovered as a colour transform (issue 26, :mod:`lrprec.data.colour_artifact`): a planted cast
is recovered from noisy or no seeds, stamping/removing it round-trips, bad input is refused, and ``lrprec correct``
picks it over a pasted region on a tint catalog (and the region on a mark catalog)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lrprec.data.colour_artifact import (ColourTransform, estimate_transform, fit_channel_affine, image_descriptors,
                                         seed_partitions, self_label)
from lrprec.errors import UsageError

ALPHA, COLOUR = 0.3, np.array([40.0, 200.0, 90.0])  # a cast unlike the catalog's (an independent reference)


def scenes(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 images: a random grey background with a random coloured square (products vary, as in a catalog)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(60, 200)
        y, x, s = *rng.integers(0, side // 2, 2), rng.integers(3, side // 2)
        out[i, y:y + s, x:x + s] = rng.integers(0, 256, 3)
    return out


def planted(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images = scenes(n, seed=seed)
    tags = (np.random.default_rng(seed + 1).random(n) < 0.5).astype(np.int64)
    images[tags == 1] = np.rint((1 - ALPHA) * images[tags == 1] + ALPHA * COLOUR).astype(np.uint8)
    return images, tags


def test_descriptors_are_per_channel_quantiles_and_mean():
    x = np.zeros((1, 4, 4, 3), np.uint8)
    x[0, ..., 0] = np.arange(16).reshape(4, 4)
    d = image_descriptors(x)
    assert d.shape == (1, 12)
    assert d[0, 9] == pytest.approx(7.5) and d[0, 3] == pytest.approx(np.quantile(np.arange(16), 0.5))  # mean R, median R


def test_noisy_seed_recovers_the_planted_cast():
    images, tags = planted()
    noisy = np.where(np.random.default_rng(5).random(len(tags)) < 0.3, 1 - tags, tags)  # 70% right
    ct = estimate_transform(images, noisy)
    assert ct is not None and (ct.tags == tags).mean() == 1.0
    assert ct.scale == pytest.approx(np.full(3, 1 - ALPHA), abs=0.05)
    assert ct.shift == pytest.approx(ALPHA * COLOUR, abs=8)
    # the inverse seed gives the inverse map: carriers are then the untinted images
    inv = estimate_transform(images, 1 - noisy)
    assert (inv.tags == 1 - tags).all() and inv.scale == pytest.approx(1 / (1 - ALPHA), abs=0.1)


def test_unseeded_axes_find_the_cast():
    images, tags = planted(seed=3)
    desc = image_descriptors(images)
    found = [self_label(desc, p) for p in seed_partitions(desc)]
    assert max(max((f == tags).mean(), (f != tags).mean()) for f in found) == 1.0


def test_stamp_and_remove_round_trip_only_where_needed():
    images, tags = planted(seed=7)
    ct = estimate_transform(images, tags)
    rows = np.arange(len(images))
    stamped = ct.stamp(images, rows)
    assert (stamped[tags == 1] == images[tags == 1]).all()  # carriers are left alone
    clean = scenes(len(images), seed=7)
    assert np.abs(stamped[tags == 0].astype(int) - images[tags == 0]).max() > 20  # the others get the cast
    removed = ct.remove(images, rows)
    assert (removed[tags == 0] == images[tags == 0]).all()
    assert np.abs(removed[tags == 1].astype(int) - clean[tags == 1]).max() <= 4  # the cast undone to a few grey levels
    with pytest.raises(UsageError, match="rows"):
        ct.stamp(images)


def test_errors_and_refusals():
    images, tags = planted(n=60)
    with pytest.raises(UsageError, match="seed labels"):
        estimate_transform(images, tags[:10])
    with pytest.raises(UsageError, match="both sides"):
        fit_channel_affine(images[:0], images)
    assert estimate_transform(images, np.ones(len(images), np.int64)) is None  # one side empty: nothing to estimate
    flat = np.full((40, 8, 8, 3), 120, np.uint8)
    flat[:20] = 10  # the "carriers" differ by a collapse to one value: not an invertible cast
    flat[:20, 0, 0] = 11
    assert estimate_transform(flat, (np.arange(40) < 20).astype(np.int64)) is None


# ---- the correction picks the form -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tint_run(tmp_path_factory):
    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tint")
    generate(root / "cat", SynthConfig(items=160, users=3, image_size=32, pairs_per_relation=80, seed=3, spurious=0.9,
                                       spurious_kind="tint"), progress=False)
    train(root / "cat", root / "run", TrainConfig(epochs=2, batch_size=64, dim=8, seed=1), progress=False, log=lambda m: None)
    return root / "run"


def tint_audit(run_dir) -> None:
    """An audit whose flagged cluster is the tinted items among the first 100 (as a perfect audit would find)."""
    from lrprec.run import Run

    run = Run.load(run_dir)
    tags = np.load(run.catalog.root / "shortcut_tags.npy")
    folder = run_dir / "audit"
    folder.mkdir(exist_ok=True)
    members = np.flatnonzero(tags[:100] == 1)
    np.save(folder / "cluster_0_region.npy", np.ones((32, 32), np.float32))  # a global cast: the relevance is everywhere
    (folder / "audit.json").write_text(json.dumps({"weights_id": run.version, "flagged": 0, "clusters": [
        {"id": 0, "size": int(members.size), "score": 0.5, "suspicious": True, "region": "cluster_0_region.npy", "members": members.tolist()}]}))


def test_correct_finds_the_tint_as_a_colour_transform(tint_run):
    from lrprec.data.watermark import TINT_ALPHA
    from lrprec.run import Run
    from lrprec.train.correct import (CorrectConfig, choose_artifact, concept_labels, fit_concept, read_audit, resolve_method,
                                      training_items)

    run = Run.load(tint_run)
    tags = np.load(run.catalog.root / "shortcut_tags.npy")
    tint_audit(tint_run)
    audit, d = read_audit(run, None)
    cluster = audit["clusters"][0]
    rows = training_items(run)
    concept = fit_concept(run, concept_labels(len(run.catalog), cluster), rows)
    choice = choose_artifact(run, cluster, d, concept, rows, 0.5)
    assert choice["form"] == "colour" and "not a localized artifact" in choice["region_error"]
    assert isinstance(choice["paste"][1], ColourTransform) and choice["score"] == pytest.approx(choice["scores"]["colour"], abs=1e-6)
    # seeded by the cluster, the estimate is the catalog's cast (which seed wins is the 2-epoch model's behaviour)
    ct = estimate_transform(run.catalog.images, concept_labels(len(run.catalog), cluster))
    assert (ct.tags == tags).all() and ct.scale == pytest.approx(np.full(3, 1 - TINT_ALPHA), abs=0.12)
    # auto: augment from scratch when the flip's score clears MIN_SCORE, the latent fallback otherwise
    from lrprec.train import correct as cm

    hi = resolve_method(CorrectConfig(), run, {**choice, "score": cm.MIN_SCORE})
    lo = resolve_method(CorrectConfig(), run, {**choice, "score": cm.MIN_SCORE - 1e-3})
    assert (hi.method, hi.from_scratch) == ("augment", True) and (lo.method, lo.refit, lo.project) == ("a-clarc", True, True)
    assert resolve_method(CorrectConfig(), run, None).method == "a-clarc"
    # the training batches apply the transform where the item lacks it and invert it where it carries it
    from lrprec.model.backbones import preprocess
    from lrprec.train.batches import _EpochBatches, _Norm

    pairs = run.catalog.pairs("train").take(np.arange(16))
    norm = _Norm(run.model.backbone.mean, run.model.backbone.std)
    ds = _EpochBatches(pairs, 16, 1, 0, 0, 1, run.catalog.root / "images.npy", norm, None, None, mark_augment=(1.0, ct, (0, 0)))
    x = ds[0]["x"]
    r = np.concatenate([pairs.a, pairs.b])
    imgs = np.asarray(run.catalog.images[r])
    import torch

    with_ = torch.isclose(x, preprocess(ct.stamp(imgs, r), norm), atol=1e-6).flatten(1).all(1)
    without = torch.isclose(x, preprocess(ct.remove(imgs, r), norm), atol=1e-6).flatten(1).all(1)
    changed = ~torch.isclose(x, preprocess(imgs, norm), atol=1e-6).flatten(1).all(1)
    assert (with_ | without).all() and changed.any()
    assert (preprocess(ct.stamp(imgs, r), norm) - preprocess(imgs, norm)).abs().max() > 0.1  # not an identity map


# ---- the erasure: the artifact gone from the features the head reads, judged on the catalog's true tags -------------
def test_erasure_leaves_no_linearly_readable_artifact(tint_run, tmp_path):
    """Fitted on counterfactual pairs of the training images only, the erasure's projection leaves a linear probe of the
    catalog's *true* tags (every item, the report's probe) near chance where it read them almost perfectly before; the
    directions are orthonormal and the run with the projection loads and scores like any run."""
    import torch

    from lrprec.evaluate.probe import linear_probe
    from lrprec.explain.concepts import project_out
    from lrprec.run import Run, embed_items
    from lrprec.train.correct import training_items
    from lrprec.train.erasure import MAX_ACCURACY_COST, PROBE_MARGIN, fit_erasure

    run = Run.load(tint_run)
    tags = np.load(run.catalog.root / "shortcut_tags.npy")
    ct = estimate_transform(run.catalog.images, tags)
    er = fit_erasure(run, (ct.stamp, ct.remove, ct.carries), training_items(run), log=lambda m: None)
    V = er["V"].double()
    assert torch.allclose(V @ V.T, torch.eye(V.shape[0], dtype=V.dtype), atol=1e-5)
    probes, accs = ({int(k): v for k, v in er[key].items()} for key in ("probes", "accuracy"))
    k = er["directions"]
    assert k > 0 and (probes[k] <= PROBE_MARGIN or probes[k] == min(probes.values()))
    assert accs[k] >= accs[0] - MAX_ACCURACY_COST  # the rule never takes more directions than validation accuracy allows
    feats = embed_items(run.model, run.catalog, run.input_size).double()
    before = linear_probe(feats.numpy(), tags)
    after = linear_probe(project_out(feats, V, er["z0"].double()).numpy(), tags)
    assert before["accuracy"] > 0.9
    assert after["accuracy"] <= after["chance"] + 0.1 < before["accuracy"]


def test_augment_keeps_the_erasure_only_where_validation_allows(tint_run, tmp_path, monkeypatch):
    from lrprec.run import Run
    from lrprec.train import correct as cm
    from lrprec.train import erasure

    tint_audit(tint_run)
    s = cm.correct(tint_run, tmp_path / "on", cm.CorrectConfig(method="augment", epochs=1), log=lambda m: None)
    run = Run.load(tmp_path / "on")
    e = s["erasure"]
    assert e["kept"] == (e["directions"] > 0 and e.get("val_accuracy_with", 0) >= e.get("val_accuracy_without", 1) - erasure.MAX_ACCURACY_COST)
    assert bool(run.config.get("concept_projection")) == e["kept"]
    assert s["val_accuracy"] == pytest.approx(cm.validation_accuracy(run.model, run))
    off = cm.correct(tint_run, tmp_path / "off", cm.CorrectConfig(method="augment", epochs=1, erase=False), log=lambda m: None)
    assert "erasure" not in off and not Run.load(tmp_path / "off").config.get("concept_projection")
    # an erasure that costs validation accuracy is dropped: the run is the augmented model as trained
    monkeypatch.setattr(erasure, "MAX_ACCURACY_COST", -1.0)
    s = cm.correct(tint_run, tmp_path / "dropped", cm.CorrectConfig(method="augment", epochs=1), log=lambda m: None)
    dropped = Run.load(tmp_path / "dropped")
    assert s["erasure"]["directions"] == 0 and not s["erasure"]["kept"] and not dropped.config.get("concept_projection")
    assert s["val_accuracy"] == pytest.approx(cm.validation_accuracy(dropped.model, dropped))
