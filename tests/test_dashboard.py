"""The dashboard: its folds, pure, against hand-written events and records; each view in
Streamlit's AppTest on a history made by real runs; the live registry of the stores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.dashboard.fold import (
    Bar,
    LiveRun,
    Shape,
    State,
    critical_path,
    depths,
    fold_by_function,
    history_rows,
    planned_vs_real,
    timeline,
    where_the_time_went,
)
from shoal.events import Event, EventKind
from shoal.history import RunRecord, TaskRecord

pytest.importorskip("streamlit")

APP = Path(shoal.__file__).parent / "dashboard" / "app.py"

# A diamond: 0 -> (1, 2) -> 3, and 4 alone.
DIAMOND = Shape(["load", "work", "join"], [0, 1, 1, 2, 0], [[], [0], [0], [1, 2], []])


def finished(task: int, worker: str, start: float, end: float, stored: int = 0) -> Event:
    return Event(EventKind.TASK_FINISHED, worker, task, end, None, start, stored)


def started(worker: str, *tasks: int, cold: bool = True) -> Event:
    return Event(EventKind.WORKER_STARTED, worker, None, 0.0, {"cold": cold, "tasks": list(tasks)})


# --------------------------------------------------------------------------- live states


def test_states_follow_the_events() -> None:
    run = LiveRun(DIAMOND)
    assert run.states() == [State.READY, State.WAITING, State.WAITING, State.WAITING, State.READY]
    run.add([started("w1", 0, 4)])
    assert run.states()[0] is State.RUNNING and run.states()[4] is State.RUNNING
    run.add([finished(0, "w1", 1.0, 2.0, stored=100)])
    # w1 is up and made 0: the children it readied are on it (it keeps them)
    assert run.states()[:4] == [State.DONE, State.RUNNING, State.RUNNING, State.WAITING]
    run.add([Event(EventKind.WORKER_STOPPED, "w1")])
    assert run.states()[1] is State.READY  # nobody has it now
    run.add([Event(EventKind.TASK_RETRIED, "w2", 1, 3.0, {"attempt": 1})])
    assert run.states()[1] is State.RETRIED
    run.add([finished(1, "w2", 3.0, 4.0), Event(EventKind.TASK_FAILED, "w3", 2, 5.0)])
    assert run.states()[1:3] == [State.DONE, State.FAILED]
    assert run.bytes_moved == 100 and run.moved == {0: 100}
    assert (run.workers_cold, run.workers_warm) == (1, 0)
    assert run.elapsed_s(10.0) == 9.0


def test_a_lost_workers_tasks_show_as_retried() -> None:
    run = LiveRun(DIAMOND)
    run.add([started("w1", 0), finished(0, "w1", 0.0, 1.0)])
    run.add([Event(EventKind.WORKER_LOST, "client", None, 2.0, {"worker": "w1", "tasks": [1, 2]})])
    assert run.states()[1:3] == [State.RETRIED, State.RETRIED]


def test_the_live_graph_grows_as_a_map_expands() -> None:
    """upto -> inc.expand -> inc.map (its collector) -> total, built by a real program."""

    @shoal.task
    def upto(n: int) -> list[int]:
        return list(range(n))

    @shoal.task
    def inc(x: int) -> int:
        return x + 1

    @shoal.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    from shoal.graph import build

    shape = Shape.from_json(build([total(inc.map(inc.map(upto(2))))]).ship().shape())
    run = LiveRun(shape)
    assert len(run.states()) == 4
    expanded = {"expanded": 4, "first": 64, "n": 2}
    run.add([started("w1", 0), finished(0, "w1", 0.0, 1.0)])
    run.add([Event(EventKind.TASK_FINISHED, "w1", 1, 2.0, expanded, 1.5)])
    assert len(shape.deps) == 8 and shape.ids[4:] == [64, 65, 66, 67]
    assert shape.deps[4] == [1] and shape.deps[5] == [4]  # element 0: inc, then inc of it
    assert shape.deps[2] == [1, 5, 7]  # the collector waits for the last stage's elements
    assert shape.name(5) == "inc[0]-65" and shape.name(2) == "inc.map-2"
    assert depths(shape.deps) == [0, 1, 4, 5, 2, 3, 2, 3]  # the collector after its elements
    run.add([finished(64, "w1", 2.0, 3.0), finished(65, "w1", 3.0, 4.0)])
    states = run.states()
    assert states[4:6] == [State.DONE, State.DONE] and states[2] is State.WAITING
    assert states[6] is State.RUNNING  # readied on w1, which is up


def test_folding_by_function_counts_states_and_edges() -> None:
    states = [State.DONE, State.RUNNING, State.READY, State.WAITING, State.DONE]
    nodes, edges = fold_by_function(DIAMOND, states)
    assert [(n.function, n.tasks, n.states) for n in nodes] == [
        ("load", 2, {"done": 2}),
        ("work", 2, {"running": 1, "ready": 1}),
        ("join", 1, {"waiting": 1}),
    ]
    assert edges == {(0, 1): 2, (1, 2): 2}


# --------------------------------------------------------------------------- a finished run


def record() -> RunRecord:
    """The diamond, run: 0 on w1 (cold, 0.5 s start), 1 and 3 on w1, 2 on w2, 4 on w2;
    planned too."""
    r = RunRecord("r1", "wf", "join+load", 1000.0, "gateway", "redis", planner="uniform")
    r.set_tasks(
        [
            TaskRecord(0, "load-0", "m.load", worker="w1", start=0.0, end=1.0, run_s=1.0,
                       predicted_start=0.0, predicted_end=1.0),
            TaskRecord(1, "work-1", "m.work", worker="w1", start=1.0, end=2.0, run_s=1.0,
                       predicted_start=1.0, predicted_end=1.5),
            TaskRecord(2, "work-2", "m.work", worker="w2", start=1.2, end=4.0, run_s=2.5,
                       read_s=0.2, upload_s=0.3, predicted_start=1.0, predicted_end=2.0),
            TaskRecord(3, "join-3", "m.join", worker="w1", start=4.1, end=5.0, run_s=0.9,
                       read_s=0.1, predicted_start=2.0, predicted_end=3.0),
            TaskRecord(4, "load-4", "m.load", worker="w2", start=0.0, end=0.5, run_s=0.5),
        ]
    )  # fmt: skip
    r.functions = [["m.load", "load"], ["m.work", "work"], ["m.join", "join"]]
    r.deps = [[], [0], [0], [1, 2], []]
    r.worker_spans = [[0, 5_000_000, 500_000, True], [0, 4_300_000, 0, False]]
    r.makespan_s = 5.0
    return r


def test_the_critical_path_follows_the_last_input() -> None:
    r = record()
    assert critical_path(r.deps, [t.end for t in r.tasks]) == [0, 2, 3]
    assert critical_path([[], [0]], [None, None]) == []


def test_the_timeline_has_starts_reads_runs_and_uploads() -> None:
    bars = timeline(record())
    assert Bar("w1", "start", None, "cold start", -0.5, 0.0) in bars
    assert [b for b in bars if b.task == 2] == [
        Bar("w2", "read", 2, "work-2", 1.0, 1.2),
        Bar("w2", "run", 2, "work-2", 1.2, 4.0),
        Bar("w2", "upload", 2, "work-2", 4.0, 4.3),
    ]
    assert len([b for b in bars if b.kind == "run"]) == 5


def test_where_the_time_went_adds_up_to_the_workers_lives() -> None:
    split = where_the_time_went(record())
    assert split["compute"] == pytest.approx(5.9)
    assert split["I/O"] == pytest.approx(0.6)
    assert split["cold starts"] == pytest.approx(0.5)
    assert split["waiting"] == pytest.approx(5.0 + 4.3 - 5.9 - 0.6)


def test_planned_vs_real_puts_the_furthest_off_first() -> None:
    rows = planned_vs_real(record())
    assert [r.task for r in rows] == [2, 1, 3, 0]  # 1.8 s, 0.5 s, 0.1 s, 0 s off; 4 unplanned
    assert rows[0].error == pytest.approx((1.0 - 2.8) / 2.8)


def test_history_rows_show_the_one_makespan_beside_the_wall_time() -> None:
    r = record()
    r.wall_s = 6.5
    (row,) = history_rows([r])
    assert (row["makespan_s"], row["wall_s"], row["planner"]) == (5.0, 6.5, "uniform")


def test_the_shape_of_a_record_is_the_graph() -> None:
    shape = Shape.of_record(record())
    assert shape.deps == DIAMOND.deps and shape.name(3) == "join-3"
    assert shape.children[0] == [1, 2]


# --------------------------------------------------------------------------- registry


def test_a_run_is_listed_live_until_it_ends(engine: dict[str, Any], flags: Path) -> None:
    """While a run is under way its store lists it, with its graph's shape; after it,
    neither."""
    from signals import wait_for

    from shoal.stores import open_store

    seen: dict[str, Any] = {}

    @shoal.task
    def pause(x: int) -> int:
        (flags / "under-way").touch()
        wait_for(flags / "go", timeout=30)
        return x

    @shoal.task
    def inc(x: int) -> int:
        return x + 1

    import threading

    def watch() -> None:
        wait_for(flags / "under-way", timeout=30)

        async def look() -> None:
            store = open_store(engine["storage"])
            if engine["storage"].startswith("memory"):  # another process's: none to see
                seen["runs"] = await store.live_runs()
            else:
                runs = await store.live_runs()
                seen["runs"] = runs
                (run_id,) = runs
                seen["shape"] = await store.run_shape(run_id)
            await store.close()

        asyncio.run(look())
        (flags / "go").touch()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert inc(pause(1)).compute(**engine) == 2
    watcher.join()
    if engine["storage"].startswith("memory"):
        assert seen["runs"] == {}
        return
    (info,) = seen["runs"].values()
    assert info["name"] == "inc" and info["tasks"] == 2
    assert seen["shape"] == {
        "functions": ["pause", "inc"],
        "func_of": [0, 1],
        "deps": [[], [0]],
        "maps": {},
    }

    async def after() -> dict[str, Any]:
        store = open_store(engine["storage"])
        try:
            return await store.live_runs()
        finally:
            await store.close()

    assert asyncio.run(after()) == {}


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def made_history(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A history made by real runs: a workflow run unplanned, then planned."""
    url = str(tmp_path_factory.mktemp("dash") / "history.sqlite3")

    @shoal.task
    def square(x: int) -> int:
        return x * x

    @shoal.task
    def total(*xs: int) -> int:
        return sum(xs)

    for planner in ("none", "uniform", "uniform"):
        graph = total(*[square(i) for i in range(6)])
        assert graph.compute(history=url, planner=planner, progress=False) == 55
    return url


def _app(history: str, monkeypatch: pytest.MonkeyPatch, storage: str = "memory://") -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SHOAL_HISTORY", history)
    monkeypatch.setenv("SHOAL_STORAGE", storage)
    return AppTest.from_file(str(APP), default_timeout=30)


def test_the_analysis_view_shows_a_finished_run(
    made_history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(made_history, monkeypatch).run()
    at.sidebar.radio(key="view").set_value("Run analysis").run()
    assert not at.exception
    assert [h.value for h in at.header] == ["Run analysis"]
    labels = [m.label for m in at.metric]
    assert labels[:5] == ["Makespan", "Wall time", "Planned", "Cost", "Workers"]
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["Graph (critical path in red)", "Timeline", "Where the time went",
                          "Planned vs real"]  # fmt: skip
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # graph, timeline, the time's split, planned vs real
    assert at.dataframe[0].value.shape[0] == 7  # one row per task
    assert any("Critical path: " in c.value for c in at.caption)
    at.radio(key="colour_by").set_value("planned vs real").run()
    assert not at.exception


def test_the_history_view_lists_the_runs_and_compares_two(
    made_history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(made_history, monkeypatch).run()
    at.sidebar.radio(key="view").set_value("History").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.shape[0] == 3 and set(table["planner"]) == {"none", "uniform"}
    assert len(at.get("plotly_chart")) == 3  # makespan, cost, prediction error
    assert at.subheader[0].value == "Compare two runs"
    assert len(at.table) == 1


def test_the_live_view_says_why_memory_runs_cannot_be_watched(
    made_history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(made_history, monkeypatch).run()
    assert not at.exception
    assert at.header[0].value == "Live run"
    assert "memory://" in at.info[0].value and "redis://" in at.info[0].value


def test_an_empty_history_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(str(tmp_path / "empty.sqlite3"), monkeypatch).run()
    at.sidebar.radio(key="view").set_value("Run analysis").run()
    assert not at.exception and "holds no run yet" in at.markdown[0].value


def test_the_live_view_follows_a_run_on_redis(
    made_history: str, redis_url: str, flags: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run under way is listed; its counters and states come from its event stream."""
    import threading

    from signals import wait_for

    @shoal.task
    def quick(i: int) -> int:
        return i

    @shoal.task
    def slow(*xs: int) -> int:
        (flags / "under-way").touch()
        wait_for(flags / "go", timeout=30)
        return sum(xs)

    result: list[int] = []
    run = threading.Thread(
        target=lambda: result.append(
            slow(*[quick(i) for i in range(3)]).compute(
                storage=redis_url, workers="local", progress=False
            )  # fmt: skip
        )
    )
    run.start()
    try:
        assert wait_for(flags / "under-way", timeout=30)
        at = _app(made_history, monkeypatch, storage=redis_url).run()
        assert not at.exception
        (label,) = at.selectbox(key="live_run").options
        assert label.startswith("slow · 4 tasks · ")
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Tasks done"] == "3 / 4"
        assert metrics["Predicted finish"] == "unplanned"
        assert len(at.get("plotly_chart")) == 1
        states = [m.value for m in at.markdown if "running" in m.value]
        assert states and "done 3" in states[0] and "running 1" in states[0]
    finally:
        (flags / "go").touch()
        run.join(30)
    assert result == [3]


def test_a_large_run_is_drawn_folded_until_unfolded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.dashboard.fold import FOLD_ABOVE

    url = str(tmp_path / "history.sqlite3")

    @shoal.task
    def leaf(i: int) -> int:
        return i

    @shoal.task
    def total(*xs: int) -> int:
        return sum(xs)

    total(*[leaf(i) for i in range(FOLD_ABOVE + 10)]).compute(history=url, progress=False)
    at = _app(url, monkeypatch).run()
    at.sidebar.radio(key="view").set_value("Run analysis").run()
    assert not at.exception
    (graph, *_) = at.get("plotly_chart")
    assert '"text":["leaf","total"]' in graph.proto.spec.replace(" ", "")  # one node each
    at.checkbox(key="analysis_unfold").check().run()
    (graph, *_) = at.get("plotly_chart")
    assert '"type":"scattergl"' in graph.proto.spec.replace(" ", "")  # every task, in WebGL
