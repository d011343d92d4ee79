"""Reading an importer's input files: checks that fail early, and streaming text lines (plain or gzip).

A source of several GB is read one line at a time; what cannot be read (not UTF-8, over-long
lines, a gzip stream that ends early) is counted in the :class:`ImportReport`, and only what makes
the whole file unusable (a binary file, corrupt gzip) is an error.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator

from lrprec.data.importing.report import ImportReport
from lrprec.errors import UsageError


def check_input(path: str | os.PathLike, what: str) -> Path:
    """A readable, non-empty regular file, or a clear error naming the option."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{what} must be a file, got a folder: {p}")
    if p.stat().st_size == 0:
        raise UsageError(f"{what} file is empty: {p}")
    return p


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


MAX_LINE_BYTES = 16 << 20  # far above any real record; bounds memory on a file of the wrong kind


def iter_lines(path: Path, report: ImportReport, kind: str, progress: bool | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a plain or gzip file.

    gzip is detected by its magic bytes, not the name. One line is in memory at a time, and
    at most ``MAX_LINE_BYTES`` of it (longer lines are skipped and counted as malformed).
    A line that is not UTF-8 is counted as ``<kind>_malformed_lines``; a binary file (NUL
    bytes in its first line) is an error; a gzip stream that ends early (an interrupted
    download) is counted as ``<kind>_truncated_gzip`` and the lines before it are kept; a
    corrupt gzip stream is an error.
    """
    from tqdm import tqdm

    size = path.stat().st_size
    raw = open(path, "rb")
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw
    lineno = 0
    malformed = f"{kind}_malformed_lines"
    try:
        with tqdm(total=size, desc=f"{kind} {path.name}", unit="B", unit_scale=True, disable=None if progress is None else not progress) as bar:
            last = 0
            try:
                while True:
                    bline = stream.readline(MAX_LINE_BYTES)
                    if not bline:
                        break
                    lineno += 1
                    if lineno == 1 and b"\0" in bline:
                        raise UsageError(f"{path} is a binary file, not text lines (is it the wrong file for this option?)")
                    if lineno % 4096 == 0:
                        pos = raw.tell()
                        bar.update(pos - last)
                        last = pos
                    if len(bline) == MAX_LINE_BYTES and not bline.endswith(b"\n"):
                        while True:  # drop the rest of the over-long line, a piece at a time
                            more = stream.readline(MAX_LINE_BYTES)
                            if not more or more.endswith(b"\n"):
                                break
                        report.skip(malformed, 1, f"first at line {lineno}: longer than {MAX_LINE_BYTES >> 20} MiB")
                        continue
                    try:
                        text = bline.decode("utf-8").strip()
                    except UnicodeDecodeError as exc:
                        report.skip(malformed, 1, f"first at line {lineno}: not UTF-8 ({exc.reason})")
                        continue
                    if text:
                        yield lineno, text
            except EOFError:
                report.skip(f"{kind}_truncated_gzip", 1, f"{path}: gzip stream ends early after line {lineno} (incomplete download?); earlier lines kept")
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise UsageError(f"{path}: corrupt gzip data after line {lineno}: {exc}") from None
            bar.update(size - last)
    finally:
        stream.close()
        raw.close()
    report.count(f"{kind}_lines", lineno)
