"""Ranks: the paths ahead of each task, learned from history and shipped with a run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.history import open_history
from shoal.history import settle as settle_history
from shoal.planning import rank_tasks

# --------------------------------------------------------------------------- ranks


@shoal.task
def rank_root() -> int:
    return 1


@shoal.task
def rank_quick(x: int) -> int:
    return x


@shoal.task
def rank_slow(x: int) -> int:
    time.sleep(0.05)
    return x


def test_ranks_are_the_paths_ahead_of_each_task_in_the_newest_run(tmp_path: Path) -> None:
    """A workflow's first run teaches its ranks: each task's longest path to the end, by
    how long each task ran; none before."""
    from shoal.graph import build

    root = rank_root()
    sinks = [rank_quick(root), rank_quick(rank_slow(root))]
    history = open_history(str(tmp_path / "h.db"))
    graph = build(sinks)
    assert rank_tasks(graph, history, "local") is None  # nothing learnt yet
    shoal.compute(*sinks, history=str(tmp_path / "h.db"))
    settle_history()  # the run's record is written behind it
    ranks = rank_tasks(graph, history, "local")
    assert ranks is not None
    by_name = {graph.nodes[t].fn.name: t for t in range(len(graph)) if graph.children[t]}
    slow, root_rank = ranks[by_name["rank_slow"]], ranks[by_name["rank_root"]]
    quick_leaf = min(ranks[t] for t in range(len(graph)) if not graph.children[t])
    assert slow >= 0.05 > quick_leaf  # the slow task's path holds its own 50 ms
    assert root_rank >= slow  # and its parent's holds it

    quick = [rank_quick(rank_root()) for _ in range(3)]  # nothing as long as a store step
    shoal.compute(*quick, history=str(tmp_path / "h.db"))
    settle_history()
    assert rank_tasks(build(quick), history, "local") is None  # their order is noise


def test_compute_ships_the_ranks_a_history_teaches_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``compute()``: no ranks on a workflow's first run; the next ships each
    task's rank (the slow task's path the longest) and ranks its workers; none with a list
    of optimizations that leaves ``rank`` out, nor under a plan."""
    import shoal.run

    shipped: list[tuple[list[float] | None, bool]] = []
    real_run_graph = shoal.run.run_graph

    async def spy(graph: Any, *args: Any, **kwargs: Any) -> Any:
        shipped.append((kwargs["ranks"], kwargs["tuning"].ranked))
        return await real_run_graph(graph, *args, **kwargs)

    monkeypatch.setattr(shoal.run, "run_graph", spy)
    where = str(tmp_path / "h.db")

    def run(**options: Any) -> tuple[list[float] | None, bool]:
        root = rank_root()
        shoal.compute(rank_quick(root), rank_quick(rank_slow(root)), history=where, **options)
        settle_history()
        return shipped[-1]

    assert run() == (None, False)  # nothing learnt yet
    ranks, ranked = run()
    assert ranked and ranks is not None
    slow = ranks[2]  # rank_root, rank_quick, rank_slow, rank_quick: numbered as called
    assert slow >= 0.05 > ranks[1] and ranks[0] >= slow
    assert run(optimizations=["cluster"]) == (None, False)
    assert run(planner="uniform") == (None, False)


class HeldRecords:
    """Spies on the ranks each run ships; once :meth:`hold` is called, the records runs
    leave behind wait until :meth:`release` (at most 10 s, then ``timed_out`` is set)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import shoal.run

        self.monkeypatch = monkeypatch
        self.shipped: list[list[float] | None] = []
        self.released, self.timed_out = threading.Event(), threading.Event()
        real_run_graph, self.real_keep = shoal.run.run_graph, shoal.run._keep

        async def spy(graph: Any, *args: Any, **kwargs: Any) -> Any:
            self.shipped.append(kwargs["ranks"])
            return await real_run_graph(graph, *args, **kwargs)

        monkeypatch.setattr(shoal.run, "run_graph", spy)

    def hold(self) -> None:
        import shoal.run

        def held_keep(*args: Any) -> None:
            if not self.released.wait(10):
                self.timed_out.set()
            self.real_keep(*args)

        self.monkeypatch.setattr(shoal.run, "_keep", held_keep)

    def release(self) -> None:
        self.released.set()
        settle_history()


def test_a_run_ranks_by_an_older_run_rather_than_wait_for_the_last_ones_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of the run just before is written behind it; the next run does not wait
    for it when the history holds an older run of the workflow to rank by. (Waiting, it
    would hang here: that record is held until the next run has ended, or 10 s.)"""
    records = HeldRecords(monkeypatch)
    where = str(tmp_path / "h.db")

    def run() -> None:
        root = rank_root()
        shoal.compute(rank_quick(root), rank_quick(rank_slow(root)), history=where)

    run()
    settle_history()  # the first run's record: what the third run ranks by
    records.hold()
    try:
        run()  # its record is held
        run()
    finally:
        records.release()
    assert not records.timed_out.is_set()  # the third run ended while the second's waited
    shipped = records.shipped
    assert shipped[0] is None and shipped[1] is not None and shipped[2] is not None
    assert len(open_history(where).runs(limit=10)) == 3  # and no record is lost


def test_a_workflows_second_run_ranks_by_the_first_before_its_record_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history holds no run of the workflow yet while the first run's record is on
    its way: the second run ranks by the first run's task times, kept in the process, and
    does not wait for the record (waiting, it would hang here: the record is held until
    the second run has ended, or 10 s)."""
    from shoal.graph import build

    records = HeldRecords(monkeypatch)
    records.hold()
    where = str(tmp_path / "h.db")
    root = rank_root()
    sinks = [rank_quick(root), rank_quick(rank_slow(root))]
    try:
        for _ in range(2):
            shoal.compute(*sinks, history=where)
    finally:
        records.release()
    assert not records.timed_out.is_set()
    first, second = records.shipped
    assert first is None and second is not None
    graph = build(sinks)
    slow = next(t for t in range(len(graph)) if graph.nodes[t].fn.name == "rank_slow")
    quick_leaf = min(second[t] for t in range(len(graph)) if not graph.children[t])
    assert second[slow] >= 0.05 > quick_leaf  # as the first run's record will say
    assert len(open_history(where).runs(limit=10)) == 2
