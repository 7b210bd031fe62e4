"""A worker's heartbeat: one thread per process renews the lease of every invocation its
workers run (:mod:`shoal.leases`), a quarter of a lease apart.

User code runs on a worker's event-loop thread and may hold it for minutes; a lease renewed
from that loop would expire under a long task. The heartbeat thread has its own event loop
and its own connection to each store, and CPython hands it the GIL at least every few
milliseconds, so a busy task cannot starve it. An invocation shorter than a heartbeat
costs nothing here: its lease is taken with its claim and dropped with its release.

A worker process of its own (a gateway's) gives up on user code that outlives its lease: a
task still running a whole lease after its lease was lost (its run ended, failed or was
cancelled, or its tasks went to another worker) will not be wanted, and its process exits
with :data:`ABANDONED_EXIT`, freeing its slot. Threads of the client cannot be stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores import Store

log = logging.getLogger(__name__)

#: The exit status of a worker process that gave up on a task nobody waits for.
ABANDONED_EXIT = 75


class HeldLease:
    """A lease as its worker holds it: the worker writes the task it runs, the heartbeat
    sets ``lost`` when the lease is gone (its tasks were recovered, or the run ended)."""

    __slots__ = ("invocation", "lease_s", "lost", "lost_at", "run_id", "store", "task")

    def __init__(self, store: Store, run_id: str, invocation: str, lease_s: float) -> None:
        self.store, self.run_id, self.invocation, self.lease_s = store, run_id, invocation, lease_s
        self.task: int | None = None
        self.lost = False
        self.lost_at = 0.0  # monotonic


class Heartbeat:
    """Renews every held lease of this process from one thread."""

    def __init__(self) -> None:
        self._held: set[HeldLease] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set in a worker process of its own: exit when a lost lease's task runs on.
        self.exit_when_abandoned = False

    def hold(self, store: Store, run_id: str, invocation: str, lease_s: float) -> HeldLease:
        held = HeldLease(store, run_id, invocation, lease_s)
        with self._lock:
            if not self._held:
                self._wake.set()  # the thread waits for a first lease
            self._held.add(held)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="shoal-heartbeat", daemon=True
                )
                self._thread.start()
        return held

    def drop(self, held: HeldLease) -> None:
        with self._lock:
            self._held.discard(held)

    def _serve(self) -> None:
        stores: dict[str, Store] = {}  # this thread's own connection to each store
        with asyncio.Runner() as runner:
            while True:
                with self._lock:
                    held = list(self._held)
                    self._wake.clear()
                if not held:
                    self._wake.wait()
                    continue
                # Leases of one run share a length; a run with a shorter one is rare.
                self._wake.wait(min(h.lease_s for h in held) / 4)
                runner.run(self._renew(held, stores))

    async def _renew(self, held: list[HeldLease], stores: dict[str, Store]) -> None:
        with self._lock:  # still held: those dropped meanwhile are done
            held = [h for h in held if h in self._held]
        if self.exit_when_abandoned:
            now = time.monotonic()
            for h in held:
                if h.lost and now - h.lost_at > h.lease_s:
                    log.warning(
                        "worker process %d: task %s of run %s still runs a lease after its "
                        "lease was lost; giving it up",
                        os.getpid(),
                        h.task,
                        h.run_id,
                    )
                    os._exit(ABANDONED_EXIT)
        by_run: dict[tuple[str, str], list[HeldLease]] = {}
        for h in held:
            by_run.setdefault((h.store.url, h.run_id), []).append(h)
        for (url, run_id), leases in by_run.items():
            store = leases[0].store
            if not store.in_process:  # a client of this thread's own, one per URL
                store = stores.get(url) or stores.setdefault(url, store.clone())
            # (Stores in this process share a URL, memory://, but not their runs.)
            try:
                lost = await store.renew(
                    run_id, {h.invocation: h.task for h in leases}, leases[0].lease_s
                )
            except Exception as exc:  # the store is away: the worker finds out itself
                log.debug("heartbeat of run %s failed: %r", run_id, exc)
                continue
            for h in leases:
                if h.invocation in lost and not h.lost:
                    h.lost, h.lost_at = True, time.monotonic()


#: This process's heartbeat.
HEARTBEAT = Heartbeat()
