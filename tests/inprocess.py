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
from shoal.stores.memory import MemoryStore


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

    async def go() -> list[Any]:
        workers, steps = LocalWorkers(parallelism=parallelism), store or MemoryStore()
        await workers.start(steps)
        try:
            return await run_graph(
                graph,
                steps,
                workers,
                run_id=new_run_id(),
                on_events=on_events,
                ranks=ranks,
                tuning=dataclasses.replace(DEFAULT, ranked=ranks is not None),
            )
        finally:
            await workers.close()

    return asyncio.run(go())
