"""The planners: pure functions from a :class:`Problem` (the graph as plain data, the
predictions, the backend model) to a plan (:class:`Decided`: a size and a group per task,
and the simulated schedule), registered by name in :data:`PLANNERS`.

    none            no plan: every worker splits what it readies on its own (the default)
    uniform         one size for every task: the cheapest whose predicted makespan is
                    within 10 % of the largest size's
    critical-path   every task at the largest size, then tasks shrunk to the smallest size
                    that keeps the predicted makespan within 5 %: those off the critical
                    path use its slack
    deadline        the least-cost plan whose predicted makespan meets ``deadline``; when
                    none can, the fastest, with a warning that says by how much it misses
    optimizing      critical-path's plan, then Wukong's optimizations wherever the
                    simulator predicts they pay (:func:`plan_optimizing`): clustering per
                    fan-out, holding back for fan-ins (pre-load or delayed I/O) per run;
                    the others turn none on

Grouping. Every planner groups tasks for locality the way the protocol would without a
plan: a task joins the group of the input that finishes last (the worker that readies
it); of the children a task readies, the most critical continues its group, and where
there are more than the workers that may run at once they are dealt into that many
shares of about equal work (:func:`make_groups`). Tasks of another size form a group of
their own per share; where that cannot hold the makespan (extra workers under a small
concurrency cap), they stay with their share at its largest size.

Sizing. Sizes are chosen against a critical-path schedule (earliest starts with every
input moved between workers, latest finishes, each task's slack), each task allowed a
stretch of its time plus the slack of the paths through it (:func:`_fit_into`); the
simulator (:mod:`.simulate`), which plays the protocol with starts, the concurrency cap
and shared CPUs, judges each try, and the stretch is searched for the loosest plan that
holds (:func:`_tightened`). Single-size plans are estimated from their critical paths and
simulated only where they could win (:class:`_OneSize`).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..backends import Size
from ..optimizations import DEFAULT, Tuning, aside_threshold, tuning_for
from .model import BackendModel, memory_for
from .predict import Predictor
from .simulate import simulate
from .work import Schedule, Shape, Work, bottom_levels

log = logging.getLogger(__name__)

#: uniform: the cheapest size whose makespan is within this of the fastest size's.
UNIFORM_SLACK = 0.10
#: Predicted costs this close are alike: the predictions are no finer.
COST_TIE = 0.01
#: Tasks are dealt out in runs of neighbours where none is longer than this part of a
#: share's total (_deal): the runs then differ by at most that much.
RUN_SHARE = 0.5
#: Levels within this of each other count as equal: runs of as many tasks each.
EVEN_LEVELS = 0.5
#: critical-path: how much the predicted makespan may grow while tasks shrink (within the
#: predictions' own noise: it "holds").
CRITICAL_PATH_SLACK = 0.05
#: How many plans a planner simulates at most while it looks for the loosest that holds,
#: and how much wider than a stretch that held it looks next.
TIGHTEN_STEPS = 4
TIGHTEN_BEYOND = 0.15
#: How far a one-size plan's estimated makespan may miss a limit and still be simulated.
ESTIMATE_SLACK = 0.02


@dataclass
class Problem:
    """What a planner plans: the graph's shape, each task's function, its declared size,
    the predictions and the backend model, at the run's SLA."""

    shape: Shape
    functions: list[str]  # function key per task
    declared: list[Size | None]  # the size a task's options ask for, if any
    predictor: Predictor
    model: BackendModel
    sla: str
    deadline_s: float | None = None
    #: The optimizations the run forces on (the simulator plays them); ``forced``: which,
    #: by name (None: the planner's choice).
    tuning: Tuning = DEFAULT
    forced: frozenset[str] | None = None


@dataclass
class Decided:
    """A planner's answer: per task its size and group, and the simulated schedule;
    ``optimized``: the tasks each optimization was turned on for, by name."""

    sizes: list[Size]
    groups: list[int]
    schedule: Schedule
    optimized: dict[str, list[int]] = field(default_factory=dict)
    #: Run-wide optimizations the plan turns on (None: the run's own).
    tuning: Tuning | None = None


Planner = Callable[[Problem], Decided]


class _Costs:
    """Per task: its candidate sizes (smallest first) and its predicted seconds, CPU
    demand and cost on each; and its predicted output bytes."""

    def __init__(self, problem: Problem) -> None:
        p, model = problem.predictor, problem.model
        shape, functions = problem.shape, problem.functions
        n = len(functions)
        self.out = [0.0] * n
        self.in_bytes = in_bytes = [0.0] * n
        for t in range(n):  # ids are topological: inputs first
            in_bytes[t] = sum(self.out[d] for d in shape.deps[t])
            self.out[t] = p.task_output(t, functions[t], in_bytes[t])
        self.edge = [_edge_s(model, nbytes) for nbytes in self.out]
        self.gap = [p.task_gap(t, functions[t]) for t in range(n)]
        self.home_gap = [p.task_gap(t, functions[t], home=True) for t in range(n)]
        self.touch = [p.task_touch(t, functions[t]) for t in range(n)]
        self.sizes: list[list[Size]] = []
        self.index: list[dict[Size, int]] = []  # each candidate size's place in `sizes`
        self.seconds: list[list[float]] = []
        self.demand: list[list[float]] = []
        self.usd: list[list[float]] = []
        self.slower: list[list[float]] = []  # minus seconds per size
        per_gb_s = model.price.gb_s
        # Per function: its memory floor, sizes, and each size's (time factor, demand, GB).
        by_function: dict[tuple[str, int | None], Any] = {}
        for t in range(n):
            fn, declared = functions[t], problem.declared[t]
            key = (fn, declared.memory_mb if declared else None)
            table = by_function.get(key)
            if table is None:
                floor = memory_for(p.peak_mb(fn), key[1])
                sizes = model.sizes(floor) or [Size(model.max_cpus, floor)]
                cpus = [model.cpus_of(s) for s in sizes]
                table = by_function[key] = (
                    sizes,
                    {size: i for i, size in enumerate(sizes)},
                    [p.scale(fn, c) for c in cpus],
                    [p.demand_on(fn, c) for c in cpus],
                    [s.memory_mb / 1024 * per_gb_s + c * 1e-9 for s, c in zip(sizes, cpus)],  # noqa: B905
                )
            sizes, index, scales, demands, rates = table
            base = p.task_base(t, fn, in_bytes[t])
            secs = [base * k for k in scales]
            self.slower.append([-x for x in secs])  # ascending, for bisection
            self.sizes.append(sizes)
            self.index.append(index)
            self.seconds.append(secs)
            self.demand.append(demands)
            self.usd.append([d * r for d, r in zip(secs, rates)])  # noqa: B905

    def fastest(self, t: int) -> int:
        """The index of the size that runs task ``t`` fastest (the smallest such)."""
        secs = self.seconds[t]
        best = min(secs)
        return next(i for i, s in enumerate(secs) if s <= best * (1 + 1e-9))


# --------------------------------------------------------------------------- shared steps


def _work(costs: _Costs, problem: Problem, sizes: Sequence[Size]) -> Work:
    """The simulator's view of each task at the size it was given."""
    p, functions = problem.predictor, problem.functions
    duration, demand = [], []
    for t, size in enumerate(sizes):
        i = costs.index[t].get(size)
        if i is not None:  # the common case: a size among its candidates
            duration.append(costs.seconds[t][i])
            demand.append(costs.demand[t][i])
        else:  # its group's size, chosen for another task
            duration.append(p.task_duration(t, functions[t], size, costs.in_bytes[t]))
            demand.append(p.demand(functions[t], size))
    return Work(duration, demand, costs.out, list(sizes), costs.gap, costs.touch, costs.home_gap)


def _edge_s(model: BackendModel, nbytes: float) -> float:
    """What moving an output to another worker adds between two tasks: its upload and
    download, and a warm hand-out."""
    return model.write_s(nbytes) + model.read_s(nbytes) + model.handout_warm_s + model.gap_s


def _earliest(shape: Shape, seconds: Sequence[float], costs: _Costs) -> list[float]:
    """Earliest finish of every task, resources left out, each input moved between
    workers."""
    finish = [0.0] * len(seconds)
    edge = costs.edge
    for t, deps in enumerate(shape.deps):
        if deps:
            finish[t] = max([finish[d] + edge[d] for d in deps]) + seconds[t]
        else:
            finish[t] = seconds[t]
    return finish


def make_groups(
    shape: Shape,
    finish: Sequence[float],
    level: Sequence[float],
    sizes: Sequence[Size] | None,
    fanout: int,
) -> list[int]:
    """Worker groups for locality: a task joins the group of its input that finishes last
    (whose worker readies it). Of the children a task readies, the most critical continues
    its group; when there are more than ``fanout`` workers can run at once, the children
    are dealt into ``fanout`` shares that take about as long each (the longest first to
    the share with the least so far), one of which stays in the parent's group. The roots
    are dealt out the same way. With ``sizes``, only tasks of one size share a group (a
    share of several sizes makes a group per size)."""
    n = len(shape.deps)
    readier = [-1] * n  # the input whose completion readies each task
    for t, deps in enumerate(shape.deps):
        if deps:
            readier[t] = max(deps, key=lambda d: finish[d])
    group = list(range(n))

    def share_out(tasks: list[int], parent: int | None) -> None:
        shares = _deal(sorted(tasks, key=lambda c: -level[c]), level, fanout)
        for k, share in enumerate(shares):
            # A share is one group, or with sizes one group per size (the parent's size
            # joins the parent's group).
            heads: dict[Size | None, int] = {}
            if k == 0 and parent is not None:
                heads[sizes[parent] if sizes else None] = parent
            for c in share:
                head = heads.setdefault(sizes[c] if sizes else None, c)
                group[c] = group[head]

    share_out([t for t in range(n) if not shape.deps[t]], None)
    for t in range(n):
        owned = [c for c in shape.children[t] if readier[c] == t]
        if owned:
            share_out(owned, t)
    return _renumber(group)


def _deal(tasks: list[int], level: Sequence[float], shares: int) -> list[list[int]]:
    """``tasks`` (longest first) dealt into at most ``shares`` lists of about equal total
    ``level``, the longest task in the first. Where every task is small beside a share's
    part, the lists are runs of neighbours (:func:`_runs`); else the longest goes to the
    least loaded list, one after another."""
    if len(tasks) <= shares:
        return [[t] for t in tasks]
    total = sum(level[t] for t in tasks)
    if max(level[t] for t in tasks) <= RUN_SHARE * total / shares:
        return _runs(tasks, level, shares, total)
    dealt: list[list[int]] = [[] for _ in range(shares)]
    least = [(0.0, k) for k in range(shares)]  # a heap of (load, share)
    for t in tasks:
        load, k = least[0]
        dealt[k].append(t)
        heapq.heapreplace(least, (load + level[t], k))
    return [d for d in dealt if d]


def _runs(tasks: list[int], level: Sequence[float], shares: int, total: float) -> list[list[int]]:
    """``tasks`` cut, in id order, into ``shares`` runs of about equal total ``level``, the
    run with the longest task first. Neighbours by id are near in the graph (ids are
    topological): the inputs of a fan-in, a reduction's subtree; in one run, one worker
    makes them all and can keep them (:mod:`shoal.optimizations.cluster`)."""
    levels = [level[t] for t in tasks]
    if total <= 0 or max(levels) <= min(levels) * (1 + EVEN_LEVELS):
        # About equal (predictions spread): as many tasks each, so that a reduction's
        # subtrees are not cut by that spread.
        level, total = [1.0] * (max(tasks) + 1), float(len(tasks))
    runs: list[list[int]] = [[]]
    done = 0.0
    for t in sorted(tasks):
        if runs[-1] and len(runs) < shares and done + level[t] / 2 > len(runs) * total / shares:
            runs.append([])
        runs[-1].append(t)
        done += level[t]
    first = next(i for i, run in enumerate(runs) if tasks[0] in run)
    runs.insert(0, runs.pop(first))
    return runs


def _renumber(group: list[int]) -> list[int]:
    seen: dict[int, int] = {}
    return [seen.setdefault(g, len(seen)) for g in group]


def _group_sizes(sizes: Sequence[Size], groups: Sequence[int]) -> list[Size]:
    """Each task's size raised to its group's largest (a worker has one size)."""
    largest: dict[int, Size] = {}
    for size, g in zip(sizes, groups, strict=True):
        best = largest.get(g)
        largest[g] = (
            size
            if best is None
            else Size(max(best.cpus, size.cpus), max(best.memory_mb, size.memory_mb))
        )
    return [largest[g] for g in groups]


def _plan(problem: Problem, costs: _Costs, choice: Sequence[int], by_size: bool = True) -> Decided:
    """Group the tasks at the sizes ``choice`` picks, raise each to its group's, simulate.
    ``by_size``: tasks of other sizes go in groups of their own (see :func:`make_groups`)."""
    sizes = [costs.sizes[t][i] for t, i in enumerate(choice)]
    return _plan_sized(problem, costs, sizes, by_size)


def _plan_sized(
    problem: Problem, costs: _Costs, sizes: list[Size], by_size: bool = True
) -> Decided:
    shape, model = problem.shape, problem.model
    seconds = _work(costs, problem, sizes).duration
    finish = _earliest(shape, seconds, costs)
    level = bottom_levels(shape, seconds)
    groups = make_groups(shape, finish, level, sizes if by_size else None, model.cap)
    sized = _group_sizes(sizes, groups)
    schedule = simulate(shape, _work(costs, problem, sized), model, groups, tuning=problem.tuning)
    return Decided(sized, groups, schedule)


def _fit_into(
    problem: Problem, costs: _Costs, start: Sequence[int], stretch: float, pick: str
) -> list[int]:
    """A size per task such that the critical-path schedule of the ``start`` sizes, with
    every task allowed ``stretch`` times its time there, still holds: each task gets its
    stretched share of the time plus whatever slack the paths through it leave, and ends
    before its children's latest starts. Tasks are visited last first; each takes the
    ``pick`` (``smallest`` or ``cheapest``) size that fits, else keeps its ``start`` size."""
    shape = problem.shape
    n = len(start)
    allowed = [costs.seconds[t][i] * stretch for t, i in enumerate(start)]
    finish = _earliest(shape, allowed, costs)
    target = max(finish, default=0.0)
    ready = [finish[t] - allowed[t] for t in range(n)]
    latest_start = [math.inf] * n
    choice = list(start)
    for t in range(n - 1, -1, -1):
        children = shape.children[t]
        edge = costs.edge[t]
        latest_end = min((latest_start[c] - edge for c in children), default=target)
        window = latest_end - ready[t]
        # A larger size is never slower: the sizes that fit are those from the first.
        first = bisect.bisect_left(costs.slower[t], -window - 1e-9)
        if first < len(costs.slower[t]):
            if pick == "smallest":
                choice[t] = first
            else:
                usd = costs.usd[t]
                choice[t] = min(range(first, len(usd)), key=usd.__getitem__)
        latest_start[t] = latest_end - costs.seconds[t][choice[t]]
    return choice


def _tightened(
    problem: Problem,
    costs: _Costs,
    start: list[int],
    limit: float,
    stretch: float,
    pick: str,
    better: Callable[[Decided], Any],
    widest: bool = False,
) -> Decided | None:
    """The ``better`` plan of :func:`_fit_into` whose simulated makespan is at most
    ``limit``: at ``stretch`` first; if that holds, a little beyond it, or with
    ``widest`` at the stretch where every task may take its smallest size (tasks off the
    critical path stretch the makespan less than themselves, and where CPUs are shared a
    larger size may buy nothing), then bisecting between what held and what did not; if
    it does not hold, bisecting towards 1 (no task slower than on the ``start`` sizes, but
    those with slack). Tasks of other sizes go in groups of their own; where no such plan
    holds (the extra workers cost too much, say under a small concurrency cap), they stay
    with the tasks they are near, at their group's size (with ``widest``, as soon as the
    first stretch shows it: fewer simulations). None if even that is too slow."""
    wide = stretch * (1 + TIGHTEN_BEYOND)
    if widest:
        wide = max(
            (s[0] / s[i] for s, i in zip(costs.seconds, start, strict=True) if s[i] > 0),
            default=1.0,
        )
    fits: dict[float, list[int]] = {}  # the same stretch fits alike in either grouping
    groupings = [True, False]
    while groupings:
        by_size = groupings.pop(0)
        best: Decided | None = None
        low, high = 1.0, max(1.0, stretch)
        candidate, widened = high, False
        step, steps = 0, TIGHTEN_STEPS
        while step < steps:
            step += 1
            choice = fits.get(candidate)
            if choice is None:
                choice = fits[candidate] = _fit_into(problem, costs, start, candidate, pick)
            decided = _plan(problem, costs, choice, by_size)
            first_fails = decided.schedule.makespan_s > limit * (1 + 1e-9)
            if widest and step == 1 and groupings and first_fails:
                other = _plan(problem, costs, choice, not by_size)
                if other.schedule.makespan_s <= limit * (1 + 1e-9):  # search that one
                    by_size, decided = not by_size, other
                    groupings.clear()
            if decided.schedule.makespan_s <= limit * (1 + 1e-9):
                if best is None or better(decided) < better(best):
                    best = decided
                low = candidate
                if candidate >= high:  # it held: try wider
                    if widest and widened or wide <= candidate * 1.01:
                        break
                    widened = True
                    high = candidate = wide
                    wide *= 1 + TIGHTEN_BEYOND
                    continue
            elif best is None and candidate == 1.0:
                break  # not even the tightest holds in this grouping
            else:
                high = candidate
                if best is None and groupings:  # first, whether this grouping can hold
                    candidate, steps = 1.0, steps + 1
                    continue
            if high - low < 0.005 * low:
                break
            candidate = (low + high) / 2
        if best is not None:
            return best
    return None


class _OneSize:
    """Plans that put every task on one size (with the memory the hungriest needs). A
    size's makespan is first estimated from its critical path (scaled by how far a
    simulated plan, ``reference`` or else the largest size's, lies from its own) and its
    cost from its tasks' costs; only the sizes worth it are simulated. A larger size is
    never slower, so the sizes that meet a limit are found by bisection."""

    def __init__(self, problem: Problem, costs: _Costs, reference: Decided | None = None) -> None:
        self.problem, self.costs = problem, costs
        floor = max((s[0].memory_mb for s in costs.sizes), default=Size().memory_mb)
        self.sizes = problem.model.sizes(floor)
        self.n = len(costs.sizes)
        self._estimates: dict[int, tuple[float, float]] = {}
        reference = reference or self.largest
        seconds = _work(costs, problem, reference.sizes).duration
        cpm = max(_earliest(problem.shape, seconds, costs), default=0.0)
        self.ratio = reference.schedule.makespan_s / cpm if cpm > 0 else 1.0

    @functools.cached_property
    def largest(self) -> Decided:
        return self.plan(self.sizes[-1])

    def plan(self, size: Size) -> Decided:
        return _plan_sized(self.problem, self.costs, [size] * self.n)

    def _critical_path(self, i: int) -> tuple[float, float]:
        size = self.sizes[i]
        seconds = _work(self.costs, self.problem, [size] * self.n).duration
        cpm = max(_earliest(self.problem.shape, seconds, self.costs), default=0.0)
        return cpm, sum(seconds) * size.memory_mb / 1024 * self.problem.model.price.gb_s

    def estimate(self, i: int) -> tuple[float, float]:
        """(makespan, USD) of size ``i``, estimated."""
        found = self._estimates.get(i)
        if found is None:
            cpm, usd = self._critical_path(i)
            found = self._estimates[i] = (cpm * self.ratio, usd)
        return found

    def cheapest(self, limit: float, tries: int = 2, beat: float = math.inf) -> Decided | None:
        """The cheapest single size that meets ``limit`` when simulated, among the
        smallest (at most ``tries``) estimated to meet it within :data:`ESTIMATE_SLACK`,
        and the largest; sizes whose
        estimated cost is not below ``beat`` (a plan in hand) are not simulated."""
        low, high = 0, len(self.sizes) - 1
        while low < high:  # the smallest estimated to meet the limit (or nearly)
            mid = (low + high) // 2
            if self.estimate(mid)[0] <= limit * (1 + ESTIMATE_SLACK):
                high = mid
            else:
                low = mid + 1
        found = []
        for i in [*range(low, min(low + tries, len(self.sizes) - 1)), len(self.sizes) - 1]:
            if self.estimate(i)[1] < beat:
                found.append(self.largest if i == len(self.sizes) - 1 else self.plan(self.sizes[i]))
        meeting = [p for p in found if p.schedule.makespan_s <= limit * (1 + 1e-9)]
        return _cheapest(meeting) if meeting else None


def _cheapest(plans: Sequence[Decided]) -> Decided:
    """The cheapest of ``plans``; of those within :data:`COST_TIE` of it, the one with the
    fewest CPU-seconds, then GB-seconds. Where the price counts memory only (a gateway's),
    one and two CPUs for single-threaded tasks came 0.2 % apart, either way from run to
    run, and two CPUs a worker on two cores ran Montage's tasks in pairs on threads, each
    at half speed under the GIL."""
    usd = min(p.schedule.cost.usd for p in plans)
    near = [p for p in plans if p.schedule.cost.usd <= usd * (1 + COST_TIE)]
    return min(near, key=lambda p: (p.schedule.cost.vcpu_s, p.schedule.cost.gb_s))


# --------------------------------------------------------------------------- planners


def plan_uniform(problem: Problem) -> Decided:
    sizes = _OneSize(problem, _Costs(problem))
    return sizes.cheapest(sizes.largest.schedule.makespan_s * (1 + UNIFORM_SLACK)) or sizes.largest


def plan_critical_path(problem: Problem) -> Decided:
    costs = _Costs(problem)
    largest = [len(s) - 1 for s in costs.sizes]
    reference = _plan(problem, costs, largest)
    limit = reference.schedule.makespan_s * (1 + CRITICAL_PATH_SLACK)
    shrunk = _tightened(
        problem, costs, largest, limit, 1 + CRITICAL_PATH_SLACK, "smallest", _resources, True
    )
    return shrunk or reference


def _resources(plan: Decided) -> tuple[float, float]:
    """What critical-path saves: CPU-seconds, then memory-seconds."""
    return plan.schedule.cost.vcpu_s, plan.schedule.cost.gb_s


def plan_deadline(problem: Problem) -> Decided:
    deadline = problem.deadline_s
    assert deadline is not None, "the deadline planner needs a deadline"
    costs = _Costs(problem)
    start = [costs.fastest(t) for t in range(len(costs.sizes))]
    fastest = _plan(problem, costs, start)
    one_size = _OneSize(problem, costs, reference=fastest)
    candidates = [fastest]
    if fastest.schedule.makespan_s > deadline:  # the largest size's groups may do better
        candidates.append(one_size.largest)
    quickest = min(candidates, key=lambda p: p.schedule.makespan_s)
    makespan = quickest.schedule.makespan_s
    if makespan > deadline:
        log.warning(
            "planner deadline: no plan meets the deadline of %.3f s; the fastest is predicted "
            "at %.3f s, %.3f s (%.0f %%) over it",
            deadline,
            makespan,
            makespan - deadline,
            100 * (makespan - deadline) / deadline,
        )
        return quickest
    stretch = deadline / candidates[0].schedule.makespan_s if makespan > 0 else 1.0
    tightened = _tightened(problem, costs, start, deadline, stretch, "cheapest", _usd)
    beat = math.inf
    if tightened is not None:
        candidates.append(tightened)
        beat = tightened.schedule.cost.usd
    one = one_size.cheapest(deadline, tries=2, beat=beat)
    if one is not None:
        candidates.append(one)
    feasible = [p for p in candidates if p.schedule.makespan_s <= deadline * (1 + 1e-9)]
    return min(feasible, key=lambda p: (p.schedule.cost.usd, p.schedule.makespan_s))


def _usd(plan: Decided) -> float:
    return plan.schedule.cost.usd


def _critical_path(problem: Problem, costs: _Costs, choice: Sequence[int]) -> float:
    seconds = [costs.seconds[t][i] for t, i in enumerate(choice)]
    return max(_earliest(problem.shape, seconds, costs), default=0.0)


#: optimizing: the fan-outs it tries clustering, largest predicted outputs first.
CLUSTER_TRIES = 32
#: optimizing: how much a change must shorten the predicted makespan to be kept (within the
#: predictions' noise it would only add risk).
OPTIMIZE_GAIN = 0.02


def plan_optimizing(problem: Problem) -> Decided:
    """critical-path's plan, then each fan-out clustered on its producer's worker where the
    simulator predicts a makespan shorter by :data:`OPTIMIZE_GAIN` or more: the groups of
    its children (each child and the work it readies) join the producer's group, so its
    worker runs them with the output in memory, uploading nothing for them. Largest
    predicted outputs first, each judged against the plan so far. Then, each for the whole
    run where it pays: fan-ins clustered where their inputs are, holding back for fan-ins
    (pre-load or delayed I/O), timed pre-warm. Optimizations the run forces on or off are
    left as they are (the simulator plays the forced ones)."""
    best = plan_critical_path(problem)
    if problem.forced is not None:
        for name in ("preload", "delayed-io"):  # the fan-ins' holders the plan names
            if name in problem.forced:
                best = _fan_in_groups(problem, best, name, problem.tuning)
        if "prewarm" in problem.forced:  # timed by the plan
            tuning = replace(best.tuning or problem.tuning, warm_after=_warm_after(problem, best))
            work = _work(_Costs(problem), problem, best.sizes)
            schedule = simulate(problem.shape, work, problem.model, best.groups, tuning=tuning)
            best = Decided(best.sizes, best.groups, schedule, best.optimized, tuning)
        return best
    costs = _Costs(problem)
    shape, model = problem.shape, problem.model
    fan_outs = [t for t, children in enumerate(shape.children) if len(children) > 1]
    fan_outs.sort(key=lambda t: -costs.out[t])
    clustered: list[int] = []
    for task in fan_outs[:CLUSTER_TRIES]:
        if costs.out[task] <= 0:
            break
        groups = cluster_groups(best.groups, task, shape.children[task])
        if groups == best.groups:
            continue
        sized = _group_sizes(best.sizes, groups)
        work = _work(costs, problem, sized)
        schedule = simulate(shape, work, model, groups, tuning=problem.tuning)
        if schedule.makespan_s < best.schedule.makespan_s * (1 - OPTIMIZE_GAIN):
            best = Decided(sized, groups, schedule)
            clustered.append(task)
    best.optimized = {"cluster": clustered} if clustered else {}
    # Fan-ins where their inputs are, run-wide: an output waits unstored for the fan-in
    # its worker makes (shoal.optimizations.cluster), if it pays.
    fan_ins = [t for t, deps in enumerate(shape.deps) if len(deps) > 1]
    now_above = (best.tuning or problem.tuning).aside_above  # the default sets some aside
    above = aside_threshold(model)
    if fan_ins and (now_above is None or above < now_above):
        tuning = replace(best.tuning or problem.tuning, aside_above=above)
        work = _work(costs, problem, best.sizes)
        schedule = simulate(shape, work, model, best.groups, tuning=tuning)
        if schedule.makespan_s < best.schedule.makespan_s * (1 - OPTIMIZE_GAIN):
            optimized = {"cluster": clustered + fan_ins}
            best = Decided(best.sizes, best.groups, schedule, optimized, tuning)
    aside_above = best.tuning.aside_above if best.tuning else None
    # Holding back for fan-ins, run-wide: the better of the two, if it pays.
    base = best
    for name in ("preload", "delayed-io"):
        tuning = replace(
            tuning_for(frozenset({"invoke-tree", name}), model), aside_above=aside_above
        )
        held = _fan_in_groups(problem, base, name, tuning)
        if held.schedule.makespan_s < best.schedule.makespan_s * (1 - OPTIMIZE_GAIN):
            held.optimized = {**base.optimized, **held.optimized}
            best = held
    # Pre-warm, where children need sizes their parents' workers are not: timed.
    warm_after = _warm_after(problem, best)
    if warm_after:
        tuning = replace(best.tuning or problem.tuning, prewarm=True, warm_after=warm_after)
        work = _work(costs, problem, best.sizes)
        schedule = simulate(shape, work, model, best.groups, tuning=tuning)
        if schedule.makespan_s < best.schedule.makespan_s * (1 - OPTIMIZE_GAIN):
            optimized = {**best.optimized, "prewarm": [t for t, _ in warm_after]}
            best = Decided(best.sizes, best.groups, schedule, optimized, tuning)
    return best


def _warm_after(problem: Problem, plan: Decided) -> tuple[tuple[int, float], ...]:
    """Per task whose children need another size than its own, when its worker should
    warm one, in seconds after that worker starts: ready (a cold start later) half the
    platform's keep-warm period before the earliest such child is predicted ready (its
    last input's end), so that an error either way still finds it warm (at once where
    that is already past, as on a FaaS platform keeping idle instances for minutes)."""
    schedule, sizes = plan.schedule, plan.sizes
    first: dict[int, float] = {}  # each worker's first task start
    for t, w in enumerate(schedule.worker):
        first[w] = min(first.get(w, math.inf), schedule.start[t])
    lead = problem.model.handout_cold_s + problem.model.keep_warm_s / 2
    timing = []
    for t, children in enumerate(problem.shape.children):
        other = [
            max(schedule.end[d] for d in problem.shape.deps[c])
            for c in children
            if sizes[c] != sizes[t]
        ]
        if other:
            delay = min(other) - lead - first[schedule.worker[t]]
            timing.append((t, max(0.0, round(delay, 4))))
    return tuple(timing)


def _fan_in_groups(problem: Problem, plan: Decided, name: str, tuning: Tuning) -> Decided:
    """``plan`` with each fan-in in the group of the input whose worker should hold back
    for it (the plan names that worker: :func:`shoal.optimizations.fanin.holder`): for
    pre-load the input predicted to end first (it reads the others as they land), for
    delayed I/O the one with the largest output (the one worth keeping home); simulated
    with ``tuning``."""
    groups, end = list(plan.groups), plan.schedule.end
    costs = _Costs(problem)
    fan_ins = []
    for task, deps in enumerate(problem.shape.deps):
        if len(deps) > 1:
            fan_ins.append(task)
            if name == "preload":
                chosen = min(deps, key=lambda d: end[d])
            else:
                chosen = max(deps, key=lambda d: (costs.out[d], -end[d]))
            groups[task] = groups[chosen]
    if not fan_ins:
        return plan
    sized = _group_sizes(plan.sizes, groups)
    work = _work(costs, problem, sized)
    schedule = simulate(problem.shape, work, problem.model, groups, tuning=tuning)
    return Decided(sized, groups, schedule, {name: fan_ins}, tuning)


def cluster_groups(groups: Sequence[int], task: int, children: Sequence[int]) -> list[int]:
    """``groups`` with the groups of ``task``'s children merged into ``task``'s own."""
    mine = groups[task]
    joining = {groups[c] for c in children} - {mine}
    return _renumber([mine if g in joining else g for g in groups])


PLANNERS: dict[str, Planner | None] = {
    "none": None,
    "uniform": plan_uniform,
    "critical-path": plan_critical_path,
    "deadline": plan_deadline,
    "optimizing": plan_optimizing,
}
