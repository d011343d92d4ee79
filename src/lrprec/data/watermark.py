"""The shortcut catalog's watermark as pixels: where it sits, and images with it stamped or removed.

Shared by the generator (:mod:`lrprec.data.synthetic`), counterfactual augmentation in training and
the shortcut report's counterfactual tests, so neither consults the generator.
"""
from __future__ import annotations

import numpy as np

from lrprec.errors import UsageError

WATERMARK_RGB = (255, 0, 255)  # magenta: no product, pattern, brand mark or background has it


def watermark_box(s: int) -> tuple[int, int]:
    """(offset, side) of the shortcut watermark: a square in the top-left corner, clear of the products."""
    return max(1, s // 32), max(4, 3 * s // 16)


def unmarked_image(images: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """The first item without the watermark (tag 0): its background fills a removed mark."""
    return np.array(images[int(np.flatnonzero(tags == 0)[0])])


def counterfactual_images(images: np.ndarray, mark: bool, fill: np.ndarray | None = None) -> np.ndarray:
    """Copies of uint8 (n, H, W, 3) images with the watermark stamped (``mark``) or removed.

    Removal pastes the watermark's box from ``fill`` (an unmarked catalog image: the same
    cluttered background the generator draws there), so the removed image looks like one that
    never carried the mark; the product pixels are never touched (the box is clear of them).
    """
    out = np.array(images, copy=True)
    o, m = watermark_box(out.shape[1])
    if mark:
        out[:, o:o + m, o:o + m] = WATERMARK_RGB
    else:
        if fill is None:
            raise UsageError("removing the mark needs an unmarked image to take the background from")
        out[:, o:o + m, o:o + m] = fill[o:o + m, o:o + m]
    return out
