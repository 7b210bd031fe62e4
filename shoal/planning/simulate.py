"""The simulator: a pure function from a graph, a plan, the predictions and a backend model
to every task's predicted start and end, the worker it runs on, the makespan and the cost.

It plays Shoal's own protocol (:mod:`shoal.protocol`) forward in time, step by step:

- the client invokes one worker per group of roots;
- an invoker has at most :data:`~shoal.optimizations.tree.BRANCHING` invocations in
  flight, each taking the platform's invoke latency; a wider hand-out goes out as a tree
  (each head sends its share on as it starts, before its own tasks) if the tuning says so;
- the platform takes the invocations one after another, at its measured pace (a burst of
  starts on one machine goes one after another, whoever sent them: a tree's shares, sent
  by its heads at once, wait their turn), and answers each invoker as it takes its
  invocation: an invoker sends its next one, or goes on once all are answered;
- a worker holding its completion back for a fan-in (delayed I/O, pre-load) waits while
  nothing else is left to it, until it is the fan-in's last input (its output then stays
  home) or its wait is over; with pre-load it has read each other input as it landed;
- with pre-warm, a worker that starts warms workers of its children's other sizes (ready
  a cold start later);
- with clustering forced on, a completion whose output reaches the tuning's threshold
  keeps every child of a fan-out it readies, and one feeding a fan-in whose other inputs
  its worker will make waits for them unstored (:mod:`shoal.optimizations.cluster`);
- a taken invocation waits while ``cap`` workers are busy; it then starts on an idle
  warm worker of its size (after the warm hand-out delay) or a new one (the cold delay);
  a worker that stops stays warm for ``keep_warm_s``; it takes its lead (claiming its
  invocation) before its first task;
- a worker runs the tasks it owns one at a time, depth first (a stack), as the worker
  loop does: it reads the inputs it does not hold (the inputs its invocation's tasks
  share, once, when it starts), runs the task, and takes the completion step (the loop's
  gap after that task, plus the bytes it stores);
- the completion readies the children whose last input it was: without a plan the
  worker keeps one even group of them (:func:`shoal.decisions.split_ready`) and hands the
  others out; with a plan it keeps those of its own group and hands out the rest, one
  invocation per group, at the group's size. A child whose only input it was, and that
  it keeps, it runs at once. Outputs are stored as :func:`shoal.decisions.upload_mode`
  and :func:`shoal.decisions.must_store` say, and written also where the store then
  throws them away (an ``IF_PENDING`` output whose children all stay), unless
  completions set aside go to the same step, or the child's other inputs ran on the same
  worker, which knows their marks (:func:`shoal.decisions.settled_here`); a
  quick task's write shares the round trip of its worker's next step, and so does that
  of a task whose children all take the worker's next task as an input too;
- a task that reads inputs from the store runs longer by their bytes (``Work.touch``:
  a blob's pages faulted in as the task touches them), and so does the first task to use
  an input its worker read once for several of its tasks as it started;
- where workers share a machine's CPUs (``capacity``), tasks that together want more
  CPUs than it has slow down alike (processor sharing), and so does the workers' own CPU
  work where they start in a burst (``worker_cpu_s``, from each one's start; a worker
  started alone was measured with it already) and the platform's pace of taking invocations
  (its one loop among them: a wide burst goes no faster than the CPUs run the workers it
  starts); where the store serves its writes (reads) one at a time, as the history shows
  (``BackendModel.writes_shared``), the bytes of those at once share its pace alike too,
  their round trips their own.

Makespan is the one Shoal measures: the first task's start to the last task's end.
Cost is each worker's time from its start to its stop, at its size (GB-s, vCPU-s) and
one request per worker, priced by the model.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..backends import Size
from ..decisions import (
    IF_PENDING,
    NEVER,
    SMALL_TASK_S,
    floating,
    group_roots,
    must_store,
    split_ready,
    upload_mode,
    waits_for_next,
)
from ..history.records import Cost
from ..optimizations import DEFAULT, Tuning
from ..optimizations.cluster import stays_for_fan_in
from ..optimizations.fanin import hold_back, holder, wants_fan_in
from ..optimizations.prewarm import warm_ups
from ..optimizations.tree import BRANCHING, split_tree
from .model import BackendModel
from .sharing import Shared
from .work import Schedule, Shape, Work


class _Worker:
    __slots__ = (
        "id", "size", "group", "started", "stack", "held", "fresh", "forward", "batched"
    )  # fmt: skip

    def __init__(
        self, id: int, size: Size, group: int | None, stack: list[int], forward: list[Any]
    ) -> None:
        self.id, self.size, self.group, self.stack = id, size, group, stack
        self.forward = forward  # invocations it sends on as it starts (a tree's share)
        self.started = 0.0
        self.held: set[int] = set()
        #: Inputs its tasks share, read once as it started and not yet touched by a task.
        self.fresh: set[int] = set()
        self.batched = False  # its last completion waits for its next step


class _Invoker:
    """One hand-out as its invoker sends it: at most :data:`BRANCHING` invocations in
    flight, the next sent as one is answered; when all are, it goes on as ``then`` says
    (None: nothing waits, the client's)."""

    __slots__ = ("sending", "in_flight", "then")

    def __init__(self, sending: deque[tuple[tuple[int, ...], list[Any]]], then: Any) -> None:
        self.sending, self.in_flight, self.then = sending, 0, then


# Event kinds, in the order they are handled when simultaneous.
_INVOKE, _STOP, _COMPUTE, _DONE, _RESUME, _MOVED, _ANSWER, _FREE = range(8)
# What an invoker does once its hand-out is answered: a worker that sent its tree share
# on begins its tasks, or a completion step goes on to the worker's next task.
_BEGIN, _NEXT = range(2)
# What a worker does once a transfer of its ends: a completion step goes on (its
# invocations, its next task), or a task whose inputs were read starts.
_STEP, _READ = range(2)


def simulate(
    shape: Shape,
    work: Work,
    model: BackendModel,
    groups: Sequence[int] | None = None,
    fanout: int | None = None,
    tuning: Tuning = DEFAULT,
) -> Schedule:
    """The predicted schedule of one run: without ``groups`` as workers split work on
    their own (over ``fanout`` workers, default the model's cap), with them as the plan
    says; ``tuning``: the optimizations the run forces on."""
    return _Simulation(shape, work, model, groups, fanout or model.cap, tuning).run()


class _Simulation:
    def __init__(
        self,
        shape: Shape,
        work: Work,
        model: BackendModel,
        groups: Sequence[int] | None,
        fanout: int,
        tuning: Tuning,
    ) -> None:
        n = len(shape.deps)
        self.shape, self.work, self.model = shape, work, model
        self.groups, self.fanout = groups, fanout
        #: Fan-ins that run wherever they are readied (:func:`shoal.decisions.floating`).
        self.floats = None if groups is None else floating(shape.deps, groups, work.size)
        self.tree, self.cluster_above = tuning.tree, tuning.cluster_above
        self.prewarm, self.warm_after = tuning.prewarm, dict(tuning.warm_after)
        self.tuning = tuning
        # Fan-ins a worker holds its completion back for: fan-in -> (worker, task, since).
        self.holds: dict[int, tuple[_Worker, int, float]] = {}
        #: Fan-ins -> how many of their inputs' store steps are over: a holder goes on
        #: once all its fan-in's other inputs have landed (their finished events come then).
        self.landed: dict[int, int] = {}
        #: Fan-ins -> when the last store step so far of one of their inputs is over: a
        #: worker learns of an input from its step, not from its end. (A worker's steps
        #: are played ahead of the clock where they share nothing: this may be later.)
        self.landing: dict[int, float] = {}
        self.seen_marked: set[int] = set()  # holders that saw their fan-in's others finish
        self.aside: set[int] = set()  # completions waiting unstored for their fan-in
        self.remaining = [len(d) for d in shape.deps]
        self.needs = [len(d) for d in shape.deps]
        self.start = [math.nan] * n
        self.end = [math.nan] * n
        self.ran_on = [-1] * n
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.ids = itertools.count()
        self.busy = 0
        # Invocations the platform has (their invoke latency over) and takes in turn.
        self.arrived: deque[tuple[tuple[int, ...], Size, int | None, list[Any], _Invoker]]
        self.arrived = deque()
        self.taken_at = -math.inf  # when the platform took the last invocation ...
        self.bursting = False  # ... and whether others were waiting behind it
        #: The worker started last, and when, if it started alone (no CPU charged yet).
        self.alone: tuple[_Worker, float] | None = None
        self.taking = False  # the platform is busy taking one (a _FREE event is due)
        self.waiting: deque[tuple[tuple[int, ...], Size, int | None, list[Any], bool]] = deque()
        self.local = model.kind == "local"  # any idle thread takes any size
        # Warm idle workers per size: when each stopped, oldest first. Those the platform
        # has idle now are warm now: as if they stopped as the run starts.
        self.idle: dict[Size, deque[float]] = {}
        for size, count in model.idle.items():
            self.idle.setdefault(self._pool(size), deque()).extend([0.0] * count)
        self.cost = Cost()
        self.workers = 0
        # Processor sharing on a machine of `capacity` CPUs.
        #: task -> [work left, demand]; ~worker id -> the same, of a worker's own CPU work
        self.running: dict[int, list[float]] = {}
        self.demand = 0.0  # CPUs the running work would keep busy
        self.rate = 1.0
        self.since = 0.0
        self.version = 0
        self.owner: dict[int, _Worker] = {}
        self.touching: dict[int, float] = {}  # task -> seconds it runs longer (Work.touch)
        # Transfers through the store: writes share its pace, reads share it (apart: as
        # the history learns them, see RunTrace).
        self.writes, self.reads = Shared(), Shared()
        self.transfers = itertools.count()

    def _pool(self, size: Size) -> Size:
        return Size() if self.local else size

    def _push(self, time: float, kind: int, data: Any) -> None:
        heapq.heappush(self.events, (time, kind, next(self.seq), data))

    # ----------------------------------------------------------------- the run
    def run(self) -> Schedule:
        shape, groups = self.shape, self.groups
        roots = shape.roots
        if groups is None:
            root_groups = group_roots(roots, self.fanout)
        else:
            by_group: dict[int, list[int]] = {}
            for r in roots:
                by_group.setdefault(groups[r], []).append(r)
            root_groups = list(by_group.values())
        self._hand_out(0.0, [tuple(tasks) for tasks in root_groups], None)
        # Only what other workers may see goes through the queue of events: invocations
        # (the cap), task ends (the marks), stops (a freed slot) and, where CPUs are
        # shared, compute starts. The rest of a worker's timeline is its own.
        events, pop, shared = self.events, heapq.heappop, self.model.capacity is not None
        while events:
            time, kind, _, data = pop(events)
            if kind == _DONE:
                if not shared or data[1] == self.version:  # not superseded
                    if data[0] >= 0:
                        self._done(time, data[0])
                    else:  # a worker's own CPU work
                        self._advance(time)
                        del self.running[data[0]]
                        self._reschedule(time)
            elif kind == _INVOKE:
                self.arrived.append(data)
                if not self.taking:
                    self._take(time)
            elif kind == _FREE:
                self.taking = False
                self._take(time)
            elif kind == _ANSWER:
                self._answer(time, data)
            elif kind == _STOP:
                self._stop(time, data)
            elif kind == _RESUME:
                self._resume(time, data)
            elif kind == _MOVED:
                if data[1] == data[0].version:  # not superseded
                    self._moved(time, data[0])
            else:
                self._compute(time, *data)
        cost = self.cost
        cost.usd = self.model.price.usd(cost.gb_s, cost.requests)
        first = min(self.start) if self.start else 0.0
        return Schedule(
            start=[s - first for s in self.start],
            end=[e - first for e in self.end],
            worker=self.ran_on,
            makespan_s=max(self.end, default=0.0) - first if self.start else 0.0,
            cost=self.cost,
            workers=self.workers,
        )

    def _hand_out(self, time: float, groups: list[tuple[int, ...]], then: Any) -> None:
        """Invoke a worker per group, at most :data:`BRANCHING` in flight (wider, as a
        tree); the invoker goes on as ``then`` says once all are answered."""
        if self.tree and len(groups) > BRANCHING:
            sending = deque(split_tree(groups, BRANCHING))
        else:
            sending = deque((tasks, []) for tasks in groups)
        invoker = _Invoker(sending, then)
        if not sending:
            self._go_on(time, then)
        for _ in range(min(BRANCHING, len(sending))):
            self._send(time, invoker)

    def _send(self, time: float, invoker: _Invoker) -> None:
        """The invoker's next invocation: the platform has it after the invoke latency."""
        tasks, forward = invoker.sending.popleft()
        invoker.in_flight += 1
        sizes = self.work.size
        if len(tasks) == 1:
            size = sizes[tasks[0]]
        else:
            size = Size(max(sizes[t].cpus for t in tasks), max(sizes[t].memory_mb for t in tasks))
        group = None if self.groups is None else self.groups[tasks[0]]
        self._push(time + self.model.invoke_s, _INVOKE, (tasks, size, group, forward, invoker))

    def _take(self, time: float) -> None:
        """The platform takes the invocations it has one after another, at its measured
        pace (a gateway's one loop on a busy machine): a burst from many invokers at once
        (a tree's) waits its turn, and longer behind a cold start (a gateway forks a
        worker meanwhile). The invoker is answered as its invocation is taken; the worker
        starts then, warm or cold as the platform's workers are then, where the cap
        leaves room."""
        model, arrived = self.model, self.arrived
        while arrived:
            tasks, size, group, forward, invoker = arrived.popleft()
            # Taken with others waiting, or while the worker taken before still starts:
            # see _dispatch.
            burst = self.bursting or bool(arrived) or time - self.taken_at <= model.handout_warm_s
            self.taken_at, self.bursting = time, bool(arrived)
            warm = self._warm(time, size) is not None
            # Answered the request's remaining time later (its way back, the invoker's
            # turnaround), as the history measures it.
            self._push(time + max(0.0, model.request_s - model.invoke_s), _ANSWER, invoker)
            self._dispatch(time, tasks, size, group, forward, burst)
            pace = model.start_spacing_s if warm else model.cold_spacing_s
            if model.capacity is not None:  # its one loop shares the CPUs with the workers
                pace *= max(1.0, (self.demand + 1) / model.capacity)
            if pace > 0:
                self.taking = True
                self._push(time + pace, _FREE, None)
                return

    def _answer(self, time: float, invoker: _Invoker) -> None:
        invoker.in_flight -= 1
        if invoker.sending:  # a slot is free: the next goes out
            self._send(time, invoker)
        elif not invoker.in_flight:
            self._go_on(time, invoker.then)

    def _go_on(self, time: float, then: Any) -> None:
        if then is None:
            return
        kind, worker = then
        if kind == _BEGIN:
            self._begin(time, worker)
        else:
            self._next(time, worker)

    def _dispatch(
        self,
        time: float,
        tasks: tuple[int, ...],
        size: Size,
        group: int | None,
        forward: list[Any],
        burst: bool,
    ) -> None:
        """Start a worker for an invocation the platform takes now, or queue it while
        ``cap`` workers are busy (it then starts as one stops). A worker of a ``burst``
        (invocations the platform took together) charges the machine its own CPU work
        beside its tasks': where they come one at a time, the history's hand-out, gap
        and task times were measured with that work beside them already."""
        if self.busy >= self.model.cap:
            self.waiting.append((tasks, size, group, forward, burst))
            return
        self.busy += 1
        idle = self._warm(time, size)
        if idle is not None:
            warm_at = idle.pop()  # a pre-warmed one may still be starting
            delay = self.model.handout_warm_s + max(0.0, warm_at - time)
        else:
            delay = self.model.handout_cold_s
            self._make_room(time)
        worker = _Worker(next(self.ids), size, group, list(reversed(tasks)), forward)
        self.workers += 1
        if self.model.worker_cpu_s and self.model.capacity is not None:
            self._charge_cpu(time, worker, burst)
        self._start(time + delay, worker)

    def _charge_cpu(self, time: float, worker: _Worker, burst: bool) -> None:
        """Run the CPU work of ``worker`` besides its tasks' on the machine's CPUs, if it
        starts in a burst; and that of the worker started just before it, whose start
        came alone until this one came (see :meth:`_dispatch`)."""
        alone, self.alone = self.alone, (None if burst else (worker, time))
        if not burst:
            return
        self._advance(time)
        self.running[~worker.id] = [self.model.worker_cpu_s, 1.0]
        if alone is not None and time - alone[1] <= self.model.handout_warm_s:
            self.running[~alone[0].id] = [self.model.worker_cpu_s, 1.0]
        self._reschedule(time)

    def _warm(self, time: float, size: Size) -> deque[float] | None:
        """The idle workers of ``size``, if the most recent (the warmest) is warm still."""
        idle = self.idle.get(self._pool(size))
        return idle if idle and time - idle[-1] <= self.model.keep_warm_s else None

    def _make_room(self, time: float) -> None:
        """Before a new worker starts: forget the idle ones whose keep-warm ran out, and
        where the platform keeps only so many alive, retire the one idle longest."""
        alive = self.model.alive
        if alive is None:  # idle workers cost nothing to keep: forget them lazily
            return
        keep_warm, idle = self.model.keep_warm_s, self.idle
        for pool in idle.values():
            while pool and time - pool[0] > keep_warm:
                pool.popleft()
        if self.busy + sum(map(len, idle.values())) > alive:
            oldest = min((p for p in idle.values() if p), key=lambda p: p[0], default=None)
            if oldest is not None:
                oldest.popleft()

    def _start(self, time: float, worker: _Worker) -> None:
        worker.started = time
        if worker.forward:  # a tree's share: sent on (and answered) before any task
            self._hand_out(time, worker.forward, (_BEGIN, worker))
        else:
            self._begin(time, worker)

    def _begin(self, time: float, worker: _Worker) -> None:
        if self.prewarm:  # workers of its children's other sizes, warm after a cold start
            sizes = self.work.size
            children = {t: [sizes[c] for c in self.shape.children[t]] for t in worker.stack}
            for delay, size, n in warm_ups(worker.size, children, self.fanout, self.warm_after):
                warm_at = time + delay + self.model.handout_cold_s
                self.idle.setdefault(self._pool(size), deque()).extend([warm_at] * n)
        time += self.model.lead_s
        nbytes = 0.0
        if len(worker.stack) > 1:  # the inputs its tasks share, read once
            uses: dict[int, int] = {}
            for task in worker.stack:
                for dep in self.shape.deps[task]:
                    uses[dep] = uses.get(dep, 0) + 1
            shared = [dep for dep, n in uses.items() if n > 1]
            worker.held.update(shared)
            worker.fresh.update(shared)
            nbytes = sum(self.work.out_bytes[d] for d in shared)
        self._read_bytes(time, nbytes, (_READ, worker, None))

    def _next(self, time: float, worker: _Worker) -> None:
        stack = worker.stack
        if not stack:
            heapq.heappush(self.events, (time, _STOP, next(self.seq), worker))
            return
        task = stack.pop()
        held, fresh, out = worker.held, worker.fresh, self.work.out_bytes
        missing = touched = 0.0
        for d in self.shape.deps[task]:
            if d not in held:
                missing += out[d]
            elif d in fresh:  # read as the worker started: this task faults its pages in
                fresh.discard(d)
                touched += out[d]
        if (missing or touched) and self.work.touch is not None:
            self.touching[task] = self.work.touch[task] * (missing + touched)
        self._read_bytes(time, missing, (_READ, worker, task))

    def _read(self, time: float, worker: _Worker, task: int | None) -> None:
        """``worker`` has read what ``task`` needs (None: what its tasks share)."""
        if task is None:
            self._next(time, worker)
        elif self.model.capacity is None:
            self._compute(time, worker, task)
        else:
            self._push(time, _COMPUTE, (worker, task))

    def _compute(self, time: float, worker: _Worker, task: int) -> None:
        self.start[task] = time
        self.ran_on[task] = worker.id
        self.owner[task] = worker
        duration = self.work.duration[task] + self.touching.pop(task, 0.0)
        if self.model.capacity is None:
            heapq.heappush(self.events, (time + duration, _DONE, next(self.seq), (task, 0)))
            return
        self._advance(time)
        self.running[task] = [duration, self.work.demand[task]]
        self._reschedule(time)

    def _advance(self, time: float) -> None:
        elapsed = (time - self.since) * self.rate
        for entry in self.running.values():
            entry[0] -= elapsed
        self.since = time

    def _reschedule(self, time: float) -> None:
        self.demand = demand = sum(e[1] for e in self.running.values())
        capacity = self.model.capacity or math.inf
        self.rate = min(1.0, capacity / demand) if demand > 0 else 1.0
        self.version += 1
        for task, entry in self.running.items():
            self._push(time + max(0.0, entry[0]) / self.rate, _DONE, (task, self.version))

    def _done(self, time: float, task: int) -> None:
        if self.model.capacity is not None:
            self._advance(time)
            del self.running[task]
            self._reschedule(time)
        self.end[task] = time
        worker = self.owner.pop(task)
        worker.held.add(task)
        if self._hold(time, worker, task):
            return
        self._complete(time, worker, task)

    def _hold(self, time: float, worker: _Worker, task: int) -> bool:
        """Whether ``task``'s worker holds its completion back for its fan-in (delayed I/O,
        pre-load: :mod:`shoal.optimizations.fanin`), as the worker loop does: its holder,
        with nothing else to run, while other inputs are still to come."""
        children, tuning = self.shape.children[task], self.tuning
        if not (tuning.preload or tuning.delay_above is not None) or worker.stack:
            return False
        if len(children) != 1 or self.needs[children[0]] < 2:
            return False
        fan_in = children[0]
        lands = self.landing.get(fan_in, -math.inf)
        others_landed = self.landed.get(fan_in, 0) >= self.needs[fan_in] - 1
        if others_landed and lands <= time:
            return False  # the others are in: it is the last
        inputs = self.shape.deps[fan_in]
        groups = self.groups
        if groups is None:
            designated = holder(inputs, None, [])
        else:
            designated = holder(inputs, groups[fan_in], [groups[d] for d in inputs])
        hold = hold_back(task, designated, int(self.work.out_bytes[task]), tuning)
        if hold is None:
            return False
        self.holds[fan_in] = (worker, task, time)
        if others_landed:  # their steps were played ahead of the clock: it sees them then
            self._push(min(lands, time + hold.total), _RESUME, fan_in)
        elif math.isfinite(hold.total):  # else the last one's step resumes it (_step)
            self._push(time + hold.total, _RESUME, fan_in)
        return True

    def _may_hold(self, task: int) -> bool:
        """Whether the worker loop counts ``task``'s completion among those it may hold
        back for a fan-in (delayed I/O, pre-load), whose store step it never puts off for
        its next task (:func:`shoal.decisions.waits_for_next`)."""
        tuning = self.tuning
        above = min(
            tuning.preload_above if tuning.preload else math.inf,
            math.inf if tuning.delay_above is None else tuning.delay_above,
        )
        if self.work.out_bytes[task] < above:
            return False
        children = self.shape.children[task]
        stay = None if self.groups is None else [self._stays(task, c) for c in children]
        return wants_fan_in(children, [self.needs[c] for c in children], stay)

    def _stays(self, task: int, child: int) -> bool:
        """With a plan: whether the worker of ``task`` runs ``child`` once it readies it."""
        assert self.groups is not None and self.floats is not None
        return self.floats[child] or self.groups[child] == self.groups[task]

    def _resume(self, time: float, fan_in: int) -> None:
        """The holder of ``fan_in`` goes on: its other inputs are in (it is the last; with
        pre-load it read each as it landed, all but the last), or its wait is over."""
        held = self.holds.pop(fan_in, None)
        if held is None:
            return
        worker, task, _ = held
        seen = self.landing.get(fan_in, -math.inf) <= time
        if self.landed.get(fan_in, 0) >= self.needs[fan_in] - 1 and seen:
            # it saw them all land: it knows their marks
            self.seen_marked.add(task)
            if self.tuning.preload:  # and read each as it landed, all but the last
                others = [d for d in self.shape.deps[fan_in] if d != task]
                last = max(others, key=lambda d: self.end[d])
                worker.held.update(d for d in others if d != last)
        self._complete(time, worker, task)

    def _complete(self, time: float, worker: _Worker, task: int) -> None:
        early, keep, hand_out, written = self._decide(worker, task)
        gaps = self.work.gap if written or self.work.home_gap is None else self.work.home_gap
        done_at = time + (self.model.gap_s if gaps is None else gaps[task])
        # A quick task's completion waits for its worker's next step, which takes it with
        # the next one's (should_flush), unless another worker waits on it (a sink, a
        # hand-out) or its worker has nothing left: one round trip for both, and the
        # children its marks ready are the worker's only after that next task.
        quick = self.end[task] - self.start[task] < SMALL_TASK_S
        if not quick and not worker.batched and not self._may_hold(task):  # alone, it may wait
            deps = self.shape.deps
            after = early[0] if early else worker.stack[-1] if worker.stack else None
            quick = waits_for_next([deps[c] for c in self.shape.children[task]], after)
        batched = quick and worker.stack and not hand_out and task not in self.shape.sinks
        worker.batched = bool(batched)
        worker.stack.extend(reversed(early))
        if batched and keep:
            after = worker.stack.pop()
            worker.stack.extend(reversed(keep))
            worker.stack.append(after)
        else:
            worker.stack.extend(reversed(keep))
        landing = [c for c in self.shape.children[task] if self.needs[c] > 1]
        model, then = self.model, (_STEP, worker, (hand_out, landing))
        nbytes = self.work.out_bytes[task] if written else 0.0
        if nbytes:
            store = self.writes if model.writes_shared else None
            seconds = nbytes * model.write_s_per_byte
            latency = 0.0 if batched else model.write_latency_s
            self._transfer(store, done_at, latency, seconds, then)
        else:
            self._then(done_at, then)

    def _step(
        self,
        time: float,
        worker: _Worker,
        hand_out: list[list[int]],
        landing: list[int],
    ) -> None:
        """The store step of a completion is over: the holders of its fan-ins go on once
        it is the last of their other inputs to land, its invocations are sent, and its
        worker goes on once they are."""
        landed, holds = self.landed, self.holds
        for c in landing:
            self.landing[c] = max(self.landing.get(c, -math.inf), time)
            landed[c] = landed.get(c, 0) + 1
            if c in holds and landed[c] >= self.needs[c] - 1:
                self._push(time, _RESUME, c)
        if hand_out:  # the worker goes on once they are answered
            self._hand_out(time, [tuple(tasks) for tasks in hand_out], (_NEXT, worker))
        else:
            self._next(time, worker)

    # ------------------------------------------------------ transfers through the store
    def _read_bytes(self, time: float, nbytes: float, then: tuple[int, _Worker, Any]) -> None:
        model = self.model
        if nbytes:
            store = self.reads if model.reads_shared else None
            seconds = nbytes * model.read_s_per_byte
            self._transfer(store, time, model.read_latency_s, seconds, then)
        else:
            self._then(time, then)

    def _transfer(
        self,
        store: Shared | None,
        time: float,
        latency: float,
        seconds: float,
        then: tuple[int, _Worker, Any],
    ) -> None:
        """Move bytes through the store that take ``seconds`` alone, and ``latency``
        besides (round trips: the worker's own wait), then go on as ``then`` says. The
        bytes of transfers at once share the ``store``'s pace (processor sharing; None:
        each goes at its own)."""
        if seconds <= 0 or store is None:
            self._then(time + latency + seconds, then)
            return
        store.advance(time)
        heapq.heappush(store.moving, (store.clock + seconds, next(self.transfers), latency, then))
        self._reschedule_store(store, time)

    def _then(self, time: float, then: tuple[int, _Worker, Any]) -> None:
        kind, worker, data = then
        if kind == _STEP:
            self._step(time, worker, *data)
        else:
            self._read(time, worker, data)

    def _reschedule_store(self, store: Shared, time: float) -> None:
        done = store.next_done(time)
        if done is not None:
            self._push(done, _MOVED, (store, store.version))

    def _moved(self, time: float, store: Shared) -> None:
        store.advance(time)
        _, _, latency, then = heapq.heappop(store.moving)
        self._reschedule_store(store, time)
        self._then(time + latency, then)

    def _decide(
        self, worker: _Worker, task: int
    ) -> tuple[list[int], list[int], list[list[int]], bool]:
        """What the completion of ``task`` does, as the worker loop and the store decide
        it: the children it runs at once, those it keeps, the groups it hands out, and
        whether the output is written to the store. That is where it is stored, and also
        where it goes to the store unless its children all stay (``IF_PENDING``) but the
        store throws it away, its children all readied and kept: the worker wrote it
        before the store step found nobody needs it. Unless completions set aside for a
        child it readies go with it: then the worker tells from its own marks that the
        step settles them all, and writes none (:func:`shoal.decisions.settled_here`)."""
        children = self.shape.children[task]
        remaining, needs_of, groups = self.remaining, self.needs, self.groups
        sink = task in self.shape.sinks
        if not children:
            return [], [], [], sink
        out, tuning = self.work.out_bytes[task], self.tuning
        clustered = (
            len(children) > 1 and self.cluster_above is not None and out >= self.cluster_above
        )
        aside = tuning.aside_above is not None and out >= tuning.aside_above
        if aside and self._set_aside(worker, task):  # the worker makes the fan-in's inputs
            remaining[children[0]] -= 1
            self.landed[children[0]] = self.landed.get(children[0], 0) + 1  # its worker's own
            self.aside.add(task)
            return [], [], [], False
        # Completions set aside going with it, or marks the worker made itself, settle the
        # step before it: the worker writes nothing the store would throw away.
        joined = self._join_aside(task) or self._marked_here(worker, task)
        if groups is None and not clustered:
            needs = [needs_of[c] for c in children]
            ready = []
            for c in children:
                remaining[c] -= 1
                if remaining[c] == 0:
                    ready.append(c)
            sure = [c for c, need in zip(children, needs, strict=True) if need == 1]
            if sink or (len(sure) > 1 and self.fanout > 1):
                sure = []
            mode = upload_mode(sink, needs, self.fanout)
            kept, handed = split_ready(ready, self.fanout)
            stored = mode is not NEVER and must_store(mode, children, set(kept))
            early = set(sure)
            keep = [c for c in kept if c not in early]
            hand_out = [g for g in ([c for c in h if c not in early] for h in handed) if g]
            return sure, keep, hand_out, stored or (mode is IF_PENDING and not joined)
        # With a plan (or clustered: every child in this task's group): children of this
        # group whose only input this was run at once, the others it readies stay; other
        # groups' are handed out. The output is stored for a
        # sink, a child elsewhere, or a child of this group still waiting for inputs.
        mine = -1 if groups is None else groups[task]
        sure, keep = [], []
        by_group: dict[int, list[int]] = {}
        stored = sink
        for c in children:
            left = remaining[c] = remaining[c] - 1
            g = mine if clustered or groups is None or self._stays(task, c) else groups[c]
            if g != mine:
                stored = True
                if not left:
                    by_group.setdefault(g, []).append(c)
            elif needs_of[c] == 1:
                sure.append(c)
            elif left:
                stored = True
            else:
                keep.append(c)
        # Not stored, its children all here: it went to the store if one waited for more.
        pending = any(needs_of[c] > 1 for c in children)
        return sure, keep, list(by_group.values()), stored or (pending and not joined)

    def _marked_here(self, worker: _Worker, task: int) -> bool:
        """Whether every other input of ``task``'s children of several inputs ran on its
        worker, which so knows their marks (:func:`shoal.decisions.remember_marks`), or
        its worker, holding back, saw them all finish."""
        if task in self.seen_marked:
            return True
        deps, ran_on, me = self.shape.deps, self.ran_on, worker.id
        return all(
            ran_on[d] == me
            for c in self.shape.children[task]
            if self.needs[c] > 1
            for d in deps[c]
            if d != task
        )

    def _join_aside(self, task: int) -> bool:
        """Whether completions set aside wait for a child of ``task`` (its other inputs,
        made by the same worker): they go to the store step with it, which they settle."""
        aside = self.aside
        if not aside:
            return False
        deps = self.shape.deps
        joining = {d for c in self.shape.children[task] for d in deps[c] if d in aside}
        aside -= joining
        return bool(joining)

    def _set_aside(self, worker: _Worker, task: int) -> bool:
        """Whether the completion of ``task`` waits unstored for its fan-in child, whose
        other inputs its worker will make (:func:`.cluster.stays_for_fan_in`)."""
        children, groups = self.shape.children[task], self.groups
        if len(children) != 1 or self.remaining[children[0]] < 2:
            return False
        fan_in = children[0]
        mine = None if groups is None else groups[task]
        if groups is not None and not self._stays(task, fan_in):
            return False
        deps, end, ran_on, stack = self.shape.deps, self.end, self.ran_on, worker.stack

        def deps_of(t: int) -> Sequence[int] | None:
            return deps[t] if groups is None or groups[t] == mine else None

        def made(t: int) -> bool:
            return ran_on[t] == worker.id and not math.isnan(end[t])

        return stays_for_fan_in(deps[fan_in], made, stack.__contains__, deps_of)

    def _stop(self, time: float, worker: _Worker) -> None:
        span = time - worker.started
        size = worker.size
        cost = self.cost
        cost.gb_s += span * size.memory_mb / 1024
        cost.vcpu_s += span * self.model.cpus_of(size)
        cost.requests += 1
        pool = self.idle.get(size) if not self.local else self.idle.get(Size())
        if pool is None:
            pool = self.idle.setdefault(self._pool(size), deque())
        pool.append(time)
        self.busy -= 1
        if self.waiting:
            self._dispatch(time, *self.waiting.popleft())
