"""The history as tables of text: what ``shoal history`` prints (pure functions of the
records, so they are tested without a terminal)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .base import Workflow
from .records import RunRecord, TaskRecord

WORKFLOW_COLUMNS = ("workflow", "name", "runs", "last run")
RUN_COLUMNS = (
    "run", "workflow", "started", "status", "planner", "tasks", "makespan", "planned",
    "wall", "GB-s", "USD",
)  # fmt: skip
TASK_COLUMNS = (
    "task", "size", "worker", "group", "plan start", "plan end", "start", "end", "error",
)  # fmt: skip


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def seconds(value: float | None, signed: bool = False) -> str:
    """Seconds for people: milliseconds below one."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if abs(value) < 1:
        return f"{value * 1000:{sign}.1f} ms"
    return f"{value:{sign}.3f} s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def workflow_rows(workflows: Sequence[Workflow]) -> list[tuple[str, ...]]:
    return [(w.workflow, w.name, str(w.runs), when(w.last_started)) for w in workflows]


def run_rows(runs: Sequence[RunRecord]) -> list[tuple[str, ...]]:
    return [
        (
            r.run_id,
            r.name,
            when(r.started),
            "ok" if r.ok else "failed",
            r.planner if r.planner == "none" else f"{r.planner} ({r.sla})",
            f"{r.tasks_done:,}/{r.tasks_total:,}",
            seconds(r.makespan_s),
            "-"
            if r.predicted_makespan_s is None
            else f"{seconds(r.predicted_makespan_s)} ({percent(r.prediction_error)})",
            seconds(r.wall_s),
            f"{r.cost.gb_s:.3f}",
            f"{r.cost.usd:.6f}",
        )
        for r in runs
    ]


def worst_first(tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
    """The tasks with the largest prediction error (of their duration) first; unplanned
    tasks keep their order."""
    return sorted(tasks, key=lambda t: -abs(t.error_s) if t.error_s is not None else 0.0)


def task_rows(run: RunRecord, limit: int | None = None) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for t in worst_first(run.tasks)[:limit]:
        size = f"{t.cpus:g} cpu, {t.memory_mb} MB" if t.memory_mb else "-"
        rows.append(
            (
                t.name,
                size,
                t.worker or "-",
                "-" if t.group is None else str(t.group),
                seconds(t.predicted_start),
                seconds(t.predicted_end),
                seconds(t.start),
                seconds(t.end),
                seconds(t.error_s, signed=True),
            )
        )
    return rows


def run_heading(run: RunRecord) -> str:
    """One run in a line: its planner, makespan against the plan, wall time and cost."""
    planned = ""
    if run.predicted_makespan_s is not None:
        planned = f", planned {run.predicted_makespan_s:.3f} s ({percent(run.prediction_error)})"
    deadline = f", deadline {run.deadline_s:g} s" if run.deadline_s is not None else ""
    return (
        f"run {run.run_id} of {run.name} ({run.workflow}) on {run.backend}, "
        f"{'ok' if run.ok else 'failed'}; planner {run.planner} at {run.sla}{deadline}: "
        f"makespan {run.makespan_s:.3f} s{planned}, wall {run.wall_s:.3f} s; "
        f"{run.workers} workers ({run.cold_starts} cold), {run.cost.gb_s:.3f} GB-s, "
        f"{run.cost.vcpu_s:.3f} vCPU-s, {run.cost.usd:.6f} USD"
    )
