"""Heatmap figures: relevance overlays of both images of a pair, and BiLRP links between them.

Colours follow the LRP convention: red = positive relevance, blue = negative, on a
symmetric scale (the same for both images of a pair, so their maps are comparable), over
a greyed copy of the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lrprec.errors import UsageError
from lrprec.files import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def relevance_map(relevance: np.ndarray) -> np.ndarray:
    """(H, W) float64 relevance from (C, H, W) or (H, W) input relevance (summed over channels)."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == 3:
        r = r.sum(0)
    if r.ndim != 2:
        raise UsageError(f"a heatmap needs (C, H, W) or (H, W) relevance, got shape {r.shape}")
    return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)


def bwr(v: np.ndarray) -> np.ndarray:
    """matplotlib's ``bwr`` colour map on values in [-1, 1]: blue (-1), white (0), red (+1); uint8 (…, 3)."""
    v = np.clip(np.asarray(v, dtype=np.float64), -1.0, 1.0)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    return np.round(255 * rgb).astype(np.uint8)


def overlay(image: np.ndarray, relevance_hw: np.ndarray, vmax: float, alpha: float = 0.75) -> np.ndarray:
    """uint8 RGB: the image in grey under the relevance coloured with the symmetric :func:`bwr` map."""
    h, w = relevance_hw.shape
    img = np.asarray(image, np.float64)
    if img.shape[:2] != (h, w):
        from PIL import Image

        img = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float64)
    grey = img.mean(-1, keepdims=True).repeat(3, -1) / 255.0
    norm = np.clip(relevance_hw / (vmax or 1.0), -1, 1)
    colour = bwr(norm) / 255.0
    weight = alpha * np.abs(norm)[..., None]
    return np.clip(255 * ((1 - weight) * (0.35 + 0.65 * grey) + weight * colour), 0, 255).astype(np.uint8)


def pair_figure(
    image_a: np.ndarray, image_b: np.ndarray, relevance_a: np.ndarray, relevance_b: np.ndarray, path: Path,
    title: str = "", labels: tuple[str, str] = ("A", "B"),
) -> Path:
    """Save image A, heatmap A, image B, heatmap B side by side (one shared colour scale)."""
    plt = _plt()
    ra, rb = relevance_map(relevance_a), relevance_map(relevance_b)
    vmax = float(max(np.abs(ra).max(), np.abs(rb).max(), 1e-12))
    fig, axes = plt.subplots(1, 4, figsize=(8.8, 2.6), dpi=100)
    panels = [(image_a, f"{labels[0]}"), (overlay(image_a, ra, vmax), f"relevance {labels[0]} (Σ {ra.sum():.3g})"),
              (image_b, f"{labels[1]}"), (overlay(image_b, rb, vmax), f"relevance {labels[1]} (Σ {rb.sum():.3g})")]
    for ax, (im, t) in zip(axes, panels):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, fig.savefig)
    plt.close(fig)
    return path


def bilrp_figure(image_a: np.ndarray, image_b: np.ndarray, matrix: np.ndarray, grid: int, path: Path, n_links: int = 20, title: str = "") -> Path:
    """Draw the strongest BiLRP patch-to-patch links between the two images (red +, blue −)."""
    plt = _plt()
    m = np.asarray(matrix, np.float64)
    flat = np.argsort(-np.abs(m).ravel())[:n_links]
    h, w = image_a.shape[:2]
    gap = w // 4
    canvas = np.full((h, 2 * w + gap, 3), 255, np.uint8)
    canvas[:, :w] = image_a
    canvas[:, w + gap:] = image_b
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * h / (2 * w + gap) + 0.5), dpi=100)
    ax.imshow(canvas, interpolation="nearest")
    vmax = float(np.abs(m).max() or 1.0)
    cell_h, cell_w = h / grid, w / grid
    for f in flat:
        p, q = divmod(int(f), m.shape[1])
        ya, xa = (p // grid + 0.5) * cell_h, (p % grid + 0.5) * cell_w
        yb, xb = (q // grid + 0.5) * cell_h, (q % grid + 0.5) * cell_w + w + gap
        v = m.flat[f] / vmax
        ax.plot([xa, xb], [ya, yb], color="red" if v > 0 else "blue", alpha=min(1.0, 0.25 + abs(v)), linewidth=0.5 + 2.5 * abs(v))
        ax.plot([xa, xb], [ya, yb], "o", color="black", markersize=2)
    ax.axis("off")
    ax.set_title(title or f"BiLRP: the {len(flat)} strongest patch links", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, fig.savefig)
    plt.close(fig)
    return path


def contact_sheet(paths: list[Path], out: Path, columns: int = 1) -> Path:
    """Stack PNG figures into one image (the recommendation contact sheet)."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    if not ims:
        raise UsageError("nothing to put on a contact sheet")
    w = max(i.width for i in ims)
    rows = [ims[k:k + columns] for k in range(0, len(ims), columns)]
    heights = [max(i.height for i in r) for r in rows]
    sheet = Image.new("RGB", (w * columns, sum(heights)), "white")
    y = 0
    for r, hgt in zip(rows, heights):
        for c, im in enumerate(r):
            sheet.paste(im, (c * w, y))
        y += hgt
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, sheet.save)
    return out
