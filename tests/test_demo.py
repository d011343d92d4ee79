"""The one-shot demo end to end (quick settings): every stage runs and the report has every section."""
from __future__ import annotations

import json

import pytest
import torch

from lrprec.demo import DemoConfig, _Background, run_demo, train_guidance_models


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path):
    lines: list[str] = []
    report = run_demo(tmp_path / "demo", quick=True, log=lines.append)
    html = report.read_text()
    for section in ("table1", "training", "explanations", "faithfulness", "guidance", "recommendations"):
        assert f'id="{section}"' in html, section
    run = tmp_path / "demo" / "run"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["overall"]["accuracy"] > 0.5  # above chance even after the quick training
    # the ranking table and the truth check, the model and its baselines side by side
    assert metrics["ranking"]["overall"]["n"] > 0 and metrics["truth"]["k"] == 10
    assert set(json.loads((run / "baselines.json").read_text())["test"]) == {"random", "popularity", "category-tree"}
    assert "ranking over the whole catalog" in html and "against the catalog" in html
    assert any("recall@10" in line for line in lines) and any("precision@10" in line for line in lines)
    guidance = json.loads((run / "guidance.json").read_text())["variants"]
    assert len(guidance) == 3 and all(0 <= v["mark_share"] <= 1 for v in guidance.values())
    if torch.get_num_threads() >= 2:  # trained in the second process on 1 thread: the same as in this one on 1 thread
        assert any("second process" in line for line in lines)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            again = train_guidance_models(tmp_path / "sequential", DemoConfig.quick(), log=lambda m: None, progress=False)
        finally:
            torch.set_num_threads(threads)
        for name, rep in again.items():
            assert rep["test_accuracy"] == guidance[name]["test_accuracy"], name
            assert rep["counterfactual"]["sensitivity"] == pytest.approx(guidance[name]["counterfactual"]["sensitivity"], abs=1e-12), name
    # every image the report links to exists
    import re

    for src in re.findall(r'<img src="([^"]+)"', html):
        path = (run / src) if not src.startswith("/") else __import__("pathlib").Path(src)
        assert path.exists(), src
    # a second run reuses the cached stages
    lines.clear()
    run_demo(tmp_path / "demo", quick=True, log=lines.append)
    assert any("already" in line for line in lines)


def test_demo_sizes_and_the_full_flag(tmp_path, monkeypatch):
    """--full selects the README's full-run settings (library defaults), the default demo is smaller; nothing is run."""
    from typer.testing import CliRunner

    import lrprec.demo
    from lrprec.cli import load_commands
    from lrprec.data.synthetic import SynthConfig
    from lrprec.demo import DemoConfig
    from lrprec.train.trainer import TrainConfig

    full, default, quick = DemoConfig.default(full=True), DemoConfig.default(), DemoConfig.default(quick=True)
    assert (full.size, default.size, quick.size) == ("full", "default", "quick")
    assert full.synth == SynthConfig() and full.train == TrainConfig()
    assert full.guidance_synth.items == SynthConfig().items and full.guidance_train.epochs == 10
    assert default.synth.items < full.synth.items and default.guidance_synth.spurious == full.guidance_synth.spurious
    assert DemoConfig.full(seed=3).train.seed == 3
    with pytest.raises(ValueError):
        DemoConfig.default(quick=True, full=True)

    calls: list[dict] = []

    def fake(out, **kw):
        calls.append(kw)
        return tmp_path / "report.html"

    monkeypatch.setattr(lrprec.demo, "run_demo", fake)
    app = load_commands()
    for args, want in ((["--full"], (True, False)), ([], (False, False)), (["--quick"], (False, True))):
        res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), *args])
        assert res.exit_code == 0, res.output
        assert (calls[-1]["full"], calls[-1]["quick"]) == want


def test_background_process_returns_the_value_or_raises_the_error():
    """The demo's second process: its value comes back; its exception is raised here; a process that
    dies without a result is an error naming its exit code, not a hang."""
    import operator
    import os

    assert _Background(operator.add, 2, 3).result() == 5
    with pytest.raises(ZeroDivisionError):
        _Background(operator.truediv, 1, 0).result()
    with pytest.raises(RuntimeError, match="exit code 3"):
        _Background(os._exit, 3).result()
    running = _Background(__import__("time").sleep, 60)
    running.stop()  # the main pipeline failed: the second process is ended, not waited for
    assert not running._proc.is_alive()
