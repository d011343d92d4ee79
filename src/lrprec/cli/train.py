"""Training and link-prediction evaluation commands."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from lrprec.cli._app import command, emit
from lrprec.defaults import GUIDE_COMPOSITE
from lrprec.errors import UsageError
from lrprec.files import dir_lock


@command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="Catalog directory."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    backbone: str = typer.Option("small", help="small (default), vgg16, resnet18, resnet50, vit-b16, or resnet-small / vit-small (64 px catalogs)."),
    mode: str = typer.Option("images", help="images (end-to-end) or features (precomputed features, [M15])."),
    weights: Path = typer.Option(None, help="Local torchvision state dict for vgg16, resnet18, resnet50 or vit-b16 (never downloaded)."),
    dim: int = typer.Option(32, help="Embedding dimension K."),
    head: str = typer.Option("auto", help="Pair head: auto (metric for substitutes, asymmetric for complements), metric (the paper's eq 1) or asymmetric."),
    negatives: str = typer.Option("mixed", help="Negatives of the pairwise loss: mixed (default), random (whole catalog), category (partner's category) or contrast."),
    negative_mix: str = typer.Option(None, help="Shares of --negatives mixed, e.g. random=1,category=1,contrast=1 (the default)."),
    rank_weight: float = typer.Option(2.0, help="Weight of the in-batch ranking loss added to the paper's objective (0: the paper's objective alone)."),
    warmup_epochs: float = typer.Option(1.0, help="Linear learning-rate warm-up over this many epochs (0: none; 1, the default, keeps runs from stalling; README)."),
    lr_schedule: str = typer.Option("constant", help="constant, or cosine (decay to 0 at the last epoch, after the warm-up)."),
    rank_warmup_epochs: float = typer.Option(0.0, help="Ramp the ranking loss's weight up from 0 over this many epochs."),
    clip_norm: float = typer.Option(None, help="Clip the gradients' global L2 norm to this value."),
    user_weight: float = typer.Option(1.0, help="Weight of user-carrying pairs in the pairwise loss."),
    user_negatives: float = typer.Option(0.0, help="Share of user-carrying pairs whose negative is the query's partner under another user."),
    recon_weight: float = typer.Option(20.0, help="Weight of the appearance loss: each image's thumbnail decoded from its features (0: off; end-to-end only)."),
    recon_size: int = typer.Option(2, help="Side of the appearance loss's thumbnail (3·side² values per image)."),
    epochs: int = typer.Option(None, help="Epochs, exactly (default: 20, or more on small catalogs to reach --min-steps)."),
    min_steps: int = typer.Option(None, help="Train at least this many optimizer steps: epochs grow where an epoch has few "
                                                       "(default: 600 without --epochs, 0 with it; docs/howto/small-catalogs.md)."),
    partner_init: str = typer.Option(None, help="Initialization of the asymmetric head's partner projection F_r: independent or copy (of E_r)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(3e-3),
    relations: str = typer.Option(None, help="Comma-separated relations (default: all in the catalog)."),
    category: str = typer.Option(None, help="Train on pairs whose query item is in this category."),
    no_personalize: bool = typer.Option(False, "--no-personalize", help="One global θ per relation."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Keep the backbone fixed ([M15] setting)."),
    input_size: int = typer.Option(None, help="Resize images to this side (default: catalog size; 224 for vgg16)."),
    seed: int = typer.Option(0),
    backbone_config: str = typer.Option(None, help='Backbone options as JSON, e.g. \'{"batchnorm": false}\' for the small CNN.'),
    workers: int = typer.Option(0, help="DataLoader worker processes preparing batches (0: in the training process)."),
    augment: bool = typer.Option(False, "--augment", help="Random horizontal flips (seeded; end-to-end only)."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (fast on GPUs and CPUs with bf16 units)."),
    checkpoint_every: int = typer.Option(0, help="Also checkpoint every N optimizer steps (0: at epoch ends only)."),
    steps_per_epoch: int = typer.Option(None, help="Cap on optimizer steps per epoch (smoke runs, benchmarks)."),
    device: str = typer.Option("auto", help="auto (cuda:LOCAL_RANK when available), cpu or cuda."),
    sync_batchnorm: bool = typer.Option(False, "--sync-batchnorm", help="Under DDP on GPUs: BatchNorm statistics over the global batch."),
    guide: str = typer.Option(None, help="Explanation-guided training: lrp or gradient (penalizes relevance outside the allowed region)."),
    guide_weight: float = typer.Option(1.0, help="λ of the guidance loss (0: train unguided, only log the loss)."),
    guide_masks: str = typer.Option("gt", help="Allowed regions: gt (catalog masks), mark (all but the planted watermark's pixels) "
                                    "or relevance (outer loop over validation relevance)."),
    guide_pairs: int = typer.Option(32, help="Pairs per batch whose relevance is constrained (0: all)."),
    guide_rule: str = typer.Option(GUIDE_COMPOSITE, help="LRP composite of the guidance relevance (--guide lrp)."),
    guide_val_pairs: int = typer.Option(512, help="Validation pairs explained per outer step (--guide-masks relevance)."),
    mark_augment: float = typer.Option(0.0, help="Counterfactual augmentation on a shortcut catalog: probability of re-drawing each training image's watermark."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint (same options; --epochs may grow)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train the Siamese personalized model end-to-end; the best validation epoch is kept.

    Multi-process (DDP; gloo on CPU, nccl on GPU): torchrun --nproc-per-node N -m lrprec train ...
    --batch-size is the global batch, split over the processes.
    """
    import os

    from lrprec.data.sampling import parse_mix
    from lrprec.train import TrainConfig, train
    from lrprec.train.config import DEFAULT_MIN_STEPS

    if mode not in ("images", "features"):
        raise UsageError(f"--mode must be images or features, got {mode!r}")
    cfg = TrainConfig(
        backbone="features" if mode == "features" else backbone, weights=str(weights) if weights else None, dim=dim, epochs=epochs if epochs is not None else TrainConfig.epochs,
        batch_size=batch_size, lr=lr, relations=[r.strip() for r in relations.split(",") if r.strip()] if relations else None,
        category=category, personalize=not no_personalize, freeze_backbone=freeze_backbone, seed=seed, input_size=input_size,
        workers=workers, augment=augment, bf16=bf16, checkpoint_every=checkpoint_every, steps_per_epoch=steps_per_epoch,
        device=device, sync_batchnorm=sync_batchnorm, guide=guide, guide_weight=guide_weight, guide_masks=guide_masks,
        guide_pairs=guide_pairs or None, guide_val_pairs=guide_val_pairs, guide_rule=guide_rule,
        head=head, negatives=negatives, negative_mix=parse_mix(negative_mix) if negative_mix else None, rank_weight=rank_weight,
        warmup_epochs=warmup_epochs, lr_schedule=lr_schedule, rank_warmup_epochs=rank_warmup_epochs, clip_norm=clip_norm,
        user_weight=user_weight, user_negatives=user_negatives, mark_augment=mark_augment, recon_weight=recon_weight, recon_size=recon_size,
    )
    # an explicit --epochs is exact; the default is 20 epochs or DEFAULT_MIN_STEPS steps, whichever is more (issue 31)
    cfg.min_steps = min_steps if min_steps is not None else (0 if epochs is not None else DEFAULT_MIN_STEPS)
    if partner_init is not None:
        cfg.partner_init = partner_init
    if backbone_config:
        try:
            cfg.backbone_config = json.loads(backbone_config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--backbone-config is not valid JSON: {exc}") from None
        if not isinstance(cfg.backbone_config, dict):
            raise UsageError("--backbone-config must be a JSON object")
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    main_rank = int(os.environ.get("RANK", "0")) == 0
    # rank 0 alone writes the run (and holds its lock): the other ranks of a torchrun job run beside it
    with dir_lock(out, "lrprec train") if main_rank else contextlib.nullcontext():
        result = train(data, out, cfg, log=log, resume=resume)
    if not main_rank:
        return  # only rank 0 of a torchrun job reports
    emit(result, as_json, _done_text)


def _done_text(r: dict) -> str:
    """The end of a training, and what to run next."""
    run = r["run"]
    return (f"best epoch {r['best']['epoch']} (validation accuracy {100 * r['best']['val_accuracy']:.1f}%); run saved in {run}\n"
            f"next: lrprec evaluate {run}          (accuracy, ranking and top-10 checks on the test split)\n"
            f"      lrprec index {run}             (embed the catalog once for fast recommendations)\n"
            f"      lrprec recommend {run} ITEM_ID (top-10 per relation; builds the index if missing)\n"
            f"      lrprec serve {run}             (the web app)")


@command()
def evaluate(
    runs: list[str] = typer.Argument(..., help="Run directory; with --compare several runs, stored report JSONs or baseline names (random, category-tree, wnn)."),
    split: str = typer.Option("test", help="validation or test."),
    compare: bool = typer.Option(False, "--compare", help="Lay several runs and baselines side by side (Table 1 layout)."),
    catalog: Path = typer.Option(None, help="Catalog for baseline-only comparisons (default: the runs' catalog)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Table 1 (accuracy at P > 0.5, ROC-AUC per relation and category) under both negative protocols,
    the ranking of held-out positives over the whole catalog, and on the synthetic catalog top-10 lists
    checked against its rules."""
    from lrprec.app.evaluation import evaluate_run
    from lrprec.evaluate.linkpred import evaluation_text

    if compare:
        from lrprec.app.evaluation import compare_reports
        from lrprec.evaluate.compare import compare_text

        emit(compare_reports(runs, split, catalog=catalog), as_json, compare_text)
        return
    if len(runs) > 1:
        raise UsageError("several runs given: add --compare to lay them side by side")
    with dir_lock(runs[0], "lrprec evaluate") if Path(runs[0], "config.json").is_file() else contextlib.nullcontext():
        report = evaluate_run(runs[0], split)
    emit(report, as_json, evaluation_text)
