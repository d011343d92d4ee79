"""A run directory: everything a later stage needs (config, weights, split reference, metrics).

Layout::

    RUN/config.json        backbone, K, relations, catalog path + fingerprint, seed, training args
    RUN/model.safetensors  weights of the best validation epoch
    RUN/history.json       per-epoch loss / validation accuracy
    RUN/metrics.json       the last ``lrprec evaluate``
    RUN/index/, RUN/explain/, RUN/faithfulness/, RUN/report.html   written by later stages
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs
from lrprec.errors import LrprecError
from lrprec.model.backbones import build_backbone, preprocess
from lrprec.model.pair import PairModel


class RunError(LrprecError):
    """A missing or inconsistent run directory."""


def build_model(config: dict, n_users: int) -> PairModel:
    """The PairModel a config describes, initialized from the config's seed alone (untrained)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))
        backbone = build_backbone(config["backbone"], **config.get("backbone_config", {}))
    # runs from before heads existed have no "head" key: they are metric
    # the appearance decoder exists where training used it: images through a trained backbone (runs from before it have no key)
    end_to_end = not config.get("freeze_backbone") and config["backbone"] != "features"
    recon = int(config.get("recon_size", 0)) if float(config.get("recon_weight", 0)) > 0 and end_to_end else 0
    return PairModel(backbone, int(config["dim"]), len(RELATIONS), n_users=n_users, personalize=bool(config.get("personalize", True)),
                     seed=int(config.get("seed", 0)), head=str(config.get("head", "metric")), recon_size=recon,
                     partner_init=str(config.get("partner_init", "copy")))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(model: PairModel, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


@dataclass
class Run:
    """A trained model with its catalog; ``inputs`` turns item rows into model inputs."""

    path: Path
    config: dict
    catalog: Catalog
    model: PairModel
    _version: str = field(default="")

    @classmethod
    def load(cls, path: str | os.PathLike, catalog: str | os.PathLike | None = None) -> "Run":
        path = Path(path)
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise RunError(f"{path} is not an lrprec run (no config.json); create one with 'lrprec train'")
        config = json.loads(cfg_path.read_text())
        cat = Catalog(catalog or config["catalog"])
        if config.get("catalog_fingerprint") and cat.fingerprint != config["catalog_fingerprint"]:
            raise RunError(f"the catalog at {cat.root} changed since this run was trained (fingerprint mismatch); retrain")
        model = build_model(config, n_users=len(cat.user_ids))
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise RunError(f"{weights} is missing; the run has not finished training")
        try:
            model.load_state_dict(load_file(str(weights)))
        except Exception as exc:
            raise RunError(f"cannot load {weights}: {exc}") from None
        model.eval()
        return cls(path=path, config=config, catalog=cat, model=model)

    @property
    def relations(self) -> list[str]:
        """Relations this model was trained on (heads for others exist but are untrained)."""
        return list(self.config["relations"])

    @property
    def version(self) -> str:
        """Identifies these weights: changes whenever the model is retrained."""
        return str(self.config.get("weights_id", ""))

    @property
    def input_size(self) -> int | None:
        return self.config.get("input_size")

    def check_relation(self, name: str) -> int:
        if name not in RELATIONS:
            raise CatalogError(f"unknown relation {name!r}; known relations: {', '.join(RELATIONS)}")
        if name not in self.relations:
            raise CatalogError(f"relation {name!r} was not trained in this run (trained: {', '.join(self.relations)})")
        return RELATIONS.index(name)

    def inputs(self, rows: np.ndarray) -> torch.Tensor:
        """Model inputs for item rows: normalized images (B, 3, S, S), or features (B, F) in features mode."""
        return item_inputs(self.catalog, self.model, rows, self.config.get("input_size"))


def iter_item_features(model: PairModel, catalog: Catalog, input_size: int | None, batch_size: int = 256, progress: bool = False,
                       desc: str = "embedding items"):
    """Yield ``(rows, features)`` batch by batch over every catalog item: the one loop that runs
    the backbone over a catalog (eval mode, no autograd; the model's training flag is restored).

    Callers that keep only projections (the index, the ranking scorer) consume it batch by
    batch, so memory stays at one batch of backbone features."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    n = len(catalog)
    try:
        with torch.inference_mode(), tqdm(total=n, desc=desc, unit="item", disable=not progress, file=sys.stderr, leave=False) as bar:
            for s in range(0, n, batch_size):
                rows = np.arange(s, min(n, s + batch_size))
                yield rows, model.embed(item_inputs(catalog, model, rows, input_size).to(dev))
                bar.update(rows.size)
    finally:
        model.train(was_training)


def embed_items(model: PairModel, catalog: Catalog, input_size: int | None, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Backbone features of every item, (N, F), computed once in batches (see :func:`iter_item_features`)."""
    return torch.cat([f for _, f in iter_item_features(model, catalog, input_size, batch_size, progress)])


def item_inputs(catalog: Catalog, model: PairModel, rows: np.ndarray, input_size: int | None = None) -> torch.Tensor:
    rows = np.asarray(rows, dtype=np.int64)
    if model.backbone.kind == "features":
        return torch.from_numpy(catalog.feature_rows(rows))
    images = catalog.images
    if images is None:
        raise CatalogError(f"{catalog.root} has no images; train with --mode features or import images")
    uniq, inv = np.unique(rows, return_inverse=True)
    return preprocess(images[uniq], model.backbone, input_size)[torch.from_numpy(inv)]


@torch.inference_mode()
def predict_logits(model: PairModel, catalog: Catalog, pairs: Pairs, batch_size: int = 256, input_size: int | None = None, features: torch.Tensor | None = None) -> np.ndarray:
    """Logits c − d for every pair, batched; ``features`` (item rows × F) skips the backbone."""
    model.eval()
    out = np.empty(len(pairs), np.float32)
    for s in range(0, len(pairs), batch_size):
        sl = slice(s, s + batch_size)
        rel = torch.from_numpy(pairs.relation[sl])
        usr = torch.from_numpy(pairs.user[sl])
        if features is not None:
            fa, fb = features[torch.from_numpy(pairs.a[sl])], features[torch.from_numpy(pairs.b[sl])]
            a_i, a_j = model.project(fa, rel), model.project_partner(fb, rel)
            logit = model.logit_from_embeddings(a_i, a_j, rel, usr)
        else:
            logit = model(item_inputs(catalog, model, pairs.a[sl], input_size), item_inputs(catalog, model, pairs.b[sl], input_size), rel, usr)
        out[sl] = logit.numpy()
    return out
