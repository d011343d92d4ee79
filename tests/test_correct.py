"""``lrprec correct`` (issue 26): the RR-ClArC penalty against finite differences, A-ClArC's shift,
P-ClArC as a layer every later stage sees, fine-tuning through the training loop, and the errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lrprec.cli import load_commands
from lrprec.data.catalog import RELATIONS
from lrprec.errors import UsageError
from lrprec.model.backbones import FeatureBackbone
from lrprec.model.pair import PairModel
from lrprec.train.correct import AClArC, CorrectConfig, RRClArC, correct


# ---- fixtures: a tiny shortcut catalog, a run on it, and an audit that flags the watermark -------
@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory) -> Path:
    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.train import TrainConfig, train

    root = tmp_path_factory.mktemp("correct")
    generate(root / "cat", SynthConfig(items=160, users=3, image_size=32, pairs_per_relation=80, seed=3, spurious=0.9), progress=False)
    train(root / "cat", root / "run", TrainConfig(epochs=2, batch_size=64, dim=8, seed=1), progress=False, log=lambda m: None)
    return root / "run"


def write_audit(run: Path, members: np.ndarray, region: np.ndarray, *, suspicious: bool = True, weights_id: str | None = None,
                folder: Path | None = None) -> Path:
    """An audit.json in the format ``lrprec audit`` writes: cluster 0 (members, region), cluster 1 (a decoy, never suspicious)."""
    cfg = json.loads((run / "config.json").read_text())
    folder = folder or run / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "cluster_0_region.npy", region.astype(np.float32))
    np.save(folder / "cluster_1_region.npy", np.full_like(region, 1 / region.size, dtype=np.float32))
    others = np.setdiff1d(np.arange(40), members)[:10]
    audit = {"run": str(run), "weights_id": weights_id or cfg["weights_id"], "split": "validation", "layer": None, "flagged": 0 if suspicious else None,
             "clusters": [{"id": 0, "size": int(members.size), "score": 0.9, "suspicious": suspicious, "region": "cluster_0_region.npy",
                           "members": members.tolist(), "prototypes": members[:4].tolist()},
                          {"id": 1, "size": int(others.size), "score": 0.1, "suspicious": False, "region": "cluster_1_region.npy",
                           "members": others.tolist(), "prototypes": others[:4].tolist()}]}
    path = folder / "audit.json"
    path.write_text(json.dumps(audit))
    return path


def watermark_audit(run: Path, **kw) -> Path:
    """The flagged cluster = the watermarked items among the first 100 (as a perfect audit would find), region = the mark's box."""
    from lrprec.data.watermark import watermark_box
    from lrprec.run import Run

    cat = Run.load(run).catalog
    tags = np.load(cat.root / "shortcut_tags.npy")
    s = cat.images.shape[1]
    o, m = watermark_box(s)
    region = np.zeros((s, s))
    region[o:o + m, o:o + m] = 1
    return write_audit(run, np.flatnonzero(tags[:100] == 1), region, **kw)


# ---- RR-ClArC: the penalty and its gradient against float64 finite differences -------------------
def _tiny_model():
    torch.manual_seed(0)
    m = PairModel(FeatureBackbone(6), dim=3, n_relations=len(RELATIONS), n_users=2, seed=0, head="auto").double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _fd_penalty(model, feats, user, V, rels, h=1e-6):
    """Σ_r Σ_rows (V ∇_a ŷ_r)² / R with ∇_a from central finite differences of the logits (no autograd)."""
    n = user.shape[0]

    def logits(f):
        return model.logits_all(model.project_all(f[:n]), model.project_partner_all(f[n:]), model.theta_all(user))

    total = 0.0
    for r in rels:
        g = torch.zeros_like(feats)
        for i in range(feats.shape[0]):
            for k in range(feats.shape[1]):
                e = torch.zeros_like(feats)
                e[i, k] = h
                g[i, k] = (logits(feats + e)[:, r].sum() - logits(feats - e)[:, r].sum()) / (2 * h)
        total += float((g @ V.T).pow(2).sum())
    return total / len(rels)


def test_rr_clarc_penalty_and_its_gradient_match_finite_differences():
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    n = 3
    feats = torch.randn(2 * n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    user = torch.tensor([0, -1, 1])
    V = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))[0].T
    rels = [0, RELATIONS.index("bought_together")]
    term = RRClArC(V, rels, weight=2.5).double()
    pen = term.penalty(model, feats, user)
    with torch.no_grad():
        assert abs(float(pen) - 2.5 * _fd_penalty(model, feats.detach(), user, V, rels)) < 1e-6 * max(1.0, float(pen))
    # second order: the penalty's gradient w.r.t. the head's parameters and the features, against finite differences
    params = [model.E, model.theta_global, model.theta_delta, model.F]
    grads = torch.autograd.grad(pen, params + [feats])
    for p, gp in zip(params + [feats], grads):
        flat = p.detach().view(-1)
        for idx in range(0, flat.numel(), max(1, flat.numel() // 7)):
            orig = float(flat[idx])
            vals = []
            for step in (1e-6, -1e-6):
                with torch.no_grad():
                    flat[idx] = orig + step
                vals.append(float(term.penalty(model, feats.detach().requires_grad_(True) if p is feats else feats, user).detach()))
                with torch.no_grad():
                    flat[idx] = orig
            fd = (vals[0] - vals[1]) / 2e-6
            assert abs(fd - float(gp.reshape(-1)[idx])) < 1e-5 * max(1.0, abs(fd)), (p.shape, idx, fd, float(gp.reshape(-1)[idx]))


def test_rr_clarc_penalty_vanishes_when_the_output_ignores_the_direction():
    model = _tiny_model()
    with torch.no_grad():  # the projections E and F read nothing along the first coordinate
        model.E[0].zero_()
        model.F[0].zero_()
    feats = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    V = torch.eye(6, dtype=torch.float64)[:1]
    assert float(RRClArC(V, [0, 1], 1.0).double().penalty(model, feats, torch.tensor([0, 1])).detach()) < 1e-20
    assert float(RRClArC(torch.eye(6, dtype=torch.float64)[1:2], [0, 1], 1.0).double().penalty(model, feats, torch.tensor([0, 1])).detach()) > 1e-6


def test_a_clarc_moves_features_along_the_concept_only():
    g = torch.Generator().manual_seed(0)
    V = torch.linalg.qr(torch.randn(5, 1, generator=g))[0].T
    z0, z1 = torch.zeros(5), 3 * V[0]
    feats = torch.randn(400, 5, generator=g)
    out, pen = AClArC(V, z0, z1, share=0.5, seed=0)(None, feats, {})
    assert pen is None
    moved = ~torch.isclose(out, feats, atol=1e-6).all(1)
    assert 0.4 < moved.float().mean() < 0.6
    along = out[moved] @ V[0]
    assert torch.allclose(along[(along - 3).abs() < 1e-4], torch.full_like(along[(along - 3).abs() < 1e-4], 3.0), atol=1e-4)
    assert ((along.abs() < 1e-4) | ((along - 3).abs() < 1e-4)).all()  # set to z0's or z1's coordinate, even odds
    assert 0.3 < float(((along - 3).abs() < 1e-4).float().mean()) < 0.7
    ortho = lambda x: x - (x @ V.T) @ V  # noqa: E731
    assert torch.allclose(ortho(out), ortho(feats), atol=1e-5)
    same, _ = AClArC(V, z0, z1, share=0.0, seed=0)(None, feats, {})
    assert torch.equal(same, feats)


# ---- P-ClArC: a projection layer every stage sees -------------------------------------------------
def test_p_clarc_writes_a_run_whose_features_carry_no_concept(shortcut_run, tmp_path):
    from lrprec.explain.engine import LRPNet
    from lrprec.explain.targets import explain_pairs
    from lrprec.run import Run

    watermark_audit(shortcut_run)
    out = tmp_path / "pclarc"
    summary = correct(shortcut_run, out, CorrectConfig(method="p-clarc"), log=lambda m: None)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "history.json").is_file()
    assert (out / "concept_projection.safetensors").is_file() and (out / "correction.json").is_file()
    assert not list(tmp_path.glob("*.correct-tmp"))
    src, run = Run.load(shortcut_run), Run.load(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["concept_projection"]["directions"] == summary["directions"] >= 1 and cfg["weights_id"] != src.version
    from safetensors.torch import load_file

    proj = load_file(str(out / "concept_projection.safetensors"))
    V, ref = proj["V"], proj["ref"]
    x = run.inputs(np.arange(len(run.catalog)))
    with torch.no_grad():
        f = run.model.embed(x)
        f_src = src.model.embed(x)
    # every item's features sit at the reference along V, and are untouched across it
    assert torch.allclose(f @ V.T, (ref @ V.T).expand(len(f), -1), atol=1e-4)
    assert torch.allclose(f - (f @ V.T) @ V, f_src - (f_src @ V.T) @ V, atol=1e-4)
    # the concept was the watermark: the source's features separate tags along V, the corrected ones do not
    tags = np.load(run.catalog.root / "shortcut_tags.npy")
    s = (f_src @ V[0]).numpy()
    gap = abs(s[tags == 1].mean() - s[tags == 0].mean()) / s.std()
    assert gap > 1.0, gap
    # LRP passes through the projection as one more dense layer, and explanations of the run load it
    assert len(LRPNet(run.model.backbone, "epsilon").layers) == len(LRPNet(src.model.backbone, "epsilon").layers) + 1
    e = explain_pairs(run.model, x[:2], x[2:4], torch.tensor([0, 0]), torch.tensor([-1, -1]), target="logit")
    with torch.no_grad():
        assert torch.allclose(e.logit, run.model(x[:2], x[2:4], torch.tensor([0, 0]), torch.tensor([-1, -1])), atol=1e-4)
    assert torch.isfinite(e.relevance_a).all() and e.relevance_a.abs().sum() > 0


def test_fine_tuning_methods_run_the_training_loop_from_the_run(shortcut_run, tmp_path):
    from lrprec.run import Run

    watermark_audit(shortcut_run)
    out = tmp_path / "rr"
    s = correct(shortcut_run, out, CorrectConfig(method="rr-clarc", epochs=1, weight=10.0), log=lambda m: None)
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["epochs"]) == 1 and hist["epochs"][0]["concept_loss"] > 0
    assert s["val_accuracy"] == pytest.approx(hist["best"]["val_accuracy"])
    run = Run.load(out)
    cfg = run.config
    assert cfg["correction"]["method"] == "rr-clarc" and cfg["epochs"] == 1 and "concept_projection" not in cfg
    assert not (out / "checkpoint.ckpt").exists()
    out2 = tmp_path / "ac"
    s2 = correct(shortcut_run, out2, CorrectConfig(method="a-clarc", epochs=1, project=True, refit=True, from_scratch=True), log=lambda m: None)
    run2 = Run.load(out2)
    assert run2.config["concept_projection"] and len(run2.model.backbone.classifier) == len(Run.load(shortcut_run).model.backbone.classifier) + 1
    assert len(s2["refits"]) == 1 and run2.config["correction"]["refit"] and run2.config["correction"]["from_scratch"]
    assert run2.config["warmup_epochs"] == Run.load(shortcut_run).config["warmup_epochs"] and cfg["warmup_epochs"] == 0
    # the kept projection is the one refitted on the fine-tuned backbone: features sit at one point along its V
    from safetensors.torch import load_file

    layer = run2.model.backbone.classifier[-1]
    P = torch.eye(layer.weight.shape[0]) - layer.weight
    x = run2.inputs(np.arange(20))
    with torch.no_grad():
        f = run2.model.embed(x)
    assert torch.allclose(f @ P, (f @ P)[:1].expand(20, -1), atol=1e-3)
    assert load_file(str(out2 / "concept_projection.safetensors"))["V"].shape[1] == layer.weight.shape[0]


def test_augment_pastes_the_discovered_pixels(shortcut_run, tmp_path, monkeypatch):
    from lrprec.data.watermark import WATERMARK_RGB, watermark_box
    from lrprec.run import Run
    from lrprec.train.correct import discovered_artifact, fit_concept, pick_cluster, read_audit, concept_labels, training_items

    watermark_audit(shortcut_run)
    run = Run.load(shortcut_run)
    audit, folder = read_audit(run, None)
    cluster = pick_cluster(audit, None)
    rows = training_items(run)
    concept = fit_concept(run, concept_labels(len(run.catalog), cluster), rows)
    share, fill, mask, pixels = discovered_artifact(run, cluster, folder, concept, rows, 0.5)
    o, m = watermark_box(run.catalog.images.shape[1])
    box = np.zeros_like(mask)
    box[o:o + m, o:o + m] = True
    assert (mask == box).all()  # the region thresholded is the mark's box
    assert (pixels[box] == WATERMARK_RGB).all()  # the members' median there is the mark's colour
    tags = np.load(run.catalog.root / "shortcut_tags.npy")
    assert not (fill[box] == WATERMARK_RGB).all(axis=-1).any()  # the fill comes from an unmarked image
    # the batches paste them: with probability 1 every image is stamped or filled (even odds)
    from lrprec.model.backbones import preprocess
    from lrprec.train.batches import _EpochBatches, _Norm

    pairs = run.catalog.pairs("train").take(np.arange(16))
    norm = _Norm(run.model.backbone.mean, run.model.backbone.std)
    ds = _EpochBatches(pairs, 16, 1, 0, 0, 1, run.catalog.root / "images.npy", norm, None, None,
                       mark_augment=(1.0, fill, (0, 0), (mask, pixels)))
    x = ds[0]["x"]
    imgs = np.asarray(run.catalog.images[np.concatenate([pairs.a, pairs.b])])
    stamped = preprocess(np.where(mask[..., None], pixels, imgs), norm)
    filled = preprocess(np.where(mask[..., None], fill, imgs), norm)
    is_stamped = torch.isclose(x, stamped, atol=1e-6).flatten(1).all(1)
    is_filled = torch.isclose(x, filled, atol=1e-6).flatten(1).all(1)
    assert (is_stamped | is_filled).all() and is_stamped.any() and is_filled.any()
    # which form: the one whose flip scores highest on validation pairs (effect − 2 · cost; stubbed here: a 2-epoch model
    # barely reads the mark, the real runs' scores are in docs/guide/audit-and-correct.md)
    import lrprec.train.correct as corr
    from lrprec.train.correct import choose_artifact, resolve_method

    real_flip = corr.flip_effect
    effect, cost = real_flip(run, lambda x, r: np.where(mask[..., None], pixels, x), lambda x, r: x)
    assert 0 <= effect <= 1 and -1 <= cost <= 1
    flips = {"region": (0.3, 0.0), "colour": (0.05, -0.01)}
    monkeypatch.setattr(corr, "flip_effect", lambda run, stamp, remove: flips["colour" if hasattr(stamp, "__self__") else "region"])
    choice = choose_artifact(run, cluster, folder, concept, rows, 0.5)
    assert choice["form"] == "region" and choice["scores"] == {"region": pytest.approx(0.3), "colour": pytest.approx(0.07)}
    assert (choice["paste"][2] == mask).all() and (choice["paste"][3] == pixels).all()
    flips["colour"] = (0.4, 0.02)
    assert choose_artifact(run, cluster, folder, concept, rows, 0.5)["form"] == "colour"
    flips["colour"] = (0.0, 0.0)
    s = correct(shortcut_run, tmp_path / "aug", CorrectConfig(method="augment", epochs=1), log=lambda m: None)
    assert s["region_area"] == pytest.approx(box.mean()) and Run.load(tmp_path / "aug").config["correction"]["method"] == "augment"
    assert s["artifact"]["form"] == "region"
    auto = resolve_method(CorrectConfig(), run, {**choice, "score": 1.0})
    assert (auto.method, auto.from_scratch) == ("augment", True)
    auto = resolve_method(CorrectConfig(), run, {**choice, "score": -1.0})
    assert (auto.method, auto.from_scratch, auto.project, auto.refit) == ("a-clarc", True, True, True)
    # a region that is not localized is not pasted: the colour transform is the only form left (or none)
    diffuse = dict(cluster, region="diffuse.npy")
    np.save(folder / "diffuse.npy", np.ones((32, 32), np.float32))
    choice = choose_artifact(run, diffuse, folder, concept, rows, 0.5)
    assert choice["form"] in ("colour", None) and "not a localized artifact" in choice["region_error"]


# ---- errors: one line, exit 2, nothing written ----------------------------------------------------
def _invoke(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def test_correct_errors(shortcut_run, tmp_path, monkeypatch):
    audit = watermark_audit(shortcut_run)
    out = tmp_path / "out"

    def fails(*args, match):
        r = _invoke("correct", str(shortcut_run), "--out", str(out), *args)
        assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output, r.output
        assert not out.exists() and not list(tmp_path.glob("*.correct-tmp"))

    fails("--cluster", "7", match="no cluster 7")
    fails("--method", "nope", match="unknown --method")
    none = write_audit(shortcut_run, np.arange(10), np.ones((32, 32)), suspicious=False, folder=tmp_path / "a_none")
    fails("--audit", str(none), match="flagged no cluster")
    other = watermark_audit(shortcut_run, weights_id="0123456789abcdef", folder=tmp_path / "a_other")
    fails("--audit", str(other), match="made for other weights")
    fails("--audit", str(tmp_path / "missing.json"), match="no audit")
    r = _invoke("correct", str(shortcut_run), "--out", str(shortcut_run))
    assert r.exit_code == 2 and "new run directory" in r.output
    out.mkdir()
    r = _invoke("correct", str(shortcut_run), "--out", str(out))
    assert r.exit_code == 2 and "--overwrite" in r.output and not any(out.iterdir())
    out.rmdir()
    # a features-mode run (a run directory whose config says so)
    feat = tmp_path / "featrun"
    shutil.copytree(shortcut_run, feat)
    cfg = json.loads((feat / "config.json").read_text())
    (feat / "config.json").write_text(json.dumps({**cfg, "backbone": "features", "backbone_config": {"out_dim": 8}}))
    r = _invoke("correct", str(feat), "--out", str(out))
    assert r.exit_code == 2 and "features-mode" in r.output, r.output
    # --method augment where the artifact has no input-space form (a diffuse region and no colour transform)
    import lrprec.train.correct as corr

    monkeypatch.setattr(corr, "colour_candidate", lambda *a, **k: None)
    from lrprec.run import Run

    tags = np.load(Run.load(shortcut_run).catalog.root / "shortcut_tags.npy")
    diffuse = write_audit(shortcut_run, np.flatnonzero(tags[:100] == 1), np.ones((32, 32)), folder=tmp_path / "a_diffuse")
    fails("--audit", str(diffuse), "--method", "augment", match="no input-space form")
    # a correction worse on validation pairs than the run is refused, nothing written; --keep-worse writes it
    monkeypatch.setattr(corr, "WORSE_TOLERANCE", -1.0)  # any result counts as worse
    fails("--method", "p-clarc", match="worse on validation pairs")
    r = _invoke("correct", str(shortcut_run), "--out", str(out), "--method", "p-clarc", "--keep-worse")
    assert r.exit_code == 0 and (out / "correction.json").is_file(), r.output
    shutil.rmtree(out)
    monkeypatch.undo()
    # a catalog without validation pairs for the run's relations
    monkeypatch.setattr(corr, "protocol_pairs", lambda cat, split: cat.pairs("train").take(np.arange(0)))
    fails(match="no validation pairs")
    assert audit.is_file()


def test_correct_config_rejects_bad_values(shortcut_run, tmp_path):
    watermark_audit(shortcut_run)
    with pytest.raises(UsageError, match="--epochs must be positive"):
        correct(shortcut_run, tmp_path / "x", CorrectConfig(method="rr-clarc", epochs=0), log=lambda m: None)
    with pytest.raises(UsageError, match="share"):
        correct(shortcut_run, tmp_path / "x", CorrectConfig(method="a-clarc", share=2.0), log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_correct_takes_the_cluster_the_audit_flagged():
    from lrprec.train.correct import pick_cluster

    audit = {"flagged": 0, "clusters": [{"id": 0, "score": 0.4350, "suspicious": True},
                                         {"id": 1, "score": 0.4357, "suspicious": True}]}
    assert pick_cluster(audit, None)["id"] == 0  # the audit's rule (a near-tie broken by the region test), not max score
    assert pick_cluster(audit, 1)["id"] == 1
    assert pick_cluster({k: v for k, v in audit.items() if k != "flagged"}, None)["id"] == 1  # an older audit file
