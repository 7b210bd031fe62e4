"""The history: bounded statistics, run records, the fold of a run's events, and the SQLite
and Redis stores (also written by several processes at once)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import leftover_keys, redis_client
from signals import refused_before_running

import shoal
from shoal.backends import Size
from shoal.events import Event, EventKind
from shoal.graph import build
from shoal.history import (
    BackendStats,
    Cost,
    FunctionStats,
    RunRecord,
    RunTrace,
    StatsKey,
    TaskRecord,
    open_history,
)
from shoal.history.base import Merger
from shoal.history.stats import SKETCH_SAMPLES, Fit, Summary
from shoal.planning import Plan

# --------------------------------------------------------------------------- statistics


def test_a_summary_reads_back_count_mean_extremes_and_quantiles() -> None:
    values = [random.Random(1).lognormvariate(0, 1) for _ in range(5000)]
    s = Summary.of(values, random.Random(2))
    assert s.n == 5000 and s.mean == pytest.approx(sum(values) / 5000)
    assert (s.low, s.high) == (min(values), max(values))
    exact = sorted(values)
    for q in (0.5, 0.9):
        # sampled down to SKETCH_SAMPLES, so within a sampling error, not only 2 %
        assert s.quantile(q) == pytest.approx(exact[int(q * 5000)], rel=0.15)
    assert s.at("mean") == s.mean and s.at("p90") == s.quantile(0.9)


def test_small_summaries_are_exact_within_the_sketch_accuracy() -> None:
    values = [float(v) for v in range(1, SKETCH_SAMPLES)]
    s = Summary.of(values)
    assert s.quantile(0.5) == pytest.approx(128, rel=0.03)


def test_summaries_merge_like_their_samples_and_survive_json() -> None:
    a, b = Summary.of([1.0, 2.0, 3.0]), Summary.of([10.0, 20.0])
    a.merge(Summary.from_json(b.to_json()))
    again = Summary.from_json(a.to_json())
    assert (again.n, again.total, again.low, again.high) == (5, 36.0, 1.0, 20.0)
    assert again.quantile(1.0) == pytest.approx(20.0, rel=0.03)
    assert Summary.from_json(Summary().to_json()).n == 0


def test_a_fit_finds_a_line_and_merges_by_adding() -> None:
    fit = Fit.of([0.0, 1.0], [1.0, 3.0])
    fit.merge(Fit.from_json(Fit.of([2.0, 3.0], [5.0, 7.0]).to_json()))
    intercept, slope = fit.line()  # type: ignore[misc]
    assert (intercept, slope) == pytest.approx((1.0, 2.0))
    assert Fit.of([5.0, 5.0], [1.0, 2.0]).line() is None  # x never varied


def test_a_run_record_survives_json() -> None:
    run = RunRecord("r1", "wf", "total", 1.5, "gateway", "redis", makespan_s=2.0)
    task = TaskRecord(0, "f-0", "m.f", 1.0, 2048, "w", 3, 0.0, 1.0, 0.0, 1.2, run_s=1.0)
    run.set_tasks([task, TaskRecord(1, "g-1", "m.g")])
    back = RunRecord.from_json(json.loads(json.dumps(run.to_json())))
    assert back == run and back.tasks[0] == task and back.tasks[1].worker == ""
    assert back.tasks[0].error_s == pytest.approx(0.2)


def test_stats_a_process_wrote_last_are_merged_again_without_decoding_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[int] = []
    original = FunctionStats.from_json.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionStats], data: dict[str, Any]) -> FunctionStats:
        decoded.append(1)
        return original(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(FunctionStats, "from_json", classmethod(counting))
    merge = Merger()

    def run(seconds: float) -> FunctionStats:
        return FunctionStats(duration=Summary.of([seconds]))

    row = merge("row", None, run(1.0))
    row = merge("row", row, run(2.0))  # written by its first merge: decoded once
    row = merge("row", row, run(4.0))  # as this process left it: not decoded again
    assert len(decoded) == 1
    row = Merger()("row", row, run(8.0))  # another process's write
    row = merge("row", row, run(16.0))
    assert len(decoded) == 3
    both = original(FunctionStats, json.loads(row)).duration
    assert both.n == 5 and both.total == 31.0 and both.quantile(1.0) == pytest.approx(16, rel=0.03)


# --------------------------------------------------------------------------- the fold


@shoal.task
def leaf(i: int) -> int:
    return i


@shoal.task
def total(xs: list[int]) -> int:
    return sum(xs)


def _started(worker: str, t: float, cold: bool, size: tuple[float, int]) -> Event:
    data = {"cold": cold, "start_s": 0.3 if cold else 0.01, "handout_s": 0.4 if cold else 0.02}
    return Event(EventKind.WORKER_STARTED, worker, None, t, {**data, "size": list(size)})


def _metrics(worker: str, *tasks: list[float], flushes: list[list[float]] | None = None) -> Event:
    """A task-metrics event of ``worker``: a row per task (shoal.metrics' TaskMetrics)."""
    data: dict[str, Any] = {"tasks": [list(t) for t in tasks]}
    if flushes is not None:
        data["flushes"] = flushes
    return Event(EventKind.TASK_METRICS, worker, data=data)


def _backend_of(graph: Any, events: list[Event]) -> BackendStats:
    """The backend statistics a run of ``graph`` with ``events`` teaches."""
    trace = RunTrace()
    trace.add(events)
    run = RunRecord("r", graph.structure_hash, "total", 99.0, "gateway", "redis")
    return trace.fold(graph, run)[1]


def test_a_runs_events_fold_into_its_record_statistics_and_cost() -> None:
    graph = build([total([leaf(0), leaf(1)])])  # tasks 0, 1 (leaves) and 2 (total)
    events = [
        _started("a", 100.0, True, (1.0, 1024)),
        _started("b", 100.1, False, (2.0, 2048)),
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.2, None, 100.6, 50),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
        _metrics(
            "a",
            [0, 0.0, 0, 0.5, 0.5, 40.0, 20, 0.0],
            [2, 0.01, 50, 0.5, 0.4, 45.0, 30, 0.001],
            flushes=[[1, 0, 0.001], [1, 30, 0.002]],
        ),
        _metrics("b", [1, 0.0, 0, 0.6, 1.1, 80.0, 50, 0.003]),
        Event(EventKind.WORKER_STOPPED, "a", None, 102.1),
        Event(EventKind.WORKER_STOPPED, "b", None, 101.3),
    ]
    trace = RunTrace()
    trace.add(events[:4])
    trace.add(events[4:])
    run = RunRecord("r", graph.structure_hash, "total", 99.0, "gateway", "redis")
    stats, backend = trace.fold(graph, run)
    rows = {t.task: t for t in run.tasks}
    assert (rows[0].start, rows[0].end) == (0.0, pytest.approx(0.5))  # from the first start
    assert rows[2].in_bytes == 20 + 50 and rows[2].read_bytes == 50
    assert (rows[1].cpus, rows[1].memory_mb, rows[1].worker) == (2.0, 2048, "b")
    assert rows[2].stored_bytes == 30 and rows[1].upload_s == 0.003
    leaf_key = next(k for k in stats if k.function.endswith("leaf"))
    assert {k.cpus for k in stats if k.function.endswith("leaf")} == {1.0, 2.0}
    assert stats[leaf_key].duration.n == 1
    assert sum(s.duration.n for s in stats.values()) == 3
    total_key = StatsKey(graph.functions[graph.func_of[2]].key, 1.0, 1024, "gateway")
    assert stats[total_key].input.total == 70 and stats[total_key].peak_mb.high == 45.0
    assert (run.workers, run.cold_starts) == (2, 1)
    assert run.cost.gb_s == pytest.approx(2.1 * 1 + 1.2 * 2)  # worker spans times GB
    assert run.cost.vcpu_s == pytest.approx(2.1 * 1 + 1.2 * 2) and run.cost.requests == 2
    assert backend.cold_start.n == 1 and backend.handout_warm.mean == pytest.approx(0.02)
    # From the landing of task 2's other input (b's, 101.203 s) less task 2's read.
    assert backend.gap.n == 1 and backend.gap.total == pytest.approx(101.5 - 101.203 - 0.01)
    # Each stored output is a write (an output not stored may have been written and
    # dropped, bytes not counted): tasks 1 and 2, at different times.
    assert backend.read_fit.n == 1 and backend.write_fit.n == 2
    assert (backend.write_fit.sx, backend.write_fit.sy) == (80, pytest.approx(0.004))


def test_a_transfer_is_learned_against_the_bytes_the_store_moved_meanwhile() -> None:
    # Leaves 0 and 1 store 2 MB each from 101.0 s, for 0.2 s and 0.1 s: the store moved
    # both while 0 was written, and half of 0's while 1 was. Task 2 stored 30 B in 10 ms
    # from 101.05 s, too few to slow others: meanwhile the store moved a twentieth of 0
    # and a tenth of 1. It read 20 B alone.
    graph = build([total([leaf(0), leaf(1)])])
    mb2 = 2_000_000
    events = [
        _started("a", 100.0, False, (1.0, 2048)),
        _started("b", 100.0, False, (1.0, 2048)),
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, mb2),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.5, mb2),
        Event(EventKind.TASK_FINISHED, "a", 2, 101.05, None, 101.04, 30),
        _metrics(
            "a",
            [0, 0.0, 0, 0.5, 0.5, 40.0, mb2, 0.2],
            [2, 0.001, 20, 0.01, 0.01, 45.0, 30, 0.01],
        ),
        _metrics("b", [1, 0.0, 0, 0.5, 0.5, 40.0, mb2, 0.1]),
    ]
    backend = _backend_of(graph, events)
    assert backend.write_fit.n == 3 and backend.write_fit.sx == 2 * mb2 + 30  # its own
    shared = backend.write_shared_fit
    assert shared.n == 3 and shared.sx == (2 * mb2) + (mb2 + mb2 // 2) + (
        30 + mb2 // 20 + mb2 // 10
    )
    assert backend.read_fit.sx == backend.read_shared_fit.sx == 20


def test_the_backend_gap_leaves_out_uploads_and_hand_outs() -> None:
    graph = build([total([leaf(0), leaf(1)])])  # tasks 0, 1 (leaves) and 2 (total)
    events = [
        _started("a", 100.0, False, (1.0, 2048)),
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "a", 1, 102.0, None, 101.5, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 103.0, None, 102.5, 30),
        _metrics(
            "a",
            [0, 0.0, 0, 0.5, 0.5, 40.0, 20, 0.3],
            [1, 0.0, 0, 0.5, 0.5, 40.0, 20, 0.3],
            [2, 0.0, 0, 0.5, 0.4, 45.0, 30, 0.001],
        ),
    ]
    backend = _backend_of(graph, events)
    assert backend.gap.n == 2 and backend.gap.total == pytest.approx(2 * (0.5 - 0.3))
    # On two workers: b's completion of task 1 (ended 101.2 s, stored by 101.3 s) readies
    # task 2, which a runs (reading it in 0.1 s): a's gap runs from that landing, less
    # its own upload; b's hand-out is no sample.
    events[2] = Event(EventKind.TASK_FINISHED, "b", 1, 101.2, None, 100.7, 20)
    events[4] = _metrics(
        "a",
        [0, 0.0, 0, 0.5, 0.5, 40.0, 20, 0.3],
        [1, 0.0, 0, 0.5, 0.5, 40.0, 20, 0.1],
        [2, 0.1, 20, 0.5, 0.4, 45.0, 30, 0.001],
    )
    backend = _backend_of(graph, [_started("b", 100.0, False, (1.0, 2048)), *events])
    assert backend.gap.n == 1 and backend.gap.total == pytest.approx(102.5 - 101.3 - 0.1 - 0.3)
    # Had a read nothing as task 2 started, it would have read 1 ahead (pre-load): no
    # sample (that read is the simulator's to charge).
    events[4].data["tasks"][2][2] = 0  # type: ignore[index]
    backend = _backend_of(graph, [_started("b", 100.0, False, (1.0, 2048)), *events])
    assert backend.gap.n == 0


def test_a_cold_workers_first_read_is_left_out_of_the_read_fit() -> None:
    graph = build([total([leaf(0), leaf(1)])])
    events = [
        _started("a", 100.0, True, (1.0, 2048)),
        _started("b", 100.0, False, (1.0, 2048)),
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
        _metrics(
            "a",
            [0, 0.05, 20, 0.5, 0.5, 40.0, 20, 0.0],  # imports as it reads
            [1, 0.001, 20, 0.5, 0.5, 40.0, 20, 0.0],
            [2, 0.001, 20, 0.5, 0.4, 45.0, 30, 0.0],
        ),
    ]
    backend = _backend_of(graph, events)
    assert backend.read_fit.n == 2 and backend.read_fit.sy == pytest.approx(0.002)


def test_a_burst_of_starts_teaches_the_platforms_pace_and_workers_their_lead() -> None:
    graph = build([total([leaf(0), leaf(1)])])

    def started(worker: str, t: float, handout_s: float, forwards: int = 0) -> Event:
        data = {"cold": False, "handout_s": handout_s, "size": [1.0, 2048], "forwards": forwards}
        return Event(EventKind.WORKER_STARTED, worker, None, t, data)

    events = [
        started("a", 100.0, 0.1, forwards=2),  # sent at 99.9, alone; sends on b and c
        started("b", 100.2, 0.15),  # sent at 100.05, after a started: alone too
        started("c", 100.3, 0.25),  # sent at 100.05, before b started: after it
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.4, 20),
        Event(EventKind.TASK_FINISHED, "c", 2, 102.0, None, 101.5, 30),
    ]
    backend = _backend_of(graph, events)
    assert backend.start_spacing.n == 1 and backend.start_spacing.total == pytest.approx(0.1)
    assert backend.handout_warm.n == 2 and backend.handout_warm.total == pytest.approx(0.25)
    # a's lead held its forwarding, which the simulator plays: b's and c's are leads
    assert backend.lead.n == 2 and backend.lead.total == pytest.approx(0.2 + 1.2)


def test_the_machines_cpu_besides_the_tasks_is_charged_to_each_warm_worker() -> None:
    graph = build([total([leaf(0), leaf(1)])])
    size = Size(1.0, 2048)
    plan = Plan("uniform", "mean", [size] * 3, [0, 1, 0], [(0.0, 0.5)] * 3, 2.0, Cost())

    def fold(
        machine_cpu_s: float | None,
        cold: bool = False,
        stored: int = 20,
        planned: bool = True,
    ) -> BackendStats:
        events = [
            _started("a", 100.0, cold, (1.0, 2048)),
            _started("b", 100.1, False, (1.0, 2048)),
            Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, stored),
            Event(EventKind.TASK_FINISHED, "b", 1, 101.2, None, 100.6, 50),
            Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
            _metrics("a", [0, 0.0, 0, 0.5, 0.5, None, 20, 0.0], [2, 0, 0, 0.5, 0.3, None, 30, 0]),
            _metrics("b", [1, 0.0, 0, 0.6, 0.2, None, 50, 0.0]),
        ]
        trace = RunTrace()
        trace.add(events)
        trace.machine_cpu_s = machine_cpu_s
        run = RunRecord("r", graph.structure_hash, "total", 99.0, "gateway", "redis")
        return trace.fold(graph, run, plan if planned else None)[1]

    # 1.4 s of the machine's CPU, 1.0 s of it the tasks' code: 0.2 s per worker
    assert fold(1.4).worker_cpu.n == 1 and fold(1.4).worker_cpu.total == pytest.approx(0.2)
    # Without a plan, its few workers ran many tasks each: not what a plan's worker costs.
    assert fold(1.4, planned=False).worker_cpu.n == 0
    assert fold(None).worker_cpu.n == 0  # the workers' machine is not the client's
    assert fold(1.4, cold=True).worker_cpu.n == 0  # a Python start is the cold hand-out's
    assert fold(1.4, stored=50 << 20).worker_cpu.n == 0  # moving bytes is the store's


def test_a_round_of_invocations_sent_as_the_last_was_answered_is_no_burst() -> None:
    graph = build([total([leaf(0), leaf(1)])])

    def started(worker: str, t: float, handout_s: float) -> Event:
        data = {"cold": False, "handout_s": handout_s, "size": [1.0, 2048], "forwards": 0}
        return Event(EventKind.WORKER_STARTED, worker, None, t, data)

    events = [
        started("a", 100.06, 0.06),  # sent at 100.0: its request takes 50 ms
        started("b", 100.12, 0.07),  # sent at 100.05 as a's was answered, before a started
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.4, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
    ]
    backend = _backend_of(graph, events)
    assert backend.start_spacing.n == 0  # due at 100.11: after a started
    assert backend.handout_warm.n == 2


def test_invocations_sent_together_are_a_burst_even_when_the_first_started_at_once() -> None:
    graph = build([total([leaf(0), leaf(1)])])

    def started(worker: str, t: float, handout_s: float) -> Event:
        data = {"cold": False, "handout_s": handout_s, "size": [1.0, 2048], "forwards": 0,
                "parent": ""}  # fmt: skip
        return Event(EventKind.WORKER_STARTED, worker, None, t, data)

    events = [
        started("a", 100.0022, 0.0022),  # the client's two roots, sent 0.4 ms apart
        started("b", 100.0074, 0.0070),  # taken by the platform 5.2 ms after a started
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.4, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
    ]
    backend = _backend_of(graph, events)
    assert backend.start_spacing.n == 1  # due at 100.0026, after a started: yet a burst
    assert backend.start_spacing.mean == pytest.approx(0.0052, rel=0.05)


def test_the_history_learns_the_requests_an_invoker_waited_for() -> None:
    """A flat hand-out wider than an invoker keeps in flight sends each further invocation
    as a request is answered, and the invoker stamps it with that wait; the history learns
    those. One invoker's many small hand-outs over a run (a worker sharing one or two tasks
    at a time, queued behind a full platform) teach nothing: grouped by invoker, they once
    made a 'request' of 0.6 s and the predicted makespans 4 to 7 times the real ones."""
    graph = build([total([leaf(0), leaf(1)])])

    def started(worker: str, sent: float, request_s: float | None = None) -> Event:
        data = {"cold": False, "handout_s": 0.06, "size": [1.0, 2048], "forwards": 0,
                "parent": "p", "request_s": request_s}  # fmt: skip
        return Event(EventKind.WORKER_STARTED, worker, None, sent + 0.06, data)

    # p's first hand-out: 4 invocations, 2 in flight; the third waited 0.07 s, the fourth
    # 0.08 s. Then p handed out one invocation at a time, a second apart.
    flat = [started("a", 100.0), started("b", 100.01), started("c", 100.07, 0.07),
            started("d", 100.09, 0.08)]  # fmt: skip
    alone = [started(w, 101.0 + i) for i, w in enumerate("efghijklmn")]
    finished = [
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.4, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
    ]
    backend = _backend_of(graph, [*flat, *alone, *finished])
    assert backend.request_wait.n == 2
    assert backend.request_wait.total == pytest.approx(0.07 + 0.08)
    assert _backend_of(graph, [*alone, *finished]).request_wait.n == 0


def test_histories_that_hold_the_old_request_timing_load_without_it() -> None:
    data = BackendStats(request_wait=Summary.of([0.004])).to_json()
    data["request"] = Summary.of([0.6, 0.6]).to_json()  # what the old timing recorded
    loaded = BackendStats.from_json(data)
    assert loaded.request_wait.n == 1 and loaded.request_wait.total == pytest.approx(0.004)


def test_the_pace_after_a_cold_start_is_learned_apart() -> None:
    graph = build([total([leaf(0), leaf(1)])])

    def started(worker: str, t: float, handout_s: float, cold: bool) -> Event:
        data = {"cold": cold, "handout_s": handout_s, "size": [1.0, 2048], "forwards": 0}
        return Event(EventKind.WORKER_STARTED, worker, None, t, data)

    events = [
        started("a", 100.3, 0.3, cold=True),  # sent at 100.0: forked
        started("b", 100.35, 0.36, cold=False),  # sent at 99.99, due before a started
        Event(EventKind.TASK_FINISHED, "a", 0, 101.0, None, 100.5, 20),
        Event(EventKind.TASK_FINISHED, "b", 1, 101.0, None, 100.4, 20),
        Event(EventKind.TASK_FINISHED, "a", 2, 102.0, None, 101.5, 30),
    ]
    backend = _backend_of(graph, events)
    assert backend.start_spacing.n == 0
    assert backend.cold_spacing.n == 1 and backend.cold_spacing.total == pytest.approx(0.05)


# --------------------------------------------------------------------------- stores


def _record(i: int, workflow: str = "wf") -> tuple[RunRecord, dict[StatsKey, FunctionStats]]:
    run = RunRecord(f"run{i:04d}", workflow, "total", float(i), "local", "memory", ok=True)
    stats = FunctionStats(duration=Summary.of([0.5]))
    return run, {StatsKey("m.f", 1.0, 2048, "local"): stats}


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/h.db"
        return
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    yield url
    with redis_client(url) as client:
        for key in leftover_keys(url, "shoal:history:*"):
            client.delete(key)


def test_a_store_keeps_the_newest_runs_and_every_statistic(history_url: str) -> None:
    history = open_history(history_url + ("&" if "?" in history_url else "?") + "keep=3")
    for i in range(5):
        run, stats = _record(i)
        history.record(run, stats, BackendStats(gap=Summary.of([0.001])))
    assert [r.run_id for r in history.runs("wf")] == ["run0004", "run0003", "run0002"]
    assert [r.run_id for r in history.runs(limit=2)] == ["run0004", "run0003"]
    (stats,) = history.function_stats("wf", "local").values()
    assert stats.duration.n == 5  # statistics outlive the runs they came from
    assert history.function_stats("wf", "gateway") == {}
    assert history.backend_stats("local").gap.n == 5
    assert history.run("run0003").run_id == "run0003"  # type: ignore[union-attr]
    assert history.run("run000") is None  # ambiguous
    assert history.run("nope") is None
    (wf,) = history.workflows()
    assert (wf.workflow, wf.name, wf.runs, wf.last_started) == ("wf", "total", 3, 4.0)
    history.close()


_WRITER = """
import sys
import shoal

@shoal.task
def inc(x):
    return x + 1

for _ in range(3):
    assert inc(inc(1)).compute(history=sys.argv[1], progress=False) == 3
"""


def test_several_processes_record_at_once_and_every_run_counts(history_url: str) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER), history_url])
        for _ in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    history = open_history(history_url)
    (wf,) = history.workflows()
    assert len(history.runs(wf.workflow)) == 12
    (stats,) = history.function_stats(wf.workflow, "local").values()
    assert stats.duration.n == 24  # two tasks per run, every merge kept
    history.close()


def test_runs_land_in_the_history_they_name(redis_url: str, tmp_path: Path) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    try:
        assert leaf(7).compute(history=url, progress=False) == 7
        (run,) = shoal.history(url).runs()
        assert run.ok and run.backend == "local" and [t.name for t in run.tasks] == ["leaf-0"]
    finally:
        with redis.Redis.from_url(url) as client:
            client.flushdb()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "unknown history URL"),
        ("sqlite:///tmp/x.db?keep=0", "keep must be"),
        ("sqlite:///tmp/x.db?kept=3", "unknown option"),
        ("redis://127.0.0.1:1/0", "cannot reach the Redis history"),
        ("sqlite:///proc/nope/h.db", "cannot open the SQLite file"),
    ],
)
def test_a_bad_history_is_a_clear_error_before_anything_runs(
    url: str, message: str, tmp_path: Path
) -> None:
    assert message in refused_before_running(tmp_path, history=url)


def test_history_none_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "h.db"
    monkeypatch.setenv("SHOAL_HISTORY", str(where))
    assert leaf(1).compute(history="none") == 1
    assert not where.exists()
    assert shoal.history("none").runs() == []


def test_the_default_history_is_a_file_in_the_users_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_HISTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert leaf(2).compute() == 2
    assert (tmp_path / "shoal" / "history.sqlite3").exists()
    assert shoal.history().runs()[0].tasks[0].name == "leaf-0"


@pytest.mark.parametrize("which", ["redis_url", "cluster_url"])
def test_a_stale_merge_is_refused_and_nothing_is_written(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The optimistic merge of a shared history: a writer that read before another
    merged must read again, or one run's statistics would be lost."""
    from shoal.history.redis import RedisHistory
    from shoal.stores import keys

    url = request.getfixturevalue(which)
    history = RedisHistory(url)
    key = keys.workflow_keys("stale-test").stats
    try:
        assert history._merge(keys=(key,), args=["", "f", "first"]) == 1  # no version yet
        assert history._merge(keys=(key,), args=["", "f", "stale"]) == 0  # read before it
        assert history.client.hget(key, "f") == b"first"
        assert history._merge(keys=(key,), args=["1", "f", "second"]) == 1
        assert history.client.hget(key, "f") == b"second"
    finally:
        history.client.delete(key)
        history.close()


def test_a_run_from_inside_an_event_loop_is_recorded(tmp_path: Path) -> None:
    """compute() where a loop runs (a notebook) runs on another thread: the history, opened
    on the caller's, still records it."""
    import asyncio

    url = str(tmp_path / "history.sqlite3")

    @shoal.task
    def one() -> int:
        return 1

    async def in_a_notebook() -> int:
        return one().compute(history=url, progress=False)

    assert asyncio.run(in_a_notebook()) == 1
    assert len(shoal.history(url).runs()) == 1


def test_a_bare_path_takes_options_too(tmp_path: Path) -> None:
    kept = open_history(f"{tmp_path / 'h.sqlite3'}?keep=3")
    assert kept.keep == 3 and (tmp_path / "h.sqlite3").exists()
    kept.close()


def test_a_run_returns_before_its_record_is_written_and_readers_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is written behind the caller (its results do not wait for it); the next
    reader of the history, in this process, waits for it."""
    from shoal.history.sqlite import SqliteHistory

    returned = threading.Event()
    record = SqliteHistory.record

    def after_the_return(self: SqliteHistory, *args: Any) -> None:
        assert returned.wait(10), "the run waited for its record"
        record(self, *args)

    monkeypatch.setattr(SqliteHistory, "record", after_the_return)
    path = str(tmp_path / "behind.db")
    assert shoal.compute(_inc_behind(1), history=path, progress=False) == (2,)
    returned.set()
    assert [r.ok for r in shoal.history(path).runs()] == [True]


@shoal.task
def _inc_behind(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("left_before_the_start", [False, True])
def test_a_write_left_behind_waits_while_a_run_starts_and_goes_once_it_has(
    left_before_the_start: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer would hold the GIL against the start of the next run (its first task
    20 to 35 ms late here): it waits until that run's workers run. A write left just
    before the run starts (runs back to back: a run's record, as it returns) waits for it
    too (:data:`NEXT_RUN_S`), rather than begin and go on through the start."""
    import shoal.history as history

    monkeypatch.setattr(history, "START_WAIT_S", 30.0)
    monkeypatch.setattr(history, "NEXT_RUN_S", 30.0)
    wrote = threading.Event()
    if left_before_the_start:
        history.write_behind(wrote.set)
        assert not wrote.wait(0.3), "the write went on without waiting for a next run"
    history.starting()
    try:
        if not left_before_the_start:
            history.write_behind(wrote.set)
        assert not wrote.wait(0.3), "the write went on while a run was starting"
    finally:
        history.started()
    assert wrote.wait(10), "the write still waited once the run had started"
    history.settle()


def test_a_run_refused_for_its_history_holds_no_write_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad history URL fails the run before it starts: no start is left to wait for."""
    import shoal.history as history

    monkeypatch.setattr(history, "START_WAIT_S", 30.0)
    monkeypatch.setattr(history, "NEXT_RUN_S", 0.0)
    with pytest.raises(shoal.ConfigError, match="unknown history URL"):
        shoal.compute(_inc_behind(1), history="ftp://x")
    wrote = threading.Event()
    history.write_behind(wrote.set)
    assert wrote.wait(10), "a write waited for a run that never started"
    history.settle()


def test_a_process_exits_without_waiting_for_a_next_run() -> None:
    """A script's last run: its record is written as the process exits, at once."""
    script = textwrap.dedent(
        """
        import shoal.history as history
        history.NEXT_RUN_S = 30.0
        history.write_behind(lambda: print("written", flush=True))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0 and done.stdout == "written\n", done.stderr


def test_a_starting_run_that_waits_for_the_writes_is_not_held_up_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that needs the history during its start (a plan, its first ranks) settles
    it: the writes go at once, not after :data:`START_WAIT_S`."""
    import shoal.history as history

    monkeypatch.setattr(history, "START_WAIT_S", 30.0)
    wrote = threading.Event()

    def start_and_settle() -> None:
        history.starting()
        try:
            history.write_behind(wrote.set)
            history.settle()
        finally:
            history.started()

    thread = threading.Thread(target=start_and_settle, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and wrote.is_set()


def test_a_summary_read_back_decodes_its_sketch_only_when_a_quantile_is_asked() -> None:
    original = Summary.of([0.1 * i for i in range(1, 200)])
    data = original.to_json()
    read = Summary.from_json(data)
    assert read.mean == original.mean and read._sketch is None  # a mean needs no sketch
    assert read.to_json() == data  # written back as it was read, still undecoded
    assert read.quantile(0.9) == pytest.approx(original.quantile(0.9))
    assert read._sketch is not None
