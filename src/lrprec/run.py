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
from lrprec.files import atomic_write, atomic_write_text  # noqa: F401  (atomic_write_text: re-exported for the writers of run files)
from lrprec.model.backbones import build_backbone, preprocess
from lrprec.model.pair import PairModel
from lrprec.model.projection import attach_projection


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
    if config.get("concept_projection"):  # P-ClArC (lrprec correct): a projection layer after the backbone, weights in the state dict
        attach_projection(backbone)
    return PairModel(backbone, int(config["dim"]), len(RELATIONS), n_users=n_users, personalize=bool(config.get("personalize", True)),
                     seed=int(config.get("seed", 0)), head=str(config.get("head", "metric")), recon_size=recon,
                     partner_init=str(config.get("partner_init", "copy")))


#: Keys every run's config.json has (written by ``lrprec train``).
CONFIG_KEYS = ("backbone", "dim", "relations", "catalog")


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for x in str(v).split("."):
        digits = "".join(c for c in x if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def read_config(path: Path) -> dict:
    """A run's config.json, checked: valid JSON, an object with the keys a run needs, written by this lrprec or an older one."""
    from lrprec import __version__

    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); the run is damaged: retrain or restore the file") from None
    if not isinstance(config, dict):
        raise RunError(f"{path} is not an lrprec run config (a JSON object was expected)")
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}: not a config written by 'lrprec train', or damaged")
    written = str(config.get("lrprec_version", "0"))
    if _version_tuple(written) > _version_tuple(__version__):
        raise RunError(f"{path} was written by lrprec {written}, newer than this lrprec {__version__}: upgrade lrprec to read this run")
    return config


def save_weights(model: PairModel, path: Path) -> None:
    """Save the model's state dict to ``path`` (safetensors), atomically: readers never see a partial file."""
    atomic_write(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp)))


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
        """Load the run directory ``path`` (from ``lrprec train``) with its catalog, in eval mode.

        ``catalog`` overrides the catalog path stored in the run's ``config.json``. Raises
        ``RunError`` when ``path`` is no run, its weights are missing or unreadable, or the catalog
        changed since training (fingerprint mismatch); ``CatalogError`` for a missing catalog.
        """
        path = Path(path)
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise RunError(f"{path} is not an lrprec run (no config.json); create one with 'lrprec train'")
        config = read_config(cfg_path)
        cat = Catalog(catalog or config["catalog"])
        if config.get("catalog_fingerprint") and cat.fingerprint != config["catalog_fingerprint"]:
            raise RunError(f"the catalog at {cat.root} changed since this run was trained (fingerprint mismatch); retrain")
        model = build_model(config, n_users=len(cat.user_ids))
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise RunError(f"{weights} is missing; the run has not finished training")
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
            raise RunError(f"cannot read {weights} (truncated or not a safetensors file: {exc}); retrain or restore the file") from None
        expected = model.state_dict()
        bad = [k for k, v in state.items() if k in expected and (v.dtype != expected[k].dtype or v.shape != expected[k].shape)]
        if bad:
            k = bad[0]
            raise RunError(f"{weights} does not match {cfg_path}: {k} is {tuple(state[k].shape)} {state[k].dtype}, the model "
                           f"expects {tuple(expected[k].shape)} {expected[k].dtype} ({len(bad)} tensor(s) differ); retrain or restore the file")
        try:
            model.load_state_dict(state)
        except Exception as exc:
            raise RunError(f"cannot load {weights}: {str(exc).splitlines()[0]}; it belongs to another model (retrain or restore the file)") from None
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
        """Side the images are resized to before the backbone, or None for the catalog's own size."""
        return self.config.get("input_size")

    def check_relation(self, name: str) -> int:
        """Index of relation ``name`` in ``RELATIONS``; raises ``UsageError`` if the run was not trained on it."""
        if name not in RELATIONS:
            raise CatalogError(f"unknown relation {name!r}; known relations: {', '.join(RELATIONS)}")
        if name not in self.relations:
            raise CatalogError(f"relation {name!r} was not trained in this run (trained: {', '.join(self.relations)})")
        return RELATIONS.index(name)

    def inputs(self, rows: np.ndarray) -> torch.Tensor:
        """Model inputs for item rows: normalized images (B, 3, S, S), or features (B, F) in features mode."""
        return item_inputs(self.catalog, self.model, rows, self.config.get("input_size"))


def iter_item_features(model: PairModel, catalog: Catalog, input_size: int | None, batch_size: int = 256, progress: bool = False,
                       desc: str = "embedding items", rows: np.ndarray | None = None):
    """Yield ``(rows, features)`` batch by batch over every catalog item (or the given ``rows``, in
    batches of ``batch_size`` from the first): the one loop that runs
    the backbone over a catalog (eval mode, no autograd; the model's training flag is restored).

    Callers that keep only projections (the index, the ranking scorer) consume it batch by
    batch, so memory stays at one batch of backbone features."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    all_rows = np.arange(len(catalog)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = all_rows.size
    try:
        with torch.inference_mode(), tqdm(total=n, desc=desc, unit="item", disable=not progress, file=sys.stderr, leave=False) as bar:
            for s in range(0, n, batch_size):
                batch = all_rows[s:s + batch_size]
                yield batch, model.embed(item_inputs(catalog, model, batch, input_size).to(dev))
                bar.update(batch.size)
    finally:
        model.train(was_training)


def embed_items(model: PairModel, catalog: Catalog, input_size: int | None, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Backbone features of every item, (N, F), computed once in batches (see :func:`iter_item_features`)."""
    return torch.cat([f for _, f in iter_item_features(model, catalog, input_size, batch_size, progress)])


def item_inputs(catalog: Catalog, model: PairModel, rows: np.ndarray, input_size: int | None = None) -> torch.Tensor:
    """Model inputs of catalog ``rows``: float (N, 3, S, S) preprocessed images (resized to ``input_size`` if given), or (N, F) features for a features-mode model. Raises ``CatalogError`` for an image model over a catalog without images."""
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
