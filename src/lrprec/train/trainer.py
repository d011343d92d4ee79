"""End-to-end training of the pair model (SPEC §2 objective) with per-epoch negative resampling.

Maximizes Σ_R log σ(c − d) + Σ_Q log(1 − σ(c − d)) with |Q| = |R| fresh negatives every
epoch, Adam, validation accuracy each epoch, the best epoch's weights kept. With a frozen
backbone ([M15] setting) the features are computed once and only the head trains.
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
from lrprec.data.sampling import NegativeSampler
from lrprec.data.synthetic import catalog_truth_reject
from lrprec.evaluate.linkpred import predict_logits
from lrprec.model.backbones import VGG16, hub_vgg16_weights
from lrprec.run import atomic_write_text, build_model, item_inputs, save_weights


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored as the run's config.json."""

    backbone: str = "small"
    weights: str | None = None
    dim: int = 10
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    relations: list[str] | None = None
    category: str | None = None
    personalize: bool = True
    freeze_backbone: bool = False
    seed: int = 0
    input_size: int | None = None
    head_lr_scale: float = 1.0
    backbone_config: dict = field(default_factory=dict)


def _filter_pairs(catalog: Catalog, pairs: Pairs, relations: list[str], category: str | None) -> Pairs:
    keep = np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])
    if category is not None:
        keep &= catalog.categories[pairs.a] == category
    return pairs.take(np.flatnonzero(keep))


def validate_config(catalog: Catalog, cfg: TrainConfig) -> list[str]:
    """Check names and sizes against the catalog before any work; returns the relations to train."""
    if cfg.dim <= 0:
        raise ValueError(f"--dim (K) must be positive, got {cfg.dim}")
    if cfg.epochs <= 0 or cfg.batch_size <= 0 or cfg.lr <= 0:
        raise ValueError("--epochs, --batch-size and --lr must be positive")
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
    return rels


def _weights_id(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def embed_items(model, catalog: Catalog, input_size: int | None, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Backbone features of every item, (N, F), computed once in batches."""
    model.eval()
    rows = np.arange(len(catalog))
    chunks = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="embedding items", unit="batch", leave=False)
    return torch.cat([model.embed(item_inputs(catalog, model, rows[s:s + batch_size], input_size)) for s in chunks])


def train(data: str | os.PathLike, out: str | os.PathLike, cfg: TrainConfig, progress: bool = True, log=print) -> dict:
    """Train a model on a catalog into run directory ``out``; returns the history with the best epoch."""
    catalog = Catalog(data)
    rels = validate_config(catalog, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

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
        raise ValueError("--weights applies to --backbone vgg16 only")

    train_pos = _filter_pairs(catalog, catalog.pairs("train"), rels, cfg.category)
    val = _filter_pairs(catalog, catalog.pairs("validation"), rels, cfg.category)
    if len(train_pos) == 0:
        raise CatalogError("no training pairs for the chosen relations/category")
    sampler = NegativeSampler(catalog.positives(), catalog.category_codes)
    reject = catalog_truth_reject(catalog)

    frozen = cfg.freeze_backbone or cfg.backbone == "features"
    feats = None
    if frozen:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        feats = embed_items(model, catalog, config.get("input_size"), progress=progress)
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr * cfg.head_lr_scale}] + ([{"params": body, "lr": cfg.lr}] if body else [])
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()

    history: list[dict] = []
    best = {"epoch": -1, "val_accuracy": -1.0}
    weights_path = out / "model.safetensors"
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        neg = sampler.sample(train_pos, rng, reject)
        pairs = Pairs.concat([train_pos, neg])
        pairs = pairs.take(rng.permutation(len(pairs)))
        model.train()
        if frozen:
            model.backbone.eval()
        total, n_seen = 0.0, 0
        steps = range(0, len(pairs), cfg.batch_size)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
        for s in steps:
            b = pairs.take(slice(s, s + cfg.batch_size))
            rel, usr = torch.from_numpy(b.relation), torch.from_numpy(b.user)
            if feats is not None:
                logit = model.logit_from_embeddings(model.project(feats[torch.from_numpy(b.a)], rel), model.project(feats[torch.from_numpy(b.b)], rel), rel, usr)
            else:
                xa = item_inputs(catalog, model, b.a, config.get("input_size"))
                xb = item_inputs(catalog, model, b.b, config.get("input_size"))
                logit = model(xa, xb, rel, usr)
            loss = loss_fn(logit, torch.from_numpy(b.label).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            n_seen += len(b)
        train_time = time.perf_counter() - t0
        logits = predict_logits(model, catalog, val, input_size=config.get("input_size"), features=feats)
        val_acc = float(((logits > 0) == (val.label == 1)).mean()) if len(val) else float("nan")
        rec = {"epoch": epoch + 1, "loss": total / max(n_seen, 1), "val_accuracy": val_acc, "seconds": round(train_time, 2), "pairs_per_second": round(n_seen / train_time, 1)}
        history.append(rec)
        log(f"epoch {epoch + 1}/{cfg.epochs}  loss {rec['loss']:.4f}  val acc {100 * val_acc:.1f}%  {rec['pairs_per_second']:.0f} pairs/s")
        if val_acc > best["val_accuracy"] or not len(val):
            best = {"epoch": epoch + 1, "val_accuracy": val_acc}
            save_weights(model, weights_path)
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
    return {"epochs": history, "best": best, "run": str(out)}
