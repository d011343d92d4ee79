"""Training: determinism, frozen vs end-to-end gradients, evaluation report shape."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lrprec.data.catalog import CatalogError
from lrprec.app.evaluation import evaluate_run
from lrprec.evaluate.linkpred import roc_auc
from lrprec.train import TrainConfig, train

FIRST = "backbone.features.0.weight"


def _quiet(m):
    pass


def test_same_seed_same_metrics(tiny_catalog, tiny_run, tmp_path):
    again = tmp_path / "again"
    train(tiny_catalog, again, TrainConfig(epochs=2, batch_size=64, dim=8, seed=1), progress=False, log=_quiet)
    h1 = json.loads((tiny_run / "history.json").read_text())
    h2 = json.loads((again / "history.json").read_text())
    assert [e["loss"] for e in h1["epochs"]] == [e["loss"] for e in h2["epochs"]]
    assert evaluate_run(tiny_run)["overall"] == evaluate_run(again)["overall"]


def test_end_to_end_updates_the_first_layer_and_frozen_does_not(tiny_catalog, tmp_path):
    from lrprec.run import build_model

    init = build_model({"backbone": "small", "dim": 8, "seed": 5}, n_users=3).state_dict()[FIRST]
    train(tiny_catalog, tmp_path / "e2e", TrainConfig(epochs=1, batch_size=64, dim=8, seed=5), progress=False, log=_quiet)
    train(tiny_catalog, tmp_path / "frozen", TrainConfig(epochs=1, batch_size=64, dim=8, seed=5, freeze_backbone=True), progress=False, log=_quiet)
    e2e = load_file(str(tmp_path / "e2e" / "model.safetensors"))
    frozen = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    assert not torch.equal(e2e[FIRST], init)
    assert torch.equal(frozen[FIRST], init)
    assert not torch.equal(frozen["E"], build_model({"backbone": "small", "dim": 8, "seed": 5}, n_users=3).state_dict()["E"])


def test_gradients_reach_the_first_layer():
    from lrprec.model import PairModel, SmallCNN

    m = PairModel(SmallCNN(), dim=4, n_relations=4)
    x = torch.randn(4, 3, 32, 32)
    m(x[:2], x[2:], torch.tensor([0, 1]), torch.tensor([-1, -1])).sum().backward()
    assert m.backbone.features[0].weight.grad is not None and m.backbone.features[0].weight.grad.abs().sum() > 0


def test_evaluation_report_shape(tiny_run):
    rep = evaluate_run(tiny_run)
    assert set(rep) >= {"relations", "overall"}
    for r, v in rep["relations"].items():
        assert 0 <= v["accuracy"] <= 1 and v["n"] > 0 and set(v["by_category"])
    assert rep["overall"]["n"] == sum(v["n"] for v in rep["relations"].values())


def test_roc_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([1, 1], [0.1, 0.2]) is None


def test_schedule_warm_up_cosine_and_rank_ramp():
    from lrprec.train.config import schedule

    cfg = TrainConfig(epochs=10, warmup_epochs=2, rank_warmup_epochs=4)
    assert schedule(cfg, 0.5) == (0.25, 0.125)
    assert schedule(cfg, 2) == (1.0, 0.5) and schedule(cfg, 9) == (1.0, 1.0)
    cos = TrainConfig(epochs=10, warmup_epochs=2, lr_schedule="cosine")
    assert schedule(cos, 1)[0] == 0.5 and schedule(cos, 2)[0] == 1.0
    assert schedule(cos, 6)[0] == pytest.approx(0.5) and schedule(cos, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert schedule(TrainConfig(warmup_epochs=0), 0.0) == (1.0, 1.0)


def test_warm_up_sets_the_optimizer_learning_rate(tiny_catalog, tmp_path, monkeypatch):
    """The first step runs at lr / steps-per-epoch and the rate reaches lr at the end of epoch 1."""
    seen = []
    real = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    cfg = TrainConfig(epochs=2, batch_size=64, dim=8, seed=1, steps_per_epoch=4, lr=0.01, warmup_epochs=1)
    train(tiny_catalog, tmp_path / "w", cfg, progress=False, log=_quiet)
    assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01, 0.01])


@pytest.mark.parametrize("kw,match", [({"dim": 0}, "positive"), ({"warmup_epochs": -1}, "warmup"), ({"lr_schedule": "step"}, "lr-schedule"),
                                      ({"clip_norm": 0.0}, "clip-norm"), ({"relations": ["likes"]}, "unknown relation"), ({"category": "sofa"}, "unknown category")])
def test_bad_config_is_rejected_before_work(tiny_catalog, tmp_path, kw, match):
    with pytest.raises((ValueError, CatalogError), match=match):
        train(tiny_catalog, tmp_path / "r", TrainConfig(epochs=1, **kw), progress=False, log=_quiet)
    assert not (tmp_path / "r" / "config.json").exists()


def test_pair_loss_weighs_user_carrying_pairs():
    from lrprec.train.trainer import pair_loss

    logit, label = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    user = torch.tensor([-1, 2, 0])
    each = torch.nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="none")
    assert torch.allclose(pair_loss(logit, label, user), each.sum())
    assert torch.allclose(pair_loss(logit, label, user, 3.0), each[0] + 3 * (each[1] + each[2]))


def test_appearance_loss_is_the_thumbnail_error_and_reaches_the_backbone():
    """The loss against a hand computation: a decoder that outputs the exact 2×2 thumbnail gives 0, one that is off
    by δ everywhere gives δ²; its gradient reaches the first convolution (it is there to shape the features)."""
    from lrprec.model import PairModel, SmallCNN

    m = PairModel(SmallCNN(), dim=4, n_relations=4, recon_size=2)
    x = torch.zeros(2, 3, 8, 8)
    x[0, 0, :4, :4], x[0, 1, 4:, :] = 1.0, -2.0  # image 0: red top-left quadrant, green bottom half
    thumb = torch.zeros(2, 12)
    thumb[0, 0] = 1.0  # channel 0, quadrant (0, 0)
    thumb[0, 4 + 2:4 + 4] = -2.0  # channel 1, both bottom quadrants
    feats = torch.randn(2, m.backbone.out_dim)
    with torch.no_grad():
        m.recon.weight.zero_()
        m.recon.bias.zero_()
    torch.testing.assert_close(m.appearance_loss(x, feats), (thumb ** 2).mean(1))
    with torch.no_grad():
        m.recon.bias.copy_(thumb[0] + 0.5)
    torch.testing.assert_close(m.appearance_loss(x[:1], feats[:1]), torch.tensor([0.25]))
    with torch.no_grad():
        m.recon.weight.normal_()
    xi = torch.randn(2, 3, 32, 32)
    m.appearance_loss(xi, m.embed(xi)).sum().backward()
    assert m.backbone.features[0].weight.grad.abs().sum() > 0


def test_appearance_decoder_is_trained_saved_and_reloaded_only_where_used(tiny_catalog, tmp_path):
    from lrprec.run import Run

    on = train(tiny_catalog, tmp_path / "on", TrainConfig(epochs=1, batch_size=64, dim=8, seed=2), progress=False, log=_quiet)
    off = train(tiny_catalog, tmp_path / "off", TrainConfig(epochs=1, batch_size=64, dim=8, seed=2, recon_weight=0), progress=False, log=_quiet)
    frozen = tmp_path / "frozen"
    train(tiny_catalog, frozen, TrainConfig(epochs=1, batch_size=64, dim=8, seed=2, freeze_backbone=True), progress=False, log=_quiet)
    assert on["epochs"][0]["appearance_loss"] > 0 and "appearance_loss" not in off["epochs"][0]
    assert on["epochs"][0]["loss"] != off["epochs"][0]["loss"]  # the features it shapes change the pair loss
    assert "recon.weight" in load_file(str(tmp_path / "on" / "model.safetensors"))
    assert not any(k.startswith("recon.") for k in load_file(str(frozen / "model.safetensors")))
    assert Run.load(tmp_path / "on").model.recon is not None and Run.load(frozen).model.recon is None
    # a run from before the option (no key in config.json) loads without the decoder
    cfg = json.loads((tmp_path / "off" / "config.json").read_text())
    for k in ("recon_weight", "recon_size"):
        cfg.pop(k)
    (tmp_path / "off" / "config.json").write_text(json.dumps(cfg))
    assert Run.load(tmp_path / "off").model.recon is None
    with pytest.raises(Exception, match="recon"):
        train(tiny_catalog, tmp_path / "bad", TrainConfig(epochs=1, recon_weight=-1), progress=False, log=_quiet)
