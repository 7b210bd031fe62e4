"""``local``: workers are threads of the client's process, each with its own event loop.

A worker runs its user functions on its own thread, so code that releases the GIL (NumPy,
I/O) runs in parallel across workers, and a chain of tasks costs no thread hop at all. At
most ``parallelism`` workers run at once (a FaaS concurrency cap); further invocations
wait in a queue. Threads are reused: the first worker on a thread starts cold, later ones
warm.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import queue
import threading
import time

from ..security import Signer
from ..stores import Store
from .base import Invocation, Platform, Size

log = logging.getLogger(__name__)

_STOP = None


class LocalWorkers:
    """A pool of worker threads in this process."""

    kind = "local"
    in_process = True
    private = True
    same_host = True

    def __init__(self, url: str = "local", parallelism: int | None = None) -> None:
        self.url = url
        self.parallelism = parallelism or max(2, os.cpu_count() or 1)
        self._queue: queue.SimpleQueue[Invocation | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._store: Store | None = None

    @classmethod
    def from_url(cls, url: str) -> LocalWorkers:
        return cls(url)

    async def start(self, store: Store, signer: Signer | None = None) -> None:
        self._store = store

    async def invoke(self, invocation: Invocation) -> None:
        if self._store is None:
            raise RuntimeError("LocalWorkers.start(store) must come before invoke()")
        with self._lock:
            self._queue.put(invocation)
            if self._idle:  # a waiting thread will take it
                self._idle -= 1
            elif len(self._threads) < self.parallelism:
                thread = threading.Thread(
                    target=self._serve, name=f"shoal-worker-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            # else: at the cap, it waits for the next thread that finishes

    def _serve(self) -> None:
        from ..protocol.worker import run_worker  # the one worker loop

        assert self._store is not None
        store = self._store.clone()  # a Redis client belongs to one event loop
        cold = True
        with asyncio.Runner() as runner:
            try:
                while (invocation := self._next()) is not _STOP:
                    worker = f"local-{next(self._ids)}"
                    queued_s = max(0.0, time.time() - invocation.sent) if invocation.sent else 0
                    try:  # the loop reports its own crashes to the run; this is what it missed
                        runner.run(
                            run_worker(
                                invocation, store, self, worker, cold=cold, queued_s=queued_s
                            )
                        )
                    except Exception:
                        log.exception("worker %s failed outside its loop", worker)
                    cold = False
            finally:
                if store is not self._store:
                    runner.run(store.close())

    async def prewarm(self, cpus: float, memory_mb: int, count: int, after_s: float = 0.0) -> int:
        """Threads of this process are always warm: nothing to start."""
        return 0

    async def platform(self) -> Platform:
        """Threads of this process: its CPUs, always warm; any idle thread takes any size."""
        with self._lock:
            idle = self._idle + self.parallelism - len(self._threads)
        return Platform(float(os.cpu_count() or 1), math.inf, {Size(): idle})

    def _next(self) -> Invocation | None:
        """The next invocation: one waiting unclaimed, else one that invoke() claims for this
        thread (counting it idle, so that invoke() starts no thread it does not need)."""
        with self._lock:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                self._idle += 1
        return self._queue.get()

    async def close(self, ok: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)  # one each, claimed or not: every thread gets one
        self._threads.clear()
