"""The decentralized protocol, top to bottom (design brief, "How a run flows").

Client side (:func:`run_graph`):
  1. Build   the graph from the sinks (done by the caller, :func:`shoal.graph.build`).
  2. Plan    (optional; not yet).
  3. Ship    the partitioned graph to the store once; in-process workers get it by reference.
  4. Invoke  one worker per group of roots.
  5. Observe the run's event stream until every sink finished or something failed.
  6. Finish  download the sinks' outputs and delete every key of the run (also on failure).

Worker side (:func:`run_worker`), for each task it owns:
  a. gather the inputs: kept locally when this worker made them, else one store read;
  b. run the function, retrying with backoff;
  c. complete in one atomic store step: mark every child (idempotently), store the output
     only if a consumer may live elsewhere, append the task's event (start and end);
  d. own the children the marks made ready: keep one group, hand each other group to a
     new worker. No central queue: whoever completes a child's last input owns it.

The decisions inside these steps are pure functions in :mod:`shoal.decisions`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from .backends import Invocation, Workers
from .decisions import backoff_delays, group_roots, split_ready, upload_mode
from .errors import RunNotFound, RunTimeout, WorkerLost
from .events import Event, EventKind, event
from .failures import TaskFailure
from .graph import Graph, TaskFunction, TaskSpec
from .stores import Store

log = logging.getLogger(__name__)

#: How often the client wakes without events (progress bar, timeout).
TICK_S = 0.25


# --------------------------------------------------------------------------- client side


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
    info: dict[str, int] | None = None,
) -> list[Any]:
    """Run ``graph`` and return the value of each sink, in ``graph.sinks`` order.
    The store's counters of the run are copied into ``info``."""
    shipped = graph.ship()  # 3. ship
    await store.create_run(run_id, shipped, graph.sinks)
    try:
        await workers.start(store)
        inline = shipped if store.in_process else None
        for group in group_roots(graph.roots, workers.parallelism):  # 4. invoke
            await workers.invoke(Invocation(run_id, tuple(group), workers.parallelism, inline))
        await _wait_for_sinks(run_id, store, set(graph.sinks), on_events, timeout)  # 5. observe
        unique = list(dict.fromkeys(graph.sinks))
        values = dict(zip(unique, await store.get_outputs(run_id, unique), strict=True))
        return [values[s] for s in graph.sinks]  # 6. finish
    finally:
        if info is not None:
            info.update(await store.run_info(run_id))
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


# --------------------------------------------------------------------------- worker side


class _TaskSource:
    """The specs and functions this worker needs: from the invocation, else from the store
    (fetched once per worker)."""

    def __init__(self, invocation: Invocation, store: Store) -> None:
        self.run_id = invocation.run_id
        self.store = store
        graph = invocation.graph
        self.graph = graph
        self.specs: dict[int, TaskSpec] = {}
        self.functions: dict[int, TaskFunction[Any, Any]] = {}

    async def spec(self, task: int) -> TaskSpec:
        if self.graph is not None:
            return self.graph.specs[task]
        spec = self.specs.get(task)
        if spec is None:
            (spec,) = await self.store.load_specs(self.run_id, [task])
            self.specs[task] = spec
        return spec

    async def function(self, index: int) -> TaskFunction[Any, Any]:
        if self.graph is not None:
            return self.graph.functions[index]
        fn = self.functions.get(index)
        if fn is None:
            (fn,) = await self.store.load_functions(self.run_id, [index])
            self.functions[index] = fn
        return fn

    async def name(self, task: int) -> str:
        fn = await self.function((await self.spec(task)).func)
        return f"{fn.name}-{task}"


async def run_worker(
    invocation: Invocation,
    store: Store,
    workers: Workers,
    worker: str,
    *,
    cold: bool = False,
    since: float | None = None,
) -> None:
    """The one worker loop, shared by every backend: run the invocation's tasks and every
    task their completions make this worker own."""
    run_id = invocation.run_id
    start_s = 0.0 if since is None else time.perf_counter() - since
    await store.emit(
        run_id, [event(EventKind.WORKER_STARTED, worker, data={"cold": cold, "start_s": start_s})]
    )
    source = _TaskSource(invocation, store)
    fanout = invocation.fanout
    owned = list(reversed(invocation.tasks))  # a stack: depth first keeps memory low
    kept: dict[int, list[Any]] = {}  # task -> [output, kept children yet to read it]
    specs = invocation.graph.specs if invocation.graph else None
    functions = invocation.graph.functions if invocation.graph else None
    ran = 0
    try:
        while owned:
            task = owned.pop()
            spec = specs[task] if specs else await source.spec(task)
            deps = spec.deps
            if len(deps) == 1 and (entry := kept.get(deps[0])) is not None:  # a. (a chain)
                values = [entry[0]]
                entry[1] -= 1
                if entry[1] == 0:
                    del kept[deps[0]]
            else:
                values = await _gather_inputs(run_id, store, deps, kept)
            fn = functions[spec.func] if functions else await source.function(spec.func)
            # The start travels with the completion (one store step per task, not two).
            started = time.time()
            try:  # b.
                args, kwargs = spec.arguments(values)
                result = fn.func(*args, **kwargs)
            except Exception as exc:
                await store.emit(run_id, [Event(TASK_STARTED, worker, task, started)])
                ok, result = await _retry(fn, spec, values, exc, run_id, store, worker, task)
                if not ok:
                    failure = TaskFailure.from_exception(
                        task, await source.name(task), worker, fn.options.retries + 1, result
                    )
                    failed = [event(EventKind.TASK_FAILED, worker, task)]
                    await store.fail_task(run_id, failure, failed)
                    return
            events = [Event(TASK_FINISHED, worker, task, time.time(), None, started)]
            ran += 1
            mode = upload_mode(spec.sink, len(spec.children), fanout)
            ready = await store.complete_task(  # c.
                run_id, task, result, mode, spec.children, spec.child_deps, events
            )
            if ready is None:
                return  # the run is gone: finished elsewhere, failed or cancelled
            if not ready:
                continue
            keep, hand_out = split_ready(ready, fanout)  # d.
            for group in hand_out:
                await workers.invoke(Invocation(run_id, tuple(group), fanout, invocation.graph))
            kept[task] = [result, len(keep)]
            owned.extend(reversed(keep))
    except RunNotFound:
        log.debug("worker %s: run %s is gone, stopping", worker, run_id)
    finally:
        await store.emit(run_id, [event(EventKind.WORKER_STOPPED, worker, data={"tasks": ran})])


TASK_STARTED, TASK_FINISHED = EventKind.TASK_STARTED, EventKind.TASK_FINISHED


async def _gather_inputs(
    run_id: str, store: Store, deps: Sequence[int], kept: dict[int, list[Any]]
) -> list[Any]:
    """Upstream outputs: kept ones from memory, all others in one concurrent store read."""
    if not deps:
        return []
    values: list[Any] = []
    missing: list[int] = []
    for i, dep in enumerate(deps):
        entry = kept.get(dep)
        if entry is None:
            missing.append(i)
            values.append(None)
            continue
        values.append(entry[0])
        entry[1] -= 1
        if entry[1] == 0:
            del kept[dep]
    if missing:
        fetched = await store.get_outputs(run_id, [deps[i] for i in missing])
        for i, value in zip(missing, fetched, strict=True):
            values[i] = value
    return values


async def _retry(
    fn: TaskFunction[Any, Any],
    spec: TaskSpec,
    values: list[Any],
    error: Exception,
    run_id: str,
    store: Store,
    worker: str,
    task: int,
) -> tuple[bool, Any]:
    """After a first failure, retry with exponential backoff and jitter.
    Returns (True, output) or (False, the last exception)."""
    retries = fn.options.retries
    for attempt, delay in enumerate(backoff_delays(retries, fn.options.retry_delay), 1):
        info = {"attempt": attempt, "error": f"{type(error).__name__}: {error}"}
        await store.emit(run_id, [event(EventKind.TASK_RETRIED, worker, task, info)])
        await asyncio.sleep(delay)
        try:
            args, kwargs = spec.arguments(values)
            return True, fn.func(*args, **kwargs)
        except Exception as exc:
            error = exc
    return False, error
