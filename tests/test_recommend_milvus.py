"""The Milvus backend (issue 27) on embedded Milvus Lite, in process: the same answers as the exact backend,
per-category and personalized queries, incremental add/remove, and its error paths (exit 2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

pytest.importorskip("milvus_lite")

from lrprec.cli import load_commands  # noqa: E402
from lrprec.data.writer import write_catalog  # noqa: E402
from lrprec.recommend.milvus import MilvusBackendError  # noqa: E402
from lrprec.recommend.recommender import build_index, load_index, recommend  # noqa: E402
from lrprec.run import Run  # noqa: E402
from test_recommend_api import F, _make_run  # noqa: E402

runner = CliRunner()
app = load_commands()


@pytest.fixture(scope="module")
def milvus_run(tmp_path_factory):
    """A run with an exact index (the reference, in memory) and a Milvus Lite index on disk."""
    root = tmp_path_factory.mktemp("milvus")
    run_dir = _make_run(root)
    run = Run.load(run_dir)
    exact = build_index(run, "exact", progress=False, save=False)
    uri = str(root / "lrprec.db")
    build_index(run, "milvus", progress=False, uri=uri)
    return root, run_dir, exact, uri


def _ids(res: dict, rel: str) -> list[str]:
    return [e["item"] for e in res["results"][rel]]


@pytest.mark.parametrize("user", [None, "alice", "bob"])
def test_milvus_top10_equals_exact_for_global_and_personal_users(milvus_run, user):
    _, run_dir, exact, _ = milvus_run
    run = Run.load(run_dir)
    index = load_index(run)
    assert index.backend == "milvus"
    for item in ["it000", "it007", "it131"]:
        for rel in run.relations:
            want = recommend(run, item, user=user, relations=rel, k=10, index=exact)["results"][rel]
            got = recommend(run, item, user=user, relations=rel, k=10, index=index)["results"][rel]
            assert len(set(_ids({"results": {rel: got}}, rel)) & {e["item"] for e in want}) / 10 == 1.0  # recall@10
            np.testing.assert_allclose([e["distance"] for e in got], [e["distance"] for e in want], rtol=1e-9, atol=1e-12)


def test_milvus_per_category_is_one_grouped_query_matching_exact(milvus_run):
    _, run_dir, exact, _ = milvus_run
    run = Run.load(run_dir)
    want = recommend(run, "it004", user="alice", k=5, per_category=True, index=exact)["results"]
    got = recommend(run, "it004", user="alice", k=5, per_category=True)["results"]
    assert want.keys() == got.keys()
    for rel in want:
        assert want[rel].keys() == got[rel].keys() and want[rel]
        for cat in want[rel]:
            assert [e["item"] for e in got[rel][cat]] == [e["item"] for e in want[rel][cat]]
            assert all(e["category"] == cat for e in got[rel][cat])


def test_add_and_remove_without_rebuild(milvus_run, tmp_path):
    root, run_dir, _, _ = milvus_run
    run = Run.load(run_dir)
    # a new product: a copy of it007's features under a new id, so it is it007's nearest neighbour (d = 0)
    feats = np.asarray(run.catalog.feature_rows(np.array([7])), np.float32)
    new_dir = tmp_path / "new"
    rels = pa.table({"item_a": ["new-1"], "item_b": ["new-1"], "relation": ["also_viewed"], "user": [""]}).slice(0, 0)
    write_catalog(new_dir, items={"item_id": ["new-1"], "category": [str(run.catalog.categories[7])]}, relations=rels, users=[],
                  meta={"name": "new"}, arrays={"features": feats.reshape(1, F)})
    r = runner.invoke(app, ["index", str(run_dir), "--add", str(new_dir), "--json"])
    assert r.exit_code == 0, r.output
    res = recommend(Run.load(run_dir), "it007", relations="also_viewed", k=3)
    assert _ids(res, "also_viewed")[0] == "new-1" and res["results"]["also_viewed"][0]["distance"] == pytest.approx(0.0, abs=1e-9)
    # the new item can be queried itself, and adding it twice is refused
    assert "it007" in _ids(recommend(Run.load(run_dir), "new-1", relations="also_viewed", k=3), "also_viewed")
    assert runner.invoke(app, ["index", str(run_dir), "--add", str(new_dir)]).exit_code == 2
    r = runner.invoke(app, ["index", str(run_dir), "--remove", "new-1,it092"])
    assert r.exit_code == 0, r.output
    after = _ids(recommend(Run.load(run_dir), "it007", relations="also_viewed", k=10), "also_viewed")
    assert "new-1" not in after and "it092" not in after
    r = runner.invoke(app, ["index", str(run_dir), "--remove", "it092"])  # already gone: nothing to remove
    assert r.exit_code == 2 and "not in the" in r.output


def test_missing_or_unreachable_uri_exits_2(milvus_run, tmp_path):
    _, run_dir, _, _ = milvus_run
    for args, msg in [(["--backend", "milvus"], "--uri"),
                      (["--backend", "milvus", "--uri", str(tmp_path / "no" / "such" / "x.db")], "does not exist"),
                      (["--backend", "milvus", "--uri", str(tmp_path / "x.txt")], ".db"),
                      (["--backend", "milvus", "--uri", "http://127.0.0.1:9"], "cannot reach Milvus")]:
        r = runner.invoke(app, ["index", str(run_dir), *args])
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output, (args, r.output)


def test_collection_of_another_run_is_refused(milvus_run, tmp_path):
    _, run_dir, _, uri = milvus_run
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["weights_id"] = "w2"  # another run's weights
    (other / "config.json").write_text(json.dumps(cfg))
    meta = json.loads((other / "index" / "index.json").read_text())
    meta["weights_id"] = "w2"  # an index.json that names the first run's collections
    (other / "index" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(MilvusBackendError, match="other model weights"):
        load_index(Run.load(other))
    r = runner.invoke(app, ["recommend", str(other), "it007"])
    assert r.exit_code == 2 and "other model weights" in r.output
    # its own build gets its own collections at the same URI; the first run's still answer as before
    build_index(Run.load(other), "milvus", progress=False, uri=uri)
    names = json.loads((other / "index" / "index.json").read_text())["collections"]
    first = json.loads((run_dir / "index" / "index.json").read_text())["collections"]
    assert set(names.values()).isdisjoint(first.values())
    assert load_index(Run.load(run_dir)).backend == "milvus"


def test_faiss_backends_refuse_incremental_updates(tmp_path):
    run_dir = _make_run(tmp_path)
    build_index(Run.load(run_dir), "exact", progress=False)
    r = runner.invoke(app, ["index", str(run_dir), "--remove", "it001"])
    assert r.exit_code == 2 and "--backend milvus" in r.output
