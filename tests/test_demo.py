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
    for section in ("table1", "training", "explanations", "faithfulness", "guidance", "audit-correct", "recommendations"):
        assert f'id="{section}"' in html, section
    run = tmp_path / "demo" / "run"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["overall"]["accuracy"] > 0.5  # above chance even after the quick training
    # the ranking table and the truth check, the model and its baselines side by side
    assert metrics["ranking"]["overall"]["n"] > 0 and metrics["truth"]["k"] == 10
    assert set(json.loads((run / "baselines.json").read_text())["test"]) == {"random", "popularity", "category-tree"}
    assert "ranking over the whole catalog" in html and "against the catalog" in html
    assert any("recall@10" in line for line in lines) and any("precision@10" in line for line in lines)
    doc = json.loads((run / "guidance.json").read_text())
    guidance = doc["variants"]
    assert len(guidance) == 3 and all(0 <= v["mark_share"] <= 1 for v in guidance.values())
    # the audit → correct story: lrprec audit's files of the unguided model, its clusters in the report
    ac = doc["audit_correct"]
    audit = json.loads((tmp_path / "demo" / "shortcut-unguided" / "audit" / "audit.json").read_text())
    assert ac["audit"]["flagged"] == audit["flagged"] and len(ac["clusters"]) == audit["n_clusters"] >= 1
    assert 'id="audit-correct"' in html and all(0 <= c["mass_in_mark_box"] <= 1 for c in ac["clusters"])
    if audit["flagged"] is None:
        assert ac["corrected"] is None and "flagged no cluster" in html
    else:  # corrected with lrprec correct's defaults into a normal run that the shortcut report reads
        from lrprec.run import Run

        corrected = tmp_path / "demo" / "shortcut-corrected"
        assert Run.load(corrected).config["corrected_from"] == str((tmp_path / "demo" / "shortcut-unguided").resolve())
        assert ac["correction"]["cluster"] == audit["flagged"] and ac["correction"]["method"] in ("augment", "a-clarc")
        assert 0 <= ac["corrected"]["test_accuracy"] <= 1 and "corrected: lrprec audit, then lrprec correct" in html
    if torch.get_num_threads() >= 2:  # trained in the second process on 1 thread: the same as in this one on 1 thread
        assert any("second process" in line for line in lines)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            again = train_guidance_models(tmp_path / "sequential", DemoConfig.quick(), log=lambda m: None, progress=False, audit=False)
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


def test_audit_correct_section_says_when_nothing_was_flagged(tmp_path):
    """The report's audit → correct section from RUN/guidance.json: the flagged cluster's row and prototypes, the
    table plain / corrected / oracle; with no flagged cluster it says so and has no corrected row."""
    from lrprec.report.html import _audit_correct_section

    def report(acc: float, disagrees: float, sens: float) -> dict:
        return {"test_accuracy": acc, "test_accuracy_mark_disagrees": disagrees, "counterfactual": {"sensitivity": sens},
                "mark_share": 0.1, "alarm": None, "probe": {"accuracy": 0.6, "chance": 0.5}}

    cluster = {"id": 1, "size": 40, "n_heatmaps": 50, "score": 0.3, "suspicious": True, "prototypes": [3], "mass_in_mark_box": 0.8,
               "tests": {"region": {"effect": 0.2, "cost": -0.05}}, "figure": str(tmp_path / "cluster_1.png")}
    audit = {"pairs": 8, "heatmaps": 16, "split": "validation", "n_clusters": 2, "flagged": 1, "rule": {"cost_weight": 2.0, "threshold": 0.02}}
    doc = {"train": {"epochs": 2}, "variants": {"plain one": report(0.48, 0.0, 0.7), "oracle one": report(0.80, 0.81, 0.0)},
           "audit_correct": {"audit": audit, "clusters": [{**cluster, "id": 0, "suspicious": False, "mass_in_mark_box": 0.0}, cluster],
                             "plain": "plain one", "oracle": "oracle one", "corrected": report(0.79, 0.776, 0.001),
                             "correction": {"method": "augment", "epochs": 2, "directions": 1, "region_area": 0.035}}}
    run = tmp_path / "run"
    run.mkdir()
    (run / "guidance.json").write_text(json.dumps(doc))
    html = _audit_correct_section(run).html
    assert "cluster_1.png" in html and "80.0" in html and "removed cluster 1" in html and "77.6" in html and "+0.001" in html
    assert html.index("plain: plain one") < html.index("corrected: lrprec audit") < html.index("oracle, told the mark: oracle one")

    doc["audit_correct"].update(corrected=None, correction=None, audit={**audit, "flagged": None})
    (run / "guidance.json").write_text(json.dumps(doc))
    html = _audit_correct_section(run).html
    assert "flagged no cluster" in html and "corrected:" not in html and "cluster_1.png" not in html
    del doc["audit_correct"]  # a guidance.json of an earlier demo: no section
    (run / "guidance.json").write_text(json.dumps(doc))
    assert _audit_correct_section(run) is None
