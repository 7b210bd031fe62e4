"""The client's side of a run: ship the graph, invoke the roots' workers, wait on the event
stream for the sinks or the first failure, fetch the sinks' outputs, clean up."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from ..backends import Invocation, Size, Workers
from ..decisions import group_roots
from ..errors import RunTimeout, WorkerLost
from ..events import Event, EventKind
from ..graph import EncodedGraph, Graph, ShippedGraph, pages_of
from ..stores import Store

#: How often the client wakes without events (progress bar, timeout).
TICK_S = 0.25


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
) -> list[Any]:
    """Run ``graph`` and return the value of each sink, in ``graph.sinks`` order."""
    shipped = graph.ship()  # 3. ship
    encoded = await store.create_run(run_id, shipped, graph.sinks)
    try:
        inline: ShippedGraph | EncodedGraph | None = None
        if workers.in_process:
            inline = shipped  # by reference
        elif encoded is not None and encoded.nbytes <= store.inline_bytes:
            inline = encoded  # small enough to travel with every invocation
        for group in group_roots(graph.roots, workers.parallelism):  # 4. invoke
            pages = None
            if inline is None and encoded is not None:
                pages = {p: encoded.pages[p] for p in pages_of(group)}
            size = Size.fitting({graph.functions[graph.func_of[t]].options for t in group})
            await workers.invoke(
                Invocation(
                    run_id,
                    tuple(group),
                    workers.parallelism,
                    graph=inline,
                    storage=store.url,
                    workers=workers.url,
                    pages=pages,
                    size=size,
                )
            )
        await _wait_for_sinks(run_id, store, set(graph.sinks), on_events, timeout)  # 5. observe
        unique = list(dict.fromkeys(graph.sinks))
        values = dict(zip(unique, await store.get_outputs(run_id, unique), strict=True))
        return [values[s] for s in graph.sinks]  # 6. finish
    finally:
        await store.delete_run(run_id)


async def _wait_for_sinks(
    run_id: str,
    store: Store,
    remaining: set[int],
    on_events: Callable[[list[Event]], None],
    timeout: float | None,
) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = None
    while remaining:
        wait = TICK_S if deadline is None else max(0.0, min(TICK_S, deadline - time.monotonic()))
        events, cursor = await store.read_events(run_id, cursor, wait)
        on_events(events)
        for ev in events:
            kind = ev.kind
            if kind is EventKind.TASK_FINISHED:
                remaining.discard(ev.task)  # type: ignore[arg-type]
            elif kind is EventKind.TASK_FAILED:
                failure = await store.get_failure(run_id, ev.task)  # type: ignore[arg-type]
                if failure is None:
                    raise WorkerLost(f"task {ev.task} failed but its error record is missing")
                raise failure.exception()
            elif kind is EventKind.WORKER_FAILED:
                detail = (ev.data or {}).get("error", "no details")
                raise WorkerLost(f"worker {ev.worker} crashed outside user code:\n{detail}")
        if deadline is not None and remaining and time.monotonic() >= deadline:
            raise RunTimeout(
                f"run {run_id} did not finish within {timeout} s "
                f"({len(remaining)} requested result(s) still missing)"
            )
