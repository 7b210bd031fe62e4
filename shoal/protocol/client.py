"""The client's side of a run: ship the graph, invoke the roots' workers, wait on the event
stream for the sinks or the first failure, fetch the sinks' outputs, clean up."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..backends import Invocation, Size, Workers, invoke_all, new_invocation_id
from ..decisions import group_roots
from ..errors import ConfigError, RunCancelled, RunTimeout, WorkerLost
from ..events import Event, EventKind, event
from ..graph import EncodedGraph, Graph, ShippedGraph, pages_of
from ..graph.maps import Grown
from ..heartbeat import HEARTBEAT, HeldLease
from ..leases import CLIENT
from ..optimizations import OFF, Tuning
from ..stores import Store

if TYPE_CHECKING:
    from ..planning import Plan

log = logging.getLogger(__name__)

#: How often the client wakes without events (progress bar, timeout).
TICK_S = 0.25
#: How long the client waits after the sinks for every worker's last metrics.
SETTLE_S = 2.0
#: How long a worker's lease lasts without a heartbeat (:mod:`shoal.leases`).
LEASE_S = 10.0
#: A signed invocation is refused after this long (a replay of an old capture).
PAYLOAD_TTL_S = 24 * 3600.0
#: A failed or cancelled run waits this long at most for its store to delete its keys (a
#: store that stopped answering would hold the client forever; the keys' TTL ends them).
CLEANUP_S = 5.0


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
    ranks: Sequence[float] | None = None,
    lease_s: float | None = None,
    tuning: Tuning = OFF,
) -> list[Any]:
    """Run ``graph`` and return the value of each sink, in ``graph.sinks`` order.
    ``metrics``: the workers' upload policy of task metrics (:mod:`shoal.metrics`); unless
    it is ``off``, the client waits (at most :data:`SETTLE_S`) after the sinks for every
    worker's last records. ``plan``: each task's group and size (2.); ``ranks``: each
    task's rank (:attr:`~shoal.graph.TaskSpec.rank`), without one. ``lease_s``: how long
    a worker's lease lasts without a heartbeat (default ``$SHOAL_LEASE_S``, else
    :data:`LEASE_S`). ``tuning``: the optimizations the run forces on, as its
    workers apply them."""
    shipped = graph.ship(plan, ranks)  # 3. ship
    announce = {  # for the dashboard's live view
        "name": graph.workflow_name,
        "workflow": graph.structure_hash,
        "started": time.time(),
        "tasks": len(graph),
        "predicted_makespan_s": None if plan is None else plan.makespan_s,
    }
    encoded = await store.create_run(run_id, shipped, graph.sinks, announce)
    lease_s = lease_s or lease_from_env()
    presence: HeldLease | None = None
    try:
        # While this client waits, it holds a lease: if it dies, its workers delete the run.
        await store.claim(run_id, CLIENT, "", (), None, lease_s)
        presence = HEARTBEAT.hold(store, run_id, CLIENT, lease_s)
        inline: ShippedGraph | EncodedGraph | None = None
        if workers.in_process:
            inline = shipped  # by reference
        elif encoded is not None and encoded.nbytes <= store.inline_bytes:
            inline = encoded  # small enough to travel with every invocation
        grown = Grown(graph)
        invoker = _Invoker(
            grown,
            store,
            workers,
            run_id,
            inline,
            encoded,
            metrics,
            plan,
            lease_s,
            tuning,
        )
        await invoker.invoke(_root_groups(graph, workers.parallelism, plan))  # 4. invoke
        watch = _Watch(run_id, store, on_events, timeout, _Recovery(grown, invoker), presence)
        await watch.until_finished(set(graph.sinks))  # 5. observe
        unique = list(dict.fromkeys(graph.sinks))
        outputs, _ = await store.get_outputs(run_id, unique)
        values = dict(zip(unique, outputs, strict=True))
        if metrics != "off":
            await watch.until_workers_stop(SETTLE_S)
    except BaseException:
        try:  # the first error is the one to tell: a store that went away fails this too
            await asyncio.wait_for(store.delete_run(run_id), CLEANUP_S)
        except Exception as cleanup:  # its keys expire with their TTL
            log.debug("run %s: its keys were not deleted: %r", run_id, cleanup)
        raise
    finally:
        if presence is not None:
            HEARTBEAT.drop(presence)
    await store.delete_run(run_id)
    return [values[s] for s in graph.sinks]  # 6. finish


def lease_from_env() -> float:
    text = os.environ.get("SHOAL_LEASE_S")
    if not text:
        return LEASE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"$SHOAL_LEASE_S must be a positive number of seconds, got {text!r}")
    return value


class _Invoker:
    """Starts workers on groups of tasks for the client: the roots, and tasks recovered
    from lost workers."""

    def __init__(
        self,
        grown: Grown,
        store: Store,
        workers: Workers,
        run_id: str,
        inline: ShippedGraph | EncodedGraph | None,
        encoded: EncodedGraph | None,
        metrics: str,
        plan: Plan | None,
        lease_s: float,
        tuning: Tuning,
    ) -> None:
        self.tuning = tuning
        self.grown, self.store, self.workers, self.run_id = grown, store, workers, run_id
        self.inline, self.encoded, self.metrics, self.plan = inline, encoded, metrics, plan
        self.lease_s = lease_s
        #: A pending lease lasts a lease; in this process's own queue it never expires.
        self.pending_s = 0.0 if workers.in_process else lease_s
        #: Several requirement sets: workers look at children's before keeping them.
        sets = {f.options.requirements for f in grown.graph.functions}
        self.mixed = len(sets) > 1 and not workers.in_process

    def invocation(
        self, tasks: Sequence[int], size: Size, id: str | None = None, redo: Sequence[int] = ()
    ) -> Invocation:
        pages = None
        if self.inline is None and self.encoded is not None:
            pages = {p: self.encoded.pages[p] for p in pages_of([*tasks, *redo])}
        now = time.time()
        return Invocation(
            self.run_id,
            tuple(tasks),
            self.workers.parallelism,
            graph=self.inline,
            storage=self.store.url,
            workers=self.workers.url,
            pages=pages,
            size=size,
            metrics=self.metrics,
            sent=now,
            id=id or new_invocation_id(),
            lease_s=self.lease_s,
            redo=tuple(redo),
            expires=now + PAYLOAD_TTL_S,
            tuning=self.tuning,
            requirements=self.grown.function(tasks[0]).options.requirements,
            mixed=self.mixed,
        )

    async def invoke(self, groups: list[tuple[list[int], Size]]) -> None:
        invocations = [self.invocation(tasks, size) for tasks, size in groups]
        handed = [(i.id, i.tasks) for i in invocations]
        await self.store.hand_off(self.run_id, "", handed, self.pending_s)
        await invoke_all(self.workers, invocations)

    def size(self, tasks: Sequence[int]) -> Size:
        if self.plan is not None and tasks[0] < len(self.plan.sizes):
            return self.plan.sizes[tasks[0]]
        return Size.fitting([self.grown.function(t).options for t in tasks])


def requirements_of(graph: Graph, task: int) -> tuple[str, ...]:
    """The requirement set ``task`` runs with (its function's, the run's included)."""
    return graph.functions[graph.func_of[task]].options.requirements


def _by_requirements(graph: Graph, groups: list[list[int]]) -> list[list[int]]:
    """``groups`` split so that each holds tasks of one requirement set (one environment
    per worker)."""
    if not any(f.options.requirements for f in graph.functions):
        return groups
    split: list[list[int]] = []
    for group in groups:
        sets: dict[tuple[str, ...], list[int]] = {}
        for task in group:
            sets.setdefault(requirements_of(graph, task), []).append(task)
        split.extend(sets.values())
    return split


def _root_groups(graph: Graph, fanout: int, plan: Plan | None) -> list[tuple[list[int], Size]]:
    """The first invocations: the roots in at most ``fanout`` groups, each on the size
    that fits its tasks; with a plan, by planned group, on the planned size. A group holds
    tasks of one requirement set."""
    if plan is None:
        options = [f.options for f in graph.functions]
        return [
            (group, Size.fitting({options[graph.func_of[t]] for t in group}))
            for group in _by_requirements(graph, group_roots(graph.roots, fanout))
        ]
    groups: dict[int, list[int]] = {}
    for root in graph.roots:
        groups.setdefault(plan.groups[root], []).append(root)
    split = _by_requirements(graph, list(groups.values()))
    return [(group, plan.sizes[group[0]]) for group in split]


class _Recovery:
    """What the client does when a worker is lost (its lease expired, or it was reported
    dead): it takes the tasks the worker owned back from the store (:mod:`shoal.leases`,
    exactly once per loss), counts the loss against their retries, and invokes a new worker
    on them, with the lost outputs they need run again first."""

    def __init__(self, grown: Grown, invoker: _Invoker) -> None:
        self.grown, self.invoker = grown, invoker
        self.store, self.run_id = invoker.store, invoker.run_id

    async def recover(
        self, finished: set[int], dead: dict[str, tuple[str, str]], stalled: bool = False
    ) -> None:
        """Recover every lost worker's tasks; ``dead``: invocations reported dead, with
        their worker and the cause; ``stalled``: no task finished for a quarter lease, so
        a ready task whose owner released its lease was left by one that stopped without
        running it. Raises WorkerLost for a task lost more often than its retries allow."""
        grown = self.grown
        candidates = [
            t for t in grown.tasks()
            if t not in finished and all(d in finished for d in grown.deps(t))
        ]  # fmt: skip
        recovered = await self.store.recover(
            self.run_id, candidates, new_invocation_id() + "-", self.invoker.pending_s, list(dead)
        )
        losses = []
        for r in recovered:
            reporter, cause = dead.get(r.lost) or ("", self.lease_cause(stalled))
            fallback = "" if stalled else ", not yet started"
            worker = r.worker or reporter or f"(invocation {r.lost}{fallback})"
            named = grown.name(r.running if r.running is not None else r.tasks[0])
            data = {"name": named, "worker": worker, "error": f"WorkerLost: {cause}",
                    "tasks": list(r.tasks), "lost": r.lost, "invocation": r.invocation}  # fmt: skip
            losses.append(
                (r, worker, cause, named, event(EventKind.WORKER_LOST, "client", data=data))
            )
        if losses:  # on record first, also when it fails the run
            await self.store.emit(self.run_id, [loss[-1] for loss in losses])
        invocations = []
        for r, worker, cause, named, _ in losses:
            for task, lost in zip(r.tasks, r.losses, strict=True):
                retries = grown.function(task).options.retries
                if lost > retries:
                    raise WorkerLost(
                        f"task {named} was lost with worker {worker}: {cause} "
                        f"(lost {lost} time(s); retries={retries})"
                    )
            log.warning(
                "run %s: worker %s was lost (%s); running its tasks %s again",
                self.run_id,
                worker,
                cause.splitlines()[-1] if cause else cause,
                [grown.name(t) for t in r.tasks[:5]],
            )
            tasks = sorted(r.tasks)
            redo = await self.lost_outputs(tasks, finished)
            invocations.append(
                self.invoker.invocation(tasks, self.invoker.size(tasks), r.invocation, redo)
            )
        await invoke_all(self.invoker.workers, invocations)

    def lease_cause(self, stalled: bool) -> str:
        if stalled:  # never meant to happen: say so rather than hang
            return (
                "no worker was left to run it: its owner stopped and released its lease "
                "while the task was still ready (a bug in Shoal: please report it)"
            )
        return f"its lease expired: no heartbeat for {self.invoker.lease_s:g} s"

    async def lost_outputs(self, tasks: Sequence[int], finished: set[int]) -> list[int]:
        """The finished tasks whose outputs ``tasks`` need but that only a lost worker held
        (it kept them for children it would run itself), and so on upwards: they run again."""
        deps = self.grown.deps
        ancestors: set[int] = set()
        stack = [d for t in tasks for d in deps(t)]
        while stack:
            d = stack.pop()
            if d not in ancestors:
                ancestors.add(d)
                stack.extend(deps(d))
        stored = await self.store.stored(self.run_id, sorted(ancestors))
        redo: set[int] = set()
        stack = [d for t in tasks for d in deps(t) if d not in stored]
        while stack:
            d = stack.pop()
            if d not in redo:
                redo.add(d)
                stack.extend(x for x in deps(d) if x not in stored)
        return _inputs_first(sorted(redo), deps)


def _inputs_first(tasks: list[int], deps: Callable[[int], Sequence[int]]) -> list[int]:
    """``tasks`` ordered so that each comes after those of its inputs among them (ids are
    not: a map's elements come after its collector)."""
    wanted, order, seen = set(tasks), [], set()
    for task in tasks:
        stack = [(task, False)]
        while stack:
            t, done = stack.pop()
            if done:
                order.append(t)
            elif t not in seen:
                seen.add(t)
                stack.append((t, True))
                stack.extend((d, False) for d in deps(t) if d in wanted and d not in seen)
    return order


class _Watch:
    """The client's reading of the run's event stream: one pass over each event."""

    def __init__(
        self,
        run_id: str,
        store: Store,
        on_events: Callable[[list[Event]], None],
        timeout: float | None,
        recovery: _Recovery | None = None,
        presence: HeldLease | None = None,
    ) -> None:
        self.run_id = run_id
        self.presence = presence  # the client's own lease
        self.store = store
        self.on_events = on_events
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cursor: Any = None
        self.remaining: set[int] = set()  # sinks not yet finished
        self.finished: set[int] = set()
        self.running: set[str] = set()  # workers started and not yet stopped
        #: Invocations reported dead, not yet recovered: their worker and the cause.
        self.dead: dict[str, tuple[str, str]] = {}
        self.recovery = recovery
        self.check_s = max(TICK_S, recovery.invoker.lease_s / 4) if recovery else math.inf
        self.next_check = time.monotonic() + self.check_s
        self.finished_at_check = 0  # tasks finished at the last check: progress since?

    async def until_finished(self, sinks: set[int]) -> None:
        """Until every task of ``sinks`` finished; the first failure raises. Lost workers
        are recovered on the way."""
        self.remaining = sinks
        deadline = self.deadline
        while self.remaining:
            left = TICK_S if deadline is None else max(0.0, deadline - time.monotonic())
            failed = await self.read(min(TICK_S, left))
            if failed is not None:
                await self.raise_failure(failed)
            if self.presence is not None and self.presence.lost:
                raise RunCancelled(
                    f"run {self.run_id} was abandoned: this client held no lease for a while "
                    "(its heartbeat stopped: suspended, or cut off from the store), so its "
                    "workers deleted it"
                )
            if self.recovery is not None and self.remaining:
                await self.recover_lost()
            if deadline is not None and self.remaining and time.monotonic() >= deadline:
                raise RunTimeout(
                    f"run {self.run_id} did not finish within {self.timeout} s "
                    f"({len(self.remaining)} requested result(s) still missing)"
                )

    async def recover_lost(self) -> None:
        """Every quarter lease, or at once for a reported death: recover lost workers. A run
        in which no task finished for a quarter lease may be stalled: a ready task whose
        owner stopped and released its lease without running it would wait for every other
        worker to end, or forever; such tasks are recovered too (those of live owners, or
        handed to invocations not yet started, are not)."""
        assert self.recovery is not None
        now = time.monotonic()
        if not self.dead and now < self.next_check:
            return
        stalled = False
        if not self.dead:
            self.next_check = now + self.check_s
            if not await self.store.expired(self.run_id):
                progressed = len(self.finished) != self.finished_at_check
                self.finished_at_check = len(self.finished)
                if progressed:
                    return
                stalled = True
        dead, self.dead = self.dead, {}
        await self.recovery.recover(self.finished, dead, stalled)

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
        events, self.cursor = await self.store.read_events(
            self.run_id, self.cursor, wait_s, waking=True
        )
        self.on_events(events)
        remaining, running, finished = self.remaining, self.running, self.finished
        failed = None
        for ev in events:
            kind = ev.kind
            if kind is TASK_FINISHED:
                remaining.discard(ev.task)  # type: ignore[arg-type]
                finished.add(ev.task)  # type: ignore[arg-type]
                if ev.data and self.recovery:  # a map's expansion: its tasks are known
                    self.recovery.grown.expanded(ev.task, ev.data)  # type: ignore[arg-type]
            elif kind is WORKER_STARTED:
                running.add(ev.worker)
            elif kind is WORKER_STOPPED:
                running.discard(ev.worker)
            elif kind is WORKER_FAILED and self.recovery and (ev.data or {}).get("invocation"):
                # Its tasks go to a new worker (or the run fails, out of retries).
                self.dead[ev.data["invocation"]] = (ev.worker, _cause(ev))  # type: ignore[index]
            elif failed is None and kind in FAILURES:
                failed = ev
        return failed

    async def raise_failure(self, failed: Event) -> None:
        if failed.kind is EventKind.TASK_FAILED:
            failure = await self.store.get_failure(self.run_id, failed.task)  # type: ignore[arg-type]
            if failure is None:
                raise WorkerLost(f"task {failed.task} failed but its error record is missing")
            raise failure.exception()
        raise WorkerLost(f"worker {failed.worker} failed outside user code: {_cause(failed)}")


def _cause(failed: Event) -> str:
    return str((failed.data or {}).get("error", "no details")).rstrip()


TASK_FINISHED, WORKER_FAILED = EventKind.TASK_FINISHED, EventKind.WORKER_FAILED
WORKER_STARTED, WORKER_STOPPED = EventKind.WORKER_STARTED, EventKind.WORKER_STOPPED
FAILURES = frozenset({EventKind.TASK_FAILED, EventKind.WORKER_FAILED})
