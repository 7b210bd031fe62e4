"""The in-memory store: the embedded default, shared by the client and its in-process
workers (threads). Values pass by reference: nothing is pickled.

Worker threads step on a run's state without a run-wide lock: each deciding step is one
dict or list operation, atomic in CPython (see :func:`shoal.decisions.mark_children`). A
lock taken by every completion would make two busy worker threads queue on it and hand
the GIL back and forth (a lock convoy that doubles the cost of small tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import leases
from ..decisions import Completion, Marks, complete_batch, wakes_client
from ..errors import RunNotFound
from ..events import Event, EventKind, event
from ..failures import TaskFailure
from ..graph import PAGE, ShippedGraph, TaskFunction, TaskSpec
from ..metrics import approx_nbytes
from ..security import Signer
from .base import Settled


class _Run:
    """One run's state."""

    __slots__ = (
        "graph",
        "sinks",
        "outputs",
        "marks",
        "events",
        "failures",
        "waiters",
        "wake_lock",
        "leases",
        "lease_lock",
        "expansions",
        "grow_lock",
    )

    def __init__(self, graph: ShippedGraph, sinks: frozenset[int]) -> None:
        self.graph = graph
        self.sinks = sinks
        self.outputs: dict[int, Any] = {}
        self.marks = Marks()
        self.events: list[Event] = []
        self.failures: dict[int, TaskFailure] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.wake_lock = threading.Lock()  # orders waking events against waiter sign-up
        self.leases = leases.LeaseTable()
        self.lease_lock = threading.Lock()  # each lease step is atomic
        self.expansions: dict[int, int] = {}  # a map's expander -> its first element's id
        self.grow_lock = threading.Lock()  # reservations extend the specs

    def append(self, events: Sequence[Event], wake: bool) -> None:
        """Add events; wake whoever waits for them if ``wake``."""
        if not wake:
            self.events.extend(events)
            return
        with self.wake_lock:
            self.events.extend(events)
            for fut in self.waiters:
                fut.get_loop().call_soon_threadsafe(_wake, fut)
            self.waiters.clear()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryStore:
    """``memory://``: a store in this process's memory."""

    in_process = True
    inline_bytes = 0
    codec = None

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[str, _Run] = {}
        self._live: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_url(cls, url: str, signer: Signer | None = None) -> MemoryStore:
        """``memory://``; nothing is pickled, so nothing is signed."""
        return cls(url)

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id} is not in {self.url} (finished, failed or cancelled)")
        return run

    async def create_run(
        self,
        run_id: str,
        graph: ShippedGraph,
        sinks: Sequence[int],
        announce: dict[str, Any] | None = None,
    ) -> None:
        """Keep the graph as objects: in-process workers read it by reference."""
        run = self._runs[run_id] = _Run(graph, frozenset(sinks))
        if announce is not None:
            self._live[run_id] = announce
        run.append(
            (event(EventKind.RUN_STARTED, "client", data={"tasks": len(graph.specs)}),), False
        )
        return None

    def clone(self) -> MemoryStore:
        return self  # threads of this process share it

    async def load_pages(self, run_id: str, pages: Sequence[int]) -> dict[int, bytes]:
        """Nothing: specs are not encoded here, and in-process workers hold the graph."""
        self._run(run_id)
        return {}

    async def load_functions(
        self, run_id: str, indices: Sequence[int]
    ) -> list[TaskFunction[Any, Any]]:
        functions = self._run(run_id).graph.functions
        return [functions[i] for i in indices]

    async def sweep_blobs(self) -> list[str]:
        return []  # values pass by reference: no blobs

    async def load_constants(self, run_id: str, indices: Sequence[int]) -> list[Any]:
        raise LookupError(f"run {run_id} has no lifted constants: its specs pass by reference")

    async def get_outputs(self, run_id: str, tasks: Sequence[int]) -> tuple[list[Any], int]:
        outputs = self._run(run_id).outputs
        try:
            return [outputs[t] for t in tasks], 0
        except KeyError as missing:
            raise LookupError(f"output of task {missing} is not stored in run {run_id}") from None

    async def reserve(self, run_id: str, task: int, count: int) -> int:
        """Grow the specs (shared with the workers) by ``count`` empty places."""
        run = self._run(run_id)
        with run.grow_lock:
            first = run.expansions.get(task)
            if first is None:  # in whole pages, as a store of pages reserves them
                specs = run.graph.specs
                first = run.expansions[task] = -(-len(specs) // PAGE) * PAGE
                specs.extend([None] * (first + count - len(specs)))  # type: ignore[list-item]
        return first

    async def complete_tasks(
        self,
        run_id: str,
        batch: Sequence[Completion],
        fanout: int,
        want_pages: bool = False,
        extra: Sequence[Event] = (),
        owner: str = "",
        specs: Mapping[int, TaskSpec] | None = None,
    ) -> Settled | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        if specs:
            graph_specs = run.graph.specs
            for new, spec in specs.items():
                graph_specs[new] = spec
        outputs, finished_before = run.outputs, run.marks.finished
        for c in batch:  # before the marks: a worker they ready may read it at once
            if c.task not in finished_before:
                outputs[c.task] = c.output
        readies, keeps = complete_batch(run.marks, batch, fanout)
        owners = run.leases.owners
        for ready in readies:  # one dict store each, atomic: no lock needed
            for child in ready:
                owners[child] = owner
        finished = []
        stored = []
        for c, keep in zip(batch, keeps, strict=True):
            if keep is None:  # a redelivery: the first delivery's output and event stand
                stored.append(-1)
                continue
            if keep:
                kind, worker, task, end, data, start, _ = c.finished
                size = approx_nbytes(c.output)
                finished.append(Event(kind, worker, task, end, data, start, size))
                stored.append(size)
            else:
                del outputs[c.task]  # every consumer is the caller's: it stays local
                finished.append(c.finished)
                stored.append(0)
        if extra:
            finished.extend(extra)
        run.append(finished, any(c.task in run.sinks for c in batch))
        with run.lease_lock:
            live = leases.live(run.leases)
        return Settled(readies, stored, {}, live)

    async def fail_task(self, run_id: str, failure: TaskFailure, failed: Event) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        run.failures.setdefault(failure.task, failure)
        run.append((failed,), True)

    async def get_failure(self, run_id: str, task: int) -> TaskFailure | None:
        return self._run(run_id).failures.get(task)

    async def emit(self, run_id: str, events: Sequence[Event]) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        run.append(events, wakes_client(events, run.sinks))

    async def read_events(
        self, run_id: str, cursor: int | None, timeout: float, waking: bool = False
    ) -> tuple[list[Event], int]:
        # Readers are woken by the events a client must see at once only, either way.
        run = self._run(run_id)
        start = cursor or 0
        with run.wake_lock:
            if len(run.events) > start:
                batch = run.events[start:]
                return batch, start + len(batch)
            fut = asyncio.get_running_loop().create_future()
            run.waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        with run.wake_lock:
            if fut in run.waiters:
                run.waiters.remove(fut)
        batch = run.events[start:]
        return batch, start + len(batch)

    # ----------------------------------------------------------------- leases
    async def live_invocations(self, run_id: str) -> int:
        run = self._runs.get(run_id)
        if run is None:
            return 0
        with run.lease_lock:
            return leases.live(run.leases)

    async def count_invocations(self, run_id: str) -> leases.Invocations:
        run = self._runs.get(run_id)
        if run is None:
            return leases.Invocations(0, 0)
        with run.lease_lock:
            return leases.count(run.leases)

    async def hand_off(
        self,
        run_id: str,
        parent: str,
        handed: Sequence[tuple[str, Sequence[int]]],
        lease_s: float,
    ) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            with run.lease_lock:
                leases.hand_off(run.leases, time.monotonic(), parent, handed, lease_s)

    async def claim(
        self,
        run_id: str,
        invocation: str,
        parent: str,
        tasks: Sequence[int],
        started: Event | None,
        lease_s: float,
    ) -> bool:
        run = self._run(run_id)
        worker = started.worker if started else leases.CLIENT
        with run.lease_lock:
            ok = leases.claim(
                run.leases, time.monotonic(), invocation, parent, tasks, worker, lease_s
            )
        if ok and started:
            run.append((started,), False)
        return ok

    async def renew(self, run_id: str, held: dict[str, int | None], lease_s: float) -> list[str]:
        run = self._runs.get(run_id)
        if run is None:
            return list(held)
        now = time.monotonic()
        # No abandoned runs here: the client is this process (a process that was suspended
        # for a while finds its run still there).
        with run.lease_lock:
            return [
                inv for inv, task in held.items()
                if not leases.renew(run.leases, now, inv, lease_s, task)
            ]  # fmt: skip

    async def release(self, run_id: str, invocation: str, events: Sequence[Event]) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        with run.lease_lock:
            leases.release(run.leases, invocation)
        run.append(events, wakes_client(events, run.sinks))

    async def expired(self, run_id: str) -> list[str]:
        run = self._run(run_id)
        with run.lease_lock:
            return leases.expired(run.leases, time.monotonic())

    async def recover(
        self,
        run_id: str,
        candidates: Sequence[int],
        prefix: str,
        lease_s: float,
        dead: Sequence[str] = (),
    ) -> list[leases.Recovered]:
        run = self._run(run_id)
        finished = run.marks.finished
        with run.lease_lock:
            return leases.recover(
                run.leases,
                time.monotonic(),
                candidates,
                finished.__contains__,
                lambda k: f"{prefix}{k}",
                lease_s,
                dead,
            )

    async def stored(self, run_id: str, tasks: Sequence[int]) -> set[int]:
        outputs = self._run(run_id).outputs
        return {t for t in tasks if t in outputs}

    async def delete_run(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._live.pop(run_id, None)

    async def live_runs(self) -> dict[str, dict[str, Any]]:
        """This process's runs (no other process can see them)."""
        return {k: v for k, v in self._live.items() if k in self._runs}

    async def run_shape(self, run_id: str) -> dict[str, Any] | None:
        run = self._runs.get(run_id)
        return None if run is None else run.graph.shape()

    def run_ids(self) -> list[str]:
        """Runs still held (for tests that check a run leaves nothing behind)."""
        return list(self._runs)

    async def close(self) -> None:
        self._runs.clear()
