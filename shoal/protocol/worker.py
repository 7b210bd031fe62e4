"""The one worker loop, shared by every backend (:func:`run_worker`): run the tasks of an
invocation and every task their completions make this worker own (protocol steps a-d)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from traceback import format_exception
from typing import Any

from .. import capture
from ..backends import Invocation, Size, Workers, invoke_all
from ..decisions import (
    ALWAYS,
    IF_PENDING,
    READ_AHEAD_TASKS,
    Completion,
    keeps,
    remember_marks,
    runs_on,
    settled_here,
    should_flush,
    split_ready,
    splits,
    upload_mode,
    waits_for_next,
)
from ..errors import RunNotFound
from ..events import Event, EventKind, event
from ..failures import TaskFailure
from ..graph import TaskFunction, TaskSpec
from ..graph.maps import Collect, Element
from ..heartbeat import HEARTBEAT, HeldLease
from ..metrics import MetricsBuffer, approx_nbytes, parse_policy, process_probe
from ..optimizations.cluster import keep_all
from ..optimizations.fanin import hold_back, holder, wants_fan_in
from ..optimizations.share import ASK_EVERY_S, groups_for, worth_sharing
from ..stores import Store
from ..stores.base import UnstorableOutput
from .ahead import SEND_TURNS, InputsAhead
from .attempts import Attempt, attempt, attempt_record, retry
from .fanins import set_aside, wait_for_inputs
from .mapparts import run_map_part
from .ordering import RankedOrder
from .recent import RecentOutputs
from .sharing import hand_over_backlog, keeps_children, share_ready
from .source import TaskSource
from .starting import forward, prewarm

log = logging.getLogger(__name__)

#: How many of its invocation's tasks a worker-started event names (for the live view).
STARTED_TASKS = 64
#: An output this large is worth checking, before a store step, whether the step needs it.
LARGE_OUTPUT = 1 << 16
#: How many tasks whose inputs it holds a worker of several CPUs takes at once.
TOGETHER_MAX = 64


class _Worker:
    """One worker's state while it runs an invocation: what it owns, holds and buffers."""

    def __init__(
        self,
        invocation: Invocation,
        store: Store,
        workers: Workers,
        name: str,
        metrics: MetricsBuffer | None,
    ) -> None:
        self.invocation = invocation
        self.run_id = invocation.run_id
        self.store = store
        self.workers = workers
        self.name = name
        self.fanout = invocation.fanout
        self.tuning = invocation.tuning
        self.cluster_above = self.tuning.cluster_above
        self.aside_above = self.tuning.aside_above
        # Outputs from this size may be held back for a fan-in (delayed I/O, pre-load).
        tuning = self.tuning
        self.hold_above = min(
            tuning.preload_above if tuning.preload else math.inf,
            math.inf if tuning.delay_above is None else tuning.delay_above,
        )
        #: Completions that may be held back for their fan-in child (task, child, bytes).
        self.holding: list[tuple[int, int, int]] = []
        self.lease: HeldLease | None = None
        self.source = TaskSource(invocation, store)
        in_hand = self.source.in_hand  # the fast path: the graph's objects
        self.specs = in_hand.specs if in_hand else None
        self.functions = in_hand.functions if in_hand else None
        self.owned = list(reversed(invocation.tasks))  # a stack: depth first keeps memory low
        self.held: dict[int, list[Any]] = {}  # task -> [output, local reads still to come]
        self.recent = RecentOutputs(invocation.size.memory_mb)  # stored for fan-ins
        self.batch: list[Completion] = []  # completions not yet in the store
        # Their tasks: an output stays held until its completion is stored, even once read
        # as often as counted, since a child its batch readies may still be kept here (and
        # then the store keeps no copy of it).
        self.unflushed: set[int] = set()
        self.prefetched: set[int] = set()  # inputs read ahead for a fan-in (preload)
        #: Inputs of its next tasks read ahead, from a store across a network.
        self.ahead = None if store.in_process else InputsAhead(store, self.run_id)
        self.in_store: set[int] = set()  # held outputs also in the store (for sharing)
        #: A completion held back for a fan-in while the worker still has work of its own.
        self.held_back: list[Completion] = []
        #: Completions kept aside, unstored, for a fan-in this worker will run (cluster).
        self.aside: list[Completion] = []
        self.made: set[int] = set()  # tasks this worker ran (kept only to set aside)
        #: Children of several inputs -> those of their inputs whose marks this worker
        #: knows are in the store: it completed them, or saw them finish (holding back).
        self.marked: dict[int, set[int]] = {}
        self.early: set[int] = set()  # children run before their parent's batch was stored
        #: Specs of tasks its maps' expansions made, for its next completion step.
        self.new_specs: dict[int, TaskSpec] = {}
        self.urgent = False  # the batch holds a sink or children for other workers
        self.fan_ins: set[int] = set()  # tasks of several inputs the batch marks
        #: A completion step on the wire while the next task runs (see :meth:`flush`).
        self.in_flight: asyncio.Future[bool] | None = None
        #: The run's live invocations as last seen (each step tells), and when.
        self.live: int | None = None
        self.live_at = 0.0
        self.ran = 0
        self.metrics = metrics
        # CPU time and peak memory are the task's only when the process is the worker's own.
        self.probe = process_probe() if metrics and not workers.in_process else None
        #: Whether a step may be in flight while a task runs: not where a completion may
        #: wait for a fan-in (its flush has its own order), nor with metrics sent per task.
        self.pipelines = (
            self.hold_above == math.inf
            and self.aside_above is None
            and (metrics is None or metrics.policy.mode != "task")
        )
        self.read_bytes = 0  # by the last gather()
        #: The read of inputs its tasks share (seconds, bytes), charged to the first task.
        self.shared_read: tuple[float, int] | None = None
        #: A worker of several CPUs runs tasks whose inputs it holds on as many threads.
        cpus = int(invocation.size.cpus)
        self.threads = (
            ThreadPoolExecutor(cpus, "shoal-task") if cpus > 1 and not workers.in_process else None
        )

    async def run(self, lease: HeldLease) -> None:
        """Run owned tasks until none is left and every completion is in the store, or the
        lease is lost (the tasks were given to another worker, or the run ended)."""
        self.lease = lease
        if self.invocation.redo:
            await self.redo(self.invocation.redo)
        await self.read_shared_inputs(self.invocation.tasks)
        owned, batch, specs, functions = self.owned, self.batch, self.specs, self.functions
        lifted = self.source.lifted  # tasks with big constants kept apart (filled in place)
        metrics, probe = self.metrics, self.probe
        last_task_s = ended = cpu_started = 0.0
        share = self.tuning.share and not self.invocation.mixed
        order = RankedOrder() if self.tuning.ranked else None
        while True:
            if self.in_flight is not None and not await self.settle():
                return
            if lease.lost:
                log.info("worker %s: lost its lease on run %s, stopping", self.name, self.run_id)
                return
            if order is not None and len(owned) > 1:  # the most urgent is next
                await order.put_next(self)
            due = batch and (
                not owned
                or should_flush(
                    len(batch),
                    ended - batch[0].finished.time,
                    last_task_s,
                    self.urgent,
                    full=self.platform_full,
                    links=not self.fan_ins
                    or bool(order and self.platform_full and await order.outranks(self)),
                )
            )
            # A slow task alone in its batch: its step may wait for the next task's.
            if due and owned and len(batch) == 1 and not self.urgent and not self.holding:
                due = not await self.waits_for_next(batch[0], owned[-1])
            if not owned and (self.held_back or self.aside):  # its own work is done
                due = True
            if due and not await self.flush():
                return  # the run is gone: finished elsewhere, failed or cancelled
            if not owned:
                return
            if share and not self.holding and worth_sharing(len(owned), last_task_s):
                live = await self.live_invocations()  # idle capacity may take some
                if live < self.fanout:
                    await share_ready(self, live)
            if self.threads is not None and len(owned) > 1:
                ran = await self.run_together()
                if ran is not None:
                    if not ran:
                        return
                    continue
            task = lease.task = owned.pop()
            spec = specs[task] if specs else await self.source.spec(task)
            if share and order and not self.holding and await order.hands_over_before(self, spec):
                await hand_over_backlog(self)
            if self.invocation.mixed:  # which children may run here, known before finish()
                await self.source.learn_requirements(spec.children)
            if task in lifted:
                spec = await self.source.with_constants(spec)
            read_at = perf_counter()
            values = await self.gather(spec.deps)  # a.
            read_s = perf_counter() - read_at
            if self.shared_read is not None:
                read_s += self.shared_read[0]
                self.read_bytes += self.shared_read[1]
                self.shared_read = None
            part = spec.dynamic
            if part is not None and type(part) is not Element:  # a map's, the loop's own
                if not await run_map_part(self, task, spec, values):
                    return
                continue
            fn = functions[spec.func] if functions else await self.source.function(spec.func)
            if owned and owned[-1] in lifted:
                await self.source.read_ahead(owned[-1])
            if owned and self.ahead is not None and self.ahead.worth(owned[-1]):
                await self.read_inputs_ahead(spec.deps, values)
            if probe:
                cpu_started = probe.start()
            started = time.time()
            capture.start()
            try:  # b.
                args, kwargs = spec.arguments(values)
                result = fn.func(*args, **kwargs)
            except Exception as exc:
                output = capture.stop()
                ok, result, started, output = await self.retry(
                    task, fn, spec, values, exc, output, started
                )
                if not ok:
                    await self.fail(task, fn, result, output)
                    return
            else:
                capture.stop()
            ended = time.time()
            last_task_s = ended - started
            if metrics:
                cpu_s, peak_mb = probe.stop(cpu_started) if probe else (None, None)
                metrics.measured.append(  # TaskMetrics' fields, as a plain tuple
                    (task, read_s, self.read_bytes, last_task_s, cpu_s, peak_mb,
                     approx_nbytes(result), 0.0)
                )  # fmt: skip
            self.finish(
                task, spec, result, Event(TASK_FINISHED, self.name, task, ended, None, started)
            )

    async def run_together(self) -> bool | None:
        """On a worker of several CPUs: the tasks on top of its stack whose inputs it holds
        (a clustered fan-out's children), run at once on its threads, as many as it has
        CPUs and the rest as they free up. None if fewer than two are; False if one
        failed (the run fails)."""
        owned, held, source = self.owned, self.held, self.source
        wave: list[tuple[int, TaskSpec]] = []
        for task in reversed(owned[-TOGETHER_MAX:]):
            spec = await source.spec(task)
            if self.invocation.mixed:
                await source.learn_requirements(spec.children)
            if task in source.lifted or any(d not in held for d in spec.deps):
                break
            if spec.dynamic is not None and type(spec.dynamic) is not Element:
                break
            wave.append((task, spec))
        if len(wave) < 2:
            return None
        del owned[-len(wave) :]
        loop = asyncio.get_running_loop()
        calls = []
        for _, spec in wave:
            values = await self.gather(spec.deps)
            fn = await source.function(spec.func)
            calls.append(loop.run_in_executor(self.threads, _timed_attempt, fn, spec, values))
        for (task, spec), call in zip(wave, calls, strict=True):
            self.lease.task = task  # type: ignore[union-attr]
            (ok, result, started, output), ended = await call
            if not ok:
                fn = await source.function(spec.func)
                values = await self.gather(spec.deps)
                ok, result, started, output = await self.retry(
                    task, fn, spec, values, result, output, started
                )
                if not ok:
                    await self.fail(task, fn, result, output)
                    return False
                ended = time.time()
            # No metrics: beside others on the worker's threads, its time is theirs too
            # (their contention for the machine's CPUs), which the simulator does not
            # play; recorded, it made later plans of the workflow expect it always.
            self.finish(
                task, spec, result, Event(TASK_FINISHED, self.name, task, ended, None, started)
            )
        return True

    async def retry(
        self,
        task: int,
        fn: TaskFunction[Any, Any],
        spec: TaskSpec,
        values: list[Any],
        error: Exception,
        output: str,
        started: float,
    ) -> Attempt:
        """``task`` failed its first attempt (started then): retry it as its options allow,
        each failed attempt in a retried event."""
        await self.store.emit(self.run_id, [Event(TASK_STARTED, self.name, task, started)])

        async def record(info: dict[str, Any]) -> None:
            retried = event(EventKind.TASK_RETRIED, self.name, task, info)
            await self.store.emit(self.run_id, [retried])

        name = await self.source.name(task)
        return await retry(fn, spec, values, error, output, name, record)

    async def redo(self, tasks: Sequence[int]) -> None:
        """Run again, in order, tasks whose outputs were lost with a worker, only to hold
        their outputs for this invocation's tasks: their completions were taken already."""
        wanted = set(self.invocation.tasks) | set(tasks)
        uses: dict[int, int] = {}
        for task in wanted:
            for dep in (await self.source.spec(task)).deps:
                uses[dep] = uses.get(dep, 0) + 1
        for task in tasks:  # in an order that puts inputs first
            spec = await self.source.spec(task)
            if task in self.source.lifted:
                spec = await self.source.with_constants(spec)
            values = await self.gather(spec.deps)
            if type(spec.dynamic) is Collect:  # (an expander's output is always stored)
                output = await self.gather(values[0].elements(spec.dynamic.stage))
            else:
                fn = await self.source.function(spec.func)
                args, kwargs = spec.arguments(values)
                output = fn.func(*args, **kwargs)
            self.held[task] = [output, uses.get(task, 0)]

    async def read_shared_inputs(self, tasks: Sequence[int]) -> None:
        """Read once, and hold, the inputs that several of ``tasks`` share (the parent of a
        fan-out handed out in a group), instead of once per task."""
        if len(tasks) < 2:
            return
        uses: dict[int, int] = {}
        for task in tasks:
            for dep in (await self.source.spec(task)).deps:
                uses[dep] = uses.get(dep, 0) + 1
        shared = [dep for dep, n in uses.items() if n > 1 and dep not in self.held]
        if shared:
            started = perf_counter()
            values, nbytes = await self.store.get_outputs(self.run_id, shared)
            self.shared_read = (perf_counter() - started, nbytes)
            for dep, value in zip(shared, values, strict=True):
                self.held[dep] = [value, uses[dep]]
            self.in_store.update(shared)

    async def read_inputs_ahead(self, deps: Sequence[int], values: list[Any]) -> None:
        """Ask for the inputs of the next tasks on its stack (the task about to run has
        ``values`` of ``deps``)."""
        assert self.ahead is not None
        nexts = {}
        for task in reversed(self.owned[-READ_AHEAD_TASKS:]):
            nexts[task] = (await self.source.spec(task)).deps
        held, recent = self.held, self.recent
        await self.ahead.ask(
            nexts, lambda d: d in held or d in recent, dict(zip(deps, values, strict=True))
        )

    async def gather(self, deps: Sequence[int]) -> list[Any]:
        """Upstream outputs: held ones from memory, all others in one store read."""
        self.read_bytes = 0
        if not deps:
            return []
        held = self.held
        if len(deps) == 1 and (entry := held.get(deps[0])) is not None:  # a chain
            entry[1] -= 1
            if entry[1] <= 0 and deps[0] not in self.unflushed:
                del held[deps[0]]
            return [entry[0]]
        values: list[Any] = []
        missing: list[int] = []
        recent, ahead = self.recent, self.ahead
        for i, dep in enumerate(deps):
            entry = held.get(dep)
            if entry is None:
                if recent and (kept := recent.take(dep)) is not None:
                    values.append(kept[0])
                    continue
                if ahead is not None and dep in ahead:
                    values.append(await ahead.take(dep))
                    continue
                missing.append(i)
                values.append(None)
                continue
            values.append(entry[0])
            entry[1] -= 1
            if entry[1] <= 0 and dep not in self.unflushed:
                del held[dep]
        if missing:
            wanted = [deps[i] for i in missing]
            fetched, self.read_bytes = await self.store.get_outputs(self.run_id, wanted)
            if ahead is not None:
                ahead.learn(self.read_bytes, len(wanted))
            for i, value in zip(missing, fetched, strict=True):
                values[i] = value
        return values

    def finish(self, task: int, spec: TaskSpec, result: Any, finished: Event) -> None:
        """Buffer the completion (c.); run at once the children that are surely this
        worker's (d.), unless they must be spread over other workers."""
        self.ran += 1
        children, needs, stay = spec.children, spec.child_deps, spec.stay
        if self.cluster_above is not None:  # forced on: a large output keeps its children
            stay = keep_all(children, result, self.cluster_above, approx_nbytes) or stay
        if self.aside_above is not None:
            self.made.add(task)
        kept_all = stay is None and len(children) > 1 and keeps_children(self, len(children))
        if kept_all:
            stay = (True,) * len(children)  # no room elsewhere: all stay, as planned here
        mode = upload_mode(spec.sink, needs, self.fanout, stay)
        if kept_all and self.tuning.ranked:
            mode = ALWAYS  # a child ranked low waits its turn: another worker may take it
        foreign = (
            self.source.foreign(children, self.invocation.requirements)
            if self.invocation.mixed
            else ()
        )
        if foreign:  # children of another environment run elsewhere: they read it stored
            mode = ALWAYS
        self.batch.append(
            Completion(task, result, mode, children, needs, finished, stay, spec.sink)
        )
        self.unflushed.add(task)
        if len(children) == 1 and stay is None:  # the common case, quickly
            sure: Sequence[int] = children if needs[0] == 1 else ()
            if needs[0] > 1:
                self.fan_ins.add(children[0])
        else:
            self.fan_ins.update(c for c, need in zip(children, needs) if need > 1)  # noqa: B905
            sure = [c for c, need in zip(children, needs) if need == 1]  # noqa: B905
        if stay is not None:  # a plan: only children planned here are this worker's
            mine = {c for c, s in zip(children, stay) if s}  # noqa: B905
            if spec.sink or not mine.issuperset(sure):
                self.urgent = True  # another worker waits on this step
            sure = [c for c in sure if c in mine]
        elif spec.sink or len(sure) > 1 and self.fanout > 1:
            self.urgent = True
            sure = ()
        if sure and foreign:
            sure = [c for c in sure if c not in foreign]
        if sure:
            self.early.update(sure)
            self.owned.extend(reversed(sure))
        self.held[task] = [result, len(sure)]
        if self.hold_above < math.inf and wants_fan_in(children, needs, stay):
            nbytes = approx_nbytes(result)
            if nbytes >= self.hold_above:
                self.holding.append((task, children[0], nbytes))

    async def waits_for_next(self, completion: Completion, next_task: int) -> bool:
        """Whether ``completion`` can ready nothing before ``next_task``, this worker's
        next, completes too (:func:`shoal.decisions.waits_for_next`)."""
        children = [(await self.source.spec(c)).deps for c in completion.children]
        return waits_for_next(children, next_task)

    async def flush(self) -> bool:
        """Take the completion step for the buffered batch; own what it readied. False
        when the run is gone. A completion held back for a fan-in (delayed I/O, preload)
        goes last, once its wait is over."""
        if self.in_flight is not None and not await self.settle():
            return False
        batch = self.held_back + self.aside + self.batch
        self.batch.clear()
        self.held_back, self.aside = [], []
        self.unflushed.clear()
        urgent, self.urgent = self.urgent, False
        self.fan_ins.clear()
        if self.aside_above is not None:
            kept, aside = await set_aside(self, batch)
            # With nothing of its own left to run, nothing here makes a fan-in's other
            # inputs any more (they were handed out): all completes, none waits forever.
            if kept or self.owned:
                batch, self.aside = kept, aside
                self.unflushed.update(c.task for c in aside)
                if not batch:
                    return True
        holding, self.holding = self.holding, []
        for task, child, nbytes in holding:
            fan_in = await self.source.spec(child)
            inputs = fan_in.deps
            planned = fan_in.group is not None
            groups = [(await self.source.spec(d)).group for d in inputs] if planned else []
            wait = hold_back(task, holder(inputs, fan_in.group, groups), nbytes, self.tuning)
            if wait is None:
                continue
            in_batch = {c.task for c in batch}
            if all(d in in_batch for d in inputs):  # all here: they complete together
                break
            rest = [c for c in batch if c.task != task]
            if rest and not await self.complete(rest):
                return False
            if self.owned:  # work of its own first (maybe readied by `rest`): it waits aside
                self.held_back = [c for c in batch if c.task == task]
                self.unflushed.add(task)
                self.holding = [(task, child, nbytes)]
                return True
            await wait_for_inputs(self, child, [d for d in inputs if d != task], wait)
            batch = [c for c in batch if c.task == task]
            break
        if (
            self.owned
            and not urgent
            and self.pipelines
            and runs_on(batch, self.fanout, self.platform_full)
        ):
            # The next task runs while the step is on the wire (the store's and this
            # worker's wake-ups, overlapped).
            self.in_flight = asyncio.ensure_future(self.complete(batch, timed=False))
            for _ in range(SEND_TURNS):
                await asyncio.sleep(0)  # it runs up to its wait for the reply
            return True
        if not await self.complete(batch):
            return False
        if self.aside and not self.owned:  # what it waited for is not coming here after all
            aside, self.aside = self.aside, []
            return await self.complete(aside)
        return True

    @property
    def platform_full(self) -> bool:
        """Whether every slot of the platform is taken, as the last step told."""
        return self.live is not None and self.live >= self.fanout

    async def live_invocations(self) -> int:
        """The run's live invocations: as the last step told, unless that is more than
        :data:`~shoal.optimizations.share.ASK_EVERY_S` ago (the store is asked then)."""
        if self.live is None or perf_counter() - self.live_at >= ASK_EVERY_S:
            self.live = await self.store.live_invocations(self.run_id)
            self.live_at = perf_counter()
        return self.live

    async def settle(self) -> bool:
        """Wait for the completion step in flight; False when the run is gone."""
        step, self.in_flight = self.in_flight, None
        assert step is not None
        return await step

    async def complete(self, batch: list[Completion], timed: bool = True) -> bool:
        """The completion step for ``batch``; own what it readied. False when the run is
        gone. ``timed``: its time is the step's alone (not one overlapping a task)."""
        if any(
            c.upload is IF_PENDING and approx_nbytes(c.output) >= LARGE_OUTPUT for c in batch
        ):  # large outputs the marks it knows of may settle: not encoded at all if so
            uploads = settled_here(batch, self.fanout, self.marked)
            batch = [c._replace(upload=u) for c, u in zip(batch, uploads, strict=True)]
        metrics = self.metrics
        extra: tuple[Event, ...] = ()
        if metrics and metrics.policy.mode == "batch":  # the records ride along
            extra = self.metrics_events()
        measured = metrics.take_measured() if metrics else []
        fanout = self.fanout
        # Children go to new workers only as far as the platform has slots for them. The
        # step splits only what one completion readies: with a child each at most (chains,
        # a fan-in's inputs), there is nothing to split and nothing to ask the store first.
        if self.tuning.share and fanout > 1 and splits(batch):
            live = await self.live_invocations()
            children = sum(len(c.children) for c in batch if c.stay is None)
            fanout = groups_for(fanout, live, len(self.owned), children)
        step_started = perf_counter()
        new_specs, self.new_specs = self.new_specs, {}
        try:
            settled = await self.store.complete_tasks(
                self.run_id,
                batch,
                fanout,
                want_pages=not self.source.complete,
                extra=extra,
                owner=self.invocation.id,
                specs=new_specs,
            )
        except UnstorableOutput as bad:  # the task's own doing: it fails, named
            await self.fail_unstorable(bad.task, bad.__cause__ or bad)
            return False
        if settled is None:
            return False
        self.live, self.live_at = settled.live, perf_counter()
        if metrics:
            seconds = perf_counter() - step_started if timed else None
            metrics.stored(settled.stored, seconds, measured)
            if metrics.policy.mode == "task":  # one upload per task, as asked
                while metrics.waiting:
                    await self.store.emit(self.run_id, self.metrics_events(1))
            elif metrics.due():
                await self.store.emit(self.run_id, self.metrics_events())
        self.source.pages.update(settled.pages)
        remember_marks(self.marked, batch, settled.readies)
        held, early = self.held, self.early
        handing: list[Invocation] = []
        for completion, ready in zip(batch, settled.readies, strict=True):
            if not ready:
                continue
            if completion.stay is None:  # as the store judged the uploads
                keep, hand_out = split_ready(ready, fanout)
            else:
                keep = keeps(completion, ready, fanout)
                hand_out = await self.source.planned_groups([c for c in ready if c not in keep])
            if early and not early.isdisjoint(ready):  # children it ran already
                keep = [c for c in keep if c not in early]
                hand_out = [g for g in ([c for c in g if c not in early] for g in hand_out) if g]
                early.difference_update(ready)
            sized = completion.stay is not None or not self.workers.in_process
            sets: list[tuple[list[int], tuple[str, ...] | None]] = [(g, None) for g in hand_out]
            if not self.workers.in_process:  # a child of another environment cannot run here
                own = self.invocation.requirements
                keep, sets = await self.source.by_requirements(keep, hand_out, own)
            for tasks, reqs in sets:
                size = await self.source.size(tasks) if sized else Size()
                handing.append(
                    self.invocation.handing_out(tasks, self.source.pages_for(tasks), size, reqs)
                )
            for child in keep:  # its inputs this worker holds are read from memory
                spec = self.specs[child] if self.specs else await self.source.spec(child)
                deps = spec.deps
                if type(spec.dynamic) is Collect:  # its elements here are in this batch
                    deps = tuple(c.task for c in batch if child in c.children)
                for dep in deps:
                    if (entry := held.get(dep)) is not None:
                        entry[1] += 1
            self.owned.extend(reversed(keep))
        if handing:
            await self.hand_out(handing)
        for completion, stored in zip(batch, settled.stored, strict=True):
            if stored > 0 and self.tuning.share:
                self.in_store.add(completion.task)
            entry = held.get(completion.task)
            if entry is not None and entry[1] <= 0:
                del held[completion.task]
                if stored > 0 and max(completion.child_deps, default=1) > 1:
                    self.recent.keep(completion.task, entry[0])
        for task in self.prefetched:
            entry = held.get(task)
            if entry is not None and entry[1] <= 0:
                del held[task]
        self.prefetched.clear()
        return True

    async def hand_out(self, handing: list[Invocation]) -> None:
        """Invoke workers for ``handing`` and hand their tasks over to them
        (:func:`shoal.leases.hand_off`), both at once: a worker that claims its invocation
        first takes the tasks over itself."""
        inv = self.invocation
        pending_s = 0.0 if self.workers.in_process else inv.lease_s  # a queue in this process
        if self.live is not None:
            self.live += len(handing)
        await asyncio.gather(
            invoke_all(self.workers, handing),
            self.store.hand_off(self.run_id, inv.id, [(h.id, h.tasks) for h in handing], pending_s),
        )

    def metrics_events(self, count: int | None = None) -> tuple[Event, ...]:
        """The waiting task metrics (the first ``count``) as an event, if there are any."""
        data = self.metrics.take(count) if self.metrics else None
        return () if data is None else (event(EventKind.TASK_METRICS, self.name, data=data),)

    async def fail_unstorable(self, task: int, error: BaseException) -> None:
        """``task`` returned a value the store cannot take: the task fails with that error."""
        spec = await self.source.spec(task)
        name = await self.source.name(task)
        error.add_note(f"[shoal] the output of task {name} cannot be stored")
        await self.fail(task, await self.source.function(spec.func), error, "")

    async def fail(
        self, task: int, fn: TaskFunction[Any, Any], error: BaseException, output: str
    ) -> None:
        """Record the task's failure (after the batch, so finished work is on record), and
        its last attempt's error in its event, in one step."""
        if self.in_flight is not None and not await self.settle():
            return
        if self.batch and not await self.flush():
            return
        attempts = fn.options.retries + 1
        name = await self.source.name(task)
        failure = TaskFailure.from_exception(task, name, self.name, attempts, error, output)
        data = attempt_record(name, attempts, error, output)
        await self.store.fail_task(
            self.run_id, failure, event(EventKind.TASK_FAILED, self.name, task, data)
        )


def _timed_attempt(
    fn: TaskFunction[Any, Any], spec: TaskSpec, values: list[Any]
) -> tuple[Attempt, float]:
    """One attempt, and when it ended (on the thread that ran it)."""
    return attempt(fn, spec, values), time.time()


async def run_worker(
    invocation: Invocation,
    store: Store,
    workers: Workers,
    worker: str,
    *,
    cold: bool = False,
    start_s: float = 0.0,
    queued_s: float = 0.0,
) -> None:
    """The one worker loop, shared by every backend: run the invocation's tasks and every
    task their completions make this worker own. ``cold``/``start_s``: whether the worker
    had to start from nothing, and how long its start took; ``queued_s``: how long the
    invocation waited for the platform's concurrency cap before that."""
    run_id = invocation.run_id
    handout_s = max(0.0, time.time() - invocation.sent) if invocation.sent else None
    size = invocation.size
    started = event(
        EventKind.WORKER_STARTED,
        worker,
        data={
            "cold": cold,
            "start_s": start_s,
            "queued_s": queued_s,
            "handout_s": handout_s,
            "size": [size.cpus, size.memory_mb],
            "kind": workers.kind,
            "tasks": list(invocation.tasks[:STARTED_TASKS]),
            "forwards": len(invocation.forward),
            "parent": invocation.parent,  # its hand-out's
            "request_s": invocation.request_s,  # the history learns the invoker's wait
        },
    )
    inv = invocation.id
    try:
        claimed = await store.claim(
            run_id, inv, invocation.parent, invocation.tasks, started, invocation.lease_s
        )
    except RunNotFound:
        claimed = False
    if not claimed:  # before any user code runs
        log.info(
            "worker %s: refused invocation %s of run %s: the run is gone or the invocation "
            "was taken already (a redelivery or a replay)",
            worker,
            inv,
            run_id,
        )
        return
    lease = HEARTBEAT.hold(store, run_id, inv, invocation.lease_s)
    if invocation.forward:  # a share of a wide hand-out: send it on before any task
        await forward(invocation, workers, worker)
    policy = parse_policy(invocation.metrics)
    state = _Worker(
        invocation, store, workers, worker, MetricsBuffer(policy) if policy.on else None
    )
    if invocation.tuning.prewarm:
        await prewarm(state, worker)
    try:
        await state.run(lease)
    except RunNotFound:
        log.debug("worker %s: run %s is gone, stopping", worker, run_id)
    except BaseException as exc:  # a crash outside user code must fail the run, not hang it
        log.exception("worker %s crashed", worker)
        data = {"error": "".join(format_exception(exc)), "invocation": inv, "task": lease.task}
        with contextlib.suppress(Exception):
            await store.emit(run_id, [event(EventKind.WORKER_FAILED, worker, data=data)])
        if not isinstance(exc, Exception):
            raise
    finally:
        if state.in_flight is not None:  # left by a crash: its outcome no longer matters
            with contextlib.suppress(Exception):
                await state.in_flight
        if state.threads is not None:
            state.threads.shutdown(wait=False)
        state.source.close()
        if state.ahead is not None:
            state.ahead.close()
        HEARTBEAT.drop(lease)
        stopped = event(EventKind.WORKER_STOPPED, worker, data={"tasks": state.ran})
        with contextlib.suppress(Exception):
            await store.release(run_id, inv, [*state.metrics_events(), stopped])


TASK_STARTED, TASK_FINISHED = EventKind.TASK_STARTED, EventKind.TASK_FINISHED
