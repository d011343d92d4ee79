"""The shortcut catalog's artifact as pixels: where it sits, and images with it stamped or removed.

Two kinds (``lrprec synth --spurious-kind``): ``mark``, a magenta square in the top-left corner,
and ``tint``, a global colour cast over the whole image (:func:`tint_images`; a non-localized
artifact). Shared by the generator (:mod:`lrprec.data.synthetic`), counterfactual augmentation
in training and the shortcut report's counterfactual tests, so neither consults the generator.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrprec.errors import UsageError

WATERMARK_RGB = (255, 0, 255)  # magenta: no product, pattern, brand mark or background has it
ARTIFACT_KINDS = ("mark", "tint")
# The tint: every pixel mixed with this colour at this weight, x' = (1 − α)·x + α·c (rounded). A
# convex mix never clips, so the cast is undone to within one grey level (:func:`untint_images`).
TINT_RGB = (255, 60, 200)
TINT_ALPHA = 0.25


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


def tint_images(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) images with the global colour cast: (1 − α)·x + α·c, rounded."""
    x = np.asarray(images, np.float32)
    return np.rint((1 - TINT_ALPHA) * x + TINT_ALPHA * np.asarray(TINT_RGB, np.float32)).astype(np.uint8)


def untint_images(images: np.ndarray) -> np.ndarray:
    """The inverse of :func:`tint_images` (exact to within one grey level per channel)."""
    x = (np.asarray(images, np.float32) - TINT_ALPHA * np.asarray(TINT_RGB, np.float32)) / (1 - TINT_ALPHA)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass
class Artifact:
    """A shortcut catalog's artifact: its kind, the items' tags (1: carries it) and, for the mark,
    an unmarked image whose background fills a removed mark. ``stamp``/``remove`` give the
    counterfactual images; a tint is applied to an image only where it is not already tinted
    (``tagged``: which of the images carry it), and removed only where it is."""

    kind: str
    tags: np.ndarray
    fill: np.ndarray | None = None

    def stamp(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Copies of uint8 (n, H, W, 3) ``images`` carrying the artifact (``rows``: their catalog rows, needed for a tint).

        Raises UsageError for a tint without ``rows`` or with rows of another length."""
        if self.kind == "mark":
            return counterfactual_images(images, True)
        out = np.array(images, copy=True)
        todo = ~self._tagged(rows, len(out))
        out[todo] = tint_images(out[todo])
        return out

    def remove(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Copies of uint8 (n, H, W, 3) ``images`` without the artifact (a mark filled from ``fill``; a tint undone).

        Raises UsageError for a tint without ``rows`` or with rows of another length, or a mark without ``fill``."""
        if self.kind == "mark":
            return counterfactual_images(images, False, self.fill)
        out = np.array(images, copy=True)
        todo = self._tagged(rows, len(out))
        out[todo] = untint_images(out[todo])
        return out

    def _tagged(self, rows: np.ndarray | None, n: int) -> np.ndarray:
        if rows is None:
            raise UsageError("the tint is applied/removed per item: give the images' catalog rows")
        rows = np.asarray(rows, np.int64)
        if rows.shape != (n,):
            raise UsageError(f"{n} images but {rows.shape} rows")
        return self.tags[rows] == 1


def artifact_kind(meta: dict) -> str:
    """The artifact kind of a catalog's metadata (``mark`` for catalogs made before kinds existed)."""
    return str((meta.get("shortcut") or {}).get("kind", "mark"))


def catalog_artifact(root: str | os.PathLike, meta: dict, images: np.ndarray) -> Artifact:
    """The :class:`Artifact` of a shortcut catalog (its folder, metadata and images)."""
    tags = np.load(Path(root) / "shortcut_tags.npy")
    kind = artifact_kind(meta)
    return Artifact(kind, tags, unmarked_image(images, tags) if kind == "mark" else None)
