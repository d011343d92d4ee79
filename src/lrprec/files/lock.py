"""One writer per directory: an advisory lock (``fcntl.flock`` on ``DIR/.lock``) held while a command writes there.

A second command that would write the same run directory is refused at once with
:class:`DirectoryLocked`, naming the directory and the process holding it. The kernel
releases a ``flock`` when its process exits, however it exits (kill -9 included), so a lock
left behind by a dead process never blocks: the file stays, the lock does not. Readers
(``lrprec serve``, ``recommend``) take no lock: every file is replaced atomically.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class DirectoryLocked(BlockingIOError):
    """Another process is writing this directory (what ``flock`` itself raises, with a message for people;
    the CLI shows it as a user error, exit 2). An OSError, not an LrprecError: ``lrprec.files`` shares layer 0
    with ``lrprec.errors``, and packages of one layer do not import each other."""


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, what: str = "writing") -> Iterator[Path]:
    """Hold the exclusive lock of ``directory`` (created if needed) for the block; DirectoryLocked if another process holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise DirectoryLocked(f"{directory} is being written by {holder}; wait for it to finish "
                                  f"(the lock {path} is released when that process exits)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({what})".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
