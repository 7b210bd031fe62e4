"""The worker loop's own timing of its store steps, seen through a memory store whose
steps take a few turns of the event loop, as a network store's do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import shoal
from shoal.backends.local import LocalWorkers
from shoal.decisions import SMALL_TASK_S, Completion
from shoal.graph import build
from shoal.protocol import new_run_id, run_graph
from shoal.stores.base import Settled
from shoal.stores.memory import MemoryStore


class SlowSteps(MemoryStore):
    """A memory store whose completion steps end after other coroutines had turns; it
    notes the tasks whose steps are over."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: set[int] = set()

    async def complete_tasks(
        self, run_id: str, batch: Sequence[Completion], *args: Any, **kwargs: Any
    ) -> Settled | None:
        for _ in range(20):
            await asyncio.sleep(0)  # the round trip
        settled = await super().complete_tasks(run_id, batch, *args, **kwargs)
        self.settled.update(c.task for c in batch)
        return settled


STORE: SlowSteps | None = None  # the run's, for its tasks to look at


@shoal.task
def first() -> str:
    end = time.perf_counter() + 2 * SMALL_TASK_S  # long enough that its step is not put off
    while time.perf_counter() < end:
        pass
    return "first"


@shoal.task
def step_of_input(parent: str) -> str:
    assert STORE is not None
    return "settled" if 0 in STORE.settled else "in flight"


@shoal.task
def sink(x: str) -> str:
    return x


ran: list[str] = []  # the tasks below, in the order they ran


@shoal.task
def named(name: str, *inputs: Any) -> str:
    end = time.perf_counter() + 2 * SMALL_TASK_S
    while time.perf_counter() < end:
        pass
    ran.append(name)
    return name


@shoal.task
def pair(a: Any, b: Any) -> tuple[Any, Any]:
    ran.append("pair")
    return (a, b)


def run(node: shoal.Node) -> list[Any]:
    """Run ``node``'s graph on one in-process worker over a :class:`SlowSteps` store."""

    async def go() -> list[Any]:
        global STORE
        STORE = store = SlowSteps()
        workers = LocalWorkers(parallelism=1)
        await workers.start(store)
        try:
            return await run_graph(
                build([node]), store, workers, run_id=new_run_id(), on_events=lambda e: None
            )
        finally:
            STORE = None
            await workers.close()

    return asyncio.run(go())


def test_a_chains_next_task_runs_while_the_step_of_its_input_is_in_flight() -> None:
    """Nothing the step's reply could say is new to the worker (the child is its own, the
    output is stored nowhere): it does not wait for it to run the child."""
    assert run(sink(step_of_input(first()))) == ["in flight"]


def test_the_step_that_readies_a_fan_in_is_waited_for_and_the_fan_in_runs_next() -> None:
    """The step of a fan-in's last input may ready it here: the worker waits for the
    reply, and runs the fan-in before its other work (depth first, as without a step in
    flight), not after."""
    ran.clear()
    both = pair(named("a"), named("b"))
    assert run(pair(named("after", both), named("other"))) == [("after", "other")]
    assert ran.index("pair") < ran.index("other")
