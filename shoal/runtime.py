"""A worker process's runtime: what it keeps warm between invocations.

Every backend whose workers live in other processes (the gateway's worker processes,
``shoal worker`` behind any FaaS HTTP endpoint, AWS Lambda) hands each invocation payload
to a :class:`WorkerRuntime`, which checks its signature, opens (once) the store and the
backend the invocation names, and runs the one worker loop,
:func:`shoal.protocol.worker.run_worker`. A warm worker reuses its event loop and its
connections.
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
from .protocol.worker import run_worker
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
        self,
        invocation: Invocation,
        *,
        received: float | None = None,
        dispatched: float | None = None,
        cold: bool | None = None,
    ) -> None:
        """Run ``invocation`` to the end. ``received``: when the platform got the request,
        and ``dispatched``: when it gave it to this process (wall clock), so the
        worker-started event tells how long the start took and how long the invocation
        queued; ``cold``: whether the platform started this process for it (default: its
        first invocation)."""
        now = time.time()
        began = dispatched if dispatched is not None else received
        start_s = 0.0 if began is None else max(0.0, now - began)
        queued_s = 0.0
        if dispatched is not None and received is not None:
            queued_s = max(0.0, dispatched - received)
        worker = f"{self.name}-{next(self._count)}"
        if invocation.requirements:  # before anything of the run: refuse what it cannot run
            from .envs.check import refusal

            reason = refusal(invocation.requirements)
            if reason is not None:
                self.runner.run(self._refuse(invocation, worker, reason))
                return
        first, self._cold = self._cold, False
        cold = first if cold is None else cold
        self.runner.run(
            run_worker(
                invocation,
                self._store(invocation.storage),
                self._workers(invocation.workers),
                worker,
                cold=cold,
                start_s=start_s,
                queued_s=queued_s,
            )
        )

    async def _refuse(self, invocation: Invocation, worker: str, reason: str) -> None:
        """Fail the run at ``invocation``'s first task with
        :class:`~shoal.RequirementsUnsatisfied` (``reason`` names what is missing): no task
        of it ran here, and retrying on the same image would not help."""
        from .errors import RequirementsUnsatisfied
        from .events import EventKind, event
        from .failures import TaskFailure
        from .protocol.attempts import attempt_record

        log.warning(
            "worker %s: refused invocation of run %s: %s", worker, invocation.run_id, reason
        )
        task = invocation.tasks[0]
        name = f"task-{task}"
        error = RequirementsUnsatisfied(f"{reason}; nothing ran")
        failure = TaskFailure.from_exception(task, name, worker, 1, error)
        failed = event(EventKind.TASK_FAILED, worker, task, attempt_record(name, 1, error, ""))
        await self._store(invocation.storage).fail_task(invocation.run_id, failure, failed)

    def _store(self, url: str) -> Store:
        store = self.stores.get(url)
        if store is None:
            store = self.stores[url] = open_store(url, self.signer)
        return store

    def _workers(self, url: str) -> Workers:
        workers = self.backends.get(url)
        if workers is None:
            workers = self.backends[url] = open_workers(url)
        return workers

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
