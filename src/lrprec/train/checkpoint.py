"""Training checkpoints: one self-verifying file, written atomically, never loaded unverified.

File layout (``RUN/checkpoint.ckpt``)::

    lrprec-checkpoint v1 sha256=<64 hex> bytes=<20 digits>\\n     fixed-size header
    <payload>                                                     torch.save of a dict

The header carries the payload's length and SHA-256, so a truncated file (a partial copy,
a full disk) and a corrupt one (flipped bytes) are both told apart from a good one with a
clear :class:`CheckpointError`. Writes go to a temporary sibling that is fsynced and then
``os.replace``-d over the old file: a process killed mid-write leaves the previous
checkpoint intact. The payload is read with ``torch.load(weights_only=True)`` (tensors and
plain containers only); metadata that is not a tensor travels as a JSON string.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from lrprec.errors import LrprecError

CHECKPOINT_NAME = "checkpoint.ckpt"
_HEADER_RE = re.compile(rb"lrprec-checkpoint v1 sha256=([0-9a-f]{64}) bytes=([0-9]{20})\n")
_HEADER_LEN = len(b"lrprec-checkpoint v1 sha256=") + 64 + len(b" bytes=") + 20 + 1


class CheckpointError(LrprecError):
    """A checkpoint that is missing, truncated, corrupt, or does not belong to this run."""


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """Where a run directory keeps its (single, latest) checkpoint."""
    return Path(run_dir) / CHECKPOINT_NAME


def _header(digest: str, size: int) -> bytes:
    h = f"lrprec-checkpoint v1 sha256={digest} bytes={size:020d}\n".encode()
    assert len(h) == _HEADER_LEN
    return h


def save_checkpoint(path: str | os.PathLike, meta: dict, tensors: dict[str, Any]) -> None:
    """Write ``meta`` (JSON-able) and ``tensors`` (state dicts, tensor lists) atomically to ``path``."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"meta": json.dumps(meta), **tensors}, buf)
    payload = buf.getbuffer()
    digest = hashlib.sha256(payload).hexdigest()
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_header(digest, len(payload)))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint; returns ``{"meta": dict, **tensors}``.

    Raises :class:`CheckpointError` naming the file and the fault (missing, not a checkpoint,
    truncated, checksum mismatch, undecodable) instead of ever returning unverified state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    data = path.read_bytes()
    m = _HEADER_RE.fullmatch(data[:_HEADER_LEN])
    if m is None:
        raise CheckpointError(f"{path} is not a valid lrprec checkpoint (bad header: corrupt or not written by lrprec); delete it to train from scratch")
    digest, size = m.group(1).decode(), int(m.group(2))
    payload = memoryview(data)[_HEADER_LEN:]
    if len(payload) != size:
        kind = "truncated" if len(payload) < size else "has trailing bytes"
        raise CheckpointError(f"checkpoint {path} is {kind}: {len(payload)} of {size} payload bytes (partial write or copy?); delete it to train from scratch")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: SHA-256 of its payload does not match the header; delete it to train from scratch")
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        obj["meta"] = json.loads(obj["meta"])
    except Exception as exc:  # checksum matched, so this is a format/version problem
        raise CheckpointError(f"checkpoint {path} passed its checksum but cannot be decoded: {exc}") from None
    return obj


# ---- RNG state ------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's torch (CPU and CUDA) and python ``random`` states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": json.dumps(_py_state_to_json(random.getstate()))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(_py_state_from_json(json.loads(state["python"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_json(st: tuple) -> list:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def _py_state_from_json(js: list) -> tuple:
    version, internal, gauss = js
    return (version, tuple(internal), gauss)
