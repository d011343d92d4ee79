"""The new backbones through the whole program: train, explain (CLI), faithfulness (CLI, with progress), report, web app."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

BACKBONES = {  # sized for the 32 px test catalog
    "resnet-small": {"widths": [8, 8, 16, 16], "out_dim": 32},
    "vit-small": {"image_size": 32, "patch": 8, "hidden": 16, "depth": 1, "heads": 2, "mlp": 32},
}


def test_resnet_trains_from_the_cli(tiny_catalog, tmp_path):
    """``lrprec train --backbone resnet-small``: BatchNorm statistics move, and the run reloads with its config."""
    import torch

    from lrprec.cli import load_commands
    from lrprec.run import Run

    run_dir = tmp_path / "run"
    res = CliRunner().invoke(load_commands(), ["train", str(tiny_catalog), "--out", str(run_dir), "--backbone", "resnet-small",
                                               "--backbone-config", json.dumps(BACKBONES["resnet-small"]), "--epochs", "1",
                                               "--steps-per-epoch", "3", "--batch-size", "32", "--dim", "4"])
    assert res.exit_code == 0, res.output
    run = Run.load(run_dir)
    bns = [m for m in run.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 3 for m in bns)
    assert run.model.backbone.config["widths"] == [8, 8, 16, 16] and run.model.backbone.out_dim == 32
    res = CliRunner().invoke(load_commands(), ["train", str(tiny_catalog), "--out", str(tmp_path / "bad"), "--backbone", "resnet34"])
    assert res.exit_code == 2 and "unknown backbone 'resnet34'" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vit-small"])
def test_backbone_trains_explains_and_serves(backbone, tiny_catalog, tmp_path):
    from fastapi.testclient import TestClient

    from lrprec.app.evaluation import evaluate_run
    from lrprec.cli import load_commands
    from lrprec.report.html import write_report
    from lrprec.run import Run
    from lrprec.serve.app import create_app

    app = load_commands()
    cli = CliRunner()
    run_dir = tmp_path / "run"
    res = cli.invoke(app, ["train", str(tiny_catalog), "--out", str(run_dir), "--backbone", backbone, "--backbone-config",
                           json.dumps(BACKBONES[backbone]), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "32", "--dim", "4"])
    assert res.exit_code == 0, res.output
    run = Run.load(run_dir)
    assert run.config["backbone"] == backbone and type(run.model.backbone).__name__ in ("ResNet", "ViT")

    p = run.catalog.pairs("test")
    k = int(np.flatnonzero(p.label == 1)[0])
    a, b = run.catalog.item_ids[p.a[k]], run.catalog.item_ids[p.b[k]]
    res = cli.invoke(app, ["explain", str(run_dir), a, b, "--json", "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["files"]) >= 3

    res = cli.invoke(app, ["faithfulness", str(run_dir), "--pairs", "2", "--steps", "2", "--region", "8", "--methods", "lrp,random",
                           "--srg-steps", "2", "--randomization-pairs", "1", "--imputers", "uniform", "--out", str(run_dir / "faithfulness")])
    assert res.exit_code == 0, res.output
    assert "stages done" in res.output and "left]" in res.output  # the progress line with its estimate of the time left
    doc = json.loads((run_dir / "faithfulness" / "faithfulness.json").read_text())
    assert set(doc["methods"]) == {"lrp", "random"}

    evaluate_run(run_dir, "test")
    assert write_report(run_dir).is_file()
    with TestClient(create_app(run_dir), raise_server_exceptions=False) as client:
        r = client.get("/api/explain", params={"a": a, "b": b, "rule": "epsilon-plus-flat"})
        assert r.status_code == 200, r.text
        assert client.get(r.json()["heatmaps"]["a"]).status_code == 200


def test_stage_progress_shows_the_stage_and_the_time_left():
    import io

    from lrprec.evaluate.progress import StageProgress

    buf = io.StringIO()
    p = StageProgress(buf)
    p("before start: a plain line")
    p.start(3)
    for stage in ("explaining", "perturbing", "randomization check"):
        p(stage)
    p.close()
    text = buf.getvalue()
    assert text.startswith("before start: a plain line\n")
    assert "perturbing: 1/3 stages done" in text and "randomization check: 3/3 stages done" in text and "left]" in text
