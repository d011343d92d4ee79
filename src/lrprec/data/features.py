"""Feature rows read on demand (features mode): the process never holds the whole file."""
from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from lrprec.errors import LrprecError, UsageError


class LazyFeatures:
    """Rows of an (N, F) feature matrix, gathered on demand without keeping the file resident.

    For a file-backed array (``np.memmap``, e.g. ``Catalog.features``) the requested rows are
    read with ``os.preadv`` into a fresh buffer: nothing of the file is mapped, so the
    process's resident set holds one batch of rows, not the file. (Indexing a memory map
    instead leaves every page an epoch touches resident; and even a map made and dropped per
    gather spikes: the kernel maps whole large page-cache folios around each fault, measured
    at ~500 MB for 256 random rows of an 800 MB file.) In-memory arrays and tensors are
    indexed directly. ``feats[idx]`` with a ``torch.Tensor`` index returns a float32 tensor,
    so an instance can stand in for the (N, F) tensor the trainer indexes.
    """

    def __init__(self, array: np.ndarray | torch.Tensor):
        self.shape = tuple(int(s) for s in array.shape)
        if len(self.shape) != 2:
            raise UsageError(f"features must be a 2-d (items, dims) array, got shape {self.shape}")
        self._file: tuple[str, int, np.dtype] | None = None
        self._array = None
        self._fd: int | None = None
        self._fd_pid = -1
        if isinstance(array, np.memmap) and getattr(array, "filename", None) and isinstance(array.base, mmap.mmap) and array.flags.c_contiguous:
            self._file = (str(array.filename), int(array.offset), array.dtype)
        elif isinstance(array, torch.Tensor):
            self._array = array.detach().cpu().float().numpy()
        else:
            self._array = np.asarray(array)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def _descriptor(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():  # reopened after a fork
            self._fd = os.open(self._file[0], os.O_RDONLY)  # type: ignore[index]
            self._fd_pid = os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_fd_pid"] = None, -1
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._fd_pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 (len(idx), F) copy of the rows ``idx`` (any order, repeats allowed)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"feature row out of range 0..{self.shape[0] - 1}")
        if self._file is None:
            return np.ascontiguousarray(self._array[idx], dtype=np.float32)
        path, offset, dtype = self._file
        buf = np.empty((idx.size, self.shape[1]), dtype)
        row_bytes = buf.itemsize * self.shape[1]
        if idx.size:
            fd, pread = self._descriptor(), os.preadv
            view = memoryview(buf).cast("B")
            for k, r in enumerate(idx.tolist()):  # straight into place: no second copy
                got = pread(fd, [view[k * row_bytes:(k + 1) * row_bytes]], offset + r * row_bytes)
                if got != row_bytes:
                    raise LrprecError(f"{path}: feature row {r} is truncated ({got} of {row_bytes} bytes)")
        return buf if buf.dtype == np.float32 else buf.astype(np.float32)

    def __getitem__(self, idx):
        if isinstance(idx, torch.Tensor):
            return torch.from_numpy(self.rows(idx.cpu().numpy()))
        return self.rows(np.asarray(idx))
