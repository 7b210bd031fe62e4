"""Task metrics: the upload policies, the buffer that completes records, the per-task probe,
and what lands in the history from real runs on every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.metrics import MetricsBuffer, Policy, TaskMetrics, parse_policy, send_now


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("batch", Policy("batch")),
        ("task", Policy("task")),
        ("periodic:2.5", Policy("periodic", 2.5)),
        ("buffer:100", Policy("buffer", 100)),
        ("shutdown", Policy("shutdown")),
        ("off", Policy("off")),
    ],
)
def test_policies_parse_and_print_back(text: str, policy: Policy) -> None:
    assert parse_policy(text) == policy
    assert str(policy) == text


@pytest.mark.parametrize(
    "text", ["sometimes", "periodic", "periodic:0", "periodic:-1", "buffer:2.5", "batch:3", ""]
)
def test_bad_policies_are_clear_errors(text: str) -> None:
    with pytest.raises(shoal.ConfigError, match="metrics policy"):
        parse_policy(text)


def test_when_a_worker_sends_its_records_on_their_own() -> None:
    assert not send_now(Policy("task"), 0, 99.0)  # nothing waits
    assert send_now(Policy("task"), 1, 0.0)
    assert not send_now(Policy("buffer", 3), 2, 99.0)
    assert send_now(Policy("buffer", 3), 3, 0.0)
    assert not send_now(Policy("periodic", 1.0), 5, 0.5)
    assert send_now(Policy("periodic", 1.0), 1, 1.0)
    for riding in ("batch", "shutdown", "off"):  # they ride on steps taken anyway
        assert not send_now(Policy(riding), 1000, 1000.0)


def test_a_step_shares_its_time_among_the_outputs_it_stored_by_their_bytes() -> None:
    buffer = MetricsBuffer(Policy("batch"))
    for task in range(3):
        buffer.measured.append((task, 0.0, 0, 0.1, None, None, 7, 0.0))
    buffer.stored([300, 0, 100], 0.4, buffer.take_measured())
    data = buffer.take()
    assert data is not None
    rows = [TaskMetrics._make(r) for r in data["tasks"]]
    assert [r.out_bytes for r in rows] == [300, 7, 100]  # exact when stored, else estimated
    assert [r.upload_s for r in rows] == pytest.approx([0.3, 0.0, 0.1])
    assert [tuple(f) for f in data["flushes"]] == [(3, 400, 0.4)]
    assert buffer.take() is None  # taken once


def test_a_redelivered_completion_counts_no_bytes() -> None:
    buffer = MetricsBuffer(Policy("batch"))
    buffer.measured.append((0, 0.0, 0, 0.1, None, None, 5, 0.0))
    buffer.stored([-1], 0.2, buffer.take_measured())
    (row,) = buffer.take()["tasks"]  # type: ignore[index]
    assert TaskMetrics._make(row).upload_s == 0.0
    assert TaskMetrics._make(row).out_bytes == 5


# --------------------------------------------------------------------------- real runs


@shoal.task
def make(n: int) -> bytes:
    return b"x" * n


@shoal.task
def hog(data: bytes, mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    block[::4096] = b"y" * len(block[::4096])  # touch every page: resident, not just mapped
    return len(data) + len(block)


@shoal.task
def join(a: int, b: int) -> int:
    return a + b


def test_every_task_lands_in_the_history_with_its_metrics(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    where = tmp_path / "h.db"
    data = make(200_000)
    total = join(hog(data, 64), hog(data, 1))
    assert total.compute(**engine, history=str(where)) == 2 * 200_000 + 65 * 1024 * 1024
    history = shoal.history(str(where))
    (run,) = history.runs()
    assert run.ok and run.tasks_done == 4 and run.workers >= 1
    assert run.makespan_s == pytest.approx(shoal.last_run().makespan_s)  # type: ignore[union-attr]
    assert len(run.tasks) == 4
    produced = next(t for t in run.tasks if t.function.endswith("make"))
    assert produced.out_bytes is not None and produced.out_bytes >= 200_000
    for t in run.tasks:
        assert t.run_s is not None and t.run_s >= 0 and t.start is not None and t.end >= t.start
        assert t.cpus > 0 and t.memory_mb > 0 and t.worker
    hogs = sorted((t for t in run.tasks if t.function.endswith("hog")), key=lambda t: t.task)
    assert [h.in_bytes for h in hogs] == [produced.out_bytes] * 2
    embedded = engine["workers"] == "local"
    kind = "local" if embedded else "gateway"
    assert run.backend == kind
    if embedded:  # threads share one process: nothing to measure per task
        assert all(h.peak_mb is None and h.cpu_s is None for h in hogs)
    else:
        big, small = sorted(hogs, key=lambda h: h.peak_mb or 0, reverse=True)
        assert big.peak_mb is not None and small.peak_mb is not None
        assert big.peak_mb - small.peak_mb > 40  # 64 MB against 1 MB, in one process each
        assert big.cpu_s is not None and big.cpu_s > 0
        if not engine.get("optimizations"):  # (clustered, the hogs read it from memory)
            assert any(t.read_bytes for t in run.tasks)  # somebody read the 200 kB
    stats = history.function_stats(run.workflow, kind)
    assert {k.function.rsplit(".", 1)[1] for k in stats} == {"make", "hog", "join"}
    assert sum(s.duration.n for s in stats.values()) == 4
    assert history.function_stats(run.workflow, "lambda") == {}  # kept apart by backend
    history.close()


@shoal.task
def _lengths(parts: list[bytes]) -> int:
    return sum(map(len, parts))


POLICIES = ["batch", "task", "periodic:0.05", "buffer:3", "shutdown"]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_delivers_every_record(
    policy: str, redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    xs = [make(1000 + i) for i in range(12)]
    sink = _lengths(xs)
    where = str(tmp_path / "h.db")
    assert sink.compute(storage=redis_url, workers=gateway_url, history=where, metrics=policy)
    (run,) = shoal.history(where).runs()
    assert all(t.run_s is not None for t in run.tasks), f"{policy}: a record is missing"


def test_metrics_off_keeps_the_run_but_no_measures(tmp_path: Path) -> None:
    where = str(tmp_path / "h.db")
    _lengths([make(10), make(20)]).compute(history=where, metrics="off")
    history = shoal.history(where)
    (run,) = history.runs()
    assert run.ok and all(t.end is not None and t.run_s is None for t in run.tasks)
    assert history.function_stats(run.workflow, "local") == {}


def test_the_metrics_travel_as_json(tmp_path: Path) -> None:
    buffer = MetricsBuffer(Policy("batch"))
    buffer.measured.append((1, 0.001, 10, 0.5, 0.4, 55.5, 8, 0.0))
    buffer.stored([8], 0.01, buffer.take_measured())
    assert json.loads(json.dumps(buffer.take()))["tasks"][0][0] == 1


def _metric_events(policy: str) -> list[Any]:
    """The task-metrics events of a 6-task run on the embedded engine under ``policy``."""
    import asyncio

    from shoal.backends.local import LocalWorkers
    from shoal.events import EventKind
    from shoal.graph import build
    from shoal.protocol import new_run_id, run_graph
    from shoal.stores.memory import MemoryStore

    seen: list[Any] = []

    async def run() -> None:
        store, workers = MemoryStore(), LocalWorkers()
        await workers.start(store)
        graph = build([_lengths([make(i) for i in range(5)])])
        try:
            await run_graph(
                graph, store, workers, run_id=new_run_id(), on_events=seen.extend, metrics=policy
            )
        finally:
            await workers.close()

    asyncio.run(run())
    return [e for e in seen if e.kind is EventKind.TASK_METRICS]


def test_the_task_policy_sends_one_event_per_task_and_batch_rides_along() -> None:
    per_task = _metric_events("task")
    assert sorted(len(e.data["tasks"]) for e in per_task if e.data["tasks"]) == [1] * 6
    batched = _metric_events("batch")
    assert sum(len(e.data["tasks"]) for e in batched) == 6
    assert len(batched) < len(per_task)
    assert _metric_events("off") == []
