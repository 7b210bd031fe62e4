"""Small planning problems and records the planning tests share."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from shoal.backends import Platform, Size
from shoal.history import BackendStats, FunctionStats, RunRecord, StatsKey
from shoal.history.records import TaskRecord
from shoal.history.stats import Summary
from shoal.planning.model import BackendModel
from shoal.planning.planners import Problem
from shoal.planning.predict import Predictor
from shoal.planning.work import Shape, Work


def backend_model(kind: str = "gateway", **changes: Any) -> BackendModel:
    platform = Platform(changes.pop("capacity", None), 60.0, {}, changes.pop("cpu_per_mb", None))
    model = BackendModel.learn(kind, BackendStats(), "mean", platform, changes.pop("cap", 4))
    for name, value in changes.items():
        setattr(model, name, value)
    return model


def function_stats(
    durations: list[float],
    cpu: list[float] | None = None,
    output: float = 100.0,
    peak: float | None = None,
) -> FunctionStats:
    return FunctionStats(
        duration=Summary.of(durations),
        cpu=Summary.of(cpu or []),
        output=Summary.of([output] * len(durations)),
        peak_mb=Summary.of([] if peak is None else [peak]),
    )


def run_of(tasks: list[tuple[str, float, float, float]], deps: list[list[int]]) -> RunRecord:
    """A run of ``tasks`` (worker, start, end, upload seconds), each of function m.f."""
    run = RunRecord("r", "wf", "f", 0.0, "gateway", "redis", ok=True)
    run.set_tasks([
        TaskRecord(t, f"f-{t}", "m.f", 1.0, 2048, w, start=s, end=e, run_s=e - s, read_s=0.0,
                   upload_s=u)
        for t, (w, s, e, u) in enumerate(tasks)
    ])  # fmt: skip
    run.deps = deps
    return run


def free_backend(
    kind: str = "lambda",
    cap: int = 100,
    capacity: float | None = None,
    cpu_per_mb: float | None = None,
) -> BackendModel:
    """A backend where nothing but the tasks takes time."""
    return backend_model(
        kind,
        cap=cap,
        capacity=capacity,
        cpu_per_mb=cpu_per_mb,
        handout_cold_s=0.0,
        handout_warm_s=0.0,
        gap_s=0.0,
        read_latency_s=0.0,
        read_s_per_byte=0.0,
        write_latency_s=0.0,
        write_s_per_byte=0.0,
    )


def shape_of(deps: list[tuple[int, ...]]) -> Shape:
    children: list[list[int]] = [[] for _ in deps]
    for t, ds in enumerate(deps):
        for d in ds:
            children[d].append(t)
    sinks = frozenset(t for t in range(len(deps)) if not children[t])
    return Shape(deps, children, sinks)


def work_of(durations: list[float], demand: float = 1.0) -> Work:
    n = len(durations)
    return Work(list(durations), [demand] * n, [1000.0] * n, [Size()] * n)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[float]]:
    n = draw(st.integers(1, 25))
    deps = [
        tuple(sorted(set(draw(st.lists(st.integers(0, t - 1), max_size=3))))) if t else ()
        for t in range(n)
    ]
    durations = draw(st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n))
    return deps, durations


def problem_of(
    deps: list[tuple[int, ...]],
    functions: list[str],
    stats: dict[StatsKey, FunctionStats],
    model: BackendModel,
    deadline: float | None = None,
) -> Problem:
    predictor = Predictor(stats, "mean", model)
    return Problem(
        shape_of(deps), functions, [None] * len(deps), predictor, model, "mean", deadline
    )


def reduction_shape(leaves: int) -> Shape:
    deps: list[tuple[int, ...]] = [()] * leaves
    level = list(range(leaves))
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            deps.append((level[i], level[i + 1]))
            nxt.append(len(deps) - 1)
        level = nxt
    return shape_of(deps)
