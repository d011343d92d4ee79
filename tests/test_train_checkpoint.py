"""Checkpoint/resume (issue 8): SIGKILL mid-epoch + --resume equals an uninterrupted run; bad files are refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from lrprec.train import TrainConfig, train
from lrprec.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint

OPTS = dict(epochs=2, batch_size=32, dim=8, seed=4)


@pytest.fixture(scope="module")
def synth_catalog(tmp_path_factory):
    from lrprec.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("ckptcat") / "cat"
    generate(out, SynthConfig(items=120, users=2, image_size=24, pairs_per_relation=60, seed=0), progress=False)
    return out


@pytest.fixture(scope="module")
def finished_run(synth_catalog, tmp_path_factory):
    """A finished one-epoch run: its checkpoint is the epoch-end one."""
    out = tmp_path_factory.mktemp("ckptrun") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(synth_catalog, out, TrainConfig(**{**OPTS, "epochs": 1}), progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(n)
    return out


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


# The CLI with every optimizer step slowed down, so a kill can land mid-epoch on tiny data:
# the test patches the step in the child process; production code carries no test hook.
_SLOW_CLI = ("import sys, time, torch; step = torch.optim.Adam.step\n"
             "def slow(self, *a, **k):\n    time.sleep(0.25)\n    return step(self, *a, **k)\n"
             "torch.optim.Adam.step = slow\n"
             "from lrprec.cli import main; sys.argv[0] = 'lrprec'; main()")


def _train_cmd(catalog, out, *extra: str, slow: bool = False) -> list[str]:
    launcher = ["-c", _SLOW_CLI] if slow else ["-m", "lrprec"]
    return [sys.executable, *launcher, "train", str(catalog), "--out", str(out), "--epochs", str(OPTS["epochs"]),
            "--batch-size", str(OPTS["batch_size"]), "--dim", str(OPTS["dim"]), "--seed", str(OPTS["seed"]),
            "--checkpoint-every", "3", "--augment", *extra]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(synth_catalog, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # slow steps so the kill lands right after the first (mid-epoch) checkpoint
    proc = subprocess.Popen(_train_cmd(synth_catalog, killed, slow=True), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = checkpoint_path(killed)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (killed / "config.json").exists()  # it did not finish
    meta = load_checkpoint(ckpt)["meta"]
    assert meta["epoch"] == 0 and meta["step"] > 0  # killed mid-epoch 1

    res = subprocess.run(_train_cmd(synth_catalog, killed, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout
    # the uninterrupted reference runs in this process, with the subprocesses' single thread
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(synth_catalog, whole, TrainConfig(**OPTS, checkpoint_every=3, augment=True), progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(n)

    _assert_same_weights(load_file(str(killed / "model.safetensors")), load_file(str(whole / "model.safetensors")))
    _assert_same_weights(load_checkpoint(checkpoint_path(killed))["model"], load_checkpoint(checkpoint_path(whole))["model"])
    h_k = json.loads((killed / "history.json").read_text())
    h_w = json.loads((whole / "history.json").read_text())
    assert [e["loss"] for e in h_k["epochs"]] == [e["loss"] for e in h_w["epochs"]]
    assert h_k["best"] == h_w["best"]
    assert json.loads((killed / "config.json").read_text())["weights_id"] == json.loads((whole / "config.json").read_text())["weights_id"]


def test_resume_with_more_epochs_equals_training_them_at_once(synth_catalog, finished_run, tmp_path):
    import shutil

    grown, whole = tmp_path / "grown", tmp_path / "whole"
    shutil.copytree(finished_run, grown)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(synth_catalog, grown, TrainConfig(**OPTS), progress=False, log=lambda m: None, resume=True)
        train(synth_catalog, whole, TrainConfig(**OPTS), progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(n)
    _assert_same_weights(load_checkpoint(checkpoint_path(grown))["model"], load_checkpoint(checkpoint_path(whole))["model"])
    assert json.loads((grown / "history.json").read_text())["epochs"][1]["loss"] == json.loads((whole / "history.json").read_text())["epochs"][1]["loss"]


def _damaged(finished_run, tmp_path, how: str):
    data = checkpoint_path(finished_run).read_bytes()
    if how == "corrupt":
        k = len(data) // 2
        data = data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:]
    elif how == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data = b"not a checkpoint at all" + data[100:]
    path = tmp_path / "checkpoint.ckpt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("how,match", [("corrupt", "corrupt: SHA-256"), ("truncated", "truncated"), ("header", "not a valid lrprec checkpoint")])
def test_damaged_checkpoint_is_refused_with_a_clear_error(finished_run, tmp_path, how, match):
    path = _damaged(finished_run, tmp_path, how)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize("how,match", [("corrupt", "is corrupt"), ("truncated", "is truncated")])
def test_resume_from_a_damaged_checkpoint_fails_in_the_cli(synth_catalog, finished_run, tmp_path, how, match):
    import shutil

    from typer.testing import CliRunner

    from lrprec.cli import load_commands

    app = load_commands()

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damaged(finished_run, run, how)
    res = CliRunner().invoke(app, ["train", str(synth_catalog), "--out", str(run), "--epochs", "2", "--batch-size", "32", "--dim", "8", "--seed", "4", "--resume"])
    assert res.exit_code == 2
    assert match in res.output and "error:" in res.output


def test_resume_with_other_options_is_refused(synth_catalog, finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with pytest.raises(CheckpointError, match="lr"):
        train(synth_catalog, run, TrainConfig(**{**OPTS, "lr": 0.1}), progress=False, log=lambda m: None, resume=True)


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"n": 1}, {"t": torch.arange(3)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"n": 2}, {"t": torch.arange(5)})
    monkeypatch.undo()
    got = load_checkpoint(path)
    assert got["meta"] == {"n": 1} and torch.equal(got["t"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]
