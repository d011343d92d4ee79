"""A bounded worker pool for the expensive requests (LRP and BiLRP explanations).

At most ``workers`` computations run at once and at most ``queue`` more wait; a request
past that is refused at once with :class:`Busy` (the app answers 503 with ``Retry-After``)
instead of piling up on the server's threads. Cheap requests (browsing, recommendations)
never wait behind explanations: they do not go through the pool.

The workers are threads, or — given an ``initializer`` — processes (``spawn``ed, each set up by
``initializer(*initargs)``): work there never holds the server's GIL. A worker process that dies
breaks only the jobs it held; the next job starts a fresh pool.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
import logging
import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("lrprec.serve")


class Busy(Exception):
    """The pool is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, message: str):
        super().__init__(message)
        self.retry_after = retry_after


class ComputePool:
    """``workers`` threads (or processes, with ``initializer``) and a waiting room of ``queue`` jobs; ``run`` refuses
    a job when both are full."""

    def __init__(self, workers: int = 1, queue: int = 8, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {workers}, {queue}")
        self.workers, self.queue = workers, queue
        self.processes = initializer is not None
        self._init = (initializer, initargs)
        self._executor = self._new_executor()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.admitted = 0  # running + waiting
        self.refused = 0
        self._seconds = 0.5  # moving average of one job's duration, for Retry-After
        self._last_done = 0.0

    def _new_executor(self) -> Executor:
        initializer, initargs = self._init
        if initializer is None:
            return ThreadPoolExecutor(self.workers, thread_name_prefix="lrprec-explain")
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer, initargs=initargs)

    def start(self) -> None:
        """Start every worker now (a process pool loads the run in each) rather than on the first requests."""
        if self.processes:
            for f in [self._executor.submit(_nothing) for _ in range(self.workers)]:
                f.result()

    def close(self) -> None:
        """Stop the workers (after :meth:`drain`); running jobs finish first. A later job starts new workers
        (an app may be started again, as tests do)."""
        with self._lock:
            executor, self._executor = self._executor, self._new_executor()
        executor.shutdown(wait=True, cancel_futures=True)

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the jobs ahead times their average duration, over the workers."""
        return max(1, math.ceil(self.admitted * self._seconds / self.workers))

    def _admit(self) -> None:
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                raise Busy(self.retry_after(), f"the server is busy explaining ({self.workers} running, {self.queue} waiting); "
                                               "retry after the number of seconds in Retry-After")
            self.admitted += 1

    def _done(self, submitted: float | None, _: Future | None = None) -> None:
        with self._lock:
            self.admitted -= 1
            if submitted is not None:  # a job's own duration: since it was submitted or the last job ended, whichever is later
                now = time.perf_counter()
                self._seconds = 0.8 * self._seconds + 0.2 * (now - max(submitted, self._last_done))
                self._last_done = now
            self._idle.notify_all()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Admit ``fn(*args)`` (or raise :class:`Busy`) and return its future; the slot frees when it ends, even if nobody waits."""
        self._admit()
        submitted = time.perf_counter()
        try:
            fut = self._executor.submit(fn, *args)
        except RuntimeError:  # a worker process died (BrokenProcessPool): its jobs failed; start a fresh pool
            log.warning("an explanation worker died; starting new ones")
            with self._lock:
                if getattr(self._executor, "_broken", False):
                    self._executor = self._new_executor()
            try:
                fut = self._executor.submit(fn, *args)
            except BaseException:
                self._done(None)
                raise
        fut.add_done_callback(lambda f: self._done(submitted, f))
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a pool worker, awaited without holding one of the server's threads."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stats(self) -> dict:
        return {"workers": self.workers, "queue": self.queue, "admitted": self.admitted, "refused": self.refused}

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every admitted job has finished (at most ``timeout`` seconds); whether the pool is idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self.admitted == 0, timeout)


def _nothing() -> None:
    """A job that only makes a worker start."""
