"""Faithfulness orchestration on a tiny synthetic run, with stand-in explainers (no LRP needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrprec.data.catalog import RELATIONS, Catalog
from lrprec.evaluate import faithfulness as fm
from lrprec.evaluate.faithfulness import faithfulness, pair_scorer, to_json
from lrprec.report.faithfulness import leaderboard_table, plot_curves
from lrprec.run import Run, build_model, save_weights


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    from lrprec.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("faith")
    cat = Catalog(generate(root / "catalog", SynthConfig(items=60, users=3, image_size=16, pairs_per_relation=40, seed=0), progress=False))
    config = {"backbone": "small", "backbone_config": {"channels": [4, 8, 8, 8], "out_dim": 16}, "dim": 4,
              "relations": list(RELATIONS), "catalog": str(cat.root), "catalog_fingerprint": cat.fingerprint,
              "seed": 0, "personalize": True, "input_size": None, "head": "auto"}
    model = build_model(config, n_users=len(cat.user_ids))
    with torch.no_grad():
        model.E.mul_(5)
        model.F.copy_(model.E + torch.randn(model.F.shape, generator=torch.Generator().manual_seed(0)))  # complements: asymmetric
        model.c.fill_(3.0)  # a mix of correct and wrong positives on an untrained model
    path = root / "run"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_weights(model, path / "model.safetensors")
    return Run.load(path)


def explainers_for(run: Run) -> dict:
    """Stand-ins: input×gradient of the logit, a constant map and seeded noise."""
    def gradxinput(model, x_a, x_b, relation, user):
        xa, xb = x_a.clone().requires_grad_(True), x_b.clone().requires_grad_(True)
        model(xa, xb, relation, user).sum().backward()
        model.zero_grad(set_to_none=True)
        return (xa.grad * xa).detach(), (xb.grad * xb).detach()

    def uniform(model, x_a, x_b, relation, user):
        return torch.ones_like(x_a), torch.ones_like(x_b)

    def noise(model, x_a, x_b, relation, user):
        g = torch.Generator().manual_seed(0)
        return torch.rand(x_a.shape, generator=g), torch.rand(x_b.shape, generator=g)

    return {"gradxinput": gradxinput, "uniform": uniform, "random": noise}


def test_pair_scorer_matches_the_model(run):
    model = run.model
    test = run.catalog.pairs("test")
    xa, xb = run.inputs(test.a[:6]), run.inputs(test.b[:6])
    rel, usr = torch.from_numpy(test.relation[:6]), torch.from_numpy(test.user[:6])
    with torch.no_grad():
        direct = model(xa, xb, rel, usr)
        allheads = model.head_logits(xa, xb, usr)
        scored = pair_scorer(model, xb, usr)(xa, torch.arange(6))
        # perturbing the partner image b instead: it takes the partner projection (F_r of the asymmetric heads)
        scored_b = pair_scorer(model, xa, usr, side=torch.ones(6, dtype=torch.bool))(xb, torch.arange(6))
        swapped = model.head_logits(xb, xa, usr)
    assert torch.allclose(allheads[torch.arange(6), rel], direct, atol=1e-5)
    assert torch.allclose(scored, allheads, atol=1e-5)
    assert torch.allclose(scored_b, allheads, atol=1e-5)
    assert not torch.allclose(swapped[:, 2:], allheads[:, 2:], atol=1e-3)  # the complements' heads are not symmetric


def test_result_shape_views_and_localization(run, tmp_path):
    ex = explainers_for(run)
    res = faithfulness(run, pairs=6, steps=5, region=4, image="a", seed=0, batch_size=16, explainers=ex, explain_batch_size=4,
                       imputers=("uniform", "linear"), srg_steps=4, randomization_pairs=2)
    assert res["pairs"] == 6 and res["steps"] == 5 and res["region"] == 4
    assert set(res["methods"]) == {"gradxinput", "uniform", "random"}
    for name, e in res["methods"].items():
        assert set(e["aopc"]) == {"morf", "lrf", "random"}
        lo, hi = e["aopc_ci95"]["morf"]
        assert lo <= e["aopc"]["morf"] <= hi
        assert e["gap"] == pytest.approx(e["aopc"]["morf"] - e["aopc"]["random"])
        assert 0.0 <= e["relevance_mass"] <= 1.0 and 0.0 <= e["pointing_game"] <= 1.0
    # the random order ignores the map: every method shares it
    assert len({json.dumps(e["aopc_ci95"]["random"]) for e in res["methods"].values()}) == 1
    # a uniform map scores the mask area fraction, the chance level of relevance mass
    assert res["methods"]["uniform"]["relevance_mass"] == pytest.approx(res["mask_area_fraction"])
    # the paper's view: fractions per step, the predicted relations (or none) sum to one
    assert res["still_related"]["mean"][0] == 1.0  # every chosen pair starts as correctly related
    for cat, per in res["predicted_relation"].items():
        total = np.sum([v for v in per.values()], axis=0)
        np.testing.assert_allclose(total, 1.0)
        assert len(per["none"]) == 6
    assert set(res["still_related"]) - {"mean"} <= set(run.catalog.category_names)
    doc = json.loads(json.dumps(to_json(res)))  # serializable, no NaN
    assert "_arrays" not in doc and doc["methods"]["gradxinput"]["aopc"]["morf"] == res["methods"]["gradxinput"]["aopc"]["morf"]
    table = leaderboard_table(res)
    assert "gradxinput" in table and "MoRF AOPC" in table and "mask area fraction" in table
    files = plot_curves(res, tmp_path)
    assert len(files) == 6 and all(p.stat().st_size > 1000 for p in files)


def test_deterministic_and_both_images(run):
    ex = explainers_for(run)
    kw = dict(pairs=4, steps=3, region=4, seed=1, batch_size=32, explainers=ex, methods=["random"], imputers=("uniform",),
              srg_steps=2, randomization_pairs=0)
    a = faithfulness(run, **kw)
    b = faithfulness(run, **kw)
    assert to_json(a)["methods"] == to_json(b)["methods"]
    both = faithfulness(run, image="both", **kw)
    # (orders x (steps + 1) + MIF/LIF x (srg steps + 1)) x curves
    assert both["pairs"] == 4 and both["timing"]["images_scored"] == (3 * 4 + 2 * 3) * 8


def test_bad_input_is_a_clear_error(run):
    ex = explainers_for(run)
    with pytest.raises(ValueError, match="--steps 17 must be between 0 and the 16 regions"):
        faithfulness(run, pairs=2, steps=17, region=4, explainers=ex)
    with pytest.raises(ValueError, match="unknown method 'lrp-nope'"):
        faithfulness(run, pairs=2, steps=2, region=4, explainers=ex, methods="lrp-nope")
    with pytest.raises(ValueError, match="not available: because"):
        fm.resolve_methods(["bilrp"], ex, {"bilrp": "because"})
    with pytest.raises(ValueError, match="unknown image"):
        faithfulness(run, pairs=2, steps=2, region=4, explainers=ex, image="c")
    c = run.model.c.detach().clone()
    try:
        with torch.no_grad():
            run.model.c.fill_(-100.0)  # nothing is predicted related any more
        with pytest.raises(ValueError, match="no correctly predicted positive test pairs"):
            faithfulness(run, pairs=2, steps=2, region=4, explainers=ex, split="test")
    finally:
        with torch.no_grad():
            run.model.c.copy_(c)

    def meddler(model, x_a, x_b, relation, user):
        with torch.no_grad():
            model.c.add_(1.0)
        return torch.ones_like(x_a), torch.ones_like(x_b)

    try:
        with pytest.raises(RuntimeError, match="explainer changed the model"):
            faithfulness(run, pairs=2, steps=2, region=4, explainers={"meddler": meddler}, imputers=("uniform",), randomization_pairs=0)
    finally:
        with torch.no_grad():
            run.model.c.copy_(c)


def test_cli_writes_json_and_plots(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import importlib

    from lrprec.cli import _COMMAND_MODULES
    from lrprec.cli._app import app

    for name in _COMMAND_MODULES:  # register the commands as ``lrprec`` does
        try:
            importlib.import_module(f"lrprec.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lrprec.cli.{name}":
                raise
    # typer runs a lone command without its name
    cmd = ["faithfulness"] if len(app.registered_commands) > 1 else []

    monkeypatch.setattr(fm, "default_explainers", lambda **kw: (explainers_for(run), {"lrp": "not built in this test"}))
    cli = CliRunner()
    out = tmp_path / "f"
    r = cli.invoke(app, cmd + [str(run.path), "--pairs", "3", "--steps", "2", "--region", "4", "--methods", "uniform,gradxinput",
                         "--srg-steps", "3", "--randomization-pairs", "2", "--image", "a", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["methods"]) == {"uniform", "gradxinput"} and (out / "faithfulness.json").is_file()
    # the JSON: srg and srg_ci95 keyed by imputer, randomization with a boolean passed, imputers and ranking_tau
    assert doc["imputers"] == ["uniform", "linear"] and doc["split"] == "validation"
    assert isinstance(doc["ranking_tau"], float) and -1.0 <= doc["ranking_tau"] <= 1.0
    for e in doc["methods"].values():
        assert set(e["srg"]) == set(e["srg_ci95"]) == {"uniform", "linear"}
        assert isinstance(e["randomization"]["passed"], bool)
        assert {"aopc", "aopc_ci95", "gap", "relevance_mass"} <= set(e)  # today's keys stay
    # a constant map ignores the model: the randomization check flags it
    assert doc["methods"]["uniform"]["randomization"]["passed"] is False
    # the report section and the web run page show the new columns
    import shutil

    from lrprec.report.html import _faithfulness_section
    from lrprec.report.faithfulness import leaderboard_rows as _leaderboard

    shutil.copytree(out, tmp_path / "r" / "faithfulness")
    section = _faithfulness_section(tmp_path / "r")
    assert section is not None and "SRG linear [95% CI]" in section.html and "FAIL" in section.html and "Kendall" in section.html
    board = _leaderboard(doc)
    assert {r["method"] for r in board} == {"uniform", "gradxinput"}
    assert all(len(r["srg"]) == 2 and r["randomization"] is not None for r in board)
    r = cli.invoke(app, cmd + [str(run.path), "--steps", "2", "--region", "4", "--imputers", "blur", "--out", str(out)])
    assert r.exit_code == 2 and "unknown imputer 'blur'" in r.output
    assert (out / "faithfulness_probability.png").is_file() and (out / "curves.npz").is_file()
    r = cli.invoke(app, cmd + [str(run.path), "--steps", "99", "--region", "4", "--out", str(out)])
    assert r.exit_code == 2 and "error: --steps 99" in r.output
    r = cli.invoke(app, cmd + [str(run.path), "--steps", "2", "--region", "4", "--methods", "lrp", "--out", str(out)])
    assert r.exit_code == 2 and "method 'lrp' is not available" in r.output
