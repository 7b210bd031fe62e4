"""A worker process's runtime: what it keeps warm between invocations.

Every backend whose workers live in other processes (the gateway's worker processes,
``shoal worker`` behind any FaaS HTTP endpoint, AWS Lambda) hands each invocation payload
to a :class:`WorkerRuntime`, which checks its signature, opens (once) the store and the
backend the invocation names, and runs the one worker loop, :func:`shoal.protocol.run_worker`.
A warm worker reuses its event loop and its connections.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

from .backends import Invocation, Workers, open_workers
from .codec import Codec
from .protocol import run_worker
from .security import Signer
from .stores import Store, open_store

log = logging.getLogger(__name__)


class WorkerRuntime:
    """Runs invocation payloads in this process, one at a time."""

    def __init__(self, name: str | None = None, signer: Signer | None = None) -> None:
        self.name = name or f"w{os.getpid()}"
        self.signer = signer or Signer.from_env()
        self.codec = Codec(self.signer)
        self.runner = asyncio.Runner()
        self.stores: dict[str, Store] = {}
        self.backends: dict[str, Workers] = {}
        self._count = itertools.count(1)
        self._cold = True

    def load(self, payload: bytes) -> Invocation:
        """The invocation in ``payload``; :class:`shoal.BadSignature` if it is not signed
        with this worker's secret."""
        return self.codec.load_invocation(payload)

    def run(
        self, invocation: Invocation, *, received: float | None = None, cold: bool | None = None
    ) -> None:
        """Run ``invocation`` to the end. ``received``: when the platform got the request
        (wall clock), so the worker-started event tells how long the start took; ``cold``:
        whether the platform started this process for it (default: its first invocation)."""
        start_s = 0.0 if received is None else max(0.0, time.time() - received)
        worker = f"{self.name}-{next(self._count)}"
        first, self._cold = self._cold, False
        cold = first if cold is None else cold
        self.runner.run(self._run(invocation, worker, cold, start_s))

    async def _run(self, invocation: Invocation, worker: str, cold: bool, start_s: float) -> None:
        store = self.stores.get(invocation.storage)
        if store is None:
            store = self.stores[invocation.storage] = open_store(invocation.storage, self.signer)
        workers = self.backends.get(invocation.workers)
        if workers is None:
            workers = self.backends[invocation.workers] = open_workers(invocation.workers)
        await run_worker(invocation, store, workers, worker, cold=cold, start_s=start_s)

    def close(self) -> None:
        async def close_all() -> None:
            for store in self.stores.values():
                await store.close()
            for workers in self.backends.values():
                await workers.close()

        try:
            self.runner.run(close_all())
        finally:
            self.runner.close()

    def __enter__(self) -> WorkerRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
