"""The embedded synthetic catalog (SPEC §5): product images whose relations follow from attributes.

Each item is a silhouette of one category (shirt, trousers, shoe, bag, hat) filled with a
colour and a pattern, carrying a small brand mark, on a cluttered grey background.
Relations follow from attributes, one attribute per relation, so explanations have a
known right answer:

=====================  ===========  ==========================================
relation               kind         related when
=====================  ===========  ==========================================
also_viewed            substitute   same category, same pattern
buy_after_viewing      substitute   same category, same brand
also_bought            complement   other category, same pattern (or the user's attribute)
bought_together        complement   other category, same brand (or the user's attribute)
=====================  ===========  ==========================================

Users differ in the attribute that drives their co-purchases (colour, pattern or brand),
so complements carrying a user need the personalized metric. Every image stores the
mask of attribute-carrying pixels (the silhouette and the mark). Deterministic per seed.

A *shortcut catalog* (``spurious = P > 0``, issue 9; ``spurious_kind = "mark"``) stamps a watermark — a small magenta
square in the top-left corner — on half of the items (tag 1; tag 0: no mark). A pair's
watermark "says related" when both or neither image carry it. On training pairs it agrees
with the label on a fraction P: positives have equal tags with probability P, and the
trainer's negatives have different tags with probability P (:func:`train_reject`).
Validation and test positives have equal tags exactly half of the time, as random pairs
(their negatives) do, so there it carries no signal.
Ground-truth masks exclude the watermark; its pixels are stored as
``shortcut_masks.npy``, the tags as ``shortcut_tags.npy``. (A first design gave every item
one of eight watermark colours and matched colours; the model ignored it — 0.1% of the
relevance — because the watermark's colour and the product's share the same colour
channels after global pooling. Presence of one colour that no product has is a clean cue;
at 8 px (of 64) one training seed in three still ignored it, at 12 px it is the easy way.)
With ``spurious_kind = "tint"`` (issue 26) the tag-1 items carry a global colour cast instead
(:func:`lrprec.data.watermark.tint_images`), a non-localized artifact with the same tags and
the same agreement; its ``shortcut_masks`` cover the whole image, the ground-truth masks stay.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from lrprec.data.catalog import RELATIONS
from lrprec.data.rules import RELATION_ATTRIBUTE, SAME_CATEGORY, SHORTCUT_TAGS, truth_reject
from lrprec.data.watermark import ARTIFACT_KINDS, WATERMARK_RGB, tint_images, watermark_box
from lrprec.data.writer import write_catalog
from lrprec.errors import UsageError

CATEGORIES = ("shirt", "trousers", "shoe", "bag", "hat")
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 205, 40),
    "purple": (150, 50, 190), "orange": (245, 130, 20), "teal": (20, 170, 170), "pink": (245, 120, 190),
}
PATTERNS = ("plain", "stripes", "checks", "dots")
BRANDS = ("square", "circle", "triangle", "cross")
ATTRIBUTES = ("category", "color", "pattern", "brand")
# Which attribute decides each relation, and the shortcut tags: lrprec.data.rules.
USER_ATTRIBUTES = (1, 2, 3)  # a user's co-purchases follow colour, pattern or brand


@dataclass
class SynthConfig:
    """Size of the generated catalog; defaults are what the demo and the acceptance figures use."""

    items: int = 2000
    users: int = 6
    image_size: int = 64
    pairs_per_relation: int = 2000
    personal_share: float = 0.5  # share of complement positives that carry a user
    seed: int = 0
    spurious: float = 0.0  # P: watermark/label agreement on training pairs (0: no watermark)
    spurious_kind: str = "mark"  # the artifact: "mark" (corner watermark) or "tint" (global colour cast)
    # Near-duplicate variants (issue 31): items come in groups of ``variants`` listings of one look
    # (same attributes, one drawing), each with Gaussian pixel noise of this standard deviation (0-255 scale)
    variants: int = 1
    variant_noise: float = 0.0


# ---- drawing ---------------------------------------------------------------------------------
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    return yy / s, xx / s


def _silhouette(cat: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a product shape, jittered in scale and position."""
    y, x = _grid(s)
    sc = rng.uniform(0.85, 1.05)
    cy, cx = 0.5 + rng.uniform(-0.06, 0.06), 0.5 + rng.uniform(-0.06, 0.06)
    y = (y - cy) / sc
    x = (x - cx) / sc
    name = CATEGORIES[cat]
    if name == "shirt":
        body = (np.abs(x) < 0.2) & (y > -0.25) & (y < 0.32)
        sleeves = (np.abs(x) < 0.36) & (y > -0.25) & (y < -0.02) & (np.abs(x) - 0.2 < (y + 0.25) * 1.2)
        neck = (x ** 2 + (y + 0.27) ** 2) < 0.07 ** 2
        return (body | sleeves) & ~neck
    if name == "trousers":
        waist = (np.abs(x) < 0.2) & (y > -0.34) & (y < -0.2)
        legs = (y >= -0.2) & (y < 0.36) & (np.abs(x) < 0.2) & (np.abs(x) > 0.03)
        return waist | legs
    if name == "shoe":
        ankle = (x > -0.22) & (x < -0.02) & (y > -0.25) & (y < 0.15)
        foot = (x > -0.22) & (x < 0.32) & (y >= 0.0) & (y < 0.18) & ((x - 0.32) ** 2 / 0.3 + (y - 0.18) ** 2 / 0.03 < 1.2)
        sole = (x > -0.24) & (x < 0.34) & (y >= 0.15) & (y < 0.2)
        return ankle | foot | sole
    if name == "bag":
        body = (np.abs(x) < 0.27) & (y > -0.08) & (y < 0.3)
        r = np.sqrt(x ** 2 + (y + 0.08) ** 2)
        handle = (r < 0.2) & (r > 0.14) & (y < -0.08)
        return body | handle
    # hat
    dome = (x ** 2 / 0.2 ** 2 + (y - 0.08) ** 2 / 0.22 ** 2 < 1) & (y < 0.08)
    brim = (np.abs(x) < 0.34) & (y >= 0.06) & (y < 0.13)
    return dome | brim


def _pattern(p: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the pattern's dark pixels (period scales with the image)."""
    yy, xx = np.mgrid[0:s, 0:s]
    period = max(6, s // 6)
    off = int(rng.integers(period))
    name = PATTERNS[p]
    if name == "plain":
        return np.zeros((s, s), bool)
    if name == "stripes":
        return ((yy + off) % period) < period // 2
    if name == "checks":
        return (((yy + off) // (period // 2 + 1)) + ((xx + off) // (period // 2 + 1))) % 2 == 0
    r = period / 4.5
    return ((yy + off) % period - period / 2) ** 2 + ((xx + off) % period - period / 2) ** 2 < r ** 2


def _mark(b: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """A brand mark of side m: (shape mask, is_white)."""
    m = max(8, round(s * 0.25))
    yy, xx = np.mgrid[0:m, 0:m] / (m - 1) * 2 - 1
    name = BRANDS[b]
    if name == "square":
        shape = (np.abs(yy) < 0.85) & (np.abs(xx) < 0.85)
    elif name == "circle":
        shape = yy ** 2 + xx ** 2 < 0.9
    elif name == "triangle":
        shape = (yy > -0.9) & (yy < 0.9) & (np.abs(xx) < (yy + 0.9) / 1.8)
    else:
        shape = (np.abs(yy) < 0.3) | (np.abs(xx) < 0.3)
    return shape, np.full(shape.shape, b % 2 == 0)


def _background(s: int, rng: np.random.Generator) -> np.ndarray:
    """Grey clutter: random rectangles, discs and lines in low-saturation tones, plus noise."""
    base = rng.uniform(95, 165)
    img = np.full((s, s, 3), base, np.float32)
    yy, xx = np.mgrid[0:s, 0:s]
    for _ in range(int(rng.integers(4, 9))):
        tone = rng.uniform(60, 200) + rng.uniform(-12, 12, size=3)
        kind = rng.integers(3)
        y0, x0 = rng.integers(0, s, size=2)
        if kind == 0:
            h, w = rng.integers(s // 10, s // 3, size=2)
            sel = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        elif kind == 1:
            r = rng.uniform(s / 16, s / 6)
            sel = (yy - y0) ** 2 + (xx - x0) ** 2 < r ** 2
        else:
            ang = rng.uniform(0, np.pi)
            sel = np.abs((yy - y0) * np.cos(ang) - (xx - x0) * np.sin(ang)) < max(1.0, s / 64)
        img[sel] = tone
    img += rng.normal(0, 6, size=img.shape)
    return img


def render_item(attrs: np.ndarray, s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one item: uint8 (s, s, 3) image and uint8 (s, s) ground-truth mask."""
    cat, color, pattern, brand = (int(a) for a in attrs)
    img = _background(s, rng)
    sil = _silhouette(cat, s, rng)
    rgb = np.asarray(list(COLORS.values())[color], np.float32)
    shade = rng.uniform(0.9, 1.1)
    fill = np.broadcast_to(np.clip(rgb * shade, 0, 255), img.shape).copy()
    # The pattern is drawn as a light tint of the item's colour: strong luminance contrast,
    # colour still recognisable, and pattern visible to a network from the first epoch.
    light = _pattern(pattern, s, rng)
    fill[light] = 0.3 * fill[light] + 0.7 * 255.0
    img[sil] = fill[sil]
    mask = sil.copy()
    shape, white = _mark(brand, s)
    m = shape.shape[0]
    ys, xs = np.nonzero(sil)
    k = int(rng.integers(len(ys)))
    y0 = int(np.clip(ys[k] - m // 2, 0, s - m))
    x0 = int(np.clip(xs[k] - m // 2, 0, s - m))
    patch = img[y0:y0 + m, x0:x0 + m]
    patch[shape & white] = 250.0
    patch[shape & ~white] = 15.0
    mask[y0:y0 + m, x0:x0 + m] |= shape
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _variant(image: np.ndarray, mask: np.ndarray, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Another listing of the same look: the same drawing and mask, with Gaussian pixel noise of std ``noise``."""
    if noise <= 0:
        return image.copy(), mask.copy()
    return np.clip(image.astype(np.float32) + rng.normal(0, noise, size=image.shape), 0, 255).astype(np.uint8), mask.copy()


def stamp_watermark(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Draw the watermark on ``image`` in place, remove it from ``mask``; returns the watermark's mask."""
    s = image.shape[0]
    o, m = watermark_box(s)
    image[o:o + m, o:o + m] = WATERMARK_RGB
    mark = np.zeros((s, s), np.uint8)
    mark[o:o + m, o:o + m] = 1
    mask[mark == 1] = 0
    return mark


# ---- relations ---------------------------------------------------------------------------------
def _sample_pairs(attrs: np.ndarray, rel: str, n: int, key_attr: np.ndarray, users: np.ndarray, rng: np.random.Generator,
                  tags: np.ndarray | None = None, same_tag: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """n distinct unordered pairs (i, j, user) satisfying a relation's rule for each row's attribute.

    With ``tags``, row k's partner has i's tag where ``same_tag[k] == 1``, another tag where
    it is 0, and any tag where it is -1.
    """
    cat = attrs[:, 0]
    same_cat = SAME_CATEGORY[rel]
    seen: set[tuple[int, int, int]] = set()
    out: list[tuple[int, int, int]] = []
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        attempts += 1
        k = len(out)
        u = int(users[k])
        a = int(key_attr[k])
        i = int(rng.integers(len(attrs)))
        ok = (attrs[:, a] == attrs[i, a]) & ((cat == cat[i]) if same_cat else (cat != cat[i]))
        if tags is not None and same_tag is not None and same_tag[k] >= 0:
            ok &= (tags == tags[i]) == bool(same_tag[k])
        ok[i] = False
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        j = int(cand[rng.integers(cand.size)])
        key = (min(i, j), max(i, j), u)
        if key in seen:
            continue
        seen.add(key)
        out.append((i, j, u))
    return out


def _write_with_pngs(images: np.ndarray, ids: list[str], out: str | os.PathLike, **kwargs) -> Path:
    """``write_catalog`` with one PNG per item under ``images/``, written to a temporary folder
    that is removed on every path (success, error, KeyboardInterrupt)."""
    tmp_png = Path(tempfile.mkdtemp(prefix="lrprec-synth-png-"))
    try:
        for k in range(len(ids)):
            buf = io.BytesIO()
            Image.fromarray(images[k]).save(buf, format="PNG", optimize=False)
            (tmp_png / f"{ids[k]}.png").write_bytes(buf.getvalue())
        return write_catalog(out, files={"images": tmp_png}, **kwargs)
    finally:
        shutil.rmtree(tmp_png, ignore_errors=True)  # moved into the catalog on success: nothing left to remove


def generate(out: str | os.PathLike, config: SynthConfig = SynthConfig(), overwrite: bool = False, progress: bool = True) -> Path:
    """Generate a synthetic catalog into ``out`` (atomically). Same config ⇒ byte-identical files."""
    if config.items < 20 or config.image_size < 16 or config.users < 0 or config.pairs_per_relation < 10:
        raise UsageError("synth needs at least 20 items, image size >= 16, users >= 0 and 10 pairs per relation")
    if config.variants < 1 or config.variant_noise < 0:
        raise UsageError(f"--variants must be >= 1 and --variant-noise >= 0, got {config.variants} and {config.variant_noise}")
    if not 0.0 <= config.spurious <= 1.0:
        raise UsageError(f"--spurious is a fraction of training pairs in [0, 1], got {config.spurious}")
    if config.spurious_kind not in ARTIFACT_KINDS:
        raise UsageError(f"--spurious-kind must be one of {', '.join(ARTIFACT_KINDS)}, got {config.spurious_kind!r}")
    shortcut = config.spurious > 0
    rng = np.random.default_rng(config.seed)
    n, s = config.items, config.image_size
    looks = -(-n // config.variants)  # one look per group of variants (every item its own look by default)
    attrs = np.stack([
        rng.integers(len(CATEGORIES), size=looks), rng.integers(len(COLORS), size=looks),
        rng.integers(len(PATTERNS), size=looks), rng.integers(len(BRANDS), size=looks),
    ], axis=1).astype(np.int64)
    look_of = np.arange(n) // config.variants
    attrs = attrs[look_of]
    user_attr = np.asarray([USER_ATTRIBUTES[u % len(USER_ATTRIBUTES)] for u in range(config.users)], np.int64)
    user_ids = [f"U{u + 1:03d}" for u in range(config.users)]

    # A shortcut catalog draws tags, split and tag agreement from a stream of its own, so its
    # items (attributes, drawings) are those of the catalog without the watermark.
    srng = np.random.default_rng([config.seed, 2]) if shortcut else None
    tags = srng.integers(SHORTCUT_TAGS, size=n) if srng is not None else None
    rows: list[tuple[int, int, str, int]] = []
    split_of: list[int] = []
    for rel in RELATIONS:
        m = config.pairs_per_relation
        users = np.full(m, -1, np.int64)
        key_attr = np.full(m, RELATION_ATTRIBUTE[rel], np.int64)
        if not SAME_CATEGORY[rel] and config.users > 0:
            n_personal = int(round(config.personal_share * m))
            users[:n_personal] = rng.integers(config.users, size=n_personal)
            key_attr[:n_personal] = user_attr[users[:n_personal]]
        same_tag = slot_split = None
        if srng is not None:
            # the split is fixed here (80/10/10 of the slots) so that only training pairs follow the tags
            slot_split = np.zeros(m, np.int8)
            order = srng.permutation(m)
            n_train, n_val = int(round(0.8 * m)), int(round(0.1 * m))
            slot_split[order[n_train:n_train + n_val]] = 1
            slot_split[order[n_train + n_val:]] = 2
            # training: equal tags w.p. P; validation/test: exactly half equal (a random pair's rate), so no signal
            same_tag = (srng.random(m) < config.spurious).astype(np.int8)
            for k in (1, 2):
                idx = np.flatnonzero(slot_split == k)
                same_tag[idx] = srng.permutation(np.arange(idx.size) % 2)
        for k, (i, j, u) in enumerate(_sample_pairs(attrs, rel, m, key_attr, users, rng, tags, same_tag)):
            rows.append((i, j, rel, u))
            if slot_split is not None:
                split_of.append(int(slot_split[k]))

    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.empty((n, s, s), np.uint8)
    item_rngs = np.random.SeedSequence([config.seed, 1]).spawn(n)
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="drawing items", unit="img", leave=False)
    shortcut_masks = np.zeros((n, s, s), np.uint8) if tags is not None else None
    for k in it:
        if config.variants > 1 and k > 0 and look_of[k] == look_of[k - 1]:
            images[k], masks[k] = _variant(images[k - 1], masks[k - 1], config.variant_noise, np.random.default_rng(item_rngs[k]))
        else:
            images[k], masks[k] = render_item(attrs[k], s, np.random.default_rng(item_rngs[k]))
        if tags is not None and shortcut_masks is not None and tags[k] == 1:
            if config.spurious_kind == "tint":  # the whole image carries the cast; the product's mask stays
                images[k] = tint_images(images[k][None])[0]
                shortcut_masks[k] = 1
            else:
                shortcut_masks[k] = stamp_watermark(images[k], masks[k])

    ids = [f"SYN{k:05d}" for k in range(n)]
    color_names = list(COLORS)
    titles = [f"{color_names[a[1]]} {PATTERNS[a[2]]} {CATEGORIES[a[0]]}, {BRANDS[a[3]]} brand" for a in attrs]
    relations = pa.table({
        "item_a": pa.array([ids[i] for i, _, _, _ in rows], pa.string()),
        "item_b": pa.array([ids[j] for _, j, _, _ in rows], pa.string()),
        "relation": pa.array([r for _, _, r, _ in rows], pa.string()),
        "user": pa.array([user_ids[u] if u >= 0 else "" for _, _, _, u in rows], pa.string()),
    })
    # catalogs without a shortcut or variants (and mark catalogs, made before kinds existed) keep their fingerprint
    defaults = {"spurious": 0.0, "spurious_kind": "mark", "variants": 1, "variant_noise": 0.0}
    fields = {k: v for k, v in vars(config).items() if k not in defaults or v != defaults[k]}
    # splits v2: the truth veto follows the rules' category condition, and random-protocol negatives are stored
    fingerprint = hashlib.sha256(repr(sorted(fields.items()) + [("splits", 2)]).encode()).hexdigest()[:16]
    meta = {
        "name": f"synthetic-{config.seed}",
        "source": "synthetic",
        "config": {k: v for k, v in vars(config).items() if k != "spurious_kind" or v != "mark"},
        "fingerprint": fingerprint,
        "attribute_names": list(ATTRIBUTES),
        "attribute_values": {"category": list(CATEGORIES), "color": color_names, "pattern": list(PATTERNS), "brand": list(BRANDS)},
        "user_attribute": user_attr.tolist(),
        "relation_attribute": RELATION_ATTRIBUTE,
    }
    arrays = {"images": images, "masks": masks, "attributes": attrs}
    if tags is not None and shortcut_masks is not None:
        meta["shortcut"] = {"agreement": config.spurious, "tags": SHORTCUT_TAGS, "box": list(watermark_box(s))}
        if config.spurious_kind != "mark":  # mark catalogs stay byte-identical to those made before kinds existed
            meta["shortcut"].update(kind=config.spurious_kind, box=[0, s])
        arrays.update(shortcut_masks=shortcut_masks, shortcut_tags=tags.astype(np.int64))
    return _write_with_pngs(
        images, ids,
        out,
        items={"item_id": ids, "category": [CATEGORIES[a[0]] for a in attrs], "title": titles, "image": [f"images/{i}.png" for i in ids]},
        relations=relations,
        users=user_ids,
        meta=meta,
        arrays=arrays,
        split_seed=config.seed,
        overwrite=overwrite,
        reject=truth_reject(attrs, user_attr),
        split_assignment=np.asarray(split_of, np.int8) if shortcut else None,
    )

