"""The client's side of a run: ship the graph, invoke the roots' workers, wait on the event
stream for the sinks or the first failure, fetch the sinks' outputs, clean up."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backends import Invocation, Size, Workers, invoke_all
from ..decisions import group_roots
from ..errors import RunTimeout, WorkerLost
from ..events import Event, EventKind
from ..graph import EncodedGraph, Graph, ShippedGraph, pages_of
from ..stores import Store

if TYPE_CHECKING:
    from ..planning import Plan

log = logging.getLogger(__name__)

#: How often the client wakes without events (progress bar, timeout).
TICK_S = 0.25
#: How long the client waits after the sinks for every worker's last metrics.
SETTLE_S = 2.0


def new_run_id() -> str:
    return secrets.token_hex(6)


async def run_graph(
    graph: Graph,
    store: Store,
    workers: Workers,
    *,
    run_id: str,
    on_events: Callable[[list[Event]], None],
    timeout: float | None = None,
    metrics: str = "batch",
    plan: Plan | None = None,
) -> list[Any]:
    """Run ``graph`` and return the value of each sink, in ``graph.sinks`` order.
    ``metrics``: the workers' upload policy of task metrics (:mod:`shoal.metrics`); unless
    it is ``off``, the client waits (at most :data:`SETTLE_S`) after the sinks for every
    worker's last records. ``plan``: each task's group and size (2.)."""
    shipped = graph.ship(plan)  # 3. ship
    encoded = await store.create_run(run_id, shipped, graph.sinks)
    try:
        inline: ShippedGraph | EncodedGraph | None = None
        if workers.in_process:
            inline = shipped  # by reference
        elif encoded is not None and encoded.nbytes <= store.inline_bytes:
            inline = encoded  # small enough to travel with every invocation
        invocations = []
        for group, size in _root_groups(graph, workers.parallelism, plan):  # 4. invoke
            pages = None
            if inline is None and encoded is not None:
                pages = {p: encoded.pages[p] for p in pages_of(group)}
            invocations.append(
                Invocation(
                    run_id,
                    tuple(group),
                    workers.parallelism,
                    graph=inline,
                    storage=store.url,
                    workers=workers.url,
                    pages=pages,
                    size=size,
                    metrics=metrics,
                    sent=time.time(),
                )
            )
        await invoke_all(workers, invocations)
        watch = _Watch(run_id, store, on_events, timeout)
        await watch.until_finished(set(graph.sinks))  # 5. observe
        unique = list(dict.fromkeys(graph.sinks))
        outputs, _ = await store.get_outputs(run_id, unique)
        values = dict(zip(unique, outputs, strict=True))
        if metrics != "off":
            await watch.until_workers_stop(SETTLE_S)
        return [values[s] for s in graph.sinks]  # 6. finish
    finally:
        await store.delete_run(run_id)


def _root_groups(graph: Graph, fanout: int, plan: Plan | None) -> list[tuple[list[int], Size]]:
    """The first invocations: the roots in at most ``fanout`` groups, each on the size
    that fits its tasks; with a plan, by planned group, on the planned size."""
    if plan is None:
        options = [f.options for f in graph.functions]
        return [
            (group, Size.fitting({options[graph.func_of[t]] for t in group}))
            for group in group_roots(graph.roots, fanout)
        ]
    groups: dict[int, list[int]] = {}
    for root in graph.roots:
        groups.setdefault(plan.groups[root], []).append(root)
    return [(group, plan.sizes[group[0]]) for group in groups.values()]


class _Watch:
    """The client's reading of the run's event stream: one pass over each event."""

    def __init__(
        self,
        run_id: str,
        store: Store,
        on_events: Callable[[list[Event]], None],
        timeout: float | None,
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.on_events = on_events
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cursor: Any = None
        self.remaining: set[int] = set()  # sinks not yet finished
        self.running: set[str] = set()  # workers started and not yet stopped

    async def until_finished(self, sinks: set[int]) -> None:
        """Until every task of ``sinks`` finished; the first failure raises."""
        self.remaining = sinks
        deadline = self.deadline
        while self.remaining:
            left = TICK_S if deadline is None else max(0.0, deadline - time.monotonic())
            failed = await self.read(min(TICK_S, left))
            if failed is not None:
                await self.raise_failure(failed)
            if deadline is not None and self.remaining and time.monotonic() >= deadline:
                raise RunTimeout(
                    f"run {self.run_id} did not finish within {self.timeout} s "
                    f"({len(self.remaining)} requested result(s) still missing)"
                )

    async def until_workers_stop(self, at_most_s: float) -> None:
        """Until every worker that started has stopped (its last metrics are then in), or
        ``at_most_s`` passed: the run's results are in hand already."""
        give_up = time.monotonic() + at_most_s
        while self.running and (left := give_up - time.monotonic()) > 0:
            await self.read(min(TICK_S, left))
        if self.running:
            log.debug("run %s: workers %s did not stop in time", self.run_id, self.running)

    async def read(self, wait_s: float) -> Event | None:
        """Read what came (waiting up to ``wait_s`` for it); the first failure, if any."""
        events, self.cursor = await self.store.read_events(self.run_id, self.cursor, wait_s)
        self.on_events(events)
        remaining, running = self.remaining, self.running
        failed = None
        for ev in events:
            kind = ev.kind
            if kind is TASK_FINISHED:
                remaining.discard(ev.task)  # type: ignore[arg-type]
            elif kind is WORKER_STARTED:
                running.add(ev.worker)
            elif kind is WORKER_STOPPED:
                running.discard(ev.worker)
            elif failed is None and kind in FAILURES:
                failed = ev
        return failed

    async def raise_failure(self, failed: Event) -> None:
        if failed.kind is EventKind.TASK_FAILED:
            failure = await self.store.get_failure(self.run_id, failed.task)  # type: ignore[arg-type]
            if failure is None:
                raise WorkerLost(f"task {failed.task} failed but its error record is missing")
            raise failure.exception()
        detail = (failed.data or {}).get("error", "no details")
        raise WorkerLost(f"worker {failed.worker} crashed outside user code:\n{detail}")


TASK_FINISHED = EventKind.TASK_FINISHED
WORKER_STARTED, WORKER_STOPPED = EventKind.WORKER_STARTED, EventKind.WORKER_STOPPED
FAILURES = frozenset({EventKind.TASK_FAILED, EventKind.WORKER_FAILED})
