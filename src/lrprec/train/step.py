"""One training step's forward (pair logits, guidance share, ranking loss) as a module DDP can wrap."""
from __future__ import annotations

import torch
from torch import nn

from lrprec.defaults import GUIDE_COMPOSITE
from lrprec.train.guidance import gradient_relevance, lrp_relevance, outside_share, pixel_sq
from lrprec.train.ranking_loss import rank_loss


class _PairStep(nn.Module):
    """A training step's forward as one module, so DDP sees (and synchronizes) every call.

    Images: the model runs its backbone once on the stacked ``[x_a; x_b]``. Frozen backbone /
    features mode: ``feats`` holds every item's features and only the head runs.
    """

    def __init__(self, model: nn.Module, feats=None, guide: str | None = None, guide_pairs: int | None = None, guide_rule: str = GUIDE_COMPOSITE,
                 concept: nn.Module | None = None):
        super().__init__()
        self.model = model
        # fine-tuning's concept term (lrprec correct): concept(model, feats, batch) -> (feats the head reads, summed penalty or None)
        self.concept = concept
        self.feats = feats
        self.guide = guide
        self.guide_pairs = guide_pairs
        self.penalty: torch.Tensor | None = None  # the outer loop's map (guide_masks="relevance"); gt and mark masks come with the batch
        self._net = None
        if guide == "lrp":
            from lrprec.explain.engine import LRPNet

            self._net = LRPNet(model.backbone, guide_rule)  # reads the live parameters on every call

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple:
        """(logits, mean guidance share over the guided images or None, summed ranking loss or None,
        summed appearance loss or None), and a fifth element, the summed concept penalty or None,
        when the step has a ``concept`` term.

        The guidance loss is estimated on the batch's first ``guide_pairs`` pairs (the batch is
        a uniform draw of the epoch's shuffled pairs, so the estimate is unbiased); the logits
        and the BCE use every pair. The ranking loss (:func:`rank_loss`) comes with a batch
        that carries ``rank_mask``; the appearance loss (per pair, the mean over its two images)
        with a model that has the decoder, on images.
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
        backbone_feats = feats
        extra: tuple = ()
        if self.concept is not None:
            feats, concept_penalty = self.concept(m, feats, batch)
            extra = (concept_penalty,)
        logit = m.logit_from_embeddings(m.project(feats[:n], rel), m.project_partner(feats[n:], rel), rel, usr)
        ranking = rank_loss(m, feats, rel, usr, batch["label"], batch["rank_mask"]) if "rank_mask" in batch else None
        appearance = m.appearance_loss(x, backbone_feats).view(2, n).mean(0).sum() if x is not None and m.recon is not None else None
        penalty = 1 - batch["allowed"] if "allowed" in batch else self.penalty
        if x is None or self.guide is None or penalty is None:
            return (logit, None, ranking, appearance, *extra)
        k = n if self.guide_pairs is None else min(self.guide_pairs, n)
        sub = torch.cat([torch.arange(k), n + torch.arange(k)]).to(x.device)  # images of the guided pairs
        if penalty.dim() == 3:
            penalty = penalty[sub]
        if self.guide == "gradient":
            relevance = gradient_relevance(logit[:k], x)[sub]
        else:
            relevance = lrp_relevance(m, self._net, x[sub], rel[:k], usr[:k])
        return (logit, outside_share(pixel_sq(relevance, self.guide), penalty.to(x.device)).mean(), ranking, appearance, *extra)
