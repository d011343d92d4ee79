"""Data commands: synth, info, items, pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from lrprec.cli._app import command, emit
from lrprec.cli._tables import Col, table_text
from lrprec.data.catalog import RELATIONS, Catalog, relation_index, search_items
from lrprec.errors import UsageError


@command()
def synth(
    out: Path = typer.Argument(..., help="Directory to create the catalog in."),
    items: int = typer.Option(2000, help="Number of items."),
    users: int = typer.Option(6, help="Number of users (their co-purchases follow colour, pattern or brand)."),
    image_size: int = typer.Option(64, help="Image side in pixels."),
    pairs: int = typer.Option(2000, "--pairs", help="Positive pairs per relation."),
    seed: int = typer.Option(0, help="Random seed (same seed, same bytes)."),
    spurious: float = typer.Option(0.0, help="Plant a shortcut: a corner watermark whose tag agrees with the label on this fraction of training pairs (and carries no signal in validation/test). 0 = none."),
    spurious_kind: str = typer.Option("mark", help="The planted artifact: mark (a corner watermark) or tint (a global colour cast of the tagged items)."),
    variants: int = typer.Option(1, help="Near-duplicate listings per look: items come in groups sharing one drawing (a shop's colour variants)."),
    variant_noise: float = typer.Option(0.0, help="Pixel noise (std, 0-255) added to each variant's copy of its look's drawing."),
    overwrite: bool = typer.Option(False, help="Replace an existing catalog at OUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the catalog summary as JSON."),
) -> None:
    """Generate the synthetic catalog (images, masks, relations, users, splits)."""
    from lrprec.data.synthetic import SynthConfig, generate

    path = generate(out, SynthConfig(items=items, users=users, image_size=image_size, pairs_per_relation=pairs, seed=seed, spurious=spurious,
                                                  spurious_kind=spurious_kind, variants=variants, variant_noise=variant_noise), overwrite=overwrite)
    emit(Catalog(path).describe(), as_json, _info_text)


def _info_text(d: dict) -> str:
    lines = [f"catalog {d['name']} at {d['path']}", f"items      {d['items']}", f"users      {d['users']}", f"categories {len(d['categories'])}: " + ", ".join(f"{c} ({n})" for c, n in d["categories"].items())]
    lines.append("relations  " + ", ".join(f"{r} {n}" for r, n in d["relations"].items()) + f"  (with a user: {d['personalized_relations']})")
    for s, v in d["splits"].items():
        lines.append(f"split {s:<10} {v['pairs']} pairs ({v['positives']} positive, {v['negatives']} negative)")
    lines.append(f"images     {'none' if d['image_size'] is None else str(d['image_size']) + ' px'}; masks {'yes' if d['has_masks'] else 'no'}; features {d['features_dim'] or 'none'}")
    if d.get("shortcut"):
        sc = d["shortcut"]
        what = "global colour cast" if sc.get("kind") == "tint" else "corner watermark"
        lines.append(f"shortcut   {what} on half the items; agrees with the label on {100 * sc['agreement']:.0f}% of training pairs, carries no signal in validation/test")
    for k, v in (d.get("import_report") or {}).items():
        lines.append(f"import     {k}: {v}")
    return "\n".join(lines)


@command()
def info(data: Path = typer.Argument(..., help="Catalog directory."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Counts: items, users, categories, relations per type, split sizes."""
    emit(Catalog(data).describe(), as_json, _info_text)


@command("items")
def items_cmd(
    data: Path = typer.Argument(..., help="Catalog directory."),
    category: str = typer.Option(None, help="Only this category."),
    search: str = typer.Option(None, help="Substring of id or title (case-insensitive)."),
    limit: int = typer.Option(20, help="At most this many rows (0 = all)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List items (item_id, category, title): how to find ids to explain or recommend from."""
    cat = Catalog(data)
    rows = search_items(cat, category, search, limit)
    emit(rows, as_json, _items_text)


def _items_text(rows: list[dict]) -> str:
    return table_text([Col("item_id"), Col("category", max_width=32), Col("title", max_width=90)],
                      [(r["item_id"], r["category"], r["title"]) for r in rows], empty="(no items match)")


@command()
def pairs(
    data: Path = typer.Argument(..., help="Catalog directory."),
    split: str = typer.Option("test", help="train, validation or test."),
    relation: str = typer.Option(None, help="Only this relation."),
    limit: int = typer.Option(20, help="At most this many rows (0 = all)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List labelled pairs (item_a, item_b, relation, user, label)."""
    cat = Catalog(data)
    p = cat.pairs(split)
    idx = np.arange(len(p))
    if relation is not None:
        idx = idx[p.relation == relation_index(relation)]
    if limit < 0:
        raise UsageError("--limit must be >= 0")
    if limit:
        idx = idx[:limit]
    users = [""] + cat.user_ids
    rows = [{"item_a": cat.item_ids[p.a[k]], "item_b": cat.item_ids[p.b[k]], "relation": RELATIONS[p.relation[k]], "user": users[p.user[k] + 1] or None, "label": int(p.label[k])} for k in idx]
    titles = {str(i): str(t or "") for k in idx for i, t in ((cat.item_ids[p.a[k]], cat.titles[p.a[k]]), (cat.item_ids[p.b[k]], cat.titles[p.b[k]]))}
    emit(rows, as_json, lambda rs: _pairs_text(rs, titles))


def _pairs_text(rows: list[dict], titles: dict[str, str]) -> str:
    """Pairs with each item's title beside its id (titles are not part of the --json rows)."""
    return table_text([Col("item_a"), Col("title_a", max_width=36), Col("item_b"), Col("title_b", max_width=36),
                       Col("relation"), Col("user"), Col("label", justify="right")],
                      [(r["item_a"], titles.get(r["item_a"], ""), r["item_b"], titles.get(r["item_b"], ""), r["relation"],
                        r["user"] or "-", r["label"]) for r in rows], empty="(no pairs)")
