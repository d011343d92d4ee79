"""Atomic file writes: the data goes to a temporary file beside the target, then ``os.replace`` puts it in place.

A reader therefore sees the old file or the new one, never half of one — also when the
writer is killed mid-write or two writers race (each has its own temporary name; the last
``os.replace`` wins whole). Temporary files are removed when the write fails. (No fsync: this
protects against crashed or concurrent processes, not against power loss.)
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path (same folder, same suffix, so ``np.save``/``savefig`` keep the name) that replaces ``path`` on success."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` (``np.save``, ``savefig``, ``pq.write_table``, ...) then put the result at ``path``; returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)
