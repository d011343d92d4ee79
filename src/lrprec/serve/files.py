"""Which files the web app may read for a client: :func:`safe_file`, and :class:`NotFound` (answered with 404)."""
from __future__ import annotations

from pathlib import Path


class NotFound(LookupError):
    """An unknown id or file: answered with 404."""


def safe_file(root: Path, relative: str, suffixes: frozenset[str]) -> Path:
    """``root/relative`` if it resolves (symlinks followed) to a file inside ``root`` with an allowed suffix, else NotFound."""
    if not relative or "\x00" in relative or len(relative) > 1024:
        raise NotFound("no such file")
    base = root.resolve()
    try:
        path = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        raise NotFound("no such file") from None
    if not path.is_relative_to(base) or path.suffix.lower() not in suffixes or not path.is_file():
        raise NotFound("no such file")
    return path
