"""Small PNG renderers for the web pages: item images, relevance overlays and BiLRP links.

Kept here (not in :mod:`lrprec.explain`) because the web app wants bytes of a fixed,
browser-friendly size, not figures: numpy + Pillow only, no matplotlib state, safe to
call from several request threads at once.

Colour scale (SPEC §3), shared with the report's figures (:mod:`lrprec.explain.render`): red
positive, blue negative, white zero, symmetric around zero (the ``bwr`` map), scaled by the
largest absolute relevance of the map (or a shared ``scale`` so two maps of one pair are comparable).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from lrprec.explain.render import bwr, relevance_map  # noqa: F401 (the one colour scale; re-exported)

#: Side, in pixels, of every rendered image (small catalog images are upscaled, blocky on purpose).
DISPLAY = 192


def png_bytes(img: Image.Image) -> bytes:
    """Encode a Pillow image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) copy of an image array (grayscale and RGBA are converted)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize(image: np.ndarray, size: int = DISPLAY) -> Image.Image:
    """An RGB image as a ``size``×``size`` Pillow image: nearest-neighbour up, area-average down."""
    img = Image.fromarray(to_rgb(image))
    if img.size == (size, size):
        return img
    method = Image.NEAREST if img.width < size else Image.BOX
    return img.resize((size, size), method)


def item_png(image: np.ndarray, size: int = DISPLAY) -> bytes:
    """An item image as PNG at ``size`` pixels."""
    return png_bytes(resize(image, size))


def heatmap_png(relevance: np.ndarray, image: np.ndarray | None = None, scale: float | None = None,
                size: int = DISPLAY, image_weight: float = 0.45) -> bytes:
    """Relevance in ``bwr`` colours multiplied onto a faded grayscale copy of the image, PNG bytes.

    Where relevance is zero the image shows through in gray; strong relevance stays
    saturated red or blue. ``scale`` is the relevance mapped to full colour (default: the
    map's max |R|), so two maps rendered with the same scale can be compared by eye.
    """
    r = relevance_map(relevance)
    s = float(np.abs(r).max()) if scale is None else float(scale)
    colours = bwr(r / s if s > 0 else np.zeros_like(r)).astype(np.float64)
    if image is not None:
        gray = np.asarray(Image.fromarray(to_rgb(image)).convert("L").resize((r.shape[1], r.shape[0]), Image.BILINEAR), np.float64)
        colours = colours * (1 - image_weight + image_weight * gray[..., None] / 255.0)
    out = Image.fromarray(np.clip(np.round(colours), 0, 255).astype(np.uint8))
    return png_bytes(out.resize((size, size), Image.NEAREST) if out.size != (size, size) else out)


def links_png(image_a: np.ndarray, image_b: np.ndarray, links: list[tuple[int, int, float]], grid: int,
              size: int = DISPLAY, gap: int = 64) -> bytes:
    """Both images side by side with the BiLRP links drawn between patch centres, PNG bytes.

    ``links`` are ``(patch_a, patch_b, value)`` with patches numbered row-major on a
    ``grid``×``grid`` grid; red for positive, blue for negative, wider and more opaque
    the stronger the link relative to the strongest one.
    """
    canvas = Image.new("RGB", (2 * size + gap, size), (255, 255, 255))
    canvas.paste(resize(image_a, size), (0, 0))
    canvas.paste(resize(image_b, size), (size + gap, 0))
    if not links:
        return png_bytes(canvas)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    top = max(abs(v) for _, _, v in links) or 1.0
    cell = size / grid

    def centre(p: int, x0: float) -> tuple[float, float]:
        row, col = divmod(int(p), grid)
        return x0 + (col + 0.5) * cell, (row + 0.5) * cell

    for p, q, v in sorted(links, key=lambda t: abs(t[2])):  # strongest drawn last, on top
        w = abs(v) / top
        colour = (220, 30, 30) if v >= 0 else (30, 60, 220)
        alpha = int(round(60 + 195 * w))
        (xa, ya), (xb, yb) = centre(p, 0.0), centre(q, float(size + gap))
        draw.line([(xa, ya), (xb, yb)], fill=colour + (alpha,), width=max(1, int(round(1 + 3 * w))))
        for x, y in ((xa, ya), (xb, yb)):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour + (alpha,), width=2)
    canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    return png_bytes(canvas)
