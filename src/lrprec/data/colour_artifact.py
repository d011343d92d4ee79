"""A global artifact estimated from image statistics: a per-channel affine colour transform (issue 26).

A localized artifact (a stamped mark) is pasted pixels; a global one — a colour cast, a brightness
or contrast change — is a transform of every pixel. This module estimates such a transform
between two groups of catalog images without being told what it is:

1. **Who carries it.** Each image is described by per-channel statistics (the 10/50/90% quantiles
   and the mean, :func:`image_descriptors`). A seed partition (an audit cluster's members, or a
   split along a principal axis of the descriptors) is refined by self-labelling: the Fisher
   discriminant of the two groups, each image to the side of the midpoint it falls on, until the
   partition is stable (:func:`self_label`). A global cast moves every descriptor of every carrier
   the same way, so the refinement snaps to it.
2. **What it does.** x ↦ a·x + b per channel, fitted by least squares between the quantiles of the
   carriers' and the others' pooled pixel values (:func:`fit_channel_affine`): a cast that mixes
   every pixel with a colour, (1 − α)·x + α·c, is exactly this map (a = 1 − α, b = α·c).

:class:`ColourTransform` is an :class:`~lrprec.data.watermark.Artifact`: ``stamp`` applies the map to
the images that do not carry it, ``remove`` inverts it on those that do, so counterfactual
augmentation (``lrprec correct``) uses it as the oracle uses the known artifact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrprec.errors import UsageError
from lrprec.data.watermark import Artifact

QUANTILES = np.linspace(0.05, 0.95, 19)  # the pixel-value quantiles the channel map is fitted on
MIN_SCALE = 0.2  # a channel map that squashes more than this is not an invertible cast
MIN_GROUP = 0.05  # each side of a partition holds at least this share of the images


def image_descriptors(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(n, 12) per-channel statistics of uint8 (n, H, W, 3) images: the 10/50/90% quantiles and the mean."""
    out = []
    for s in range(0, len(images), batch):
        x = np.asarray(images[s:s + batch], np.float32).reshape(-1, images.shape[1] * images.shape[2], 3)
        q = np.quantile(x, [0.1, 0.5, 0.9], axis=1).transpose(1, 0, 2).reshape(len(x), -1)
        out.append(np.concatenate([q, x.mean(1)], 1))
    return np.concatenate(out) if out else np.zeros((0, 12), np.float32)


def self_label(desc: np.ndarray, t: np.ndarray, iters: int = 20) -> np.ndarray:
    """Refine a 0/1 partition of descriptors (n, d): Fisher direction of the two groups, split at their midpoint, repeated
    until stable (at most ``iters`` times). Returns the last partition whose groups both hold ≥ 2 images."""
    z = (desc - desc.mean(0)) / (desc.std(0) + 1e-6)
    t = np.asarray(t, np.int64).copy()
    cov = np.cov(z.T) + 1e-3 * np.eye(z.shape[1])
    for _ in range(iters):
        if t.sum() < 2 or (1 - t).sum() < 2:
            break
        w = np.linalg.solve(cov, z[t == 1].mean(0) - z[t == 0].mean(0))
        s = z @ w
        new = (s > 0.5 * (s[t == 1].mean() + s[t == 0].mean())).astype(np.int64)
        if (new == t).all() or new.sum() < 2 or (1 - new).sum() < 2:
            break
        t = new
    return t


def fit_channel_affine(carriers: np.ndarray, others: np.ndarray, most: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (3,): the per-channel map x ↦ a·x + b that takes the others' pixel-value quantiles to the carriers'
    (least squares over :data:`QUANTILES`; at most ``most`` evenly spaced images per group)."""
    if len(carriers) == 0 or len(others) == 0:
        raise UsageError("the colour map needs images on both sides")
    pick = lambda x: np.asarray(x[np.linspace(0, len(x) - 1, min(most, len(x))).astype(np.int64)], np.float32)  # noqa: E731
    c, o = pick(carriers).reshape(-1, 3), pick(others).reshape(-1, 3)
    a, b = np.zeros(3), np.zeros(3)
    for k in range(3):
        a[k], b[k] = np.polyfit(np.quantile(o[:, k], QUANTILES), np.quantile(c[:, k], QUANTILES), 1)
    return a, b


@dataclass
class ColourTransform(Artifact):
    """A discovered global artifact: x ↦ clip(a·x + b) per channel on the images whose ``tags`` are 0 (``stamp``), its
    inverse (x − b)/a on those tagged 1 (``remove``); ``tags`` per catalog row."""

    kind: str = "colour"
    tags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scale: np.ndarray = field(default_factory=lambda: np.ones(3))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def apply(self, images: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.asarray(images, np.float32) * self.scale + self.shift), 0, 255).astype(np.uint8)

    def invert(self, images: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((np.asarray(images, np.float32) - self.shift) / self.scale), 0, 255).astype(np.uint8)

    def stamp(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        out = np.array(images, copy=True)
        todo = ~self._tagged(rows, len(out))
        out[todo] = self.apply(out[todo])
        return out

    def remove(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        out = np.array(images, copy=True)
        todo = self._tagged(rows, len(out))
        out[todo] = self.invert(out[todo])
        return out

    def carries(self, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(n,) bool: which of the catalog ``rows`` (``images`` their pixels) carry the cast."""
        return self._tagged(rows, len(images))

    def describe(self) -> dict:
        return {"kind": self.kind, "scale": [round(float(v), 4) for v in self.scale], "shift": [round(float(v), 2) for v in self.shift],
                "carriers": int(self.tags.sum()), "images": int(len(self.tags))}


def estimate_transform(images: np.ndarray, seed: np.ndarray, desc: np.ndarray | None = None) -> ColourTransform | None:
    """The colour transform between the carriers and the others of ``seed`` (0/1 per image) after self-labelling; None
    where a side holds under :data:`MIN_GROUP` of the images or a channel map is not invertible (a < :data:`MIN_SCALE`)."""
    desc = image_descriptors(images) if desc is None else desc
    if len(seed) != len(desc):
        raise UsageError(f"{len(desc)} images but {len(seed)} seed labels")
    t = self_label(desc, seed)
    if min(t.mean(), 1 - t.mean()) < MIN_GROUP:
        return None
    a, b = fit_channel_affine(images[np.flatnonzero(t == 1)], images[np.flatnonzero(t == 0)])
    if not np.all(np.isfinite(a)) or a.min() < MIN_SCALE:
        return None
    return ColourTransform(tags=t, scale=a, shift=b)


def seed_partitions(desc: np.ndarray, n_axes: int = 3) -> list[np.ndarray]:
    """Splits of the images at the median of each of the descriptors' first ``n_axes`` principal axes."""
    z = (desc - desc.mean(0)) / (desc.std(0) + 1e-6)
    u = np.linalg.svd(z - z.mean(0), full_matrices=False)[0]
    return [(u[:, k] > np.median(u[:, k])).astype(np.int64) for k in range(min(n_axes, u.shape[1]))]
