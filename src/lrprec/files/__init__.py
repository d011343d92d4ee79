"""Files lrprec writes: atomically (:mod:`lrprec.files.atomic`) and one writer per run directory (:mod:`lrprec.files.lock`)."""
from lrprec.files.atomic import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from lrprec.files.lock import DirectoryLocked, dir_lock

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "DirectoryLocked", "dir_lock"]
