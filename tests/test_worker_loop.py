"""The worker loop's own timing of its store steps, seen through a memory store whose
steps take a few turns of the event loop, as a network store's do."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

from inprocess import run_on_threads, run_ranked

import shoal
from shoal.decisions import FLUSH_AFTER_S, SMALL_TASK_S, Completion
from shoal.events import Event, EventKind
from shoal.graph import build
from shoal.optimizations import DEFAULT
from shoal.planning.work import Shape, bottom_levels
from shoal.stores.base import Settled
from shoal.stores.memory import MemoryStore


class SlowSteps(MemoryStore):
    """A memory store whose completion steps end after other coroutines had turns; it
    notes the tasks whose steps are over."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: set[int] = set()
        self.steps = 0

    async def complete_tasks(
        self, run_id: str, batch: Sequence[Completion], *args: Any, **kwargs: Any
    ) -> Settled | None:
        for _ in range(20):
            await asyncio.sleep(0)  # the round trip
        settled = await super().complete_tasks(run_id, batch, *args, **kwargs)
        self.settled.update(c.task for c in batch)
        self.steps += 1
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


@shoal.task
def together(*inputs: Any) -> int:
    return len(inputs)


def run(node: shoal.Node, store: SlowSteps | None = None) -> list[Any]:
    """Run ``node``'s graph on one in-process worker over a :class:`SlowSteps` store."""

    async def go() -> list[Any]:
        global STORE
        STORE = store or SlowSteps()
        try:
            return await run_on_threads(build([node]), STORE, 1)
        finally:
            STORE = None

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


class AskedStore(SlowSteps):
    """It counts the questions of how many of a run's invocations are alive."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def live_invocations(self, run_id: str) -> int:
        self.asked += 1
        return await super().live_invocations(run_id)


def test_a_chains_steps_ask_the_store_nothing_before_they_go() -> None:
    """With two slots to share work into, a step asks how many invocations are alive
    only to split what one completion readies: a chain's links ready one child each,
    so its steps, several links each, go without asking first (a round trip each on
    Redis)."""
    tuning = dataclasses.replace(DEFAULT, ranked=False)  # sharing on
    store = AskedStore()
    node: Any = 0
    for _ in range(40):
        node = quick_link(node)
    assert asyncio.run(run_on_threads(build([node]), store, 2, tuning=tuning)) == [40]
    assert 1 <= store.steps < 40 and store.asked == 0  # links batched, none asked
    store = AskedStore()
    source = quick_link(0)
    fan = together(*(quick_link(source) for _ in range(4)))  # a fan-out of 4: it asks
    assert asyncio.run(run_on_threads(build([fan]), store, 2, tuning=tuning)) == [4]
    assert store.asked >= 1


@shoal.task
def quick_link(x: int) -> int:
    return x + 1


def test_on_a_full_platform_tasks_too_long_to_batch_elsewhere_share_steps() -> None:
    """24 roots of a fan-in, each longer than a store step (each its own step where a
    worker may idle for what the step tells), on a platform of one slot: once a step told
    the worker that the slot it holds is the only one, a step holds its tasks of up to
    FLUSH_AFTER_S (~5 of these roots), not one each."""
    store = SlowSteps()
    assert run(together(*(named(f"root{i}") for i in range(24))), store) == [24]
    assert store.steps <= 9  # 6 here; 13 when each root's step is its own (or in flight)


@shoal.task
def link(x: int) -> int:
    end = time.perf_counter() + FLUSH_AFTER_S + 0.005
    while time.perf_counter() < end:
        pass
    return x + 1


def test_on_a_full_platform_a_chains_links_share_steps_longer() -> None:
    """A chain of 24 tasks each longer than FLUSH_AFTER_S, on a platform of one slot: no
    completion is the input of a task of several inputs, so no other worker's step waits
    for its mark, and a step holds up to LINKS_FLUSH_AFTER_S of them (~4), not one."""
    store = SlowSteps()
    node: Any = 0
    for _ in range(24):
        node = link(node)
    assert run(node, store) == [24]
    assert store.steps <= 12  # 6 here; 24 when each waits no longer than FLUSH_AFTER_S


def test_on_a_full_platform_a_ranked_worker_puts_off_steps_a_fan_in_would_wait_for() -> None:
    """24 roots of a fan-in, each longer than FLUSH_AFTER_S, on one slot: their steps mark
    the fan-in, but ranked, the worker's next root ranks above it (it leads to it), so the
    fan-in would wait for that root anyway: a step holds up to LINKS_FLUSH_AFTER_S."""
    graph = build([together(*(link(i) for i in range(24)))])
    seconds = [0.001 if graph.nodes[t].fn.name == "together" else 0.025 for t in range(25)]
    ranks = bottom_levels(Shape.of(graph), seconds)
    steps = {}
    for ranked in (False, True):
        store = SlowSteps()
        assert run_ranked(graph, 1, ranks if ranked else None, store=store) == [24]
        steps[ranked] = store.steps
    assert steps[True] <= 9 < steps[False]  # 6 and 13 here


# --------------------------------------------------------------------------- ranks


@shoal.task
def leaf(x: str) -> str:
    ran.append("leaf")
    return x


@shoal.task
def lead(x: str) -> str:
    ran.append("lead")
    return x


@shoal.task
def long_after(x: str) -> str:
    ran.append("long")
    return x


def ranked_order(ranked: bool) -> list[str]:
    """One worker runs ``root``, whose children are ``leaf`` (first: depth first runs it
    next) and ``lead``, which leads to a long task; ranked, as a history would rank them."""
    ran.clear()
    root = named("root")
    graph = build([leaf(root), long_after(lead(root))])
    names = [graph.nodes[t].fn.name for t in range(len(graph))]
    seconds = {"root": 0.01, "leaf": 0.01, "lead": 0.01, "long_after": 1.0}
    ranks = bottom_levels(Shape.of(graph), [seconds.get(n, 0.01) for n in names])
    assert run_ranked(graph, 1, ranks if ranked else None) == ["root", "root"]
    return ran[1:]


def test_a_ranked_worker_runs_first_the_child_that_leads_to_more_work() -> None:
    assert ranked_order(False) == ["leaf", "lead", "long"]  # depth first: the first child
    assert ranked_order(True) == ["lead", "long", "leaf"]  # the leaf waits: it leads nowhere


# --------------------------------------------------------------------------- long tasks

long_done = threading.Event()


@shoal.task
def on_worker(name: str, *inputs: Any) -> str:
    if name == "long":
        long_done.set()
    return name


@shoal.task
def busy_until_long_done() -> str:
    """Holds the platform's other slot until the long task has run (or 10 s)."""
    return "released" if long_done.wait(10) else "timed out"


def test_a_ranked_worker_hands_its_put_off_tasks_over_before_a_long_task() -> None:
    """Two slots, both taken: one worker holds the long task (ranked first) and quick ones
    it put off for it. It hands those to a new worker before it runs the long one: the
    platform starts that worker in the first slot that frees. Before, they waited for the
    long task on its worker."""
    long_done.clear()
    root = on_worker("root")
    quick = [on_worker(f"quick{i}", root) for i in range(4)]
    graph = build([on_worker("long", root), *quick, busy_until_long_done()])
    name = [str(node.args[0]) if node.args else "busy" for node in graph.nodes]
    seconds = [0.5 if n == "long" else 0.01 for n in name]
    ran_by: dict[str, str] = {}

    def on_events(events: list[Event]) -> None:
        for e in events:
            if e.kind is EventKind.TASK_FINISHED:
                ran_by[name[e.task]] = e.worker

    ranks = bottom_levels(Shape.of(graph), seconds)
    assert run_ranked(graph, 2, ranks, on_events)[-1] == "released"
    quick_workers = {ran_by[f"quick{i}"] for i in range(4)}
    assert ran_by["long"] == ran_by["root"]
    assert quick_workers - {ran_by["long"], ran_by["busy"]}  # a new worker ran some
