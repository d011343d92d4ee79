"""``lrprec embed`` (issue 27): sharded catalog embedding under torchrun; shards from 2 gloo processes equal one
process's bit for bit, equal the in-process embedding, are resumable per shard, and ``lrprec index`` builds from them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lrprec.cli import load_commands
from lrprec.recommend.recommender import build_index, embed_catalog, load_index, recommend
from lrprec.recommend.shards import ShardError, embed_shards, read_shards
from lrprec.run import Run
from test_recommend_api import N, _make_run

runner = CliRunner()
app = load_commands()


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _shards(out) -> dict[str, object]:
    """Every shard as a pyarrow table (``Table.equals`` compares float columns value by value, exactly)."""
    return {f.name: pq.read_table(f) for f in sorted(out.glob("shard-*.parquet"))}


@pytest.mark.slow
def test_two_processes_write_the_same_shards_as_one(tmp_path):
    run_dir = _make_run(tmp_path, head="asymmetric")
    outs = {}
    for world in (1, 2):
        outs[world] = tmp_path / f"emb{world}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
               "-m", "lrprec", "embed", str(run_dir), "--out", str(outs[world]), "--shard-size", "50", "--batch-size", "16", "--json"]
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout)["written"] == list(range(5))  # 240 items / 50: shards 0..4, rank 0 reports all
    one, two = _shards(outs[1]), _shards(outs[2])
    assert one.keys() == two.keys() and len(one) == 5
    assert all(one[k].num_columns == 2 + 4 and one[k].equals(two[k]) for k in one)
    # and the same vectors as the in-process embedding (other batch boundaries: equal up to float32 rounding)
    run = Run.load(run_dir)
    ref = embed_catalog(run, progress=False, side="both", batch_size=16)
    got = read_shards(run, outs[2])
    for side in ("partner", "query"):
        for rel in run.relations:
            np.testing.assert_allclose(got[side][rel], ref[side][rel], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(got["partner"][run.relations[0]], got["query"][run.relations[0]])  # asymmetric head: two sides


def test_resume_embeds_only_missing_shards_and_index_builds_from_them(tmp_path):
    run_dir = _make_run(tmp_path)
    run = Run.load(run_dir)
    out = tmp_path / "emb"
    assert embed_shards(run, out, shard_size=64) == [0, 1, 2, 3]
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.parquet")}
    (out / "shard-00002.parquet").unlink()  # a killed job: shard 2 never written
    assert not list(out.glob(".*tmp*"))
    with pytest.raises(ShardError, match="missing"):
        read_shards(run, out)
    r = runner.invoke(app, ["embed", str(run_dir), "--out", str(out), "--shard-size", "64", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["written"] == [2]  # stderr (the log) comes first
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.parquet")} == before
    # another shard size into the same folder is refused, not mixed
    r = runner.invoke(app, ["embed", str(run_dir), "--out", str(out), "--shard-size", "32"])
    assert r.exit_code == 2 and "another job" in r.output
    # lrprec index from the shards: the same recommendations as from its own embedding
    r = runner.invoke(app, ["index", str(run_dir), "--backend", "exact", "--shards", str(out)])
    assert r.exit_code == 0, r.output
    from_shards = recommend(run, "it005", user="alice", k=10)
    ref = build_index(run, "exact", progress=False, save=False)
    assert from_shards["results"] == recommend(run, "it005", user="alice", k=10, index=ref)["results"]
    assert load_index(run).meta["shards"] == str(out) and load_index(run).meta["items"] == N
