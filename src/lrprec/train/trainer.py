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

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs
from lrprec.data.features import LazyFeatures
from lrprec.data.rules import train_reject
from lrprec.data.sampling import NegativeSampler
from lrprec.data.splits import protocol_pairs
from lrprec.data.watermark import catalog_artifact
from lrprec.errors import UsageError
from lrprec.files import atomic_write
from lrprec.model.backbones import default_input_size, load_pretrained
from lrprec.run import atomic_write_text, build_model, embed_items, item_inputs, save_weights
from lrprec.train import distributed as dist_
from lrprec.train.batches import _EpochBatches, _n_steps, _Norm
from lrprec.train.checkpoint import capture_rng, checkpoint_path, load_checkpoint, restore_rng, save_checkpoint
from lrprec.train.config import TrainConfig, _check_resumable, schedule, validate_config, with_step_budget
from lrprec.train.guidance import consistency_penalty
from lrprec.train.step import _PairStep

_FUSED_ADAM_MIN_PARAMS = 5_000_000


def _filter_pairs(catalog: Catalog, pairs: Pairs, relations: list[str], category: str | None) -> Pairs:
    keep = np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])
    if category is not None:
        keep &= catalog.categories[pairs.a] == category
    return pairs.take(np.flatnonzero(keep))


def pair_loss(logit: torch.Tensor, label: torch.Tensor, user: torch.Tensor, user_weight: float = 1.0) -> torch.Tensor:
    """The paper's pairwise objective, summed: BCE of σ(c − d_u); user-carrying pairs weigh ``user_weight``."""
    if user_weight == 1.0:
        return nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="sum")
    w = torch.where(user >= 0, user_weight, 1.0).to(logit.dtype)
    return (w * nn.functional.binary_cross_entropy_with_logits(logit, label, reduction="none")).sum()


def _weights_id(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


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


def _outer_penalty(model, catalog: Catalog, val: Pairs, n_pairs: int, input_size: int | None, composite: str) -> torch.Tensor:
    """The outer loop's penalty map from LRP on (evenly spaced) validation pairs; see :mod:`guidance`."""
    from lrprec.explain.targets import explain_catalog_pairs

    model.eval()
    sel = val.spread(n_pairs)
    r = explain_catalog_pairs(model, catalog, sel, input_size, composite=composite).sum(1)
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
    cfg = with_step_budget(cfg, len(_filter_pairs(catalog, catalog.pairs("train"), rels, cfg.category)))  # issue 31: --min-steps
    return run_loop(catalog, rels, Path(out), cfg, progress, log, resume=resume)


def run_loop(catalog: Catalog, rels: list[str], out: Path, cfg: TrainConfig, progress: bool, log, *, resume: bool = False,
             start: Start | None = None) -> dict:
    """Set up the process group, run :class:`TrainLoop` (``start``: fine-tune an existing model), tear down."""
    ctx = dist_.setup(cfg.device)
    try:
        loop = TrainLoop(catalog, rels, out, cfg, ctx, progress and ctx.is_main, log if ctx.is_main else (lambda m: None), start)
        return loop.fit(resume)
    finally:
        dist_.teardown(ctx)


@dataclass
class Start:
    """Fine-tuning instead of training from scratch: the weights to start from, one more loss term, config notes.

    ``concept`` (optional) is a module the step calls on the backbone features of every batch
    (``concept(model, feats, batch) -> (feats, penalty or None)``, see :class:`_PairStep`):
    it may edit the features the head reads (A-ClArC) and return a summed penalty (RR-ClArC)
    that joins the objective with weight 1. ``config`` entries are added to the run's config.json.
    """

    weights: dict[str, torch.Tensor] | None  # None: a fresh model from the config's seed (retraining with the concept term)
    concept: nn.Module | None = None
    config: dict = field(default_factory=dict)
    model_config: dict | None = None  # the config the model is built from (the source run's), default: the training config
    on_epoch_end: object = None  # callable(loop) after each epoch's steps, before validation (e.g. refit the concept)
    # counterfactual augmentation with a discovered artifact: (probability, fill image (H, W, 3), mask (H, W), pixels (H, W, 3))
    paste: tuple | None = None


@dataclass
class _Sums:
    """Running sums of one epoch on this rank (what a mid-epoch checkpoint carries as ``partial``)."""

    loss: float = 0.0
    n_seen: int = 0
    guide: float = 0.0
    rank: float = 0.0
    recon: float = 0.0
    concept: float = 0.0
    seen_here: int = 0  # pairs of this process since the epoch (re)started: throughput only
    wait: float = 0.0  # seconds waiting for batches

    @classmethod
    def resumed(cls, partial: dict) -> "_Sums":
        return cls(float(partial["loss_sum"]), int(partial["n_seen"]), float(partial.get("guide_sum", 0.0)),
                   float(partial.get("rank_sum", 0.0)), float(partial.get("recon_sum", 0.0)), float(partial.get("concept_sum", 0.0)))

    def partial(self) -> dict:
        out = {"loss_sum": self.loss, "n_seen": self.n_seen, "guide_sum": self.guide, "rank_sum": self.rank, "recon_sum": self.recon}
        return {**out, "concept_sum": self.concept} if self.concept else out


class TrainLoop:
    """The training loop as named steps, read top-down (PyTorch-Lightning style):

    :meth:`fit` = :meth:`build_model` → :meth:`prepare_data` → :meth:`build_optimizer` →
    :meth:`resume` → for each epoch: :meth:`run_epoch` (:meth:`epoch_batches` → :meth:`train_step`
    per batch) → :meth:`validate` → :meth:`select_best` → :meth:`checkpoint` → :meth:`finalize`.

    ``start`` (:class:`Start`) turns it into fine-tuning: the model starts from given weights
    and the step adds a concept term (``lrprec correct``); everything else is the same loop.
    """

    def __init__(self, catalog: Catalog, rels: list[str], out: Path, cfg: TrainConfig, ctx: dist_.DistContext, progress: bool, log,
                 start: Start | None = None):
        self.catalog, self.rels, self.out, self.cfg, self.ctx = catalog, rels, out, cfg, ctx
        self.progress, self.log, self.start = progress, log, start
        self.dev = ctx.device
        self.history: list[dict] = []
        self.best = {"epoch": -1, "val_accuracy": -1.0}
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.partial: dict = {"loss_sum": 0.0, "n_seen": 0}
        self.weights_path = out / "model.safetensors"
        self.ckpt_path = checkpoint_path(out)

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Run the whole loop (``resume``: continue from the run's checkpoint); returns the history with the best epoch."""
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(_rank_seed(self.cfg.seed, self.ctx.rank))
        self.rng = np.random.default_rng(self.cfg.seed)  # the epochs' negatives and permutations
        self.build_model()
        self.prepare_data()
        self.build_optimizer()
        self.pair_step = _PairStep(self.model, self.feats, self.cfg.guide, self.cfg.guide_pairs, self.cfg.guide_rule,
                                   concept=self.start.concept if self.start else None)
        if resume:
            self.resume()
        self.step_module = self.wrap_ddp(self.pair_step)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            sums, seconds = self.run_epoch(epoch)
            if self.start is not None and self.start.on_epoch_end is not None:
                self.start.on_epoch_end(self)
            rec, n_val = self.validate(epoch, sums, seconds)
            self.select_best(epoch, rec, n_val)
            self.checkpoint(epoch + 1, 0, self.rng.bit_generator.state, _Sums())
        return self.finalize()

    # ---- setup -----------------------------------------------------------------------------
    def build_model(self) -> None:
        """The model (fresh from the config's seed, local ImageNet weights for VGG-16/ResNet, or ``start``'s weights) on the device."""
        cfg, log = self.cfg, self.log
        config = asdict(cfg)
        config["relations"] = self.rels
        if cfg.backbone == "features":
            config["backbone_config"] = {"out_dim": int(self.catalog.features.shape[1])}
        model = build_model(self.start.model_config if self.start and self.start.model_config else config, n_users=len(self.catalog.user_ids))
        if self.start is not None:
            if self.start.weights is not None:
                model.load_state_dict(self.start.weights)
            config.update(self.start.config)
            if "input_size" in (self.start.model_config or {}):
                config["input_size"] = self.start.model_config["input_size"]
        else:
            load_pretrained(model.backbone, cfg.backbone, cfg.weights, log)
            if default_input_size(cfg.backbone, model.backbone):
                config["input_size"] = cfg.input_size or default_input_size(cfg.backbone, model.backbone)
        model.to(self.dev)
        if self.ctx.enabled and cfg.sync_batchnorm:
            if self.dev.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log("notice: SyncBatchNorm needs GPUs; on CPU each rank keeps its own BatchNorm batch statistics")
        self.model, self.config = model, config

    def prepare_data(self) -> None:
        """Training positives, validation pairs, the negative sampler, and what batches are made of."""
        cfg, catalog = self.cfg, self.catalog
        self.train_pos = _filter_pairs(catalog, catalog.pairs("train"), self.rels, cfg.category)
        self.val = _filter_pairs(catalog, protocol_pairs(catalog, "validation"), self.rels, cfg.category)
        if len(self.train_pos) == 0:
            raise CatalogError("no training pairs for the chosen relations/category")
        self.sampler = NegativeSampler(catalog.positives(), catalog.category_codes)
        self.reject = train_reject(catalog)
        self.frozen = cfg.freeze_backbone or cfg.backbone == "features"
        self.feats = None
        if self.frozen:
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)
            # features mode reads rows per batch (memory stays bounded on multi-GB feature files);
            # a frozen image backbone is run once over the catalog
            self.feats = (LazyFeatures(catalog.features) if cfg.backbone == "features"
                          else embed_items(self.model, catalog, self.config.get("input_size"), progress=self.progress))
        self.images_path = None if self.frozen else catalog.root / "images.npy"
        self.masks_path = ({"gt": catalog.root / "masks.npy", "mark": catalog.root / "shortcut_masks.npy"}.get(cfg.guide_masks)
                           if cfg.guide is not None else None)
        self.mark_fill = None
        if cfg.mark_augment > 0:  # the artifact to stamp/remove: a watermark (filled from an unmarked image) or a tint
            self.mark_fill = catalog_artifact(catalog.root, catalog.meta, catalog.images)
        self.norm = _Norm(self.model.backbone.mean, self.model.backbone.std)

    def related(self, a, b, r, u):
        """The ranking loss's candidate veto: known positives and the data's own rules."""
        bad = self.sampler.is_positive(a, b, r)
        return bad | self.reject(a, b, r, u) if self.reject is not None else bad

    def build_optimizer(self) -> None:
        """Adam over the head (``lr · head_lr_scale``) and the trainable backbone (``lr``)."""
        cfg = self.cfg
        head = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        body = [p for p in self.model.backbone.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": cfg.lr * cfg.head_lr_scale}] + ([{"params": body, "lr": cfg.lr}] if body else [])
        # Large models (VGG-16: 138M parameters) get the fused Adam kernel: one pass over the
        # parameters, ~10x faster than the multi-tensor one on CPU, where it would otherwise take
        # a large part of a small-batch step. Small models keep the default (identical numerics).
        big = sum(p.numel() for p in head + body) >= _FUSED_ADAM_MIN_PARAMS
        self.opt = torch.optim.Adam(groups, lr=cfg.lr, **({"fused": True} if big else {}))
        self.base_lrs = [g["lr"] for g in groups]

    def resume(self) -> None:
        """Continue from the run's checkpoint: weights, optimizer, RNGs, history and the interrupted epoch's sums."""
        if not self.ckpt_path.exists():
            self.log(f"notice: --resume but no checkpoint in {self.out}; training from scratch")
            return
        ck = load_checkpoint(self.ckpt_path)
        meta = ck["meta"]
        _check_resumable(meta, self.cfg, self.catalog, self.ctx.world_size, self.ckpt_path)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.history, self.best = meta["history"], meta["best"]
        self.start_epoch, self.start_step, self.global_step = meta["epoch"], meta["step"], meta["global_step"]
        self.rng.bit_generator.state = meta["np_rng_epoch_start"]
        restore_rng(ck["rng"][self.ctx.rank])
        self.partial = meta["partial"][self.ctx.rank]
        if "guide_penalty" in ck:
            self.pair_step.penalty = ck["guide_penalty"].to(self.dev)
        self.log(f"resuming from {self.ckpt_path}: epoch {self.start_epoch + 1}, step {self.start_step} (after {self.global_step} steps)")

    def wrap_ddp(self, step: nn.Module) -> nn.Module:
        """The step module as DDP sees it (unchanged in a single process)."""
        if not self.ctx.enabled:
            return step
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = self.dev
        # without users (or --no-personalize) θ_delta gets no gradient; DDP must be told to expect that
        wrapped = DDP(step, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=self.model.n_users == 0)
        if not self.frozen and not self.cfg.sync_batchnorm and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            self.log("notice: BatchNorm under DDP uses per-rank batch statistics, running statistics follow rank 0 (--sync-batchnorm on GPUs for global ones)")
        return wrapped

    # ---- one epoch -------------------------------------------------------------------------
    def epoch_batches(self, epoch: int, first: int) -> tuple[_EpochBatches, int]:
        """The epoch's pairs (positives + freshly sampled negatives, shuffled) as this rank's batches, and the step count."""
        cfg = self.cfg
        neg = self.sampler.sample(self.train_pos, self.rng, self.reject, protocol=cfg.negatives, mix=cfg.negative_mix, user_share=cfg.user_negatives)
        pairs = Pairs.concat([self.train_pos, neg])
        pairs = pairs.take(self.rng.permutation(len(pairs)))
        n_steps = _n_steps(len(pairs), cfg, self.ctx.world_size)
        ds = _EpochBatches(pairs, cfg.batch_size, n_steps, first, self.ctx.rank, self.ctx.world_size, self.images_path, self.norm,
                           self.config.get("input_size"), (cfg.seed, epoch) if cfg.augment else None, self.masks_path,
                           self.related if cfg.rank_weight > 0 else None,
                           self._mark_augment(epoch), forbid_masks=cfg.guide_masks == "mark")
        return ds, n_steps

    def _mark_augment(self, epoch: int) -> tuple | None:
        """What re-draws the artifact on training images: the catalog's watermark (--mark-augment) or ``start.paste``."""
        cfg = self.cfg
        if cfg.mark_augment > 0:
            return cfg.mark_augment, self.mark_fill, (cfg.seed, epoch)
        if self.start is not None and self.start.paste is not None:
            if len(self.start.paste) == 2:  # a discovered global artifact (an Artifact: stamp/remove per catalog row)
                return self.start.paste[0], self.start.paste[1], (cfg.seed, epoch)
            share, fill, mask, pixels = self.start.paste
            return share, fill, (cfg.seed, epoch), (mask, pixels)
        return None

    def run_epoch(self, epoch: int) -> tuple[_Sums, float]:
        """Sample the epoch's negatives, then one optimizer step per batch; returns this rank's sums and the seconds."""
        cfg = self.cfg
        t0 = time.perf_counter()
        epoch_start_state = self.rng.bit_generator.state
        first = self.start_step if epoch == self.start_epoch else 0
        sums = _Sums.resumed(self.partial) if first else _Sums()
        ds, n_steps = self.epoch_batches(epoch, first)
        pin = self.dev.type == "cuda"
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.workers, pin_memory=pin, generator=torch.Generator())
        self.model.train()
        if self.frozen:
            self.model.backbone.eval()
        it = iter(loader)
        if self.progress:
            from tqdm import tqdm
            it = iter(tqdm(it, total=len(ds), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False))
        for step in range(first, n_steps):
            tw = time.perf_counter()
            batch = next(it)
            n_global = int(batch.pop("n_global"))
            batch = {k: v.to(self.dev, non_blocking=pin) for k, v in batch.items()}
            sums.wait += time.perf_counter() - tw
            self.train_step(batch, n_global, epoch + (step + 1) / n_steps, sums)
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 and step + 1 < n_steps:
                self.checkpoint(epoch, step + 1, epoch_start_state, sums)
        del it, loader
        return sums, time.perf_counter() - t0

    def train_step(self, batch: dict[str, torch.Tensor], n_global: int, progress: float, sums: _Sums) -> None:
        """One optimizer step: the scheduled learning rate, the objective's terms, backward, clip, Adam."""
        cfg = self.cfg
        lr_f, rank_f = schedule(cfg, progress)
        for g, base in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = base * lr_f
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logit, guide_share, ranking, appearance, *concept = self.step_module(batch)
        loss_sum = pair_loss(logit.float(), batch["label"], batch["user"], cfg.user_weight)
        objective = loss_sum
        if appearance is not None:  # per pair, like the BCE: the same scaling holds under DDP
            objective = objective + cfg.recon_weight * appearance.float()
            sums.recon += appearance.item()
        if ranking is not None:
            objective = objective + cfg.rank_weight * rank_f * ranking.float()
            sums.rank += ranking.item()
        if guide_share is not None:  # per pair: BCE + λ · mean share of the pair's images
            n_local = int(batch["label"].shape[0])
            if cfg.guide_weight:  # λ = 0 only logs: no branch joins the backward, so training is exactly unguided
                objective = objective + cfg.guide_weight * n_local * guide_share.float()
            sums.guide += guide_share.item() * n_local
        if concept and concept[0] is not None:  # fine-tuning's concept term (lrprec correct), summed over pairs like the BCE
            objective = objective + concept[0].float()
            sums.concept += concept[0].item()
        # DDP averages gradients over ranks: scaling by world / n_global makes that the global-batch mean's gradient
        loss = objective * (self.ctx.world_size / n_global)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
        self.opt.step()
        self.global_step += 1
        sums.loss += loss_sum.item()
        n = int(batch["label"].shape[0])
        sums.n_seen += n
        sums.seen_here += n

    # ---- after each epoch ------------------------------------------------------------------
    def validate(self, epoch: int, sums: _Sums, train_time: float) -> tuple[dict, float]:
        """Sum the epoch over ranks, measure validation accuracy, log; returns the epoch's history record and the validation size."""
        cfg, ctx, model = self.cfg, self.ctx, self.model
        dist_.broadcast_buffers(ctx, model)
        total, n_all, seen_all, guide_all, rank_all, recon_all, concept_all = dist_.all_reduce_sum(
            ctx, [sums.loss, sums.n_seen, sums.seen_here, sums.guide, sums.rank, sums.recon, sums.concept])
        correct, n_val = dist_.all_reduce_sum(ctx, list(_validate(model, self.catalog, self.val, ctx, self.config.get("input_size"), self.feats, cfg.bf16)))
        val_acc = correct / n_val if n_val else float("nan")
        rec = {"epoch": epoch + 1, "loss": total / max(n_all, 1), "val_accuracy": val_acc, "seconds": round(train_time, 2),
               "pairs_per_second": round(seen_all / train_time, 1), "data_wait_fraction": round(sums.wait / train_time, 4)}
        if cfg.rank_weight > 0:
            rec["rank_loss"] = rank_all / max(n_all, 1)  # per pair of the epoch (positives carry it)
        if model.recon is not None:
            rec["appearance_loss"] = recon_all / max(n_all, 1)  # per pair of the epoch
        if self.pair_step.concept is not None:
            rec["concept_loss"] = concept_all / max(n_all, 1)  # per pair of the epoch, weighted
        if cfg.guide is not None:
            self._guide_record(rec, guide_all, n_all)
        self.history.append(rec)
        guide_note = f"  guide {rec['guide_loss']:.3f}" if rec.get("guide_loss") is not None else ""
        self.log(f"epoch {epoch + 1}/{cfg.epochs}  loss {rec['loss']:.4f}{guide_note}  val acc {100 * val_acc:.1f}%  "
                 f"{rec['pairs_per_second']:.3g} pairs/s  (data wait {100 * rec['data_wait_fraction']:.1f}% of step time)")
        return rec, n_val

    def _guide_record(self, rec: dict, guide_all: float, n_all: float) -> None:
        """Guided training's epoch figures; the outer loop (``guide_masks="relevance"``) recomputes its map here."""
        cfg, step = self.cfg, self.pair_step
        # mean share of squared relevance on penalized pixels per image (None: no map yet)
        rec["guide_loss"] = guide_all / n_all if (self.masks_path is not None or step.penalty is not None) and n_all else None
        if cfg.guide_masks == "relevance":
            step.penalty = _outer_penalty(self.model, self.catalog, self.val, cfg.guide_val_pairs, self.config.get("input_size"), cfg.guide_rule)
            rec["guide_penalized_area"] = round(float(step.penalty.mean()), 4)
            if self.ctx.is_main:
                atomic_write(self.out / "guide_penalty.npy", lambda t: np.save(t, step.penalty.cpu().numpy()))

    def select_best(self, epoch: int, rec: dict, n_val: float) -> None:
        """Keep the weights of the best validation epoch so far (every epoch's when there is no validation)."""
        if rec["val_accuracy"] > self.best["val_accuracy"] or not n_val:
            self.best = {"epoch": epoch + 1, "val_accuracy": rec["val_accuracy"]}
            if self.ctx.is_main:
                save_weights(self.model, self.weights_path)

    def checkpoint(self, epoch: int, step: int, epoch_start_state: dict, sums: _Sums) -> None:
        """Collective: gathers every rank's RNG and partial sums; rank 0 writes."""
        ctx = self.ctx
        states = dist_.all_gather_object(ctx, {**capture_rng(), "partial": sums.partial()})
        if not ctx.is_main:
            return
        meta = {
            "format": "lrprec-train-checkpoint", "version": 1, "config": asdict(self.cfg), "catalog_fingerprint": self.catalog.fingerprint,
            "world_size": ctx.world_size, "epoch": epoch, "step": step, "global_step": self.global_step,
            "np_rng_epoch_start": epoch_start_state, "history": self.history, "best": self.best,
            "partial": [s.pop("partial") for s in states],
        }
        penalty = self.pair_step.penalty
        extra = {} if penalty is None else {"guide_penalty": penalty.cpu()}
        save_checkpoint(self.ckpt_path, meta, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "rng": states, **extra})

    # ---- the end ---------------------------------------------------------------------------
    def finalize(self) -> dict:
        """Reload the best epoch's weights and write history.json and config.json (rank 0)."""
        dist_.barrier(self.ctx)
        result = {"epochs": self.history, "best": self.best, "run": str(self.out)}
        if not self.ctx.is_main:
            return result
        from safetensors.torch import load_file

        model, catalog = self.model, self.catalog
        model.load_state_dict(load_file(str(self.weights_path)))
        self.config.update({
            "catalog": str(catalog.root.resolve()),
            "catalog_fingerprint": catalog.fingerprint,
            "weights_id": _weights_id(model),
            "best_epoch": self.best["epoch"],
            "n_users": len(catalog.user_ids),
            "lrprec_version": __import__("lrprec").__version__,
        })
        atomic_write_text(self.out / "history.json", json.dumps({"epochs": self.history, "best": self.best}, indent=2))
        atomic_write_text(self.out / "config.json", json.dumps(self.config, indent=2))
        return result
