"""Recommendation API and CLI on a tiny features-mode run with hand-set personal θ."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from lrprec.data.catalog import RELATIONS, Catalog
from lrprec.data.writer import write_catalog
from lrprec.recommend.recommender import (
    IndexMissingError,
    RecommendError,
    StaleIndexError,
    build_index,
    load_index,
    recommend,
)
from lrprec.run import Run, build_model, save_weights

F, K, N = 12, 6, 240
TRAINED = ["also_viewed", "also_bought"]
USERS = ["alice", "bob", "carol"]
CATS = ["bag", "shirt", "shoe"]


def _make_run(root: Path, weights_id: str = "w1", backend_seed: int = 0, head: str = "metric") -> Path:
    rng = np.random.default_rng(backend_seed)
    cat_dir = root / "catalog"
    if not cat_dir.exists():
        ids = [f"it{i:03d}" for i in range(N)]
        a = rng.integers(0, N, 400)
        b = (a + 1 + rng.integers(0, N - 1, 400)) % N
        rels = pa.table({
            "item_a": [ids[i] for i in a], "item_b": [ids[i] for i in b],
            "relation": [TRAINED[i % 2] for i in range(400)],
            "user": [USERS[i % 4] if i % 4 < 3 else "" for i in range(400)],
        })
        write_catalog(cat_dir, items={"item_id": ids, "category": [CATS[i % 3] for i in range(N)]}, relations=rels,
                      users=USERS, meta={"name": "fake"}, arrays={"features": rng.standard_normal((N, F)).astype(np.float32)})
    cat = Catalog(cat_dir)
    run = root / f"run-{weights_id}"
    run.mkdir()
    config = {"backbone": "features", "backbone_config": {"out_dim": F}, "dim": K, "relations": TRAINED,
              "catalog": str(cat_dir), "catalog_fingerprint": cat.fingerprint, "weights_id": weights_id,
              "personalize": True, "seed": 0, "head": head}
    (run / "config.json").write_text(json.dumps(config))
    model = build_model(config, n_users=len(USERS))
    with torch.no_grad():
        if model.F is not None:  # an asymmetric partner projection unlike E
            model.F.copy_(torch.from_numpy(rng.standard_normal(tuple(model.F.shape)).astype(np.float32)))
        model.c.fill_(2.0)
        model.theta_global.copy_(torch.ones_like(model.theta_global))
        # alice attends to the first half of the dimensions, bob to the second half
        model.theta_delta.zero_()
        model.theta_delta[:, 0, K // 2:] = -0.95
        model.theta_delta[:, 1, : K // 2] = -0.95
    save_weights(model, run / "model.safetensors")
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    run = _make_run(tmp_path_factory.mktemp("rec"))
    build_index(Run.load(run), "exact", progress=False)
    return run


@pytest.fixture(scope="module")
def loaded(fake_run) -> Run:
    return Run.load(fake_run)


def _model_distances(run: Run, item: str, relation: str, user_row: int) -> np.ndarray:
    """d_u(i, j) for every j, straight from the PairModel's forward (the brute-force reference)."""
    m = run.model
    with torch.no_grad():
        x = run.inputs(np.arange(N))
        i = run.catalog.index_of(item)
        r = torch.full((N,), RELATIONS.index(relation))
        logit = m(x[i].expand(N, -1), x, r, torch.full((N,), user_row))
        return (m.c[r] - logit).double().numpy()


@pytest.mark.parametrize("user,row", [(None, -1), ("alice", 0), ("bob", 1)])
def test_exact_ranking_equals_brute_force_model_distance(loaded, user, row):
    res = recommend(loaded, "it007", user=user, relations="also_viewed", k=20)
    d = _model_distances(loaded, "it007", "also_viewed", row)
    d[7] = np.inf
    want = np.argsort(d, kind="stable")[:20]
    got = [loaded.catalog.index_of(e["item"]) for e in res["results"]["also_viewed"]]
    assert got == want.tolist()
    np.testing.assert_allclose([e["distance"] for e in res["results"]["also_viewed"]], d[want], rtol=1e-5, atol=1e-6)


def test_probability_is_the_model_output(loaded):
    res = recommend(loaded, "it003", user="alice", relations=["also_bought"], k=5)
    m = loaded.model
    rows = [loaded.catalog.index_of(e["item"]) for e in res["results"]["also_bought"]]
    x = loaded.inputs(np.array([3] * len(rows) + rows))
    r = torch.full((len(rows),), RELATIONS.index("also_bought"))
    with torch.no_grad():
        prob = torch.sigmoid(m(x[: len(rows)], x[len(rows):], r, torch.zeros(len(rows), dtype=torch.long))).numpy()
    np.testing.assert_allclose([e["probability"] for e in res["results"]["also_bought"]], prob, rtol=1e-5)
    assert [e["rank"] for e in res["results"]["also_bought"]] == [1, 2, 3, 4, 5]
    assert all(a["probability"] >= b["probability"] for a, b in zip(res["results"]["also_bought"], res["results"]["also_bought"][1:]))


def test_result_shape_and_all_trained_relations(loaded):
    res = recommend(loaded, "it010", k=3)
    assert set(res) >= {"item", "user", "results"} and res["item"] == "it010" and res["user"] is None
    assert list(res["results"]) == TRAINED
    for entries in res["results"].values():
        assert len(entries) == 3
        assert set(entries[0]) >= {"item", "probability", "distance", "rank"}
    json.dumps(res)  # JSON-serializable as is


def test_query_item_never_recommended_to_itself(loaded):
    for item in ("it000", "it100", "it239"):
        res = recommend(loaded, item, k=N - 1)
        for entries in res["results"].values():
            names = [e["item"] for e in entries]
            assert item not in names and len(set(names)) == N - 1
        per = recommend(loaded, item, k=N - 1, per_category=True)
        for by_cat in per["results"].values():
            assert all(item not in [e["item"] for e in entries] for entries in by_cat.values())


def test_two_users_with_different_theta_get_different_rankings(loaded):
    a = recommend(loaded, "it020", user="alice", relations="also_viewed", k=10)["results"]["also_viewed"]
    b = recommend(loaded, "it020", user="bob", relations="also_viewed", k=10)["results"]["also_viewed"]
    assert [e["item"] for e in a] != [e["item"] for e in b]


def test_unknown_user_falls_back_to_global_theta_with_a_notice(loaded):
    anon = recommend(loaded, "it020", k=10)
    ghost = recommend(loaded, "it020", user="ghost", k=10)
    assert anon["notices"] == []
    assert len(ghost["notices"]) == 1 and "ghost" in ghost["notices"][0] and "global" in ghost["notices"][0]
    assert ghost["results"] == anon["results"]
    # a user with no personal evidence (carol, δ = 0) equals the global θ too, without a notice
    assert recommend(loaded, "it020", user="carol", k=10)["notices"] == []


def test_per_category_gives_the_best_of_every_other_category_for_a_complement(loaded):
    res = recommend(loaded, "it005", user="bob", relations="also_bought", k=4, per_category=True)
    by_cat = res["results"]["also_bought"]
    own = loaded.catalog.categories[5]
    assert list(by_cat) == [c for c in CATS if c != own]  # a complement "goes with": other categories
    d = _model_distances(loaded, "it005", "also_bought", 1)
    d[5] = np.inf
    for c, entries in by_cat.items():
        assert len(entries) == 4 and all(e["category"] == c for e in entries)
        members = np.flatnonzero(loaded.catalog.categories == c)
        want = members[np.argsort(d[members], kind="stable")[:4]]
        assert [loaded.catalog.index_of(e["item"]) for e in entries] == want.tolist()


def test_per_category_for_a_substitute_is_the_query_category(loaded):
    res = recommend(loaded, "it005", relations="also_viewed", k=3, per_category=True)
    own = loaded.catalog.categories[5]
    assert list(res["results"]["also_viewed"]) == [own]
    d = _model_distances(loaded, "it005", "also_viewed", -1)
    d[5] = np.inf
    members = np.flatnonzero(loaded.catalog.categories == own)
    want = members[np.argsort(d[members], kind="stable")[:3]]
    assert [loaded.catalog.index_of(e["item"]) for e in res["results"]["also_viewed"][own]] == want.tolist()


@pytest.mark.parametrize("user,row", [(None, -1), ("bob", 1)])
def test_asymmetric_head_ranking_equals_its_forward(tmp_path, user, row):
    """Items indexed by x F_r, queries by x E_r: the top-k equals sorting the model's own logits."""
    run = Run.load(_make_run(tmp_path, weights_id="asym", head="auto"))
    assert run.model.asymmetric == [False, False, True, True]
    build_index(run, "exact", progress=False)
    res = recommend(run, "it011", user=user, relations="also_bought", k=15)
    d = _model_distances(run, "it011", "also_bought", row)
    d[11] = np.inf
    want = np.argsort(d, kind="stable")[:15]
    assert [run.catalog.index_of(e["item"]) for e in res["results"]["also_bought"]] == want.tolist()
    np.testing.assert_allclose([e["distance"] for e in res["results"]["also_bought"]], d[want], rtol=1e-5, atol=1e-5)
    # the asymmetric head is not symmetric: d(i, j) != d(j, i) in general
    j = int(want[0])
    back = _model_distances(run, run.catalog.item_ids[j], "also_bought", row)[11]
    assert abs(back - d[j]) > 1e-3


def test_ivf_backend_agrees_with_exact_here(fake_run, tmp_path):
    run = Run.load(fake_run)
    ivf = build_index(run, "ivf", progress=False, save=False, nprobe=64)
    a = recommend(run, "it050", user="alice", k=10, index=ivf)
    b = recommend(run, "it050", user="alice", k=10)
    assert a["backend"] == "ivf" and b["backend"] == "exact"
    assert a["results"] == b["results"]


def test_bad_input_errors(loaded):
    with pytest.raises(ValueError, match="unknown item"):
        recommend(loaded, "nope")
    with pytest.raises(ValueError, match="unknown relation"):
        recommend(loaded, "it001", relations="sold_with")
    with pytest.raises(ValueError, match="not trained"):
        recommend(loaded, "it001", relations="bought_together")
    with pytest.raises(RecommendError, match="at least 1"):
        recommend(loaded, "it001", k=0)
    with pytest.raises(RecommendError, match="exceeds"):
        recommend(loaded, "it001", k=N)


def test_stale_or_missing_index_is_detected(fake_run, tmp_path):
    root = tmp_path
    shutil.copytree(fake_run.parent / "catalog", root / "catalog")
    other = _make_run(root, weights_id="w2")
    with pytest.raises(IndexMissingError, match="lrprec index"):
        load_index(Run.load(other))
    # an index copied over from another run (other weights)
    shutil.copytree(fake_run / "index", other / "index")
    with pytest.raises(StaleIndexError, match="lrprec index"):
        recommend(Run.load(other), "it001")
    # the same run retrained: weights id changes
    cfg = json.loads((other / "config.json").read_text())
    build_index(Run.load(other), "exact", progress=False)
    cfg["weights_id"] = "w3"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StaleIndexError, match="other model weights"):
        load_index(Run.load(other))
    # a catalog that changed under the index
    cfg["weights_id"] = "w2"
    (other / "config.json").write_text(json.dumps(cfg))
    meta = json.loads((other / "index" / "index.json").read_text())
    meta["catalog_fingerprint"] = "somewhere-else"
    (other / "index" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(StaleIndexError, match="another catalog"):
        load_index(Run.load(other))


def test_ivf_index_saved_and_reloaded(fake_run, tmp_path):
    shutil.copytree(fake_run.parent / "catalog", tmp_path / "catalog")
    run_dir = _make_run(tmp_path, weights_id="ivf1")
    run = Run.load(run_dir)
    built = build_index(run, "ivf", progress=False, nlist=8)
    assert (run_dir / "index" / "ivf-also_viewed.npz").is_file()
    again = load_index(run)
    assert again.backend == "ivf"
    assert recommend(run, "it009", user="bob", k=5, index=again) == recommend(run, "it009", user="bob", k=5, index=built)
    # the probe count measured at build (issue 27) is recorded per relation and comes back with the lists
    for rel in again.relations:
        assert again.meta["nprobe"][rel] == built.get(rel).nprobe == again.get(rel).nprobe >= 1
        assert built.get(rel).tuned[-1][0] == built.get(rel).nprobe  # the last count the build measured


def test_image_run_end_to_end(tiny_run):
    """The default small-CNN run: the index embeds images, and recommendations follow the model."""
    run = Run.load(tiny_run)
    build_index(run, progress=False)
    item = str(run.catalog.item_ids[0])
    own = run.catalog.categories[0]
    m = run.model
    for rel in ("also_viewed", "also_bought"):  # a metric and an asymmetric head (the default "auto")
        res = recommend(run, item, relations=rel, k=5, per_category=True)
        want_cats = {own} if rel == "also_viewed" else set(run.catalog.category_names) - {own}
        assert set(res["results"][rel]) == want_cats
        n = len(run.catalog)
        with torch.no_grad():
            x = run.inputs(np.arange(n))
            r = torch.full((n,), RELATIONS.index(rel))
            d = (m.c[r] - m(x[0:1].expand_as(x), x, r, torch.full((n,), -1))).numpy()
        for entries in res["results"][rel].values():
            for e in entries:
                assert abs(e["distance"] - d[run.catalog.index_of(e["item"])]) <= 1e-4 * max(1.0, abs(e["distance"]))


# ---- CLI --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    import lrprec.cli.recommend  # noqa: F401  (registers the commands)
    from lrprec.cli._app import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_index_and_recommend(cli, fake_run, tmp_path):
    shutil.copytree(fake_run.parent / "catalog", tmp_path / "catalog")
    run = _make_run(tmp_path, weights_id="cli1")
    r = cli("index", run, "--backend", "exact", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "exact"
    r = cli("recommend", run, "it004", "--user", "alice", "--relation", "also_viewed", "-k", "3", "--json", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [e["rank"] for e in out["results"]["also_viewed"]] == [1, 2, 3]
    assert json.loads((tmp_path / "o" / "recommendations.json").read_text())["results"] == out["results"]
    r = cli("recommend", run, "it004", "--per-category", "-k", "2")
    assert r.exit_code == 0 and "shoe:" in r.stdout and "also_bought:" in r.stdout
    r = cli("recommend", run, "it004", "--user", "ghost", "-k", "2")
    assert r.exit_code == 0 and "notice:" in r.stderr and "ghost" in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["it999"], "unknown item"),
    (["it001", "--relation", "sold_with"], "unknown relation"),
    (["it001", "-k", "0"], "at least 1"),
    (["it001", "-k", str(N)], "exceeds"),
])
def test_cli_bad_input_is_one_line(cli, fake_run, args, msg):
    r = cli("recommend", fake_run, *args)
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0]


def test_cli_stale_index_and_backend_choice(cli, fake_run, tmp_path):
    shutil.copytree(fake_run.parent / "catalog", tmp_path / "catalog")
    run = _make_run(tmp_path, weights_id="cli2")
    r = cli("recommend", run, "it001")  # no index yet: built now, with a notice (issue 31)
    assert r.exit_code == 0 and "has no recommendation index yet" in r.stderr and (run / "index").is_dir()
    shutil.rmtree(run / "index")
    shutil.copytree(fake_run / "index", run / "index")  # another run's index: stale, refused
    r = cli("recommend", run, "it001")
    assert r.exit_code != 0 and "lrprec index" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("index", run, "--backend", "annoy")
    assert r.exit_code != 0


def test_cli_explain_needs_images(cli, fake_run):
    r = cli("recommend", fake_run, "it001", "--explain", "-k", "2")
    assert r.exit_code != 0 and "images" in r.stderr
