"""The web app's expensive work — LRP explanation records with their heatmap PNGs, BiLRP matrices — in one place,
runnable in the server's own threads or in a separate worker process.

:class:`Explainer` does the work for a loaded run. ``lrprec serve`` runs it in worker processes
(:func:`init_worker` loads the run there, one torch thread, a lower CPU priority, SIGINT/SIGTERM ignored so the
server decides when they stop; :func:`call` runs one method): LRP's Python bookkeeping then never holds the
server's GIL, and the kernel gives cheap requests (browsing, recommendations) the CPU first. Embedded apps and
tests run the same :class:`Explainer` on a thread (no start-up cost).

Keys are ``(a_row, b_row, relation, user_row, rule, target)``; ``relation`` -1 means "the pair's most
probable relation", resolved here (it needs the model).
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS
from lrprec.errors import LrprecError
from lrprec.run import Run
from lrprec.serve import heatmap
from lrprec.serve.params import IMAGE_SUFFIXES


class ComputeError(LrprecError):
    """The model refused the request (answered with 422); raised in the worker, re-raised in the server."""


def item_image(catalog: Any, row: int) -> np.ndarray | None:
    """uint8 (H, W, 3) image of an item: the catalog's decode cache, else its image file (inside the catalog)."""
    images = catalog.images
    if images is not None:
        return np.asarray(images[row])
    rel = str(catalog.image_paths[row] or "")
    if not rel:
        return None
    from lrprec.serve.files import NotFound, safe_file

    try:
        path = safe_file(catalog.root, rel, IMAGE_SUFFIXES)
    except NotFound:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None


class Explainer:
    """LRP records and BiLRP matrices of one run; one computation at a time per instance (bounded memory)."""

    def __init__(self, run: Run):
        self.run, self.catalog = run, run.catalog
        self._lock = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        """``self.method(*args)`` (what a worker process runs for the server)."""
        if method not in ("explanations", "bilrp", "warmup"):
            raise ValueError(f"unknown explainer method {method!r}")
        with self._lock:
            return getattr(self, method)(*args)

    def warmup(self) -> None:
        """One explanation, not kept, so torch's lazy initialisation happens before the first request."""
        if self.run.model.backbone.kind == "image" and len(self.catalog) >= 2:
            self.explanations([(0, 1, 0, -1, _default_rule(), "similarity")])

    def best_relation(self, a: int, b: int, user: int) -> int:
        """The pair's most probable trained relation (row of RELATIONS)."""
        from lrprec.app.explanations import pair_probabilities

        probs = pair_probabilities(self.run, np.array([a]), np.array([b]), np.array([user]))
        return self.run.check_relation(max(probs, key=lambda r: float(probs[r][0])))

    def explanations(self, keys: list[tuple]) -> list[dict]:
        """Explanation records (with both heatmap PNGs under ``_png``) of keys sharing relation, user, rule and target."""
        from lrprec.explain.targets import explain_pairs

        a = np.array([k[0] for k in keys], np.int64)
        b = np.array([k[1] for k in keys], np.int64)
        _, _, rel, user, rule, target = keys[0]
        if rel < 0:
            rel = self.best_relation(int(a[0]), int(b[0]), user)
        n = len(keys)
        try:
            e = explain_pairs(self.run.model, self.run.inputs(a), self.run.inputs(b), torch.full((n,), rel, dtype=torch.long),
                              torch.full((n,), user, dtype=torch.long), target=target, composite=rule, batch_size=32)
        except LrprecError as exc:
            raise ComputeError(str(exc)) from None
        ra = e.relevance_a.detach().float().sum(1).numpy()
        rb = e.relevance_b.detach().float().sum(1).numpy()
        users = [""] + list(self.catalog.user_ids)
        out = []
        for k in range(n):
            scale = float(max(np.abs(ra[k]).max(), np.abs(rb[k]).max()))
            out.append({
                "item_a": str(self.catalog.item_ids[a[k]]), "item_b": str(self.catalog.item_ids[b[k]]),
                "user": users[user + 1] or None, "relation": RELATIONS[rel], "rule": rule, "target": target,
                "probability": float(e.probability[k]), "logit": float(e.logit[k]), "target_value": float(e.target_value[k]),
                "relevance_sum": {"a": float(ra[k].sum()), "b": float(rb[k].sum())}, "absorbed": float(e.absorbed[k]),
                "conservation": float(e.conservation[k]),
                "_png": {"a": heatmap.heatmap_png(ra[k], item_image(self.catalog, int(a[k])), scale),
                         "b": heatmap.heatmap_png(rb[k], item_image(self.catalog, int(b[k])), scale)},
            })
        return out

    def bilrp(self, a: int, b: int, rel: int, user: int, rule: str, grid: int) -> tuple[np.ndarray, str]:
        """BiLRP patch-to-patch relevance (grid², grid²) of one pair, and the relation explained."""
        from lrprec.explain.bilrp import bilrp

        if rel < 0:
            rel = self.best_relation(a, b, user)
        try:
            m = bilrp(self.run.model, self.run.inputs(np.array([a])), self.run.inputs(np.array([b])),
                      torch.tensor([rel]), torch.tensor([user]), composite=rule, grid=grid)[0].detach().float().numpy()
        except LrprecError as exc:
            raise ComputeError(str(exc)) from None
        return m, RELATIONS[rel]


def _default_rule() -> str:
    from lrprec.explain.composites import DEFAULT_COMPOSITE

    return DEFAULT_COMPOSITE


# ---- the worker process -------------------------------------------------------------------------------------
_WORKER: Explainer | None = None


def init_worker(run_path: str, nice: int) -> None:
    """Start-up of a worker process: ignore SIGINT/SIGTERM (the server drains, then stops us), one torch thread,
    ``nice`` added to the CPU priority, the run loaded, one warm-up explanation."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    if nice:
        try:
            os.nice(nice)
        except OSError:  # pragma: no cover - not allowed here: run at the server's priority
            pass
    _WORKER = Explainer(Run.load(run_path))
    _WORKER.warmup()


def call(method: str, *args: Any) -> Any:
    """Run ``Explainer.method(*args)`` in this worker process (see :func:`init_worker`)."""
    if _WORKER is None:
        raise RuntimeError("the explanation worker was not initialised")
    return _WORKER.call(method, *args)


def worker_pid() -> int:
    """This process's id (lets the server and tests see which process did the work)."""
    return os.getpid()
