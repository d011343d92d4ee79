"""The batches of one epoch as ready model inputs (DataLoader workers prepare them), and the epoch's step count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lrprec.data.catalog import Pairs
from lrprec.data.watermark import Artifact, counterfactual_images
from lrprec.evaluate.localization import resize_masks
from lrprec.model.backbones import preprocess
from lrprec.train.config import TrainConfig
from lrprec.train.ranking_loss import rank_candidates


class _Norm:
    """The two attributes :func:`preprocess` reads from a backbone (picklable, for worker processes)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean, self.std = tuple(mean), tuple(std)


class _EpochBatches(torch.utils.data.Dataset):
    """This rank's share of each global batch of one epoch, as ready model inputs.

    Item ``k`` is global batch ``first + k``: positions ``[s, s + B)`` of the epoch's shuffled
    pairs, of which this rank takes every ``world``-th (``[rank::world]``). Shares are disjoint
    across ranks and together are exactly the single-process batch, which is what makes a DDP
    run equal a one-process run with the same (global) batch size. One item is a whole batch,
    so DataLoader workers gather from the image memmap, resize, normalize and flip whole
    batches ahead of the training step. Flips come from ``(seed, epoch, step)`` alone, so
    they do not depend on the number of workers or processes, nor on a resume.
    """

    def __init__(self, pairs: Pairs, batch_size: int, n_steps: int, first: int, rank: int, world: int,
                 images_path: Path | None, norm: _Norm | None, input_size: int | None, augment_key: tuple[int, int] | None,
                 masks_path: Path | None = None, related=None, mark_augment: tuple | None = None,
                 forbid_masks: bool = False):
        self.pairs, self.batch_size, self.n_steps, self.first = pairs, batch_size, n_steps, first
        self.related = related  # (a, b, r, u) -> bool, broadcasting: the ranking loss's candidate veto
        self.rank, self.world = rank, world
        self.images_path, self.norm, self.input_size, self.augment_key = images_path, norm, input_size, augment_key
        self.masks_path = masks_path  # masks ride along as "allowed" (guided training) ...
        self.forbid_masks = forbid_masks  # ... or, when True, as the forbidden region (allowed = the rest)
        # counterfactual augmentation: (probability, the catalog's Artifact or an unmarked image to take the mark's background
        # from, (seed, epoch)), and for a discovered artifact a 4th element (mask (H, W) bool, pixels (H, W, 3) uint8) stamped
        # instead of the watermark
        self.mark_augment = mark_augment
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n_steps - self.first

    def _load(self, rows: np.ndarray, marks: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
        """Model inputs of image rows; ``marks`` = (stamp, remove) masks over the rows re-draw the watermark."""
        if self._images is None:  # opened lazily: each worker maps the file itself
            self._images = np.load(self.images_path, mmap_mode="r")
        if marks is not None and (marks[0].any() or marks[1].any()):
            images = np.array(self._images[rows])
            stamp, remove = marks
            if len(self.mark_augment) > 3:  # a discovered artifact (lrprec correct --method augment): (mask, pixels) pasted
                mask, pixels = self.mark_augment[3]  # type: ignore[misc]
                images[stamp] = np.where(mask[..., None], pixels, images[stamp])
                images[remove] = np.where(mask[..., None], self.mark_augment[1], images[remove])  # type: ignore[index]
                return preprocess(images, self.norm, self.input_size)  # type: ignore[arg-type]
            artifact = self.mark_augment[1]  # type: ignore[index]
            if isinstance(artifact, Artifact):  # a known mark or tint (issue 26)
                images[stamp] = artifact.stamp(images[stamp], rows[stamp])
                images[remove] = artifact.remove(images[remove], rows[remove])
            else:  # an unmarked image: the watermark's fill
                images[stamp] = counterfactual_images(images[stamp], True)
                images[remove] = counterfactual_images(images[remove], False, artifact)
            return preprocess(images, self.norm, self.input_size)  # type: ignore[arg-type]
        uniq, inv = np.unique(rows, return_inverse=True)
        return preprocess(self._images[uniq], self.norm, self.input_size)[torch.from_numpy(inv)]  # type: ignore[arg-type]

    def _marks(self, step: int, n_global: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Which of this rank's images get the mark stamped / removed: coins of the global batch from (seed, epoch, step)."""
        if self.mark_augment is None or self.mark_augment[0] <= 0:
            return None
        coins = np.random.default_rng([*self.mark_augment[2], step, 1]).random((2, 2 * n_global))
        pick = np.concatenate([pos, n_global + pos])
        redraw, stamp = coins[0][pick] < self.mark_augment[0], coins[1][pick] < 0.5
        return redraw & stamp, redraw & ~stamp

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step = self.first + k
        start = step * self.batch_size
        n_global = min(self.batch_size, len(self.pairs) - start)
        pos = np.arange(self.rank, n_global, self.world)
        b = self.pairs.take(start + pos)
        out = {
            "a": torch.from_numpy(b.a), "b": torch.from_numpy(b.b), "rel": torch.from_numpy(b.relation),
            "user": torch.from_numpy(b.user), "label": torch.from_numpy(b.label.astype(np.float32)),
            "n_global": torch.tensor(n_global),
        }
        if self.related is not None:
            out["rank_mask"] = torch.from_numpy(rank_candidates(b, self.related))
        if self.images_path is not None:
            rows = np.concatenate([b.a, b.b])
            x = self._load(rows, self._marks(step, n_global, pos))
            allowed = None
            if self.masks_path is not None:
                if self._masks is None:
                    self._masks = np.load(self.masks_path, mmap_mode="r")
                inside = resize_masks(self._masks[rows], x.shape[-2], x.shape[-1])
                allowed = (~inside if self.forbid_masks else inside).float()
            if self.augment_key is not None:
                flip_global = np.random.default_rng([*self.augment_key, step]).random(2 * n_global) < 0.5
                flip = torch.from_numpy(np.concatenate([flip_global[pos], flip_global[n_global + pos]]))
                x[flip] = x[flip].flip(-1)
                if allowed is not None:
                    allowed[flip] = allowed[flip].flip(-1)
            out["x"] = x
            if allowed is not None:
                out["allowed"] = allowed
        return out


def _n_steps(n_pairs: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps in an epoch of ``n_pairs``: ceil(n / B), minus a last global batch too
    small to give every rank a pair (multi-process only), capped by ``steps_per_epoch``."""
    n = -(-n_pairs // cfg.batch_size)
    if world > 1 and n and n_pairs - (n - 1) * cfg.batch_size < world:
        n -= 1
    return min(n, cfg.steps_per_epoch) if cfg.steps_per_epoch else n
