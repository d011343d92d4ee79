"""End-to-end training of the pair model (SPEC §2 objective) with per-epoch negative resampling.

Maximizes Σ_R log σ(c − d) + Σ_Q log(1 − σ(c − d)) with |Q| = |R| fresh negatives every
epoch, Adam, validation accuracy each epoch, the best epoch's weights kept. With a frozen
backbone ([M15] setting) the features are computed once and only the head trains.

Scale-out and robustness (issue 8): the same loop runs as one process or as a rank of a
``torchrun`` DDP job (``torchrun --nproc-per-node N -m lrprec train ...``; helpers in
:mod:`lrprec.train.distributed`), batches are prepared by DataLoader workers from the image
memmap, bf16 autocast is optional, and checkpoints (:mod:`lrprec.train.checkpoint`) let
``--resume`` continue a killed run to the exact weights of an uninterrupted one.
Explanation-guided training (issue 9) adds a relevance penalty: :mod:`lrprec.train.guidance`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs, relation_index
from lrprec.data.features import LazyFeatures
from lrprec.data.rules import train_reject
from lrprec.data.sampling import NegativeSampler, check_protocol, parse_mix
from lrprec.data.splits import protocol_pairs
from lrprec.errors import UsageError
from lrprec.evaluate.localization import resize_masks
from lrprec.explain.composites import DEFAULT_COMPOSITE
from lrprec.model.backbones import hub_vgg16_weights, preprocess
from lrprec.model.pair import DEFAULT_HEAD, HEADS, THETA_NORMS
from lrprec.run import atomic_write_text, build_model, embed_items, item_inputs, save_weights
from lrprec.train import distributed as dist_
from lrprec.train.checkpoint import CheckpointError, capture_rng, checkpoint_path, load_checkpoint, restore_rng, save_checkpoint
from lrprec.train.guidance import check_guide, consistency_penalty, gradient_relevance, lrp_relevance, outside_share, pixel_sq

_FUSED_ADAM_MIN_PARAMS = 5_000_000



@dataclass
class TrainConfig:
    """Everything that defines a training run; stored as the run's config.json."""

    backbone: str = "small"
    weights: str | None = None
    dim: int = 32  # K: room for category contrast, pattern, brand and the users' attributes (chosen on validation, README)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    relations: list[str] | None = None
    category: str | None = None
    personalize: bool = True
    freeze_backbone: bool = False
    seed: int = 0
    input_size: int | None = None
    head_lr_scale: float = 1.0
    backbone_config: dict = field(default_factory=dict)
    # How to train rather than what: with the same seed, workers / checkpoint_every / device
    # (on CPU) / the number of processes do not change the result (see ``train``).
    workers: int = 0  # DataLoader worker processes preparing batches (0: in the training process)
    augment: bool = False  # random horizontal flips, drawn from (seed, epoch, step) alone
    bf16: bool = False  # bfloat16 autocast for forward/backward; loss and optimizer in float32
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (smoke runs, benchmarks)
    device: str = "auto"  # auto (cuda:LOCAL_RANK when CUDA is available), cpu or cuda
    sync_batchnorm: bool = False  # under DDP on GPUs: SyncBatchNorm (statistics over the global batch)
    # Explanation-guided training (lrprec.train.guidance): None, "lrp" or "gradient"; weight 0 only logs the loss
    guide: str | None = None
    guide_weight: float = 1.0
    guide_masks: str = "gt"  # allowed regions: "gt" (catalog masks) or "relevance" (validation outer loop)
    guide_val_pairs: int = 512  # validation pairs explained per outer step (guide_masks="relevance")
    guide_pairs: int | None = 32  # pairs of each (per-process) batch whose relevance is constrained (None: all)
    guide_rule: str = DEFAULT_COMPOSITE  # LRP composite of the guidance relevance (--guide lrp)
    # What the model learns from (issue 19): the pair head and the training negatives' protocol (lrprec.data.sampling)
    head: str = DEFAULT_HEAD  # metric (the paper's), asymmetric, or auto (metric substitutes, asymmetric complements)
    # the pairwise loss's negatives: mixed (default; shares negative_mix, default DEFAULT_MIX), random, category or contrast
    negatives: str = "mixed"
    negative_mix: dict | None = None
    # weight of the in-batch ranking loss (0: the paper's objective alone; see rank_loss)
    rank_weight: float = 1.0
    theta_norm: str = "free"  # users' θ: free (the paper's) or global (rescaled to the global θ's norm; pair.THETA_NORMS)
    user_lr_scale: float = 1.0  # learning-rate factor of the users' θ offsets
    # Optimization schedule (functions of the step alone, so a --resume continues them exactly)
    # warm-up of 1 epoch: without it 1 run in 4 stalled for 12+ epochs at ~70% validation accuracy (README, chosen on validation)
    warmup_epochs: float = 1.0  # the learning rate rises linearly from 0 over this many epochs
    rank_warmup_epochs: float = 0.0  # the ranking loss's weight rises linearly from 0 over this many epochs
    lr_schedule: str = "constant"  # constant, or cosine (decays to 0 at the last epoch, after the warm-up)
    clip_norm: float | None = None  # clip the gradients' global L2 norm (None: no clipping)


LR_SCHEDULES = ("constant", "cosine")


def schedule(cfg: TrainConfig, progress: float) -> tuple[float, float]:
    """(learning-rate factor, ranking-loss weight factor) at ``progress`` epochs into training.

    Pure functions of the position in training, so every process and a resumed run agree.
    """
    import math

    lr = 1.0
    if cfg.warmup_epochs > 0:
        lr = min(1.0, progress / cfg.warmup_epochs)
    if cfg.lr_schedule == "cosine" and progress > cfg.warmup_epochs:
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - cfg.warmup_epochs) / span)))
    rank = min(1.0, progress / cfg.rank_warmup_epochs) if cfg.rank_warmup_epochs > 0 else 1.0
    return lr, rank


def _filter_pairs(catalog: Catalog, pairs: Pairs, relations: list[str], category: str | None) -> Pairs:
    keep = np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])
    if category is not None:
        keep &= catalog.categories[pairs.a] == category
    return pairs.take(np.flatnonzero(keep))


def validate_config(catalog: Catalog, cfg: TrainConfig) -> list[str]:
    """Check names and sizes against the catalog before any work; returns the relations to train."""
    if cfg.dim <= 0:
        raise UsageError(f"--dim (K) must be positive, got {cfg.dim}")
    if cfg.epochs <= 0 or cfg.batch_size <= 0 or cfg.lr <= 0:
        raise UsageError("--epochs, --batch-size and --lr must be positive")
    if cfg.workers < 0 or cfg.checkpoint_every < 0:
        raise UsageError("--workers and --checkpoint-every must be >= 0")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch <= 0:
        raise UsageError("--steps-per-epoch must be positive")
    if cfg.augment and (cfg.freeze_backbone or cfg.backbone == "features"):
        raise UsageError("--augment needs end-to-end training on images (a frozen backbone reads features computed once)")
    if cfg.rank_weight < 0:
        raise UsageError(f"--rank-weight must be >= 0, got {cfg.rank_weight}")
    if cfg.warmup_epochs < 0 or cfg.rank_warmup_epochs < 0:
        raise UsageError("--warmup-epochs and --rank-warmup-epochs must be >= 0")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {cfg.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    if cfg.clip_norm is not None and cfg.clip_norm <= 0:
        raise UsageError(f"--clip-norm must be positive, got {cfg.clip_norm}")
    if cfg.theta_norm not in THETA_NORMS:
        raise UsageError(f"unknown --theta-norm {cfg.theta_norm!r}; known: {', '.join(THETA_NORMS)}")
    if cfg.user_lr_scale <= 0:
        raise UsageError(f"--user-lr-scale must be positive, got {cfg.user_lr_scale}")
    if cfg.head not in HEADS:
        raise UsageError(f"unknown --head {cfg.head!r}; known: {', '.join(HEADS)}")
    check_protocol(cfg.negatives)
    parse_mix(cfg.negative_mix)
    rels = cfg.relations or list(catalog.relations)
    for r in rels:
        relation_index(r)
        if r not in catalog.relations:
            raise CatalogError(f"relation {r!r} has no pairs in {catalog.root}")
    if cfg.category is not None:
        catalog.check_category(cfg.category)
    if cfg.backbone == "features" and catalog.features is None:
        raise CatalogError(f"{catalog.root} has no precomputed features; features mode needs an import with --features")
    if cfg.backbone != "features" and catalog.images is None:
        raise CatalogError(f"{catalog.root} has no images; use --mode features")
    if cfg.guide is not None:
        check_guide(cfg.guide, cfg.guide_masks, cfg.guide_weight)
        from lrprec.explain.composites import get_composite

        get_composite(cfg.guide_rule)  # an unknown name fails here, naming the known ones
        if cfg.freeze_backbone or cfg.backbone == "features":
            raise UsageError("--guide steers what the backbone looks at: it needs end-to-end training on images")
        if cfg.guide_masks == "gt" and catalog.masks is None:
            raise CatalogError(f"{catalog.root} has no ground-truth masks; use --guide-masks relevance")
        if cfg.guide_val_pairs <= 0 or (cfg.guide_pairs is not None and cfg.guide_pairs <= 0):
            raise UsageError("--guide-val-pairs and --guide-pairs must be positive")
    return rels


def _weights_id(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


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
                 masks_path: Path | None = None, related=None):
        self.pairs, self.batch_size, self.n_steps, self.first = pairs, batch_size, n_steps, first
        self.related = related  # (a, b, r, u) -> bool, broadcasting: the ranking loss's candidate veto
        self.rank, self.world = rank, world
        self.images_path, self.norm, self.input_size, self.augment_key = images_path, norm, input_size, augment_key
        self.masks_path = masks_path  # ground-truth masks ride along as "allowed" (guided training)
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n_steps - self.first

    def _load(self, rows: np.ndarray) -> torch.Tensor:
        if self._images is None:  # opened lazily: each worker maps the file itself
            self._images = np.load(self.images_path, mmap_mode="r")
        uniq, inv = np.unique(rows, return_inverse=True)
        return preprocess(self._images[uniq], self.norm, self.input_size)[torch.from_numpy(inv)]  # type: ignore[arg-type]

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
            x = self._load(rows)
            allowed = None
            if self.masks_path is not None:
                if self._masks is None:
                    self._masks = np.load(self.masks_path, mmap_mode="r")
                allowed = resize_masks(self._masks[rows], x.shape[-2], x.shape[-1]).float()
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


def rank_candidates(b: Pairs, related) -> np.ndarray:
    """(n, 2n) bool: which of the batch's 2n items [b.a; b.b] may serve as row k's negatives in the
    ranking loss — not a_k itself, not b_k (its target column n + k stays True), not an item
    ``related(a, item, r, u)`` relates to a_k (known positives and the data's own rules)."""
    n = len(b)
    items = np.concatenate([b.a, b.b])[None, :]
    a, r, u = b.a[:, None], b.relation[:, None], b.user[:, None]
    ok = ~((items == a) | (items == b.b[:, None]) | related(a, items, r, u))
    ok[np.arange(n), n + np.arange(n)] = True
    return ok


def rank_loss(model, feats: torch.Tensor, relation: torch.Tensor, user: torch.Tensor, label: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """Summed in-batch softmax cross-entropy of each positive pair (i, j) against the batch's other items.

    The pair's logit c_r − d_u(i, j) competes with c_r − d_u(i, j') for every item j' of the
    batch that ``mask`` allows (see :func:`rank_candidates`): the items a top-k list must rank
    below j. ``feats`` are the backbone features of the stacked batch [x_a; x_b] (2n, F). This
    costs no extra backbone pass; it is what teaches the order over the whole catalog, which
    the pairwise objective with one negative per positive leaves loose.
    """
    n = relation.shape[0]
    pos = torch.nonzero(label > 0.5).flatten()
    if pos.numel() == 0:
        return feats.sum() * 0
    q_all = model.project_partner_all(feats)                             # (2n, R, K)
    p_all = model.project_all(feats[pos])                                # (P, R, K)
    total = feats.new_zeros(())
    # one relation at a time with plain slices: a gather with repeated indices would accumulate its
    # gradient in a thread-dependent order on CPU, and runs with the same seed would drift apart
    for r in torch.unique(relation[pos]).tolist():
        g = torch.nonzero(relation[pos] == r).flatten()
        rows = pos[g]
        rel = relation[rows]
        p, q = p_all[g, r], q_all[:, r]                                  # (G, K) query side of i, (2n, K) every item
        w = model.theta(rel, user[rows]).pow(2)
        d = (w.unsqueeze(1) * (p.unsqueeze(1) - q.unsqueeze(0)).pow(2)).sum(-1)  # (G, 2n), no cancellation
        logits = (model.c[r] - d).masked_fill(~mask[rows], float("-inf"))
        total = total + nn.functional.cross_entropy(logits, n + rows, reduction="sum")
    return total


class _PairStep(nn.Module):
    """A training step's forward as one module, so DDP sees (and synchronizes) every call.

    Images: the model runs its backbone once on the stacked ``[x_a; x_b]``. Frozen backbone /
    features mode: ``feats`` holds every item's features and only the head runs.
    """

    def __init__(self, model: nn.Module, feats=None, guide: str | None = None, guide_pairs: int | None = None, guide_rule: str = DEFAULT_COMPOSITE):
        super().__init__()
        self.model = model
        self.feats = feats
        self.guide = guide
        self.guide_pairs = guide_pairs
        self.penalty: torch.Tensor | None = None  # the outer loop's map (guide_masks="relevance"); gt masks come with the batch
        self._net = None
        if guide == "lrp":
            from lrprec.explain.engine import LRPNet

            self._net = LRPNet(model.backbone, guide_rule)  # reads the live parameters on every call

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(logits, mean guidance share over the guided images or None, summed ranking loss or None).

        The guidance loss is estimated on the batch's first ``guide_pairs`` pairs (the batch is
        a uniform draw of the epoch's shuffled pairs, so the estimate is unbiased); the logits
        and the BCE use every pair. The ranking loss (:func:`rank_loss`) comes with a batch
        that carries ``rank_mask``.
        """
        rel, usr = batch["rel"], batch["user"]
        m = self.model
        n = rel.shape[0]
        if self.feats is not None:
            dev = rel.device
            feats = torch.cat([self.feats[batch["a"]], self.feats[batch["b"]]]).to(dev)
            x = None
        else:
            x = batch["x"]
            if self.guide == "gradient":
                x = x.detach().requires_grad_(True)
            feats = m.embed(x)  # the backbone once on the stacked [x_a; x_b]
        logit = m.logit_from_embeddings(m.project(feats[:n], rel), m.project_partner(feats[n:], rel), rel, usr)
        ranking = rank_loss(m, feats, rel, usr, batch["label"], batch["rank_mask"]) if "rank_mask" in batch else None
        penalty = 1 - batch["allowed"] if "allowed" in batch else self.penalty
        if x is None or self.guide is None or penalty is None:
            return logit, None, ranking
        k = n if self.guide_pairs is None else min(self.guide_pairs, n)
        sub = torch.cat([torch.arange(k), n + torch.arange(k)]).to(x.device)  # images of the guided pairs
        if penalty.dim() == 3:
            penalty = penalty[sub]
        if self.guide == "gradient":
            relevance = gradient_relevance(logit[:k], x)[sub]
        else:
            relevance = lrp_relevance(m, self._net, x[sub], rel[:k], usr[:k])
        return logit, outside_share(pixel_sq(relevance, self.guide), penalty.to(x.device)).mean(), ranking


def _n_steps(n_pairs: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps in an epoch of ``n_pairs``: ceil(n / B), minus a last global batch too
    small to give every rank a pair (multi-process only), capped by ``steps_per_epoch``."""
    n = -(-n_pairs // cfg.batch_size)
    if world > 1 and n and n_pairs - (n - 1) * cfg.batch_size < world:
        n -= 1
    return min(n, cfg.steps_per_epoch) if cfg.steps_per_epoch else n


@torch.inference_mode()
def _validate(model, catalog: Catalog, val: Pairs, ctx: dist_.DistContext, input_size: int | None, feats, bf16: bool, batch_size: int = 256) -> tuple[float, float]:
    """(correct, n) over this rank's strided share of the validation pairs (P > 0.5 ⇔ logit > 0)."""
    model.eval()
    part = val.take(dist_.shard(len(val), ctx))
    dev = ctx.device
    correct = 0
    for s in range(0, len(part), batch_size):
        b = part.take(slice(s, s + batch_size))
        rel, usr = torch.from_numpy(b.relation).to(dev), torch.from_numpy(b.user).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            if feats is not None:
                fa, fb = feats[torch.from_numpy(b.a)].to(dev), feats[torch.from_numpy(b.b)].to(dev)
                logit = model.logit_from_embeddings(model.project(fa, rel), model.project_partner(fb, rel), rel, usr)
            else:
                xa = item_inputs(catalog, model, b.a, input_size).to(dev)
                xb = item_inputs(catalog, model, b.b, input_size).to(dev)
                logit = model(xa, xb, rel, usr)
        correct += int(((logit.float() > 0).cpu().numpy() == (b.label == 1)).sum())
    return float(correct), float(len(part))


# Fields that may change between a run and its --resume: they do not change the result.
_RESUMABLE_FIELDS = frozenset({"epochs", "workers", "checkpoint_every", "device"})


def _check_resumable(meta: dict, cfg: TrainConfig, catalog: Catalog, world: int, path: Path) -> None:
    if meta.get("format") != "lrprec-train-checkpoint":
        raise CheckpointError(f"{path} is not a training checkpoint")
    if meta["catalog_fingerprint"] != catalog.fingerprint:
        raise CheckpointError(f"{path} was written for another catalog (fingerprint mismatch); train from scratch without --resume")
    if meta["world_size"] != world:
        raise CheckpointError(f"{path} was written by {meta['world_size']} process(es); resume with the same number (torchrun --nproc-per-node {meta['world_size']})")
    now, defaults = asdict(cfg), asdict(TrainConfig())
    differ = sorted(k for k in set(now) | set(meta["config"]) if k not in _RESUMABLE_FIELDS and meta["config"].get(k, defaults.get(k)) != now.get(k, defaults.get(k)))
    if differ:
        detail = ", ".join(f"{k}: {meta['config'].get(k, defaults.get(k))!r} -> {now.get(k)!r}" for k in differ)
        raise CheckpointError(f"--resume with different training options than {path} ({detail}); use the original options or train from scratch")
    if cfg.epochs < meta["epoch"]:
        raise CheckpointError(f"{path} is at epoch {meta['epoch']}, past --epochs {cfg.epochs}")


def _outer_penalty(model, catalog: Catalog, val: Pairs, n_pairs: int, input_size: int | None) -> torch.Tensor:
    """The outer loop's penalty map from LRP on (evenly spaced) validation pairs; see :mod:`guidance`."""
    from lrprec.explain.targets import explain_catalog_pairs

    model.eval()
    sel = val.spread(n_pairs)
    r = explain_catalog_pairs(model, catalog, sel, input_size).sum(1)
    sign = torch.from_numpy(np.where(sel.label == 1, 1.0, -1.0)).to(r.device)
    return consistency_penalty(r, torch.cat([sign, sign]))[0]


def _rank_seed(seed: int, rank: int) -> int:
    """Torch seed of a rank: the run's seed on rank 0 (single-process runs unchanged), distinct elsewhere."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def train(data: str | os.PathLike, out: str | os.PathLike, cfg: TrainConfig, progress: bool = True, log=print, *, resume: bool = False) -> dict:
    """Train a model on a catalog into run directory ``out``; returns the history with the best epoch.

    Runs as one process, or as one rank of a ``torchrun`` job (DDP: gloo on CPU, nccl on
    GPU). ``cfg.batch_size`` is the global batch: each rank takes a disjoint strided share of
    every batch of the epoch's shuffled pairs, and the per-rank loss is scaled so that DDP's
    gradient average is the gradient of the global-batch mean — N processes compute what one
    does (exactly, without BatchNorm; with BatchNorm, batch statistics are per rank unless
    ``sync_batchnorm`` on GPUs). The epoch's negatives and permutation come from the one
    seeded numpy stream, drawn identically on every rank and then sharded: no overlap, no
    per-rank streams to keep in step. Loss and validation accuracy are summed over ranks;
    only rank 0 prints and writes.

    A checkpoint (``RUN/checkpoint.ckpt``, see :mod:`lrprec.train.checkpoint`) is written at
    every epoch end and every ``checkpoint_every`` steps; ``resume=True`` continues from it and
    ends with the weights an uninterrupted run would have.
    """
    catalog = Catalog(data)
    rels = validate_config(catalog, cfg)
    ctx = dist_.setup(cfg.device)
    try:
        return _train(catalog, rels, Path(out), cfg, ctx, progress and ctx.is_main, log if ctx.is_main else (lambda m: None), resume)
    finally:
        dist_.teardown(ctx)


def _train(catalog: Catalog, rels: list[str], out: Path, cfg: TrainConfig, ctx: dist_.DistContext, progress: bool, log, resume: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(_rank_seed(cfg.seed, ctx.rank))
    rng = np.random.default_rng(cfg.seed)
    dev = ctx.device

    config = asdict(cfg)
    config["relations"] = rels
    if cfg.backbone == "features":
        config["backbone_config"] = {"out_dim": int(catalog.features.shape[1])}
    model = build_model(config, n_users=len(catalog.user_ids))
    if cfg.backbone == "vgg16":
        weights = cfg.weights or hub_vgg16_weights()
        if weights:
            ignored = model.backbone.load_torchvision(weights)  # type: ignore[union-attr]
            log(f"loaded VGG-16 ImageNet weights from {weights} (ignored: {', '.join(ignored) or 'none'})")
        else:
            log("notice: no VGG-16 weights given (--weights FILE) and none in the torch hub cache; starting from random init")
        config["input_size"] = cfg.input_size or 224
    elif cfg.weights:
        raise UsageError("--weights applies to --backbone vgg16 only")
    model.to(dev)
    if ctx.enabled and cfg.sync_batchnorm:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log("notice: SyncBatchNorm needs GPUs; on CPU each rank keeps its own BatchNorm batch statistics")

    train_pos = _filter_pairs(catalog, catalog.pairs("train"), rels, cfg.category)
    val = _filter_pairs(catalog, protocol_pairs(catalog, "validation"), rels, cfg.category)
    if len(train_pos) == 0:
        raise CatalogError("no training pairs for the chosen relations/category")
    sampler = NegativeSampler(catalog.positives(), catalog.category_codes)
    reject = train_reject(catalog)
    ranking_on = cfg.rank_weight > 0

    def related(a, b, r, u):  # the ranking loss's candidate veto: known positives and the data's own rules
        bad = sampler.is_positive(a, b, r)
        return bad | reject(a, b, r, u) if reject is not None else bad

    frozen = cfg.freeze_backbone or cfg.backbone == "features"
    feats = None
    if frozen:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        # features mode reads rows per batch (memory stays bounded on multi-GB feature files);
        # a frozen image backbone is run once over the catalog
        feats = LazyFeatures(catalog.features) if cfg.backbone == "features" else embed_items(model, catalog, config.get("input_size"), progress=progress)
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and n != "theta_delta"]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr * cfg.head_lr_scale}, {"params": [model.theta_delta], "lr": cfg.lr * cfg.head_lr_scale * cfg.user_lr_scale}]
    groups += [{"params": body, "lr": cfg.lr}] if body else []
    # Large models (VGG-16: 138M parameters) get the fused Adam kernel: one pass over the
    # parameters, ~10x faster than the multi-tensor one on CPU, where it would otherwise take
    # a large part of a small-batch step. Small models keep the default (identical numerics).
    big = sum(p.numel() for p in head + body) >= _FUSED_ADAM_MIN_PARAMS
    opt = torch.optim.Adam(groups, lr=cfg.lr, **({"fused": True} if big else {}))
    base_lrs = [g["lr"] for g in groups]
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")

    history: list[dict] = []
    best = {"epoch": -1, "val_accuracy": -1.0}
    weights_path = out / "model.safetensors"
    ckpt_path = checkpoint_path(out)
    start_epoch, start_step, global_step = 0, 0, 0
    partial = {"loss_sum": 0.0, "n_seen": 0}
    pair_step = _PairStep(model, feats, cfg.guide, cfg.guide_pairs, cfg.guide_rule)
    if resume:
        if ckpt_path.exists():
            ck = load_checkpoint(ckpt_path)
            meta = ck["meta"]
            _check_resumable(meta, cfg, catalog, ctx.world_size, ckpt_path)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            history, best = meta["history"], meta["best"]
            start_epoch, start_step, global_step = meta["epoch"], meta["step"], meta["global_step"]
            rng.bit_generator.state = meta["np_rng_epoch_start"]
            restore_rng(ck["rng"][ctx.rank])
            partial = meta["partial"][ctx.rank]
            if "guide_penalty" in ck:
                pair_step.penalty = ck["guide_penalty"].to(dev)
            log(f"resuming from {ckpt_path}: epoch {start_epoch + 1}, step {start_step} (after {global_step} steps)")
        else:
            log(f"notice: --resume but no checkpoint in {out}; training from scratch")

    step_module: nn.Module = pair_step
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # without users (or --no-personalize) θ_delta gets no gradient; DDP must be told to expect that
        step_module = DDP(step_module, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=model.n_users == 0)
        if not frozen and not cfg.sync_batchnorm and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            log("notice: BatchNorm under DDP uses per-rank batch statistics, running statistics follow rank 0 (--sync-batchnorm on GPUs for global ones)")
    images_path = None if frozen else catalog.root / "images.npy"
    masks_path = catalog.root / "masks.npy" if cfg.guide is not None and cfg.guide_masks == "gt" else None
    norm = _Norm(model.backbone.mean, model.backbone.std)
    pin = dev.type == "cuda"

    def checkpoint(epoch: int, step: int, epoch_start_state: dict, loss_sum: float, n_seen: int, guide_sum: float = 0.0,
                   rank_sum: float = 0.0) -> None:
        """Collective: gathers every rank's RNG and partial sums; rank 0 writes."""
        states = dist_.all_gather_object(ctx, {**capture_rng(), "partial": {"loss_sum": loss_sum, "n_seen": n_seen, "guide_sum": guide_sum,
                                                                             "rank_sum": rank_sum}})
        if not ctx.is_main:
            return
        meta = {
            "format": "lrprec-train-checkpoint", "version": 1, "config": asdict(cfg), "catalog_fingerprint": catalog.fingerprint,
            "world_size": ctx.world_size, "epoch": epoch, "step": step, "global_step": global_step,
            "np_rng_epoch_start": epoch_start_state, "history": history, "best": best,
            "partial": [s.pop("partial") for s in states],
        }
        extra = {} if pair_step.penalty is None else {"guide_penalty": pair_step.penalty.cpu()}
        save_checkpoint(ckpt_path, meta, {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": states, **extra})

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        epoch_start_state = rng.bit_generator.state
        neg = sampler.sample(train_pos, rng, reject, protocol=cfg.negatives, mix=cfg.negative_mix)
        pairs = Pairs.concat([train_pos, neg])
        pairs = pairs.take(rng.permutation(len(pairs)))
        first = start_step if epoch == start_epoch else 0
        total, n_seen = (float(partial["loss_sum"]), int(partial["n_seen"])) if first else (0.0, 0)
        guide_total = float(partial.get("guide_sum", 0.0)) if first else 0.0
        rank_total = float(partial.get("rank_sum", 0.0)) if first else 0.0
        n_steps = _n_steps(len(pairs), cfg, ctx.world_size)
        ds = _EpochBatches(pairs, cfg.batch_size, n_steps, first, ctx.rank, ctx.world_size, images_path, norm, config.get("input_size"),
                           (cfg.seed, epoch) if cfg.augment else None, masks_path, related if ranking_on else None)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.workers, pin_memory=pin, generator=torch.Generator())
        model.train()
        if frozen:
            model.backbone.eval()
        it = iter(loader)
        if progress:
            from tqdm import tqdm
            it = iter(tqdm(it, total=len(ds), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False))
        wait, seen_here = 0.0, 0
        for step in range(first, n_steps):
            tw = time.perf_counter()
            batch = next(it)
            n_global = int(batch.pop("n_global"))
            batch = {k: v.to(dev, non_blocking=pin) for k, v in batch.items()}
            wait += time.perf_counter() - tw
            lr_f, rank_f = schedule(cfg, epoch + (step + 1) / n_steps)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * lr_f
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                logit, guide_share, ranking = step_module(batch)
            loss_sum = loss_fn(logit.float(), batch["label"])
            objective = loss_sum
            if ranking is not None:
                objective = objective + cfg.rank_weight * rank_f * ranking.float()
                rank_total += ranking.item()
            if guide_share is not None:  # per pair: BCE + λ · mean share of the pair's images
                n_local = int(batch["label"].shape[0])
                if cfg.guide_weight:  # λ = 0 only logs: no branch joins the backward, so training is exactly unguided
                    objective = objective + cfg.guide_weight * n_local * guide_share.float()
                guide_total += guide_share.item() * n_local
            # DDP averages gradients over ranks: scaling by world / n_global makes that the global-batch mean's gradient
            loss = objective * (ctx.world_size / n_global)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            global_step += 1
            total += loss_sum.item()
            n_seen += int(batch["label"].shape[0])
            seen_here += int(batch["label"].shape[0])
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and step + 1 < n_steps:
                checkpoint(epoch, step + 1, epoch_start_state, total, n_seen, guide_total, rank_total)
        del it, loader
        train_time = time.perf_counter() - t0
        dist_.broadcast_buffers(ctx, model)
        total, n_all, seen_all, guide_all, rank_all = dist_.all_reduce_sum(ctx, [total, n_seen, seen_here, guide_total, rank_total])
        correct, n_val = dist_.all_reduce_sum(ctx, list(_validate(model, catalog, val, ctx, config.get("input_size"), feats, cfg.bf16)))
        val_acc = correct / n_val if n_val else float("nan")
        rec = {"epoch": epoch + 1, "loss": total / max(n_all, 1), "val_accuracy": val_acc, "seconds": round(train_time, 2),
               "pairs_per_second": round(seen_all / train_time, 1), "data_wait_fraction": round(wait / train_time, 4)}
        if ranking_on:
            rec["rank_loss"] = rank_all / max(n_all, 1)  # per pair of the epoch (positives carry it)
        if cfg.guide is not None:
            # mean share of squared relevance on penalized pixels per image (None: no map yet)
            rec["guide_loss"] = guide_all / n_all if (masks_path is not None or pair_step.penalty is not None) and n_all else None
            if cfg.guide_masks == "relevance":
                pair_step.penalty = _outer_penalty(model, catalog, val, cfg.guide_val_pairs, config.get("input_size"))
                rec["guide_penalized_area"] = round(float(pair_step.penalty.mean()), 4)
                if ctx.is_main:
                    np.save(out / "guide_penalty.npy", pair_step.penalty.cpu().numpy())
        history.append(rec)
        guide_note = f"  guide {rec['guide_loss']:.3f}" if rec.get("guide_loss") is not None else ""
        log(f"epoch {epoch + 1}/{cfg.epochs}  loss {rec['loss']:.4f}{guide_note}  val acc {100 * val_acc:.1f}%  "
            f"{rec['pairs_per_second']:.3g} pairs/s  (data wait {100 * rec['data_wait_fraction']:.1f}% of step time)")
        if val_acc > best["val_accuracy"] or not n_val:
            best = {"epoch": epoch + 1, "val_accuracy": val_acc}
            if ctx.is_main:
                save_weights(model, weights_path)
        checkpoint(epoch + 1, 0, rng.bit_generator.state, 0.0, 0)
    dist_.barrier(ctx)
    result = {"epochs": history, "best": best, "run": str(out)}
    if not ctx.is_main:
        return result
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(weights_path)))
    config.update({
        "catalog": str(catalog.root.resolve()),
        "catalog_fingerprint": catalog.fingerprint,
        "weights_id": _weights_id(model),
        "best_epoch": best["epoch"],
        "n_users": len(catalog.user_ids),
        "lrprec_version": __import__("lrprec").__version__,
    })
    atomic_write_text(out / "history.json", json.dumps({"epochs": history, "best": best}, indent=2))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    return result
