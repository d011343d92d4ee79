"""``lrprec correct``: remove a discovered artifact from a trained run in latent space (issue 26).

Reads the audit ``lrprec audit`` wrote (``RUN/audit/audit.json``), takes its flagged cluster (or
``cluster``), labels every catalog item t = 1 if it is a member of the cluster, and fits the
artifact's concept direction(s) V on the backbone features of the training images
(:mod:`lrprec.explain.concepts`: the pattern CAV, more directions while a linear probe still
reads t). Then one of:

* ``p-clarc`` — projection at inference, no training: a ← a − VᵀV(a − z̄₀), z̄₀ the mean
  feature of the non-members, as a frozen linear layer after the backbone
  (:mod:`lrprec.model.projection`); every later stage that loads the run sees it.
* ``rr-clarc`` — fine-tuning from the run's weights with λ · (∇_a ŷ · v)² added (Dreyer, Pahde
  et al. 2024): the gradient of every trained relation's logit of the pair with respect to the
  backbone features of both images, along the concept, squared (second order, create_graph).
* ``a-clarc`` — fine-tuning where each training image's features are, with probability
  ``share``, moved along V to the members' mean z̄₁ or to z̄₀ (even odds): the artifact in latent
  space decorrelated from the label, the latent analogue of counterfactual augmentation.
* ``augment`` — counterfactual augmentation with the *discovered* artifact: its region (the
  cluster's mean heatmap ≥ ``REGION_THRESHOLD`` of its maximum) and pixels (the members'
  per-pixel median there) are pasted onto training images, or the region is filled from the
  first training image the concept labels clean, each with probability
  ``share`` / 2 — the oracle's ``--mark-augment`` without being told the mark; or, for a global
  artifact, the per-channel colour transform between the images that carry it and the others
  (:mod:`lrprec.data.colour_artifact`), applied to images that lack it and inverted on those
  that carry it. Which form: the one whose flip moves the run's validation outputs most
  (:func:`choose_artifact`). After the retraining the artifact's directions are erased from the
  features the head reads (``erase``, :mod:`lrprec.train.erasure`): the model stops using the
  artifact through augmentation, and stops carrying it through the erasure.

A correction that ends more than :data:`WORSE_TOLERANCE` below its run on validation pairs is
refused (nothing written) unless ``keep_worse``.

The fine-tuning methods are :class:`lrprec.train.trainer.TrainLoop` started from the run's
weights with the concept term (:class:`Start`), not a second loop. ``project=True`` also keeps the
projection at inference after fine-tuning. The output is a normal run directory, written into a
temporary sibling and renamed at the end: an error leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrprec.data.catalog import RELATIONS, CatalogError, Pairs
from lrprec.data.splits import protocol_pairs
from lrprec.errors import LrprecError, UsageError
from lrprec.evaluate.audit import COST_WEIGHT, effect_and_cost
from lrprec.explain.concepts import class_means, concept_directions, layer_activations, signal_cav
from lrprec.model.projection import attach_projection, projection_layer
from lrprec.run import Run, RunError, atomic_write_text, item_inputs, predict_logits, save_weights
from lrprec.train.config import TrainConfig
from lrprec.train.trainer import Start, _filter_pairs, _weights_id, run_loop

CORRECT_METHODS = ("auto", "p-clarc", "rr-clarc", "a-clarc", "augment")
# chosen on validation pairs of the shortcut catalogs (docs/guide/audit-and-correct.md): "auto" = augment --from-scratch with
# the discovered artifact (pasted region or colour transform, :func:`choose_artifact`) where its flip scores >= MIN_SCORE,
# else a-clarc --project --refit --from-scratch
DEFAULT_METHOD = "auto"
DEFAULT_EPOCHS = {"p-clarc": 0, "rr-clarc": 5, "a-clarc": 5, "augment": 5}
REGION_THRESHOLD = 0.5  # the artifact's pixels: where the cluster's mean heatmap reaches this share of its maximum
PIXEL_TOLERANCE = 16  # uint8 levels: members "show the same pixel" within this of their median
NEAR_THRESHOLD, NEAR_GROW = 0.2, 4  # the artifact's extent is searched where the region reaches 0.2 of its max, grown 4 px
MAX_REGION_AREA = 0.25  # a region larger than this share of the image is not a localized artifact to paste
# auto pastes/applies the discovered artifact when flipping it on validation pairs scores at least this (mean |ΔP| minus
# COST_WEIGHT × accuracy lost, the audit's rule; chosen on validation pairs, docs/guide/audit-and-correct.md), else falls
# back to the latent A-ClArC
MIN_SCORE = 0.05
EFFECT_PAIRS = 256  # validation pairs the flip's effect is measured on
DEFAULT_WEIGHT = 1.0
WORSE_TOLERANCE = 0.01  # a correction that loses more validation accuracy than this is refused (--keep-worse writes it)


class CorrectionRefused(LrprecError):
    """The correction ran but made the model worse on validation pairs; nothing was written."""


@dataclass
class CorrectConfig:
    """What ``lrprec correct`` does to a run."""

    method: str = DEFAULT_METHOD
    audit: str | None = None  # default RUN/audit/audit.json
    cluster: int | None = None  # default: the highest-scoring suspicious cluster
    epochs: int | None = None  # fine-tuning epochs (default per method: DEFAULT_EPOCHS; p-clarc: 0 = projection only)
    weight: float = DEFAULT_WEIGHT  # λ of the RR-ClArC penalty
    share: float = 0.5  # A-ClArC / augment: probability that an image's artifact is re-drawn
    max_dirs: int = 3  # cap on concept directions
    project: bool | None = None  # keep the projection at inference (default: p-clarc only)
    refit: bool = False  # fine-tuning: refit the directions on the current backbone after every epoch
    from_scratch: bool = False  # retrain from the run's seed (its epochs, warm-up) instead of fine-tuning its weights
    lr: float | None = None  # fine-tuning learning rate (default: the run's)
    erase: bool = True  # augment: erase the artifact's directions from the trained features (lrprec.train.erasure)
    keep_worse: bool = False  # write the corrected run even when it is worse on validation pairs than the run it came from
    overwrite: bool = False


@dataclass
class Concept:
    """The artifact in the backbone's output space: directions V (k, F), the non-member and member means."""

    V: torch.Tensor
    z0: torch.Tensor
    z1: torch.Tensor
    probes: list[float]
    n_members: int
    n_items: int
    labels: torch.Tensor | None = None  # t of the fitted images (after self-labelling)


# ---- the audit ---------------------------------------------------------------------------------
def read_audit(run: Run, path: str | os.PathLike | None) -> tuple[dict, Path]:
    """The audit JSON (default ``RUN/audit/audit.json``) and its folder; it must be made for this run's weights."""
    p = Path(path) if path is not None else run.path / "audit" / "audit.json"
    if not p.is_file():
        raise UsageError(f"no audit at {p}; run 'lrprec audit {run.path}' first (or pass --audit FILE)")
    try:
        audit = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(audit, dict) or not isinstance(audit.get("clusters"), list):
        raise UsageError(f"{p} is not an lrprec audit (no 'clusters' list)")
    if audit.get("weights_id") != run.version:
        raise UsageError(f"{p} was made for other weights (weights_id {audit.get('weights_id')!r}, this run {run.version!r}); "
                         f"audit this run again")
    return audit, p.parent


def pick_cluster(audit: dict, cluster: int | None) -> dict:
    """The cluster to correct: ``cluster`` by id, else the one the audit flagged (its rule, ``audit._top``)."""
    clusters = audit["clusters"]
    if cluster is not None:
        for c in clusters:
            if int(c["id"]) == int(cluster):
                return c
        raise UsageError(f"the audit has no cluster {cluster}; its clusters: {', '.join(str(c['id']) for c in clusters) or 'none'}")
    suspicious = [c for c in clusters if c.get("suspicious")]
    if not suspicious:
        raise UsageError("the audit flagged no cluster as suspicious; nothing to correct (pass --cluster ID to correct one anyway)")
    flagged = audit.get("flagged")
    if flagged is None:  # an audit file written before "flagged" existed
        return max(suspicious, key=lambda c: float(c.get("score", 0.0)))
    return next(c for c in clusters if int(c["id"]) == int(flagged))


def concept_labels(n_items: int, cluster: dict) -> np.ndarray:
    """t per catalog item: 1 for the cluster's members, 0 otherwise."""
    members = np.asarray(cluster.get("members", []), dtype=np.int64)
    if members.size == 0:
        raise UsageError(f"cluster {cluster.get('id')} has no members")
    if members.min() < 0 or members.max() >= n_items:
        raise UsageError(f"cluster {cluster.get('id')} names items outside the catalog (0..{n_items - 1})")
    t = np.zeros(n_items, np.int64)
    t[members] = 1
    return t


# ---- the concept -------------------------------------------------------------------------------
def training_items(run: Run) -> np.ndarray:
    """Items that appear in the run's training pairs (the images the concept is fitted on)."""
    pos = run.catalog.pairs("train")
    return np.unique(np.concatenate([pos.a, pos.b]))


def _features(model, catalog, rows: np.ndarray, input_size, batch_size: int = 256) -> torch.Tensor:
    """Backbone features of ``rows`` before any concept projection the model carries, (n, F) float64."""
    cls = model.backbone.classifier
    layer = f"classifier.{len(cls) - 2}" if len(cls) and isinstance(cls[-1], nn.Linear) and cls[-1].weight.requires_grad is False else None
    return torch.cat([layer_activations(model, item_inputs(catalog, model, rows[s:s + batch_size], input_size), layer=layer)
                      for s in range(0, len(rows), batch_size)]).double()


def fit_concept(run: Run, t: np.ndarray, rows: np.ndarray, max_dirs: int = 3) -> Concept:
    """Concept directions of the backbone features (before any projection) of ``rows`` labelled ``t[rows]``.

    The members come from validation heatmaps and are few; the items' own features then say
    which other images carry the same thing: t is refined once by the members' side of the
    midpoint between both groups' projections on the first pattern CAV (self-labelling), and
    the directions are refitted with the refined labels.
    """
    acts = _features(run.model, run.catalog, rows, run.input_size)
    tt = torch.from_numpy(t[rows]).double()
    if tt.sum() < 2 or (1 - tt).sum() < 2:
        raise UsageError(f"the cluster's members and the other items must both number ≥ 2 among the {len(rows)} training images "
                         f"(members there: {int(tt.sum())})")
    v = signal_cav(acts, tt)
    s = acts @ v
    cut = 0.5 * (s[tt == 1].mean() + s[tt == 0].mean())
    refined = (s > cut).double()
    if refined.sum() >= 2 and (1 - refined).sum() >= 2:
        tt = refined
    return _directions(acts, tt, max_dirs)


def _directions(acts: torch.Tensor, tt: torch.Tensor, max_dirs: int) -> Concept:
    V, probes = concept_directions(acts, tt, max_dirs=max_dirs, return_probes=True)
    z0, z1 = class_means(acts, tt)
    return Concept(V.float(), z0.float(), z1.float(), probes, int(tt.sum()), len(tt), tt)


class Refit:
    """After each fine-tuning epoch: the concept's directions again, on the current backbone, with the same labels
    (the backbone may move the artifact to another direction); the term and the projection layer follow."""

    def __init__(self, catalog, rows: np.ndarray, labels: torch.Tensor, input_size, max_dirs: int, term: nn.Module):
        self.catalog, self.rows, self.labels, self.input_size, self.max_dirs, self.term = catalog, rows, labels, input_size, max_dirs, term
        self.history: list[dict] = []
        self.concepts: list[Concept] = []

    def __call__(self, loop) -> None:
        model = loop.model
        c = _directions(_features(model, self.catalog, self.rows, self.input_size), self.labels, self.max_dirs)
        if self.term is not None:
            self.term.set_concept(c)
        cls = model.backbone.classifier
        if isinstance(cls[-1], nn.Linear) and not cls[-1].weight.requires_grad:
            fresh = projection_layer(c.V, c.z0)
            with torch.no_grad():
                cls[-1].weight.copy_(fresh.weight)
                cls[-1].bias.copy_(fresh.bias)
        self.history.append({"directions": int(c.V.shape[0]), "probe_after_removal": c.probes[-1]})
        self.concepts.append(c)


# ---- the loss terms the fine-tuning step adds ----------------------------------------------------
class RRClArC(nn.Module):
    """λ · Σ_pairs mean_r Σ_{both images} ‖V ∇_a ŷ_r‖², ŷ_r every trained relation's logit of the pair.

    The gradient is taken with ``create_graph=True`` so the penalty's own gradient (second order)
    reaches the head and, through the features, the backbone.
    """

    def __init__(self, V: torch.Tensor, relations: list[int], weight: float):
        super().__init__()
        self.register_buffer("V", V.float())
        self.relations = list(relations)
        self.weight = float(weight)

    def set_concept(self, c: Concept) -> None:
        self.V = c.V.to(self.V.device)

    def penalty(self, model, feats: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """The summed penalty for features (2n, F) of n pairs ([a-images; b-images]) and the pairs' users."""
        n = user.shape[0]
        if not feats.requires_grad:  # a frozen backbone: the features are data, the head still learns
            feats = feats.detach().requires_grad_(True)
        logits = model.logits_all(model.project_all(feats[:n]), model.project_partner_all(feats[n:]), model.theta_all(user))
        total = feats.new_zeros(())
        for r in self.relations:
            g = torch.autograd.grad(logits[:, r].sum(), feats, create_graph=True)[0]  # row i: ∂ŷ_r(pair of i)/∂a_i
            total = total + (g @ self.V.T.to(g.dtype)).pow(2).sum()
        return self.weight * total / len(self.relations)

    def forward(self, model, feats: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not torch.is_grad_enabled():
            return feats, None
        return feats, self.penalty(model, feats, batch["user"])


class AClArC(nn.Module):
    """In training, each image's features move along V to the members' mean (artifact added) or
    the non-members' mean (removed), with probability ``share``, even odds; seeded."""

    def __init__(self, V: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor, share: float, seed: int):
        super().__init__()
        self.register_buffer("V", V.float())
        self.register_buffer("z0", z0.float())
        self.register_buffer("z1", z1.float())
        self.share = float(share)
        self.gen = torch.Generator().manual_seed(int(seed))

    def set_concept(self, c: Concept) -> None:
        self.V, self.z0, self.z1 = c.V.to(self.V.device), c.z0.to(self.V.device), c.z1.to(self.V.device)

    def forward(self, model, feats: torch.Tensor, batch: dict) -> tuple[torch.Tensor, None]:
        if not self.training:
            return feats, None
        coins = torch.rand(2, feats.shape[0], generator=self.gen).to(feats.device)
        move = (coins[0] < self.share).unsqueeze(1)
        target = torch.where((coins[1] < 0.5).unsqueeze(1), self.z1, self.z0)
        V = self.V.to(feats.dtype)
        shifted = feats - ((feats - target.to(feats.dtype)) @ V.T) @ V
        return torch.where(move, shifted, feats), None


# ---- the command -------------------------------------------------------------------------------
def _check(run: Run, out: Path, cfg: CorrectConfig) -> list[str]:
    if cfg.method not in CORRECT_METHODS:
        raise UsageError(f"unknown --method {cfg.method!r}; known: {', '.join(CORRECT_METHODS)}")
    if out.resolve() == run.path.resolve():
        raise UsageError("--out must be a new run directory, not the run being corrected")
    if out.exists() and not cfg.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    if run.config["backbone"] == "features" or run.model.backbone.kind == "features":
        raise UsageError("correct needs a run trained on images: a features-mode run has no images to find the artifact in")
    if run.config.get("concept_projection"):
        raise UsageError(f"{run.path} already carries a concept projection; correct the run it came from")
    if cfg.epochs is not None and cfg.epochs < 0 or cfg.weight < 0 or not 0 <= cfg.share <= 1 or cfg.max_dirs < 1:
        raise UsageError("--epochs and --weight must be >= 0, --share in [0, 1], --max-dirs >= 1")
    if cfg.method == "augment" and run.config.get("freeze_backbone"):
        raise UsageError("--method augment edits training images: it needs a run trained end to end")
    if cfg.method != "p-clarc" and (cfg.epochs == 0):
        raise UsageError(f"--method {cfg.method} fine-tunes: --epochs must be positive")
    rels = run.relations
    val = _filter_pairs(run.catalog, protocol_pairs(run.catalog, "validation"), rels, run.config.get("category"))
    if len(val) == 0:
        raise CatalogError(f"{run.catalog.root} has no validation pairs for this run's relations: the correction "
                           "is judged (and its default chosen) on validation pairs")
    return rels


def validation_accuracy(run_model, run: Run) -> float:
    """Accuracy (logit > 0 ⇔ related) on the run's validation pairs."""
    val = _filter_pairs(run.catalog, protocol_pairs(run.catalog, "validation"), run.relations, run.config.get("category"))
    logits = predict_logits(run_model, run.catalog, val, input_size=run.input_size)
    return float(((logits > 0) == (val.label == 1)).mean())


def correct(run_dir: str | os.PathLike, out: str | os.PathLike, cfg: CorrectConfig, progress: bool = False, log=print) -> dict:
    """Correct ``run_dir`` into a new run ``out``; returns a summary (also ``out/correction.json``)."""
    cfg_path = Path(run_dir) / "config.json"
    if cfg_path.is_file() and json.loads(cfg_path.read_text()).get("backbone") == "features":
        raise UsageError("correct needs a run trained on images: a features-mode run has no images to find the artifact in")
    run = Run.load(run_dir)
    out = Path(out)
    rels = _check(run, out, cfg)
    audit, audit_dir = read_audit(run, cfg.audit)
    cluster = pick_cluster(audit, cfg.cluster)
    t = concept_labels(len(run.catalog), cluster)
    rows = training_items(run)
    concept = fit_concept(run, t, rows, cfg.max_dirs)
    choice = choose_artifact(run, cluster, audit_dir, concept, rows, cfg.share) if cfg.method in ("auto", "augment") else None
    cfg = resolve_method(cfg, run, choice)
    epochs = DEFAULT_EPOCHS[cfg.method] if cfg.epochs is None else cfg.epochs
    if cfg.from_scratch:
        if cfg.method == "p-clarc" and cfg.epochs is None:
            raise UsageError("--from-scratch retrains: give --epochs for p-clarc (or use a fine-tuning method)")
        epochs = int(run.config.get("epochs", 20)) if cfg.epochs is None else cfg.epochs
    project = cfg.method == "p-clarc" if cfg.project is None else cfg.project
    log(f"cluster {cluster['id']} ({len(cluster.get('members', []))} members): {concept.V.shape[0]} direction(s), "
        f"{concept.n_members}/{concept.n_items} training images labelled with the artifact; probe after removal "
        f"{100 * concept.probes[-1]:.1f}%")
    summary = {"method": cfg.method, "cluster": int(cluster["id"]), "audit_weights_id": audit.get("weights_id"), "epochs": epochs,
               "weight": cfg.weight if cfg.method == "rr-clarc" else None, "share": cfg.share if cfg.method == "a-clarc" else None,
               "project": project, "directions": int(concept.V.shape[0]), "probe_after_removal": concept.probes,
               "members_in_training_images": concept.n_members, "training_images": concept.n_items,
               "source": str(run.path.resolve()), "val_accuracy_before": validation_accuracy(run.model, run)}
    paste = None
    if choice is not None:
        summary["artifact"] = {k: v for k, v in choice.items() if k not in ("paste", "flip")}
        log(f"artifact in input space: {choice['form'] or 'none'} (flip score on validation pairs: "
            + ", ".join(f"{k} {v:+.3f}" for k, v in choice["scores"].items()) + f"; auto augments at >= {MIN_SCORE})"
            + (f"; colour map x -> a*x + b, a = {choice['transform']['scale']}, b = {choice['transform']['shift']}" if choice["form"] == "colour" else ""))
    if cfg.method == "augment":
        if choice is None or choice.get("paste") is None:
            raise UsageError(f"cluster {cluster['id']}: no input-space form of the artifact to augment with "
                             f"({(choice or {}).get('region_error', 'none found')}); use a latent method (--method p-clarc, a-clarc or rr-clarc)")
        paste = choice["paste"]
        if choice["form"] == "region":
            summary["region_area"] = float(paste[2].mean())
    tmp = out.with_name(out.name + ".correct-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if epochs > 0:
            _fine_tune(run, tmp, cfg, concept, rows, rels, epochs, project, summary, progress, log, paste)
            if cfg.method == "augment" and cfg.erase and not project:
                _erase(tmp, choice["flip"], rows, summary, log)
        else:
            _project_only(run, tmp, concept, summary)
        _refuse_worse(summary, cfg, cluster, audit)
        atomic_write_text(tmp / "correction.json", json.dumps(summary, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"validation accuracy {100 * summary['val_accuracy_before']:.1f}% -> {100 * summary['val_accuracy']:.1f}%  ({cfg.method}); wrote {out}")
    return summary


def _refuse_worse(summary: dict, cfg: CorrectConfig, cluster: dict, audit: dict) -> None:
    """A correction that lowers validation accuracy by more than :data:`WORSE_TOLERANCE` is not written (unless
    ``keep_worse``): on validation pairs the artifact carries no signal, so removing it should not cost accuracy there."""
    before, after = summary["val_accuracy_before"], summary["val_accuracy"]
    if after >= before - WORSE_TOLERANCE or cfg.keep_worse:
        return
    others = ", ".join(str(c["id"]) for c in audit["clusters"] if int(c["id"]) != int(cluster["id"])) or "none"
    raise CorrectionRefused(f"the corrected model is worse on validation pairs ({100 * after:.1f}% against {100 * before:.1f}% before, "
                            f"method {summary['method']}, cluster {cluster['id']}): nothing written. Try another --method, or "
                            f"--cluster (the audit's other clusters: {others}), or pass --keep-worse to write it anyway")


def discovered_artifact(run: Run, cluster: dict, audit_dir: Path, concept: Concept, rows: np.ndarray, share: float) -> tuple:
    """(share, fill image, mask (H, W) bool, pixels (H, W, 3) uint8): the artifact as the audit found it, for pasting."""
    images = run.catalog.images
    region_path = audit_dir / str(cluster.get("region", ""))
    if not cluster.get("region") or not region_path.is_file():
        raise UsageError(f"cluster {cluster['id']} has no region file ({region_path}); --method augment needs the artifact's region")
    region = torch.from_numpy(np.load(region_path).astype(np.float32))
    if region.dim() != 2:
        raise UsageError(f"{region_path} must be an (H, W) map, got shape {tuple(region.shape)}")
    h, w = images.shape[1:3]
    region = nn.functional.interpolate(region[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    mask = region >= REGION_THRESHOLD * region.max()
    if mask.mean() > MAX_REGION_AREA:
        raise UsageError(f"cluster {cluster['id']}'s region covers {100 * mask.mean():.0f}% of the image: not a localized artifact to "
                         "paste; use a latent method (--method p-clarc, a-clarc or rr-clarc)")
    members = np.asarray(cluster["members"], dtype=np.int64)
    member_images = np.asarray(images[np.sort(members)])
    pixels = np.median(member_images, axis=0).astype(np.uint8)
    mask |= _consistent_pixels(member_images, pixels, np.asarray(images[_non_members(len(images), members)]), region)
    # the fill: the first training image the concept labels clean (its pixels replace the artifact's)
    clean = np.flatnonzero(concept.labels.numpy() == 0) if concept.labels is not None else np.arange(1)
    fill_row = int(rows[int(clean[0])])
    return share, np.array(images[fill_row]), mask, pixels


def _non_members(n: int, members: np.ndarray, most: int = 512) -> np.ndarray:
    """Up to ``most`` evenly spaced catalog rows outside the cluster."""
    rest = np.setdiff1d(np.arange(n), members)
    return rest[np.linspace(0, len(rest) - 1, min(most, len(rest))).astype(np.int64)] if len(rest) else rest


def _consistent_pixels(member_images: np.ndarray, pixels: np.ndarray, others: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(H, W) bool: the artifact's full extent near the cluster's relevance.

    A heatmap marks the artifact's most relevant part (often a few pixels of its edge), not all of it. The
    artifact is where most members show the same pixel (within ``PIXEL_TOLERANCE`` of their median) and that
    pixel differs from the other images' median — searched only where the region reaches
    ``NEAR_THRESHOLD`` of its maximum, grown by ``NEAR_GROW`` pixels (product pixels vary across members,
    a stamped mark does not)."""
    if len(others) == 0:
        return np.zeros(region.shape, bool)
    same = _close_to(member_images, pixels).mean(0)
    apart = np.abs(pixels.astype(np.int16) - np.median(others, axis=0).astype(np.int16)).max(-1) > 2 * PIXEL_TOLERANCE
    near = torch.from_numpy((region >= NEAR_THRESHOLD * region.max()).astype(np.float32))[None, None]
    near = nn.functional.max_pool2d(near, 2 * NEAR_GROW + 1, stride=1, padding=NEAR_GROW)[0, 0].numpy() > 0
    return (same >= 0.5) & apart & near


def shows_pixels(images: np.ndarray, mask: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(n,) bool: which uint8 ``images`` show the discovered ``pixels`` on most (≥ half) of the ``mask`` (within
    ``PIXEL_TOLERANCE``) — the images that carry a pasted artifact."""
    return _close_to(images, pixels)[:, mask].mean(1) >= 0.5 if mask.any() else np.zeros(len(images), bool)


def _close_to(images: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: where uint8 ``images`` show ``pixels`` (H, W, 3) within ``PIXEL_TOLERANCE`` in every channel."""
    return np.abs(np.asarray(images, np.int16) - pixels.astype(np.int16)).max(-1) <= PIXEL_TOLERANCE


def _clean_fills(images, rows: np.ndarray, mask: np.ndarray, pixels: np.ndarray, most: int = 64) -> np.ndarray:
    """Up to ``most`` evenly spaced training images that do not show the artifact: what lies under it varies, so the
    erasure's artifact-free versions take the region from one of these (by catalog row) rather than from one image."""
    pick = rows[np.linspace(0, len(rows) - 1, min(4 * most, len(rows))).astype(np.int64)]
    x = np.asarray(images[np.sort(pick)])
    x = x[~shows_pixels(x, mask, pixels)]
    return x[np.linspace(0, len(x) - 1, min(most, len(x))).astype(np.int64)] if len(x) else x


def _flip_features(model, images: np.ndarray, input_size, batch_size: int = 256) -> torch.Tensor:
    from lrprec.model.backbones import preprocess

    with torch.inference_mode():
        return torch.cat([model.embed(preprocess(images[s:s + batch_size], model.backbone, input_size))
                          for s in range(0, len(images), batch_size)])


def flip_effect(run: Run, stamp, remove, n_pairs: int = EFFECT_PAIRS) -> tuple[float, float]:
    """(effect, cost) of flipping a candidate artifact on the run's validation pairs (``n_pairs`` evenly spaced): one image
    of a pair — each side in turn — gets it stamped, or removed (``stamp``/``remove``: (images, catalog rows) -> images);
    effect = mean |ΔP|, cost = accuracy (P > 0.5) lost, both averaged over the four flips. The audit's test
    (:func:`lrprec.evaluate.audit.suspicion`): a legitimate feature costs accuracy when flipped, an artifact does not."""
    model = run.model.eval()
    held = _filter_pairs(run.catalog, protocol_pairs(run.catalog, "validation"), run.relations, run.config.get("category")).spread(n_pairs)
    index = np.unique(np.concatenate([held.a, held.b]))
    images = np.asarray(run.catalog.images[index])
    pa, pb = np.searchsorted(index, held.a), np.searchsorted(index, held.b)
    rel, usr = torch.from_numpy(held.relation), torch.from_numpy(held.user)

    def probs(fa, fb):
        with torch.inference_mode():
            return torch.sigmoid(model.logit_from_embeddings(model.project(fa, rel), model.project_partner(fb, rel), rel, usr).double()).numpy()

    f0 = _flip_features(model, images, run.input_size)
    p0 = probs(f0[pa], f0[pb])
    effects, costs = [], []
    for fn in (stamp, remove):
        f1 = _flip_features(model, fn(images, index), run.input_size)
        for p1 in (probs(f1[pa], f0[pb]), probs(f0[pa], f1[pb])):
            t = effect_and_cost(p0, p1, held.label)
            effects.append(t["effect"])
            costs.append(t["cost"])
    return float(np.mean(effects)), float(np.mean(costs))


def colour_candidate(run: Run, cluster: dict, share: float) -> dict | None:
    """The best global (colour-transform) form of the artifact: seeded by the cluster's members and by splits along the
    image statistics' first principal axes (:func:`lrprec.data.colour_artifact.seed_partitions`), each self-labelled,
    the one whose flip scores highest (:func:`flip_effect`: effect − COST_WEIGHT · cost); None where no seed gives an
    invertible transform."""
    from lrprec.data.colour_artifact import estimate_transform, image_descriptors, seed_partitions

    images = run.catalog.images
    desc = image_descriptors(images)
    seeds = [("cluster", concept_labels(len(images), cluster))] + [(f"axis {k}", p) for k, p in enumerate(seed_partitions(desc))]
    best = None
    for name, seed in seeds:
        ct = estimate_transform(images, seed, desc)
        if ct is None:
            continue
        effect, cost = flip_effect(run, ct.stamp, ct.remove)
        score = effect - COST_WEIGHT * cost
        if best is None or score > best["score"]:
            best = {"form": "colour", "seed": name, "score": score, "effect": effect, "cost": cost, "transform": ct.describe(),
                    "paste": (share, ct), "flip": (ct.stamp, ct.remove, ct.carries)}
    return best


def choose_artifact(run: Run, cluster: dict, audit_dir: Path, concept: Concept, rows: np.ndarray, share: float) -> dict:
    """The flagged cluster's artifact in input space, for augmentation: the pasted region (:func:`discovered_artifact`)
    or the colour transform (:func:`colour_candidate`), whichever scores higher when flipped on validation pairs
    (:func:`flip_effect`: effect − COST_WEIGHT · cost, the audit's rule). Returns {"form", "score", "scores", "paste", ...};
    ``paste`` None when neither exists."""
    candidates, region_error = [], None
    if not run.config.get("freeze_backbone"):
        try:
            paste = discovered_artifact(run, cluster, audit_dir, concept, rows, share)
            _, fill, mask, pixels = paste
            stamp = lambda x, r: np.where(mask[..., None], pixels, x)  # noqa: E731
            effect, cost = flip_effect(run, stamp, lambda x, r: np.where(mask[..., None], fill, x))
            fills = _clean_fills(run.catalog.images, rows, mask, pixels)  # the erasure's removal: what lies under it varies
            flip = (stamp, lambda x, r: np.where(mask[..., None], fills[np.asarray(r) % len(fills)], x),
                    lambda x, r: shows_pixels(x, mask, pixels))
            candidates.append({"form": "region", "score": effect - COST_WEIGHT * cost, "effect": effect, "cost": cost, "paste": paste, "flip": flip})
        except UsageError as exc:
            region_error = str(exc)
        colour = colour_candidate(run, cluster, share)
        if colour is not None:
            candidates.append(colour)
    else:
        region_error = "a frozen backbone reads features computed once: nothing to paste on"
    scores = {c["form"]: round(c["score"], 6) for c in candidates}
    if not candidates:
        return {"form": None, "score": 0.0, "scores": scores, "paste": None, "region_error": region_error}
    best = max(candidates, key=lambda c: c["score"])
    return {**best, "scores": scores, **({"region_error": region_error} if region_error else {})}


def resolve_method(cfg: CorrectConfig, run: Run, choice: dict | None) -> CorrectConfig:
    """``auto``: augmentation with the discovered artifact (``choice``, :func:`choose_artifact`) while retraining where its
    flip scores ≥ :data:`MIN_SCORE` on validation pairs (the best on validation, docs/guide/audit-and-correct.md), else
    the latent analogue (A-ClArC with the projection kept, refitted every epoch), retrained."""
    if cfg.method != "auto":
        return cfg
    if not run.config.get("freeze_backbone") and choice is not None and choice.get("paste") is not None and choice["score"] >= MIN_SCORE:
        return replace(cfg, method="augment", from_scratch=True)
    return replace(cfg, method="a-clarc", from_scratch=True, refit=True, project=True if cfg.project is None else cfg.project)


def _projection_config(concept: Concept) -> dict:
    return {"directions": int(concept.V.shape[0]), "file": "concept_projection.safetensors"}


def _save_projection(path: Path, concept: Concept) -> None:
    from safetensors.torch import save_file

    save_file({"V": concept.V.contiguous(), "ref": concept.z0.contiguous(), "artifact_mean": concept.z1.contiguous()}, str(path))


def _project_only(run: Run, tmp: Path, concept: Concept, summary: dict) -> None:
    """P-ClArC without training: the run's weights plus the projection layer."""
    tmp.mkdir(parents=True)
    model = run.model
    attach_projection(model.backbone, projection_layer(concept.V, concept.z0))
    model.eval()
    summary["val_accuracy"] = validation_accuracy(model, run)
    _save_projected(run, tmp, model, concept, {"corrected_from": str(run.path.resolve()),
                                                "correction": {k: summary[k] for k in ("method", "cluster", "project", "directions")}},
                    {"method": "p-clarc", "val_accuracy": summary["val_accuracy"]})


def _save_projected(run: Run, dest: Path, model, concept: Concept, config_extra: dict, history_entry: dict) -> None:
    """Write ``model`` (carrying the projection of ``concept``) as a run into ``dest``: weights, the projection file, the
    config of ``run`` with the projection and ``config_extra``, its history with ``history_entry`` as "correction"."""
    save_weights(model, dest / "model.safetensors")
    _save_projection(dest / "concept_projection.safetensors", concept)
    config = dict(run.config)
    config.update({"concept_projection": _projection_config(concept), "weights_id": _weights_id(model), **config_extra})
    hist_src = run.path / "history.json"
    history = json.loads(hist_src.read_text()) if hist_src.exists() else {"epochs": [], "best": {}}
    history["correction"] = history_entry
    atomic_write_text(dest / "history.json", json.dumps(history, indent=2))
    atomic_write_text(dest / "config.json", json.dumps(config, indent=2))


def _erase(tmp: Path, flip, rows: np.ndarray, summary: dict, log) -> None:
    """After augmentation: the artifact's directions erased from the trained model's features
    (:func:`lrprec.train.erasure.fit_erasure`), kept where validation accuracy allows."""
    from lrprec.train.erasure import MAX_ACCURACY_COST, fit_erasure

    trained = Run.load(tmp)
    er = fit_erasure(trained, flip, rows, log)
    if er["directions"] == 0:
        summary["erasure"] = {"directions": 0, "validation_probe": er["probes"], "validation_accuracy": er["accuracy"], "kept": False}
        return
    model = trained.model
    attach_projection(model.backbone, projection_layer(er["V"], er["z0"]))
    model.eval()
    acc = validation_accuracy(model, trained)
    kept = acc >= summary["val_accuracy"] - MAX_ACCURACY_COST
    summary["erasure"] = {"directions": er["directions"], "validation_probe": er["probes"], "validation_accuracy": er["accuracy"],
                          "val_accuracy_without": summary["val_accuracy"],
                          "val_accuracy_with": acc, "kept": bool(kept)}
    log(f"erasure: validation accuracy {100 * summary['val_accuracy']:.1f}% -> {100 * acc:.1f}% with it; "
        + ("kept" if kept else f"dropped (costs more than {100 * MAX_ACCURACY_COST:.1f} points)"))
    if not kept:
        return
    concept = Concept(er["V"], er["z0"], er["z1"], [], 0, 0)
    summary.update({"val_accuracy": acc, "project": True, "directions": er["directions"]})
    correction = {**trained.config.get("correction", {}), "project": True, "directions": er["directions"], "erasure": True}
    history = json.loads((tmp / "history.json").read_text()).get("correction") if (tmp / "history.json").exists() else None
    _save_projected(trained, tmp, model, concept, {"correction": correction},
                    {**(history or {}), "erasure": summary["erasure"], "val_accuracy": acc})


def _fine_tune(run: Run, tmp: Path, cfg: CorrectConfig, concept: Concept, rows: np.ndarray, rels: list[str], epochs: int, project: bool,
               summary: dict, progress: bool, log, paste: tuple | None = None) -> None:
    """The training loop from the run's weights with the method's concept term (and the projection, if kept)."""
    known = {f.name for f in fields(TrainConfig)}
    tcfg = TrainConfig(**{k: v for k, v in run.config.items() if k in known})
    tcfg.epochs = epochs
    if not cfg.from_scratch:  # fine-tuning starts from trained weights: no warm-up
        tcfg.warmup_epochs = 0.0
    if cfg.lr is not None:
        tcfg.lr = cfg.lr
    rel_idx = [RELATIONS.index(r) for r in rels]
    if cfg.from_scratch and cfg.method != "augment":  # the directions of the model that will train, at its initialization
        from lrprec.run import build_model

        concept = _directions(_features(build_model(run.config, n_users=len(run.catalog.user_ids)), run.catalog, rows, run.input_size),
                              concept.labels, cfg.max_dirs)
    term: nn.Module | None = {"rr-clarc": lambda: RRClArC(concept.V, rel_idx, cfg.weight),
                              "a-clarc": lambda: AClArC(concept.V, concept.z0, concept.z1, cfg.share, tcfg.seed),
                              "p-clarc": lambda: None, "augment": lambda: None}[cfg.method]()  # p-clarc: the model behind the projection
    weights = None if cfg.from_scratch else run.model.state_dict()
    model_config = dict(run.config)
    extra = {"corrected_from": str(run.path.resolve()), "correction": {k: summary[k] for k in ("method", "cluster", "project", "directions", "weight", "share")}}
    if project:
        layer = projection_layer(concept.V, concept.z0)
        model_config["concept_projection"] = _projection_config(concept)
        n = len(run.model.backbone.classifier)
        if weights is None:
            from lrprec.run import build_model

            weights = build_model(run.config, n_users=len(run.catalog.user_ids)).state_dict()
        weights = {**weights, f"backbone.classifier.{n}.weight": layer.weight.detach(), f"backbone.classifier.{n}.bias": layer.bias.detach()}
        extra["concept_projection"] = model_config["concept_projection"]
        tmp.mkdir(parents=True)
        _save_projection(tmp / "concept_projection.safetensors", concept)
    refit = Refit(run.catalog, rows, concept.labels, run.input_size, cfg.max_dirs, term) if cfg.refit else None
    extra["correction"]["refit"] = cfg.refit
    extra["correction"]["from_scratch"] = cfg.from_scratch
    result = run_loop(run.catalog, rels, tmp, tcfg, progress, log,
                      start=Start(weights=weights, concept=term, config=extra, model_config=model_config, on_epoch_end=refit, paste=paste))
    summary["val_accuracy"] = float(result["best"]["val_accuracy"])
    summary["best_epoch"] = int(result["best"]["epoch"])
    if refit is not None:
        summary["refits"] = refit.history
        if project:  # the projection the best epoch's weights carry
            _save_projection(tmp / "concept_projection.safetensors", refit.concepts[summary["best_epoch"] - 1])
    ck = tmp / "checkpoint.ckpt"
    if ck.exists():
        ck.unlink()  # a fine-tuning is not resumable from here; the weights are the result
