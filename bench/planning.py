"""Planning benchmarks: ``python -m bench.planning BENCH`` (see ``--help``).

- ``cost``      in the simulator, on a Lambda model (CPU share proportional to memory,
                128 MB-10 GB), WfCommons-shaped workflows of ~1 000 tasks: GB-s of the
                ``deadline`` planner at 1.1x the makespan of uniform-largest, against
                uniform-largest and against the cheapest single size meeting that deadline.
- ``plan-time`` how long each planner takes on a 10 000-task graph.
- ``history``   1 000 runs of one workflow into a fresh SQLite history: the file's size.
- ``policies``  cost per task of each metrics upload policy, on Redis + gateway.
- ``accuracy``  predicted vs real makespan on Redis + gateway, WfCommons-shaped workflows
                whose tasks really compute (trace runtimes scaled to seconds) and the text
                pipeline example: the error of each run after the first five.
- ``sizing``    critical-path against uniform 2-CPU on the real gateway, a workflow mixing
                multi-threaded NumPy tasks with pure-Python ones: makespan and vCPU-s.

WfCommons traces give runtimes and output sizes, not memory or threads: the cost bench
gives each task category a peak memory (log-uniform 100 MB-3 GB) and a parallel fraction
(0, 0, 0.5 or 0.9 of its work), drawn once from a seeded generator, and says so.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from shoal.backends import Platform, Size
from shoal.history import BackendStats, FunctionStats, RunRecord, StatsKey, TaskRecord
from shoal.history.stats import Summary
from shoal.planning.model import BackendModel
from shoal.planning.planners import (
    PLANNERS,
    Decided,
    Problem,
    _Costs,
    _OneSize,
    _plan_sized,
)
from shoal.planning.predict import Predictor
from shoal.planning.work import Shape

from .wfcommons import WfTask, workflow

LAMBDA_MB_PER_VCPU = 1769
COST_RECIPES = ("montage", "epigenomics", "cycles", "genome")


# --------------------------------------------------------------------------- the Lambda model


def lambda_model() -> BackendModel:
    """AWS Lambda as the simulator sees it: CPU follows memory, no shared machine, 1 000
    concurrent workers, cold starts of a quarter second, S3-like store bandwidth."""
    platform = Platform(None, 300.0, {}, cpu_per_mb=1 / LAMBDA_MB_PER_VCPU)
    model = BackendModel.learn("lambda", BackendStats(), "mean", platform, cap=1000)
    model.handout_cold_s, model.handout_warm_s = 0.25, 0.03
    model.read_latency_s, model.read_s_per_byte = 0.02, 1 / 90e6
    model.write_s_per_byte = 1 / 90e6
    return model


def profiles(tasks: Sequence[WfTask], seed: int) -> dict[str, tuple[float, float]]:
    """Per task category: (peak MB, parallel fraction), drawn once from ``seed``."""
    rng = random.Random(seed)
    out = {}
    for category in sorted({t.category for t in tasks}):
        peak = math.exp(rng.uniform(math.log(100), math.log(3000)))
        out[category] = (peak, rng.choice((0.0, 0.0, 0.5, 0.9)))
    return out


def wf_problem(
    tasks: Sequence[WfTask], model: BackendModel, seed: int = 0, deadline: float | None = None
) -> Problem:
    """A planning problem whose predictions are the workflow's own numbers: each category's
    runtimes on one vCPU and on six, its peak, and each task's runtime as if run once."""
    n = len(tasks)
    children: list[list[int]] = [[] for _ in range(n)]
    for t in tasks:
        for p in t.parents:
            children[p].append(t.id)
    shape = Shape(
        [t.parents for t in tasks], children, frozenset(i for i in range(n) if not children[i])
    )
    prof = profiles(tasks, seed)
    big = model.sizes(10240)[-1]
    big_cpus = model.cpus_of(big)
    stats: dict[StatsKey, FunctionStats] = {}
    for category, (peak, parallel) in prof.items():
        runs = [t.runtime_s for t in tasks if t.category == category]
        outs = [float(t.output_bytes) for t in tasks if t.category == category]
        on_big = [r * ((1 - parallel) + parallel / big_cpus) for r in runs]
        for size, durations in ((Size(1.0, LAMBDA_MB_PER_VCPU), runs), (big, on_big)):
            stats[StatsKey(category, size.cpus, size.memory_mb, "lambda")] = FunctionStats(
                duration=Summary.of(durations),
                cpu=Summary.of(runs),
                output=Summary.of(outs),
                peak_mb=Summary.of([peak]),
            )
    recent = RunRecord("seen", "wf", "wf", 0.0, "lambda", "s3", ok=True)
    recent.set_tasks([
        TaskRecord(t.id, f"{t.category}-{t.id}", t.category, 1.0, LAMBDA_MB_PER_VCPU,
                   run_s=t.runtime_s, out_bytes=t.output_bytes)
        for t in tasks
    ])  # fmt: skip
    predictor = Predictor(stats, "mean", model, [recent])
    functions = [t.category for t in tasks]
    return Problem(shape, functions, [None] * n, predictor, model, "mean", deadline)


def cost(recipes: Sequence[str], size: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for recipe in recipes:
        tasks = workflow(recipe, size, seed)
        problem = wf_problem(tasks, lambda_model(), seed)
        costs = _Costs(problem)
        one_size = _OneSize(problem, costs)
        uniform = [one_size.plan(size) for size in one_size.sizes]  # smallest first
        largest = uniform[-1]
        deadline = 1.1 * largest.schedule.makespan_s
        meeting = [p for p in uniform if p.schedule.makespan_s <= deadline]
        best_one = min(meeting, key=lambda p: p.schedule.cost.gb_s)
        problem.deadline_s = deadline
        started = time.perf_counter()
        planned = PLANNERS["deadline"](problem)  # type: ignore[misc]
        took = time.perf_counter() - started
        rows.append(
            {
                "recipe": recipe,
                "seed": seed,
                "tasks": len(tasks),
                "deadline_s": deadline,
                "largest": _figures(largest),
                "best_one_size": {**_figures(best_one), "size_mb": best_one.sizes[0].memory_mb},
                "deadline": _figures(planned),
                "vs_largest": planned.schedule.cost.gb_s / largest.schedule.cost.gb_s,
                "vs_best_one_size": planned.schedule.cost.gb_s / best_one.schedule.cost.gb_s,
                "bound_vs_largest": deadline_bound(problem, costs, deadline)
                / largest.schedule.cost.gb_s,
                "planning_s": took,
            }
        )
    return rows


def deadline_bound(problem: Problem, costs: _Costs, deadline: float) -> float:
    """A lower bound on the GB-s of any plan meeting ``deadline``: each task on its cheapest
    size that fits the time the longest path through it leaves when every other task runs
    at its fastest, moves no data and starts no worker."""
    shape = problem.shape
    fastest = [min(s) for s in costs.seconds]
    before, after = [0.0] * len(fastest), [0.0] * len(fastest)
    for t, deps in enumerate(shape.deps):
        before[t] = max((before[d] + fastest[d] for d in deps), default=0.0)
    for t in range(len(fastest) - 1, -1, -1):
        after[t] = max((after[c] + fastest[c] for c in shape.children[t]), default=0.0)
    total = 0.0
    for t, (seconds, sizes) in enumerate(zip(costs.seconds, costs.sizes, strict=True)):
        window = deadline - before[t] - after[t]
        total += min(
            (s * z.memory_mb / 1024 for s, z in zip(seconds, sizes, strict=True) if s <= window),
            default=fastest[t] * sizes[-1].memory_mb / 1024,
        )
    return total


def _figures(decided: Decided) -> dict[str, float]:
    return {"makespan_s": decided.schedule.makespan_s, "gb_s": decided.schedule.cost.gb_s}


def print_cost(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'recipe':12} {'seed':>4} {'tasks':>5} {'deadline':>9} {'largest GB-s':>13} "
        f"{'best 1-size':>16} {'deadline GB-s':>14} {'vs largest':>10} {'vs best':>8} "
        f"{'bound':>6} {'plan s':>7}"
    )
    for r in rows:
        best = r["best_one_size"]
        print(
            f"{r['recipe']:12} {r['seed']:4d} {r['tasks']:5d} {r['deadline_s']:8.0f}s "
            f"{r['largest']['gb_s']:13.0f} "
            f"{best['gb_s']:9.0f} ({best['size_mb']:>5}) {r['deadline']['gb_s']:14.0f} "
            f"{r['vs_largest']:10.2f} {r['vs_best_one_size']:8.2f} {r['bound_vs_largest']:6.2f} "
            f"{r['planning_s']:7.2f}"
        )
    if len(rows) > 1:
        print(
            f"{'geomean':12} {'':4} {'':5} {'':9} {'':13} {'':16} {'':14} "
            f"{_geomean(r['vs_largest'] for r in rows):10.2f} "
            f"{_geomean(r['vs_best_one_size'] for r in rows):8.2f} "
            f"{_geomean(r['bound_vs_largest'] for r in rows):6.2f}"
        )


def _geomean(values: Iterable[float]) -> float:
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs))


def plan_time(size: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for recipe in ("montage", "epigenomics"):
        tasks = workflow(recipe, size, seed)
        for name in ("uniform", "critical-path", "deadline"):
            problem = wf_problem(tasks, lambda_model(), seed)
            if name == "deadline":
                problem.deadline_s = (
                    1.1
                    * _plan_sized(
                        problem, _Costs(problem), [problem.model.sizes(10240)[-1]] * len(tasks)
                    ).schedule.makespan_s
                )
            started = time.perf_counter()
            PLANNERS[name](problem)  # type: ignore[misc]
            rows.append({"recipe": recipe, "tasks": len(tasks), "planner": name,
                         "seconds": time.perf_counter() - started})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.planning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "bench", choices=("cost", "plan-time", "accuracy", "sizing", "policies", "history")
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="cost: seeds from --seed on")
    p.add_argument("--size", type=int, default=None, help="tasks per workflow")
    p.add_argument("--runs", type=int, default=10, help="accuracy: runs per workload")
    p.add_argument("--after", type=int, default=5, help="accuracy: runs before counting")
    p.add_argument("--seconds", type=float, default=3.0, help="accuracy: a run's length")
    p.add_argument("--recipes", default=None, help="comma list of recipes ('': none)")
    args = p.parse_args(argv)
    if args.bench == "cost":
        recipes = args.recipes.split(",") if args.recipes else COST_RECIPES
        seeds = range(args.seed, args.seed + args.seeds)
        print_cost([row for seed in seeds for row in cost(recipes, args.size or 1000, seed)])
    elif args.bench == "plan-time":
        for row in plan_time(args.size or 10_000, args.seed):
            print(f"{row['recipe']:12} {row['tasks']:6d} {row['planner']:14} "
                  f"{row['seconds']:.3f} s")  # fmt: skip
    elif args.bench == "accuracy":
        from .live import accuracy, print_accuracy

        recipes = [r for r in (args.recipes or "montage,epigenomics,cycles").split(",") if r]
        rows = accuracy(recipes, args.size or 250, args.runs, args.seconds)
        print_accuracy(rows, args.after)
    elif args.bench == "sizing":
        from .live import sizing

        result = sizing(args.runs if args.runs != 10 else 3)
        for name in ("uniform-2cpu", "critical-path"):
            r = result[name]
            print(f"{name:14} makespan {r['makespan_s']:.3f} s  vCPU-s {r['vcpu_s']:.3f}")
        print(f"critical-path / uniform-2cpu: makespan {result['makespan_ratio']:.2f}x, "
              f"vCPU-s {result['vcpu_ratio']:.2f}x; sizes {result['sizes']}")  # fmt: skip
    elif args.bench == "policies":
        from .live import policies, print_policies

        print_policies(policies(("chain", "tree", "fan"), args.size or 2000, 3))
    elif args.bench == "history":
        from .live import history_size

        result = history_size(args.runs if args.runs != 10 else 1000, args.size or 20)
        for runs, nbytes in result["sizes"]:
            print(f"after {runs:5d} runs: {nbytes / 1e6:6.2f} MB")
        print(f"{result['kept']} runs kept of {result['runs']} ({result['tasks']} tasks each); "
              f"{1000 * result['seconds_per_run']:.1f} ms a run, recording included")  # fmt: skip


if __name__ == "__main__":
    main()
