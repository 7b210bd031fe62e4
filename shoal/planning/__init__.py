"""Planning: from the history of a workflow, a size and a worker group per task, with the
predicted start and end of every task, the makespan and the cost.

    predict.py    per task at the SLA: duration on any size (a scaling law), CPU, output
                  bytes, memory
    model.py      the backend: starts, store costs, concurrency, sizes, shared CPUs, price
    simulate.py   plan + predictions + backend -> the schedule, as the protocol runs it
    planners.py   none, uniform, critical-path, deadline, optimizing (pure functions,
                  by name)
    cost.py       the price table

``compute(planner=…, sla=…, deadline=…)`` asks :func:`make_plan` before shipping the graph;
the protocol then runs each task on a worker of its planned size and group.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # imported where used: the CLI needs this package's names, fast
    from ..backends import Platform, Size
    from ..graph import Graph
    from ..history import History
    from ..history.records import Cost, RunRecord
    from ..optimizations import Tuning

log = logging.getLogger(__name__)

PLANNER_NAMES = ("none", "uniform", "critical-path", "deadline", "optimizing")
#: The newest runs of a workflow whose tasks the predictions learn from one by one.
RECENT_RUNS = 10
_SLA = re.compile(r"mean|p([1-9]|[1-9][0-9])")


@dataclass
class Plan:
    """What a planner decided, and what the simulator predicts of it. Times are seconds
    from the run's first task start, as the run's record measures them."""

    planner: str
    sla: str
    sizes: list[Size]  # per task
    groups: list[int]  # per task: tasks of one group run on one worker
    times: list[tuple[float, float]]  # per task: predicted start and end
    makespan_s: float
    cost: Cost
    deadline_s: float | None = None
    planning_s: float = 0.0  # how long planning took
    #: The tasks each optimization was turned on for, by name (the optimizing planner).
    optimized: dict[str, list[int]] = field(default_factory=dict)
    #: Run-wide optimizations the plan turns on (None: the run's own).
    tuning: Tuning | None = None


def _widths(recent: Sequence[RunRecord]) -> dict[int, int]:
    """Each map's predicted width: the median of the recent runs' (the latest first)."""
    seen: dict[int, list[int]] = {}
    for run in recent:
        for expander, n in run.widths.items():
            seen.setdefault(int(expander), []).append(n)
    return {x: int(statistics.median_low(ns)) for x, ns in seen.items()}


def _static(tuning: Tuning | None, size: int) -> Tuning | None:
    """``tuning`` with its per-task timings for the graph's own tasks only: a map's
    elements get ids at run time, not those the plan predicted them at."""
    if tuning is None or not tuning.warm_after:
        return tuning
    return dataclasses.replace(
        tuning, warm_after=tuple((t, s) for t, s in tuning.warm_after if t < size)
    )


def check_options(planner: str, sla: str, deadline: float | None) -> None:
    """Refuse, before anything runs, a planner, SLA or deadline that cannot be honoured."""
    if planner not in PLANNER_NAMES:
        raise ConfigError(
            f"unknown planner {planner!r}: expected one of {', '.join(PLANNER_NAMES)}"
        )
    if not isinstance(sla, str) or not _SLA.fullmatch(sla):
        raise ConfigError(f"sla must be 'mean' or a percentile 'p1' to 'p99', got {sla!r}")
    if deadline is not None and planner != "deadline":
        raise ConfigError(
            f"a deadline needs planner='deadline' (got planner={planner!r}): the other "
            "planners do not aim at one"
        )
    if planner == "deadline":
        if deadline is None:
            raise ConfigError("planner='deadline' needs deadline=SECONDS")
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline!r}")


def rank_tasks(graph: Graph, history: History, backend: str) -> list[float] | None:
    """Each task's rank: its predicted longest path to the graph's end, itself included
    (its bottom level), by how long each task ran in the newest run of this workflow, if
    it went well on ``backend`` (a task it lacks: its function's mean there); None without
    one, or where no task ran for as long as a store step (their order is noise). Cheap
    (no model, no simulation): every run of a known workflow without a plan asks it. A
    worker then runs a ready task that leads to much more work before one that leads to
    little (:func:`shoal.decisions.most_urgent`)."""
    from ..history.records import COLUMN

    last = next(  # the newest first alone: decoding a run's record is most of the cost
        (r for r in history.runs(graph.structure_hash, limit=1) if r.backend == backend and r.ok),
        None,
    )
    if last is None:
        return None
    task_i, fn_i, run_i = COLUMN["task"], COLUMN["function"], COLUMN["run_s"]
    sums: dict[str, list[float]] = {}
    seconds = [-1.0] * len(graph)
    for row in last.rows:
        if row[run_i] is None:
            continue
        run_s = row[run_i] / 1e6  # stored in microseconds
        if row[task_i] < len(seconds):
            seconds[row[task_i]] = run_s
        total = sums.setdefault(last.functions[row[fn_i]][0], [0.0, 0.0])
        total[0] += run_s
        total[1] += 1
    keys = [f.key for f in graph.functions]
    for t, f in enumerate(graph.func_of):
        if seconds[t] < 0:
            ran, count = sums.get(keys[f], (0.0, 0.0))
            seconds[t] = ran / count if count else 0.0
    return rank_by(graph, seconds)


def rank_by(graph: Graph, seconds: list[float]) -> list[float] | None:
    """Each task's rank (:func:`rank_tasks`) by how long each task ran (``seconds``);
    None where no task ran for as long as a store step."""
    from ..decisions import SMALL_TASK_S
    from .work import Shape, bottom_levels

    if max(seconds, default=0.0) < SMALL_TASK_S:
        return None
    return bottom_levels(Shape.of(graph), seconds)


def make_plan(
    graph: Graph,
    history: History,
    *,
    planner: str,
    sla: str,
    deadline: float | None,
    backend: str,
    platform: Platform,
    cap: int,
    tuning: Tuning | None = None,
    forced: frozenset[str] | None = None,
) -> Plan | None:
    """The plan ``planner`` makes for ``graph`` on ``backend`` from ``history``; None for
    ``none``, and (saying so in the log) when the history holds no earlier run of this
    workflow on this backend kind. ``tuning``/``forced``: the optimizations the run forces
    on (the simulator plays them), and their names (None: the planner's choice)."""
    from ..backends import Size
    from ..graph.maps import predicted
    from .model import BackendModel
    from .planners import PLANNERS, Problem
    from .predict import Predictor
    from .work import Shape

    chosen = PLANNERS[planner]
    if chosen is None:
        return None
    started = time.perf_counter()
    stats = history.function_stats(graph.structure_hash, backend)
    if not stats:
        log.info(
            "planner %s: no earlier run of workflow %s on %s in the history %s; running "
            "without a plan (planner none)",
            planner,
            graph.structure_hash,
            backend,
            history.url,
        )
        return None
    model = BackendModel.learn(backend, history.backend_stats(backend), sla, platform, cap)
    recent = [
        run
        for run in history.runs(graph.structure_hash, limit=RECENT_RUNS)
        if run.backend == backend and run.ok
    ]
    predictor = Predictor(stats, sla, model, recent)
    func_of, shape = graph.func_of, Shape.of(graph)
    if graph.families:  # each map as wide as it was, as the recent runs' records number it
        func_of, deps = predicted(graph, _widths(recent))
        children: list[list[int]] = [[] for _ in deps]
        for task, inputs in enumerate(deps):
            for d in inputs:
                children[d].append(task)
        shape = Shape(deps, children, frozenset(graph.sinks))
    functions = [graph.functions[f].key for f in func_of]
    unseen = sorted({f for f in functions if not predictor.known(f)})
    if unseen:
        log.info("planner %s: never saw %s; predicted with defaults", planner, ", ".join(unseen))
    declared = []
    for f in func_of:
        options = graph.functions[f].options
        wanted = options.cpus is not None or options.memory_mb is not None
        declared.append(Size.fitting([options]) if wanted else None)
    problem = Problem(shape, functions, declared, predictor, model, sla, deadline)
    if tuning is not None:
        problem.tuning, problem.forced = tuning, forced
    decided = chosen(problem)
    schedule = decided.schedule
    plan = Plan(
        planner=planner,
        sla=sla,
        sizes=decided.sizes,
        groups=decided.groups,
        times=list(zip(schedule.start, schedule.end, strict=True)),
        makespan_s=schedule.makespan_s,
        cost=schedule.cost,
        deadline_s=deadline,
        planning_s=time.perf_counter() - started,
        optimized=decided.optimized,
        tuning=_static(decided.tuning, len(graph)),
    )
    log.info(
        "planner %s: %d tasks in %d groups, predicted makespan %.3f s at %s, cost %.6f USD "
        "(planned in %.3f s)",
        planner,
        len(graph),
        len(set(plan.groups)),
        plan.makespan_s,
        sla,
        plan.cost.usd,
        plan.planning_s,
    )
    for name, tasks in plan.optimized.items():
        log.info("planner %s: %s on for %d tasks", planner, name, len(tasks))
    return plan
