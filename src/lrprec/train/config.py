"""What defines a training run (:class:`TrainConfig`, stored as RUN/config.json), its checks, and its schedule."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lrprec.data.catalog import Catalog, CatalogError, relation_index
from lrprec.data.sampling import check_protocol, parse_mix
from lrprec.defaults import GUIDE_COMPOSITE
from lrprec.errors import UsageError
from lrprec.model.pair import DEFAULT_HEAD, HEADS, PARTNER_INITS
from lrprec.train.checkpoint import CheckpointError
from lrprec.train.guidance import check_guide


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored as the run's config.json.

    Each field is the ``lrprec train`` option of the same name (``batch_size`` is
    ``--batch-size``), documented with its default in the command line reference.
    ``validate_config`` checks a configuration against a catalog before training starts.
    """

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
    guide_masks: str = "gt"  # allowed regions: "gt" (catalog masks), "mark" (all but the watermark) or "relevance" (validation outer loop)
    guide_val_pairs: int = 512  # validation pairs explained per outer step (guide_masks="relevance")
    guide_pairs: int | None = 32  # pairs of each (per-process) batch whose relevance is constrained (None: all)
    guide_rule: str = GUIDE_COMPOSITE  # LRP composite of the guidance relevance (--guide lrp)
    # What the model learns from (issue 19): the pair head and the training negatives' protocol (lrprec.data.sampling)
    head: str = DEFAULT_HEAD  # metric (the paper's), asymmetric, or auto (metric substitutes, asymmetric complements)
    # the pairwise loss's negatives: mixed (default; shares negative_mix, default DEFAULT_MIX), random, category or contrast
    negatives: str = "mixed"
    negative_mix: dict | None = None
    # weight of the in-batch ranking loss (0: the paper's objective alone; see rank_loss). 2 since the appearance loss:
    # at 1 its colour pulled one seed's global lists to 0.75 (README, chosen on validation)
    rank_weight: float = 2.0
    # Optimization schedule (functions of the step alone, so a --resume continues them exactly)
    # warm-up of 1 epoch: without it 1 run in 4 stalled for 12+ epochs at ~70% validation accuracy (README, chosen on validation)
    warmup_epochs: float = 1.0  # the learning rate rises linearly from 0 over this many epochs
    rank_warmup_epochs: float = 0.0  # the ranking loss's weight rises linearly from 0 over this many epochs
    lr_schedule: str = "constant"  # constant, or cosine (decays to 0 at the last epoch, after the warm-up)
    clip_norm: float | None = None  # clip the gradients' global L2 norm (None: no clipping)
    # Personal evidence (issue 19): weight of the pairwise loss on user-carrying pairs, and the share of their
    # negatives drawn from the query's partners under *other* users (what others pair with i, this user did not)
    user_weight: float = 1.0
    user_negatives: float = 0.0
    # Counterfactual augmentation (issue 14, the explanation-free baseline): on a shortcut catalog each training
    # image's watermark is re-drawn (stamped or removed, even odds) with this probability
    mark_augment: float = 0.0
    # Appearance loss (issue 19): weight of the squared error of each image's recon_size² thumbnail decoded linearly
    # from its backbone features (end-to-end training on images only). It keeps appearance no relation asks for
    # (the synthetic catalog's colour) in the shared features for the users whose purchases follow it; chosen on
    # validation pairs, README "Users whose purchases follow colour"
    recon_weight: float = 20.0
    recon_size: int = 2
    # Small catalogs (issue 31): F_r's initialization ("copy" of E_r, or "independent") and a floor on the optimizer
    # steps — epochs grow to reach it where an epoch has few steps (0: exactly ``epochs``, the Python API's default;
    # ``lrprec train`` uses DEFAULT_MIN_STEPS). See docs/howto/small-catalogs.md
    partner_init: str = "copy"
    min_steps: int = 0


# The step floor of ``lrprec train`` (chosen on 60-item validation catalogs, docs/howto/small-catalogs.md): the default
# catalog's 20 epochs are ~2,000 steps, so it binds on small catalogs only.
DEFAULT_MIN_STEPS = 600


LR_SCHEDULES = ("constant", "cosine")


def with_step_budget(cfg: TrainConfig, n_train_positives: int, world_size: int = 1) -> TrainConfig:
    """``cfg`` with ``epochs`` raised so that training takes at least ``min_steps`` optimizer steps.

    An epoch is the training positives and as many negatives, in global batches of
    ``batch_size`` (capped by ``steps_per_epoch``). The default catalog's 20 epochs are
    ~2,000 steps; a 60-item catalog's are ~120, too few to move F_r away from E_r.
    """
    if cfg.min_steps <= 0:
        return cfg
    per_epoch = max(1, math.ceil(2 * n_train_positives / cfg.batch_size))
    if cfg.steps_per_epoch is not None:
        per_epoch = min(per_epoch, cfg.steps_per_epoch)
    need = math.ceil(cfg.min_steps / per_epoch)
    return replace(cfg, epochs=max(cfg.epochs, need)) if need > cfg.epochs else cfg


def schedule(cfg: TrainConfig, progress: float) -> tuple[float, float]:
    """(learning-rate factor, ranking-loss weight factor) at ``progress`` epochs into training.

    Pure functions of the position in training, so every process and a resumed run agree.
    """
    lr = 1.0
    if cfg.warmup_epochs > 0:
        lr = min(1.0, progress / cfg.warmup_epochs)
    if cfg.lr_schedule == "cosine" and progress > cfg.warmup_epochs:
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - cfg.warmup_epochs) / span)))
    rank = min(1.0, progress / cfg.rank_warmup_epochs) if cfg.rank_warmup_epochs > 0 else 1.0
    return lr, rank


def validate_config(catalog: Catalog, cfg: TrainConfig) -> list[str]:
    """Check names and sizes against the catalog before any work; returns the relations to train.

    Raises ``UsageError`` for a value outside its range, an unknown name or a bad combination of options.
    """
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
    if cfg.recon_weight < 0 or cfg.recon_size <= 0:
        raise UsageError(f"--recon-weight must be >= 0 and --recon-size positive, got {cfg.recon_weight} and {cfg.recon_size}")
    if cfg.user_weight < 0 or not 0 <= cfg.user_negatives <= 1 or not 0 <= cfg.mark_augment <= 1:
        raise UsageError("--user-weight must be >= 0; --user-negatives and --mark-augment are shares in [0, 1]")
    if cfg.mark_augment > 0:
        if cfg.freeze_backbone or cfg.backbone == "features":
            raise UsageError("--mark-augment edits training images: it needs end-to-end training on images")
        if not (catalog.root / "shortcut_tags.npy").exists():
            raise CatalogError(f"{catalog.root} has no planted shortcut; --mark-augment needs a catalog made with 'lrprec synth --spurious P'")
    if cfg.partner_init not in PARTNER_INITS:
        raise UsageError(f"unknown --partner-init {cfg.partner_init!r}; known: {', '.join(PARTNER_INITS)}")
    if cfg.min_steps < 0:
        raise UsageError(f"--min-steps must be >= 0, got {cfg.min_steps}")
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
        if cfg.guide_masks == "mark" and not (catalog.root / "shortcut_masks.npy").exists():
            raise CatalogError(f"{catalog.root} has no planted shortcut (shortcut_masks.npy, from `lrprec synth --spurious P`) "
                               "for --guide-masks mark to penalize")
        if cfg.guide_masks == "mark" and (catalog.meta.get("shortcut") or {}).get("kind", "mark") != "mark":
            raise UsageError("--guide-masks mark forbids the watermark's pixels; this catalog's artifact is a global tint that covers "
                             "every pixel (use --mark-augment, or lrprec audit/correct)")
        if cfg.guide_val_pairs <= 0 or (cfg.guide_pairs is not None and cfg.guide_pairs <= 0):
            raise UsageError("--guide-val-pairs and --guide-pairs must be positive")
    return rels


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
