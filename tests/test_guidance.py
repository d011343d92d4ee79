"""Explanation-guided training (issue 9): the shortcut catalog, the guidance loss, guided training, the shortcut report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrprec.data.catalog import Catalog, CatalogError
from lrprec.data.sampling import NegativeSampler
from lrprec.data.rules import shortcut_veto, train_reject
from lrprec.data.synthetic import SynthConfig, generate, watermark_box
from lrprec.train import TrainConfig, train
from lrprec.train.guidance import consistency_penalty, gradient_relevance, guidance_loss, lrp_relevance, outside_share


def _quiet(m):
    pass


@pytest.fixture(scope="module")
def shortcut_catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("sc") / "cat"
    generate(out, SynthConfig(items=300, users=3, image_size=32, pairs_per_relation=300, seed=4, spurious=0.9), progress=False)
    return out


def _eq(tags, pairs):
    return tags[pairs.a] == tags[pairs.b]


# ---- the shortcut catalog --------------------------------------------------------------------
def test_watermark_agrees_with_training_labels_only(shortcut_catalog):
    cat = Catalog(shortcut_catalog)
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    assert set(np.unique(tags)) == {0, 1} and 0.4 < tags.mean() < 0.6
    train_pos = cat.pairs("train")
    assert abs(_eq(tags, train_pos).mean() - 0.9) < 0.03  # positives: equal tags w.p. P
    neg = NegativeSampler(cat.positives(), cat.category_codes).sample(train_pos, np.random.default_rng(0), train_reject(cat))
    assert abs((~_eq(tags, neg)).mean() - 0.9) < 0.03  # the trainer's negatives: different tags w.p. P
    for split in ("validation", "test"):
        p = cat.pairs(split)
        pos = p.label == 1
        assert _eq(tags, p)[pos].mean() == pytest.approx(0.5, abs=0.01)  # exactly half, per relation
        assert abs(_eq(tags, p)[~pos].mean() - 0.5) < 0.1  # random negatives: ~1/2
    assert cat.describe()["shortcut"]["agreement"] == 0.9


def test_ground_truth_masks_exclude_the_watermark(shortcut_catalog):
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    marks = np.load(shortcut_catalog / "shortcut_masks.npy")
    masks, images = np.load(shortcut_catalog / "masks.npy"), np.load(shortcut_catalog / "images.npy")
    o, m = watermark_box(32)
    assert (marks[tags == 1][:, o:o + m, o:o + m] == 1).all() and marks[tags == 0].sum() == 0
    assert marks[tags == 1].sum() == (tags == 1).sum() * m * m
    assert not (masks.astype(bool) & marks.astype(bool)).any()
    assert (images[tags == 1][:, o, o] == (255, 0, 255)).all()


def test_a_clean_catalog_is_unchanged_by_the_option(tmp_path):
    a = generate(tmp_path / "a", SynthConfig(items=40, users=1, image_size=16, pairs_per_relation=20, seed=2), progress=False)
    b = generate(tmp_path / "b", SynthConfig(items=40, users=1, image_size=16, pairs_per_relation=20, seed=2, spurious=0.0), progress=False)
    assert Catalog(a).fingerprint == Catalog(b).fingerprint
    assert not (a / "shortcut_tags.npy").exists()
    c = generate(tmp_path / "c", SynthConfig(items=40, users=1, image_size=16, pairs_per_relation=20, seed=2, spurious=0.5), progress=False)
    assert Catalog(c).fingerprint != Catalog(a).fingerprint
    np.testing.assert_array_equal(np.load(a / "attributes.npy"), np.load(c / "attributes.npy"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate(tmp_path / "d", SynthConfig(items=40, spurious=1.5), progress=False)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7, 0.95])
def test_shortcut_veto_reaches_any_agreement(p):
    rng = np.random.default_rng(0)
    tags = rng.integers(2, size=5000)
    a, b = rng.integers(5000, size=(2, 200_000))
    keep = ~shortcut_veto(tags, p)(a, b, None, None)
    assert abs((tags[a[keep]] != tags[b[keep]]).mean() - p) < 0.01


# ---- the loss --------------------------------------------------------------------------------
def test_guidance_loss_is_zero_inside_the_mask_and_positive_outside():
    allowed = torch.zeros(2, 8, 8)
    allowed[:, 2:6, 2:6] = 1
    inside = torch.zeros(2, 3, 8, 8)
    inside[:, :, 2:6, 2:6] = torch.randn(2, 3, 4, 4)
    assert guidance_loss(inside, 1 - allowed) == 0
    outside = inside.clone()
    outside[0, 1, 0, 0] = 5.0
    share = outside_share(outside.sum(1).pow(2), 1 - allowed)
    assert share[0] > 0 and share[1] == 0
    # the share is the squared relevance outside / all squared relevance (hand-computed)
    r2 = outside[0].sum(0).pow(2)
    assert share[0] == pytest.approx(float(r2[0, 0] / r2.sum()))
    assert 0 < guidance_loss(outside, 1 - allowed, "gradient") <= 1
    assert guidance_loss(torch.zeros(1, 3, 8, 8), torch.ones(8, 8)) == 0  # no relevance, no penalty


@pytest.mark.parametrize("guide", ["lrp", "gradient"])
def test_guidance_gradient_reaches_the_backbone(guide):
    from lrprec.explain.composites import DEFAULT_COMPOSITE
    from lrprec.explain.engine import LRPNet
    from lrprec.model import PairModel, SmallCNN

    torch.manual_seed(0)
    model = PairModel(SmallCNN(channels=(4, 8, 8, 8), out_dim=16), dim=4, n_relations=4, n_users=2)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    rel, usr = torch.tensor([0, 2]), torch.tensor([-1, 1])
    if guide == "lrp":
        relevance = lrp_relevance(model, LRPNet(model.backbone, DEFAULT_COMPOSITE), x, rel, usr)
    else:
        xg = x.clone().requires_grad_(True)
        relevance = gradient_relevance(model(xg[:2], xg[2:], rel, usr), xg)
    penalty = torch.zeros(32, 32)
    penalty[:8] = 1
    loss = guidance_loss(relevance, penalty, guide)
    assert loss > 0
    loss.backward()
    for p in (model.backbone.features[0].weight, model.backbone.features[4].weight, model.backbone.classifier[0].weight, model.E):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_consistency_penalty_marks_the_unreliable_region():
    # 64 validation images: a block whose relevance always supports the right answer, a
    # block whose relevance sign is a coin flip (a shortcut without signal), and zeros
    rng = np.random.default_rng(0)
    sign = torch.from_numpy(np.where(np.arange(64) % 2 == 0, 1.0, -1.0))
    r = torch.zeros(64, 16, 16)
    r[:, 8:12, 8:12] = sign.view(-1, 1, 1) * torch.from_numpy(rng.uniform(0.5, 1.5, size=(64, 1, 1)))
    r[:, 0:4, 0:4] = torch.from_numpy(rng.choice([-1.0, 1.0], size=(64, 1, 1)))
    penalty, e = consistency_penalty(r, sign)
    assert penalty.shape == (16, 16)
    assert penalty[8:12, 8:12].max() == 0  # reliable evidence: allowed
    assert penalty[0:4, 0:4].min() > 0.7  # coin-flip evidence: penalized
    assert e[2, 2] == pytest.approx(1.0)


# ---- guided training -------------------------------------------------------------------------
def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "dim": 8, "seed": 1, "steps_per_epoch": 8, **kw})


def test_weight_zero_reproduces_unguided_training(shortcut_catalog, tmp_path):
    from safetensors.torch import load_file

    train(shortcut_catalog, tmp_path / "plain", _cfg(), progress=False, log=_quiet)
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    for guide, masks in (("lrp", "gt"), ("gradient", "gt"), ("lrp", "relevance"), ("lrp", "mark")):
        out = tmp_path / f"{guide}-{masks}"
        h = train(shortcut_catalog, out, _cfg(guide=guide, guide_weight=0.0, guide_masks=masks), progress=False, log=_quiet)
        zero = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(plain[k], zero[k]) for k in plain), (guide, masks)
        assert h["epochs"][-1]["guide_loss"] > 0  # the loss was computed (and logged), with no effect
    assert (tmp_path / "lrp-relevance" / "guide_penalty.npy").exists()


def test_guidance_moves_relevance_into_the_mask(shortcut_catalog, tmp_path):
    h0 = train(shortcut_catalog, tmp_path / "w0", _cfg(guide="lrp", guide_weight=0.0, epochs=3, steps_per_epoch=12), progress=False, log=_quiet)
    h1 = train(shortcut_catalog, tmp_path / "w5", _cfg(guide="lrp", guide_weight=5.0, epochs=3, steps_per_epoch=12), progress=False, log=_quiet)
    assert h1["epochs"][-1]["guide_loss"] < 0.5 * h0["epochs"][-1]["guide_loss"]


def test_guide_options_are_checked(shortcut_catalog, tiny_catalog, tmp_path):
    with pytest.raises(ValueError, match="lrp, gradient"):
        train(shortcut_catalog, tmp_path / "a", _cfg(guide="saliency"), progress=False, log=_quiet)
    with pytest.raises(ValueError, match="gt, relevance"):
        train(shortcut_catalog, tmp_path / "b", _cfg(guide="lrp", guide_masks="boxes"), progress=False, log=_quiet)
    with pytest.raises(ValueError, match=">= 0"):
        train(shortcut_catalog, tmp_path / "c", _cfg(guide="lrp", guide_weight=-1.0), progress=False, log=_quiet)
    with pytest.raises(ValueError, match="end-to-end"):
        train(shortcut_catalog, tmp_path / "d", _cfg(guide="lrp", freeze_backbone=True), progress=False, log=_quiet)
    no_masks = Catalog(tiny_catalog)
    assert no_masks.masks is not None  # the synthetic catalog has masks; a copy without them must be refused
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_catalog, bare)
    (bare / "masks.npy").unlink()
    with pytest.raises(CatalogError, match="--guide-masks relevance"):
        train(bare, tmp_path / "e", _cfg(guide="lrp"), progress=False, log=_quiet)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_cli_guided_training_and_shortcut_report(shortcut_catalog, tiny_run, tmp_path):
    from lrprec.cli import load_commands

    app = load_commands()
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(shortcut_catalog), "--out", str(run), "--epochs", "1", "--batch-size", "64", "--dim", "8",
                                 "--guide", "lrp", "--guide-weight", "2", "--guide-pairs", "8", "--steps-per-epoch", "4", "--json"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["guide"] == "lrp" and cfg["guide_weight"] == 2.0 and cfg["guide_pairs"] == 8
    r = CliRunner().invoke(app, ["shortcut", str(run), "--pairs", "40", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert 0 <= rep["mark_share"] <= 1 and rep["mark_share_ci"][0] <= rep["mark_share"] <= rep["mark_share_ci"][1]
    assert rep["mark_area"] == pytest.approx((watermark_box(32)[1] / 32) ** 2)
    assert rep["test_pairs_mark_agrees"] > 0 and 0 <= rep["test_accuracy"] <= 1
    assert json.loads((run / "shortcut.json").read_text())["mark_share"] == rep["mark_share"]
    cf = rep["counterfactual"]
    assert cf["pairs"] == 40 and cf["sensitivity_ci"][0] <= cf["sensitivity"] <= cf["sensitivity_ci"][1]
    assert set(cf["mean_p"]) == {"both", "neither", "one"} and all(0 <= v <= 1 for v in cf["mean_p"].values())
    assert rep["independent"]["method"] == "integrated_gradients" and 0 <= rep["independent"]["mark_share"] <= 1
    text = CliRunner().invoke(app, ["shortcut", str(run), "--pairs", "40"]).output
    assert "shortcut sensitivity" in text and "integrated_gradients" in text
    r = CliRunner().invoke(app, ["shortcut", str(run), "--pairs", "40", "--split", "validation", "--json"])
    val = json.loads(r.stdout)
    assert val["split"] == "validation" and rep["split"] == "test" and val["test_pairs"] == len(Catalog(shortcut_catalog).pairs("validation"))
    assert json.loads((run / "shortcut.json").read_text())["split"] == "test"  # the report file is not overwritten
    assert (run / "shortcut_validation.json").exists()
    bad = CliRunner().invoke(app, ["shortcut", str(run), "--split", "train"])
    assert bad.exit_code == 2 and "validation or test" in bad.output
    bad = CliRunner().invoke(app, ["shortcut", str(tiny_run)])
    assert bad.exit_code == 2 and "--spurious" in bad.output
    bad = CliRunner().invoke(app, ["train", str(shortcut_catalog), "--out", str(tmp_path / "x"), "--guide", "nope"])
    assert bad.exit_code == 2 and "lrp, gradient" in bad.output
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "y"), "--spurious", "2"])
    assert bad.exit_code == 2 and "[0, 1]" in bad.output


def test_shortcut_report_sees_a_model_that_uses_the_watermark():
    """A hand-built backbone that only sees the watermark's magenta: its relevance sits on the mark."""
    from lrprec.evaluate.shortcut import mark_share

    torch.manual_seed(0)
    x = torch.zeros(2, 3, 16, 16)
    mark = torch.zeros(2, 16, 16)
    mark[:, 1:5, 1:5] = 1
    x[0, :, 1:5, 1:5] = 1.0
    relevance = x * 3.0  # all relevance on the mark
    relevance[1, :, 8:12, 8:12] = 1.0  # the second image: none on it
    s = mark_share(relevance, mark)
    assert s[0] == pytest.approx(1.0) and s[1] == 0


def test_resume_restores_the_outer_loop_map(shortcut_catalog, tmp_path):
    from safetensors.torch import load_file

    cfg = _cfg(guide="lrp", guide_masks="relevance", guide_weight=2.0, guide_val_pairs=64, epochs=2)
    train(shortcut_catalog, tmp_path / "straight", cfg, progress=False, log=_quiet)
    from dataclasses import replace

    train(shortcut_catalog, tmp_path / "resumed", replace(cfg, epochs=1), progress=False, log=_quiet)
    train(shortcut_catalog, tmp_path / "resumed", cfg, progress=False, log=_quiet, resume=True)  # epoch 2 needs epoch 1's map
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    h = json.loads((tmp_path / "straight" / "history.json").read_text())["epochs"]
    assert h[0]["guide_loss"] is None and h[1]["guide_loss"] > 0 and 0 < h[0]["guide_penalized_area"] < 1


# ---- behaviour: counterfactual marks (issue 14) ------------------------------------------------
def _magenta(images: np.ndarray) -> np.ndarray:
    return (images == np.array([255, 0, 255], np.uint8)).all(-1).any((1, 2))


def test_counterfactual_images_stamp_and_remove_only_the_mark(shortcut_catalog):
    from lrprec.data.synthetic import WATERMARK_RGB
    from lrprec.evaluate.shortcut import counterfactual_images

    cat = Catalog(shortcut_catalog)
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    images = np.asarray(cat.images[:40])
    fill = np.asarray(cat.images[int(np.flatnonzero(tags == 0)[0])])
    o, m = watermark_box(images.shape[1])
    on, off = counterfactual_images(images, True), counterfactual_images(images, False, fill)
    assert (on[:, o:o + m, o:o + m] == np.array(WATERMARK_RGB, np.uint8)).all() and _magenta(on).all()
    assert not _magenta(off).any() and (off[:, o:o + m, o:o + m] == fill[o:o + m, o:o + m]).all()
    outside = np.ones(images.shape[1:3], bool)
    outside[o:o + m, o:o + m] = False
    assert (on[:, outside] == images[:, outside]).all() and (off[:, outside] == images[:, outside]).all()
    assert (images == np.asarray(cat.images[:40])).all()  # the inputs are not modified


def test_shortcut_sensitivity_separates_a_mark_reader_from_a_model_that_ignores_it(shortcut_catalog):
    from lrprec.evaluate.shortcut import alarm, counterfactual_probabilities, shortcut_sensitivity

    cat = Catalog(shortcut_catalog)
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    a, b = np.asarray(cat.images[:30]), np.asarray(cat.images[30:60])
    fill = np.asarray(cat.images[int(np.flatnonzero(tags == 0)[0])])
    reader = lambda ia, ib: np.where(_magenta(ia) == _magenta(ib), 0.9, 0.1)  # noqa: E731 - "both or neither marked"
    o, m = watermark_box(a.shape[1])
    blind = lambda ia, ib: 1 / (1 + np.exp(-(ia[:, o + m:].mean((1, 2, 3)) - ib[:, o + m:].mean((1, 2, 3))) / 10))  # noqa: E731
    s_reader = shortcut_sensitivity(counterfactual_probabilities(reader, a, b, fill))
    s_blind = shortcut_sensitivity(counterfactual_probabilities(blind, a, b, fill))
    assert s_reader == pytest.approx(np.full(30, 0.8)) and np.abs(s_blind).max() == 0
    # the alarm: behaviour says shortcut, the explanation says no mark
    assert "ALARM" in alarm(0.8, 0.99, 0.3, share=0.01, area=0.035)
    assert alarm(0.8, 0.99, 0.3, share=0.5, area=0.035) is None  # the explanation shows it: no hiding
    assert alarm(0.01, 0.7, 0.68, share=0.01, area=0.035) is None  # no shortcut in behaviour



# ---- counterfactual augmentation (issue 14's explanation-free baseline) -----------------------
def test_mark_augment_redraws_the_watermark_in_training_batches(shortcut_catalog):
    from lrprec.data.watermark import counterfactual_images
    from lrprec.train.batches import _EpochBatches, _Norm

    cat = Catalog(shortcut_catalog)
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    fill = np.asarray(cat.images[int(np.flatnonzero(tags == 0)[0])])
    pairs = cat.pairs("train").take(np.arange(64))
    norm = _Norm((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # inputs = raw pixel values

    def batch(p: float, seed: int = 0) -> torch.Tensor:
        ds = _EpochBatches(pairs, 64, 1, 0, 0, 1, shortcut_catalog / "images.npy", norm, None, None,
                           mark_augment=(p, fill, (seed, 0)) if p else None)
        return ds[0]["x"]

    raw = np.asarray(cat.images[np.concatenate([pairs.a, pairs.b])])
    plain, aug = batch(0.0), batch(1.0)
    to_uint8 = lambda x: x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()  # noqa: E731
    assert (to_uint8(plain) == raw).all()
    got = to_uint8(aug)
    marked = _magenta(got)
    assert 0.3 < marked.mean() < 0.7  # every image re-drawn with even odds, whatever its own tag
    # each image is exactly the stamped or the removed counterfactual of itself: nothing else changes
    want = np.where(marked[:, None, None, None], counterfactual_images(raw, True), counterfactual_images(raw, False, fill))
    assert (got == want).all()
    assert torch.equal(aug, batch(1.0)) and not torch.equal(aug, batch(1.0, seed=1))  # (seed, epoch, step) alone


def test_mark_masks_forbid_only_the_watermark(shortcut_catalog, tiny_catalog, tmp_path):
    """--guide-masks mark: the allowed region is everything but the stamped watermark's pixels
    (unmarked images: all allowed), flipped with the image; a catalog without a watermark is refused."""
    from lrprec.train.batches import _EpochBatches, _Norm

    cat = Catalog(shortcut_catalog)
    tags = np.load(shortcut_catalog / "shortcut_tags.npy")
    marks = np.load(shortcut_catalog / "shortcut_masks.npy").astype(bool)
    pairs = cat.pairs("train").take(np.arange(64))
    rows = np.concatenate([pairs.a, pairs.b])
    norm = _Norm((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    for key in (None, (0, 0)):  # without and with random flips
        ds = _EpochBatches(pairs, 64, 1, 0, 0, 1, shortcut_catalog / "images.npy", norm, None, key,
                           masks_path=shortcut_catalog / "shortcut_masks.npy", forbid_masks=True)
        b = ds[0]
        allowed = b["allowed"].numpy().astype(bool)
        raw = np.asarray(cat.images[rows]).transpose(0, 3, 1, 2).astype(np.float32)
        flipped = (np.abs(b["x"].numpy() - raw) > 0.5).any(axis=(1, 2, 3))  # inputs = raw pixel values up to rounding
        assert flipped.any() == (key is not None)
        want = ~np.where(flipped[:, None, None], marks[rows][:, :, ::-1], marks[rows])
        assert (allowed == want).all()
        assert allowed[tags[rows] == 0].all() and not allowed[tags[rows] == 1].all()
    with pytest.raises(CatalogError, match="no planted shortcut"):
        train(tiny_catalog, tmp_path / "r", _cfg(guide="lrp", guide_masks="mark"), progress=False, log=_quiet)


def test_mark_augment_needs_a_shortcut_catalog(tiny_catalog, tmp_path):
    with pytest.raises(CatalogError, match="no planted shortcut"):
        train(tiny_catalog, tmp_path / "r", _cfg(mark_augment=0.5), progress=False, log=_quiet)
    with pytest.raises(ValueError, match="shares in"):
        train(tiny_catalog, tmp_path / "r", _cfg(mark_augment=1.5), progress=False, log=_quiet)
