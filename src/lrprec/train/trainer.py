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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs
from lrprec.data.features import LazyFeatures
from lrprec.data.rules import train_reject
from lrprec.data.sampling import NegativeSampler
from lrprec.data.splits import protocol_pairs
from lrprec.data.watermark import unmarked_image
from lrprec.errors import UsageError
from lrprec.model.backbones import default_input_size, load_pretrained
from lrprec.run import atomic_write_text, build_model, embed_items, item_inputs, save_weights
from lrprec.train import distributed as dist_
from lrprec.train.batches import _EpochBatches, _n_steps, _Norm
from lrprec.train.checkpoint import capture_rng, checkpoint_path, load_checkpoint, restore_rng, save_checkpoint
from lrprec.train.config import TrainConfig, _check_resumable, schedule, validate_config
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
    load_pretrained(model.backbone, cfg.backbone, cfg.weights, log)
    if default_input_size(cfg.backbone, model.backbone):
        config["input_size"] = cfg.input_size or default_input_size(cfg.backbone, model.backbone)
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
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr * cfg.head_lr_scale}] + ([{"params": body, "lr": cfg.lr}] if body else [])
    # Large models (VGG-16: 138M parameters) get the fused Adam kernel: one pass over the
    # parameters, ~10x faster than the multi-tensor one on CPU, where it would otherwise take
    # a large part of a small-batch step. Small models keep the default (identical numerics).
    big = sum(p.numel() for p in head + body) >= _FUSED_ADAM_MIN_PARAMS
    opt = torch.optim.Adam(groups, lr=cfg.lr, **({"fused": True} if big else {}))
    base_lrs = [g["lr"] for g in groups]

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
    masks_path = ({"gt": catalog.root / "masks.npy", "mark": catalog.root / "shortcut_masks.npy"}.get(cfg.guide_masks)
                  if cfg.guide is not None else None)
    mark_fill = None
    if cfg.mark_augment > 0:  # the background of an unmarked image fills a removed watermark
        mark_fill = unmarked_image(catalog.images, np.load(catalog.root / "shortcut_tags.npy"))
    norm = _Norm(model.backbone.mean, model.backbone.std)
    pin = dev.type == "cuda"

    def checkpoint(epoch: int, step: int, epoch_start_state: dict, loss_sum: float, n_seen: int, guide_sum: float = 0.0,
                   rank_sum: float = 0.0, recon_sum: float = 0.0) -> None:
        """Collective: gathers every rank's RNG and partial sums; rank 0 writes."""
        states = dist_.all_gather_object(ctx, {**capture_rng(), "partial": {"loss_sum": loss_sum, "n_seen": n_seen, "guide_sum": guide_sum,
                                                                             "rank_sum": rank_sum, "recon_sum": recon_sum}})
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
        neg = sampler.sample(train_pos, rng, reject, protocol=cfg.negatives, mix=cfg.negative_mix, user_share=cfg.user_negatives)
        pairs = Pairs.concat([train_pos, neg])
        pairs = pairs.take(rng.permutation(len(pairs)))
        first = start_step if epoch == start_epoch else 0
        total, n_seen = (float(partial["loss_sum"]), int(partial["n_seen"])) if first else (0.0, 0)
        guide_total = float(partial.get("guide_sum", 0.0)) if first else 0.0
        rank_total = float(partial.get("rank_sum", 0.0)) if first else 0.0
        recon_total = float(partial.get("recon_sum", 0.0)) if first else 0.0
        n_steps = _n_steps(len(pairs), cfg, ctx.world_size)
        ds = _EpochBatches(pairs, cfg.batch_size, n_steps, first, ctx.rank, ctx.world_size, images_path, norm, config.get("input_size"),
                           (cfg.seed, epoch) if cfg.augment else None, masks_path, related if ranking_on else None,
                           (cfg.mark_augment, mark_fill, (cfg.seed, epoch)) if cfg.mark_augment > 0 else None,
                           forbid_masks=cfg.guide_masks == "mark")
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
                logit, guide_share, ranking, appearance = step_module(batch)
            loss_sum = pair_loss(logit.float(), batch["label"], batch["user"], cfg.user_weight)
            objective = loss_sum
            if appearance is not None:  # per pair, like the BCE: the same scaling holds under DDP
                objective = objective + cfg.recon_weight * appearance.float()
                recon_total += appearance.item()
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
                checkpoint(epoch, step + 1, epoch_start_state, total, n_seen, guide_total, rank_total, recon_total)
        del it, loader
        train_time = time.perf_counter() - t0
        dist_.broadcast_buffers(ctx, model)
        total, n_all, seen_all, guide_all, rank_all, recon_all = dist_.all_reduce_sum(
            ctx, [total, n_seen, seen_here, guide_total, rank_total, recon_total])
        correct, n_val = dist_.all_reduce_sum(ctx, list(_validate(model, catalog, val, ctx, config.get("input_size"), feats, cfg.bf16)))
        val_acc = correct / n_val if n_val else float("nan")
        rec = {"epoch": epoch + 1, "loss": total / max(n_all, 1), "val_accuracy": val_acc, "seconds": round(train_time, 2),
               "pairs_per_second": round(seen_all / train_time, 1), "data_wait_fraction": round(wait / train_time, 4)}
        if ranking_on:
            rec["rank_loss"] = rank_all / max(n_all, 1)  # per pair of the epoch (positives carry it)
        if model.recon is not None:
            rec["appearance_loss"] = recon_all / max(n_all, 1)  # per pair of the epoch
        if cfg.guide is not None:
            # mean share of squared relevance on penalized pixels per image (None: no map yet)
            rec["guide_loss"] = guide_all / n_all if (masks_path is not None or pair_step.penalty is not None) and n_all else None
            if cfg.guide_masks == "relevance":
                pair_step.penalty = _outer_penalty(model, catalog, val, cfg.guide_val_pairs, config.get("input_size"), cfg.guide_rule)
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
