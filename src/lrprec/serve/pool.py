"""A bounded worker pool for the expensive requests (LRP and BiLRP explanations).

At most ``workers`` computations run at once and at most ``queue`` more wait; a request
past that is refused at once with :class:`Busy` (the app answers 503 with ``Retry-After``)
instead of piling up on the server's threads. Cheap requests (browsing, recommendations)
never wait behind explanations: they do not go through the pool.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Busy(Exception):
    """The pool is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, message: str):
        super().__init__(message)
        self.retry_after = retry_after


class ComputePool:
    """``workers`` threads and a waiting room of ``queue`` jobs; ``run`` refuses a job when both are full."""

    def __init__(self, workers: int = 1, queue: int = 8):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {workers}, {queue}")
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="lrprec-explain")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.admitted = 0  # running + waiting
        self.refused = 0
        self._seconds = 0.5  # moving average of one job's duration, for Retry-After

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

    def _done(self, started: list[float], _: Future) -> None:
        with self._lock:
            self.admitted -= 1
            if started:
                self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - started[0])
            self._idle.notify_all()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Admit ``fn(*args)`` (or raise :class:`Busy`) and return its future; the slot frees when it ends, even if nobody waits."""
        self._admit()
        started: list[float] = []

        def job() -> Any:
            started.append(time.perf_counter())
            return fn(*args)

        fut = self._executor.submit(job)
        fut.add_done_callback(lambda f: self._done(started, f))
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a pool thread, awaited without holding one of the server's threads."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stats(self) -> dict:
        return {"workers": self.workers, "queue": self.queue, "admitted": self.admitted, "refused": self.refused}

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every admitted job has finished (at most ``timeout`` seconds); whether the pool is idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self.admitted == 0, timeout)
