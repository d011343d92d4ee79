"""CLI error contract (issue 16): a user's mistake is one line and exit 2; a bug is "internal error",
its traceback and exit 1; a command module that fails to import is an error, not a missing command."""
from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

import lrprec.cli as cli
from lrprec.cli import load_commands
from lrprec.errors import LrprecError, UsageError


def _invoke(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def test_a_user_error_is_one_line_and_exit_2(tmp_path):
    r = _invoke("items", str(tmp_path / "missing"))
    assert r.exit_code == 2
    assert r.output.startswith("error: ") and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_bad_option_value_is_a_usage_error(tiny_catalog):
    r = _invoke("items", str(tiny_catalog), "--limit", "-1")
    assert r.exit_code == 2 and "limit must be >= 0" in r.output and "Traceback" not in r.output


def test_a_bug_is_an_internal_error_with_traceback_and_exit_1(tiny_catalog, monkeypatch):
    import lrprec.cli.data as data_cmds

    def broken(*a, **k):
        return None + 1  # a TypeError: a bug, not the user's input

    monkeypatch.setattr(data_cmds, "search_items", broken)
    r = _invoke("items", str(tiny_catalog))
    assert r.exit_code == 1
    assert "internal error" in r.output and "TypeError" in r.output and "Traceback" in r.output


def test_a_library_value_error_is_not_mistaken_for_a_user_error(tiny_catalog, monkeypatch):
    import lrprec.cli.data as data_cmds

    monkeypatch.setattr(data_cmds, "search_items", lambda *a, **k: int("not a number"))  # ValueError from a bug
    r = _invoke("items", str(tiny_catalog))
    assert r.exit_code == 1 and "internal error" in r.output


def test_domain_errors_share_one_base():
    from lrprec.data.catalog import CatalogError
    from lrprec.recommend.recommender import RecommendError
    from lrprec.run import RunError
    from lrprec.train.checkpoint import CheckpointError

    for cls in (CatalogError, RunError, CheckpointError, RecommendError, UsageError):
        assert issubclass(cls, LrprecError) and issubclass(cls, ValueError)


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    real = importlib.import_module

    def failing(name, *a, **k):
        if name == "lrprec.cli.baselines":
            raise ModuleNotFoundError("No module named 'lrprec.cli.baselines'", name="lrprec.cli.baselines")
        return real(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", failing)
    with pytest.raises(ModuleNotFoundError):
        load_commands()
