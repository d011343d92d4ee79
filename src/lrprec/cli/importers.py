"""``lrprec import ...``: Amazon 2014/2018 and generic csv/parquet tables into a catalog."""
from __future__ import annotations

import functools
from pathlib import Path

import typer

from lrprec.cli._app import app, command, emit

import_app = typer.Typer(no_args_is_help=True, help="Import real data (Amazon 2014/2018, csv/parquet tables) into a catalog.")
app.add_typer(import_app, name="import")


# Sub-commands get the shared error handling: user errors -> ``error: ...``, exit 2.
_command = functools.partial(command, target=import_app)


def report_text(r: dict) -> str:
    """The import report for people: what was kept, then every kind of skipped input."""
    lines = [f"imported {r.get('source')} -> {r.get('items', 0)} items, {r.get('users', 0)} users, {r.get('categories', 0)} categories"]
    rels = r.get("relations") or {}
    lines.append("relations " + (", ".join(f"{k} {v}" for k, v in rels.items()) or "none") + f"  (personalized: {r.get('personalized_relations', 0)})")
    if r.get("features_dim"):
        lines.append(f"features  {r['features_dim']} dims per item")
    if r.get("image_size"):
        im = r.get("images", {})
        lines.append(f"images    {r['image_size']} px: {im.get('decoded', 0)} decoded, {im.get('missing', 0)} missing, {im.get('corrupt', 0)} corrupt ({im.get('policy')})")
    read = r.get("read") or {}
    if read:
        lines.append("read      " + ", ".join(f"{k} {v}" for k, v in read.items()))
    cleaned = r.get("cleaned") or {}
    if cleaned:
        lines.append("cleaned   " + ", ".join(f"{k} {v}" for k, v in cleaned.items()) + "  (HTML tags/entities, whitespace; raw titles kept in items_source.parquet)")
    lines.append(f"skipped   {r.get('skipped_total', 0)} in all")
    notes = r.get("notes") or {}
    for k, v in (r.get("skipped") or {}).items():
        lines.append(f"  {k:<30} {v:>9}" + (f"   {notes[k]}" if v and k in notes else ""))
    return "\n".join(lines)


_OUT = typer.Option(..., "--out", help="Catalog folder to create (must not exist or be empty).")
_JSON = typer.Option(False, "--json", help="Print the import report as JSON.")
_SEED = typer.Option(0, help="Seed of the train/validation/test split.")
_IMAGES = typer.Option(None, "--images", help="Folder of item images named <item_id>.<jpg|png|webp> (or by the image URL's file name).")
_SIZE = typer.Option(64, "--image-size", help="Side of the square decoded images (64 for the small CNN, 224 for VGG-16).")
_KEEP = typer.Option(False, "--keep-missing-images", help="Keep items whose image is missing/corrupt with a gray placeholder (default: drop them).")
_OVERWRITE = typer.Option(False, help="Replace an existing catalog at --out.")
_PROGRESS = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: only on a terminal).")
_LEVEL = typer.Option(0, "--category-level", help="Depth of the category path used as the item's category (0 = top level).")
_PERSONAL = typer.Option("also_bought", "--personal-relation", help="Relation carried by a user's consecutive purchases (u, i, j).")


@_command("amazon2014")
def amazon2014(
    meta: Path = typer.Option(..., "--meta", help="meta_<Cat>.json.gz: Python-literal lines (gzip or plain)."),
    reviews: Path = typer.Option(None, "--reviews", help="reviews_<Cat>.json.gz: users and personalized pairs."),
    features: Path = typer.Option(None, "--features", help="image_features_<Cat>.b: 10-byte ASIN + 4096 float32 per record."),
    images: Path = _IMAGES,
    image_size: int = _SIZE,
    out: Path = _OUT,
    as_json: bool = _JSON,
    seed: int = _SEED,
    keep_missing_images: bool = _KEEP,
    category_level: int = _LEVEL,
    personal_relation: str = _PERSONAL,
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Import Amazon 2014 product data (meta, optional reviews, .b features, images)."""
    from lrprec.data.amazon import import_amazon2014

    rep = import_amazon2014(meta, out, reviews=reviews, features=features, images=images, image_size=image_size,
                            keep_missing_images=keep_missing_images, category_level=category_level,
                            personal_relation=personal_relation, seed=seed, overwrite=overwrite, progress=progress)
    emit(rep, as_json, report_text)


@_command("amazon2018")
def amazon2018(
    meta: Path = typer.Option(..., "--meta", help="meta_<Cat>.json.gz: JSON lines (gzip or plain)."),
    reviews: Path = typer.Option(None, "--reviews", help="<Cat>.json.gz reviews: users and personalized pairs."),
    images: Path = _IMAGES,
    image_size: int = _SIZE,
    out: Path = _OUT,
    as_json: bool = _JSON,
    seed: int = _SEED,
    keep_missing_images: bool = _KEEP,
    category_level: int = _LEVEL,
    personal_relation: str = _PERSONAL,
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Import Amazon 2018 product data (meta, optional reviews, images)."""
    from lrprec.data.amazon import import_amazon2018

    rep = import_amazon2018(meta, out, reviews=reviews, images=images, image_size=image_size,
                            keep_missing_images=keep_missing_images, category_level=category_level,
                            personal_relation=personal_relation, seed=seed, overwrite=overwrite, progress=progress)
    emit(rep, as_json, report_text)


@_command("table")
def table(
    items: Path = typer.Option(..., "--items", help="items.csv|.parquet: item_id, category[, title][, image]."),
    relations: Path = typer.Option(..., "--relations", help="relations.csv|.parquet: item_i, item_j, relation[, user_id]."),
    images: Path = _IMAGES,
    image_size: int = _SIZE,
    out: Path = _OUT,
    as_json: bool = _JSON,
    seed: int = _SEED,
    keep_missing_images: bool = _KEEP,
    skip_unknown_relations: bool = typer.Option(False, "--skip-unknown-relations", help="Skip (and count) relation names outside the four known ones instead of failing."),
    overwrite: bool = _OVERWRITE,
    progress: bool = _PROGRESS,
) -> None:
    """Import the generic csv/parquet form (items + relations, optional images)."""
    from lrprec.data.tables import import_table

    rep = import_table(items, relations, out, images=images, image_size=image_size, keep_missing_images=keep_missing_images,
                       skip_unknown_relations=skip_unknown_relations, seed=seed, overwrite=overwrite, progress=progress)
    emit(rep, as_json, report_text)
