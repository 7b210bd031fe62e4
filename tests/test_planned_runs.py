"""Planned runs on every backend: the protocol honours a plan (each task on a worker of its
planned size and group), the record keeps planned vs real, and bad options are refused
before anything runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from signals import refused_before_running

import shoal


@shoal.task
def spin(i: int, seconds: float) -> int:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


@shoal.task
def join(xs: list[int]) -> int:
    return sum(xs)


def _workflow() -> shoal.Node:
    # two long chains and two short ones, joined: the short ones have slack
    chains = [spin(spin(i, 0.03 if i < 2 else 0.005), 0.03 if i < 2 else 0.005) for i in range(4)]
    return join(chains)


@pytest.mark.parametrize("planner", ["uniform", "critical-path", "deadline"])
def test_a_planned_run_runs_every_task_on_its_planned_size_and_group(
    engine: dict[str, Any], tmp_path: Path, planner: str
) -> None:
    where = str(tmp_path / "h.db")
    # The plan's own say: forced clustering would override its groups (as forced should).
    engine = {**engine, "optimizations": []}
    for _ in range(2):  # history to plan from
        assert _workflow().compute(**engine, history=where) == 6
    options = {"deadline": 10.0} if planner == "deadline" else {}
    assert _workflow().compute(**engine, history=where, planner=planner, sla="p90", **options) == 6
    summary = shoal.last_run()
    assert summary is not None and summary.planner == planner and summary.sla == "p90"
    assert summary.predicted_makespan_s is not None and summary.predicted_makespan_s > 0
    assert summary.prediction_error is not None and "planned" in str(summary)
    run = shoal.history(where).runs(limit=1)[0]
    assert (run.planner, run.sla, run.predicted_makespan_s) == (
        planner,
        "p90",
        summary.predicted_makespan_s,
    )
    assert run.predicted_cost is not None and run.predicted_cost.gb_s > 0
    groups_of_worker: dict[str, set[int]] = {}
    for t in run.tasks:
        assert t.group is not None and t.predicted_end is not None and t.end is not None
        if not t.name.startswith("join"):
            groups_of_worker.setdefault(t.worker, set()).add(t.group)
    # a worker runs the tasks of one group only; the join, a fan-in of chains planned
    # apart, runs on whichever chain's worker readies it (shoal.decisions.floating)
    assert all(len(groups) == 1 for groups in groups_of_worker.values())
    joined = next(t for t in run.tasks if t.name.startswith("join"))
    assert joined.worker in groups_of_worker
    planned = _planned_sizes(run)
    for t in run.tasks:
        assert (t.cpus, t.memory_mb) == planned[t.group], f"{t.name} ran off its planned size"


def _planned_sizes(run: Any) -> dict[int, tuple[float, int]]:
    """The size each group ran on, checked to be one per group."""
    sizes: dict[int, set[tuple[float, int]]] = {}
    for t in run.tasks:
        sizes.setdefault(t.group, set()).add((t.cpus, t.memory_mb))
    assert all(len(s) == 1 for s in sizes.values()), sizes
    return {g: next(iter(s)) for g, s in sizes.items()}


def test_without_history_a_planner_says_so_and_runs_unplanned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="shoal.planning"):
        assert _workflow().compute(history=str(tmp_path / "h.db"), planner="uniform") == 6
    assert "no earlier run of workflow" in caplog.text and "planner none" in caplog.text
    summary = shoal.last_run()
    assert summary is not None and summary.planner == "none"
    assert summary.predicted_makespan_s is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"planner": "fastest"}, "unknown planner 'fastest'"),
        ({"sla": "p100"}, "sla must be 'mean' or a percentile"),
        ({"sla": "median"}, "sla must be"),
        ({"deadline": 3.0}, "a deadline needs planner='deadline'"),
        ({"planner": "deadline"}, "needs deadline=SECONDS"),
        ({"planner": "deadline", "deadline": -1}, "deadline must be a positive"),
    ],
)
def test_bad_planning_options_are_refused_before_anything_runs(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    assert message in refused_before_running(tmp_path, **options)
