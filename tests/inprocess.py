"""Runs of a graph on in-process workers, straight through the protocol (no compute())."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from shoal.backends.local import LocalWorkers
from shoal.events import Event
from shoal.graph import Graph
from shoal.optimizations import DEFAULT
from shoal.protocol import new_run_id, run_graph
from shoal.stores.base import Store
from shoal.stores.memory import MemoryStore


async def run_on_threads(
    graph: Graph, store: Store, parallelism: int | None = None, **options: Any
) -> list[Any]:
    """The sinks' values of ``graph`` run straight through the protocol on
    ``parallelism`` worker threads of this process (default: one per core) over
    ``store``; ``options`` go to :func:`~shoal.protocol.run_graph`."""
    workers = LocalWorkers(parallelism=parallelism)
    await workers.start(store)
    options.setdefault("on_events", lambda events: None)
    try:
        return await run_graph(graph, store, workers, run_id=new_run_id(), **options)
    finally:
        await workers.close()


def run_ranked(
    graph: Graph,
    parallelism: int,
    ranks: Sequence[float] | None,
    on_events: Callable[[list[Event]], None] = lambda events: None,
    store: MemoryStore | None = None,
) -> list[Any]:
    """The sinks' values of ``graph`` run on ``parallelism`` worker threads over a memory
    store (or ``store``), its tasks ranked by ``ranks`` (None: unranked), the default
    optimizations on."""

    tuning = dataclasses.replace(DEFAULT, ranked=ranks is not None)
    run = run_on_threads(
        graph, store or MemoryStore(), parallelism, on_events=on_events, ranks=ranks, tuning=tuning
    )
    return asyncio.run(run)
