"""``lrprec index`` and ``lrprec recommend``: build the recommendation index, query it."""
from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from lrprec.cli._app import command, emit
from lrprec.cli._tables import Col, table_text
from lrprec.errors import UsageError
from lrprec.files import atomic_write_text, dir_lock


class Backend(str, Enum):
    auto = "auto"
    exact = "exact"
    ivf = "ivf"
    hnsw = "hnsw"
    milvus = "milvus"


def _index_text(meta: dict) -> str:
    return (f"indexed {meta['items']} items for {', '.join(meta['relations'])} "
            f"(backend {meta['backend']}, K = {meta['dim']}; embedding {meta['embed_seconds']:.1f} s, "
            f"index {meta['build_seconds']:.1f} s) in {meta['path']}")


@command("index")
def index_cmd(
    run: Path = typer.Argument(..., help="Run directory (from 'lrprec train')."),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="exact, ivf, hnsw, auto (exact below 200,000 items, else ivf), "
                                    "or milvus (collections at --uri)."),
    uri: Optional[str] = typer.Option(None, "--uri", help="Milvus: a file path ending in .db (embedded Milvus Lite) or http://host:19530."),
    shards: Optional[Path] = typer.Option(None, "--shards", help="Build from the Parquet shards of 'lrprec embed RUN --out DIR' instead of embedding."),
    add: Optional[Path] = typer.Option(None, "--add", help="Add the items of a catalog folder to the existing Milvus index (no rebuild)."),
    remove: Optional[str] = typer.Option(None, "--remove", help="Remove items (comma-separated ids) from the existing Milvus index."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Items per forward pass (default by backbone)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Embed every catalog item once and build the index that serves every user (stored in RUN/index/, or in Milvus)."""
    from lrprec.recommend.recommender import build_index
    from lrprec.run import Run

    if batch_size is not None and batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    if add is not None and remove is not None:
        raise UsageError("give --add or --remove, not both")
    r = Run.load(run)
    log = (lambda m: typer.echo(m, err=True))
    with dir_lock(run, "lrprec index"):
        if add is not None or remove is not None:
            from lrprec.recommend.updates import add_items, remove_items

            res = add_items(r, add, batch_size=batch_size, log=log) if add is not None else remove_items(r, remove.split(","), log=log)
            emit(res, as_json, lambda d: f"{'added' if 'added' in d else 'removed'} {d.get('added', d.get('removed'))} items "
                                         f"({', '.join(d['relations'])})")
            return
        if uri is not None and backend != Backend.milvus:
            raise UsageError("--uri is for --backend milvus")
        embedded = None
        if shards is not None:
            from lrprec.recommend.shards import read_shards

            if backend == Backend.milvus:
                from lrprec.recommend.milvus import check_uri

                check_uri(uri)  # a usage error before reading the shards
            embedded = read_shards(r, shards)
        index = build_index(r, backend.value, batch_size=batch_size, progress=True, log=log, uri=uri, embedded=embedded,
                            source=str(shards) if shards is not None else None)
    emit({**index.meta, "path": str(index.path)}, as_json, _index_text)


@command("embed")
def embed_cmd(
    run: Path = typer.Argument(..., help="Run directory (from 'lrprec train')."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the Parquet shards (default RUN/embeddings)."),
    shard_size: int = typer.Option(65_536, "--shard-size", help="Catalog rows per shard."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Items per forward pass (default by backbone)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (cuda:LOCAL_RANK under torchrun)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Embed the catalog into Parquet shards (query and partner vectors per relation); under torchrun each rank
    takes every WORLD_SIZE-th shard. Resumable: existing shards are skipped. 'lrprec index RUN --shards DIR' builds from them."""
    from lrprec.recommend.shards import embed_shards
    from lrprec.run import Run
    from lrprec.train import distributed

    if batch_size is not None and batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    ctx = distributed.setup(device)
    try:
        r = Run.load(run)
        r.model.to(ctx.device)
        target = out if out is not None else Path(run) / "embeddings"
        t0 = time.perf_counter()
        done = embed_shards(r, target, shard_size=shard_size, rank=ctx.rank, world=ctx.world_size, batch_size=batch_size,
                            log=lambda m: typer.echo(m, err=True))
        per_rank = distributed.all_gather_object(ctx, (done, time.perf_counter() - t0))
        distributed.barrier(ctx)
    finally:
        distributed.teardown(ctx)
    if ctx.is_main:
        res = {"out": str(target), "world_size": ctx.world_size, "written": sorted(s for d, _ in per_rank for s in d),
               "embed_seconds": round(max(t for _, t in per_rank), 3)}
        emit(res, as_json, lambda d: f"wrote {len(d['written'])} shard(s) to {d['out']} with {d['world_size']} process(es)")

class Duplicates(str, Enum):
    demote = "demote"
    keep = "keep"
    collapse = "collapse"


def _index_or_build(run: Any):
    """The run's stored index; a run without one gets it built now (with a notice), as 'lrprec index' would."""
    from lrprec.recommend.recommender import IndexMissingError, build_index, load_index

    try:
        return load_index(run)
    except IndexMissingError:
        log = (lambda m: typer.echo(m, err=True))
        log(f"notice: {run.path} has no recommendation index yet; building it now (what 'lrprec index {run.path}' does, stored in RUN/index/)")
        return build_index(run, "auto", progress=True, log=log)


def _results_text(result: dict, titles: dict[str, str] | None = None) -> str:
    """Recommendations as one table per relation (per relation and category with --per-category), titles beside ids."""
    titles = titles or {}
    head = f"recommendations for {result['item']}"
    if titles.get(result["item"]):
        head += f" ({titles[result['item']]})"
    if result.get("user"):
        head += f", user {result['user']}"
    parts = [head]
    columns = [Col("#", justify="right"), Col("item"), Col("title", max_width=60), Col("category", max_width=28),
               Col("P", justify="right"), Col("d", justify="right")]

    def table(name: str, entries: list[dict]) -> str:
        return table_text(columns, [(e["rank"], e["item"], titles.get(e["item"], ""), e.get("category", ""),
                                     f"{e['probability']:.3f}", f"{e['distance']:.4g}") for e in entries], title=name)

    for rel, res in result["results"].items():
        if isinstance(res, dict):
            parts.append(f"{rel}:")
            parts.extend(table(f"{category}:", entries) for category, entries in res.items())
        else:
            parts.append(table(f"{rel}:", res))
    parts.extend(f"explanation: {p}" for p in result.get("explanations", []))
    return "\n\n".join(parts)


@command("recommend")
def recommend_cmd(
    run: Path = typer.Argument(..., help="Run directory with an index ('lrprec index RUN')."),
    item: str = typer.Argument(..., help="Query item id."),
    user: Optional[str] = typer.Option(None, "--user", help="User id (unknown users get the global θ)."),
    relation: str = typer.Option("all", "--relation", help="A trained relation, or 'all'."),
    k: int = typer.Option(10, "-k", "--k", help="Items per relation (per category with --per-category)."),
    per_category: bool = typer.Option(False, "--per-category", help="The top k of every category (the paper's eq 5)."),
    explain: bool = typer.Option(False, "--explain", help="Also write pair heatmaps (query, each recommendation) and a contact sheet."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for recommendations.json and the --explain images."),
    duplicates: Duplicates = typer.Option(Duplicates.demote, "--duplicates",
                                          help="Near-duplicates of the query and of each other: demote (default: never lead a complement list), "
                                               "keep (the model's order), collapse (one listing per look, every relation)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The top k items j ≠ ITEM by P_u(r_ij) for each relation, with probability and distance.

    A run without an index gets one first (what 'lrprec index RUN' builds, stored in RUN/index/).
    """
    from lrprec.recommend.recommender import recommend
    from lrprec.run import Run

    r = Run.load(run)
    index = _index_or_build(r)
    result = recommend(r, item, user=user, relations=relation, k=k, per_category=per_category, index=index, duplicates=duplicates.value)
    for note in result.get("notices", []):
        typer.echo(f"notice: {note}", err=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recommendations.json", json.dumps(result, indent=2))
    if explain:
        from lrprec.app.explanations import explain_recommendations

        name = f"recommend-{_safe(item)}" + (f"-{_safe(user)}" if user else "")
        target = out if out is not None else Path(run) / "explain" / name
        target.mkdir(parents=True, exist_ok=True)
        result["explanations"] = [str(p) for p in explain_recommendations(r, result, target)]
    emit(result, as_json, lambda res: _results_text(res, _titles(r.catalog, res)))


def _titles(catalog: Any, result: dict) -> dict[str, str]:
    """Catalog titles of the query and every recommended item (for the text output only)."""
    ids = {result["item"]}
    for res in result["results"].values():
        for entries in (res.values() if isinstance(res, dict) else [res]):
            ids.update(e["item"] for e in entries)
    out = {}
    for i in ids:
        try:
            out[i] = str(catalog.titles[catalog.index_of(i)] or "")
        except (KeyError, ValueError):
            pass
    return out


def _safe(name: str) -> str:
    """A file-name-safe form of an id."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]
