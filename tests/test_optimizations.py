"""Wukong's optimizations (shoal.optimizations): the option, the pure decisions, and each
one acting on a real gateway, seen from the run's record. (The shared graph suite runs with
every optimization forced on: conftest's ``optimized``, ``cluster`` and ``blobs`` engines.)"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import run_ranked
from servers import gateway

import shoal
from shoal import optimizations
from shoal.backends import Platform, Size
from shoal.backends.local import LocalWorkers
from shoal.decisions import FLUSH_AFTER_S, SMALL_TASK_S, Completion, Upload
from shoal.events import Event, EventKind
from shoal.graph import build
from shoal.history.records import BackendStats
from shoal.optimizations import (
    CLUSTER_ABOVE_ENV,
    DEFAULT,
    OFF,
    OPTIMIZATIONS_ENV,
    Tuning,
    check_optimizations,
    cluster_threshold,
    tuning_for,
)
from shoal.optimizations.cluster import keep_all, made_here, stays_for_fan_in
from shoal.optimizations.fanin import Hold, hold_back, holder, wants_fan_in
from shoal.optimizations.prewarm import sizes_to_warm, warm_ups
from shoal.optimizations.share import (
    SHARE_WORK_S,
    groups_for,
    shared,
    worth_sharing,
)
from shoal.optimizations.tree import BRANCHING, split_tree
from shoal.planning.model import BackendModel
from shoal.protocol import new_run_id, run_graph
from shoal.protocol import worker as worker_module
from shoal.protocol.fanins import set_aside
from shoal.protocol.sharing import hand_over_backlog
from shoal.stores.memory import MemoryStore
from shoal.summary import RunSummary

# --------------------------------------------------------------------------- the option


def test_the_option_reads_lists_strings_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(OPTIMIZATIONS_ENV, raising=False)
    assert check_optimizations(None) is None  # the planner's say
    assert check_optimizations([]) == frozenset()
    assert check_optimizations(["cluster"]) == {"cluster"}
    assert check_optimizations("cluster") == {"cluster"}
    assert check_optimizations(" cluster ,invoke-tree") == {"cluster", "invoke-tree"}
    assert check_optimizations("none") == frozenset()
    monkeypatch.setenv(OPTIMIZATIONS_ENV, "cluster")
    assert check_optimizations(None) == {"cluster"}
    assert check_optimizations([]) == frozenset()  # the argument wins


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["cluster", "turbo"], r"unknown optimization 'turbo': expected some of cluster, "),
        ("fast,turbo", r"unknown optimizations 'fast', 'turbo'"),
        (3, r"optimizations must be a list of names, None or a string, got 3"),
    ],
)
def test_a_bad_option_is_refused_naming_it(value: Any, message: str) -> None:
    with pytest.raises(shoal.ConfigError, match=message):
        check_optimizations(value)


@shoal.task
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


def test_an_unknown_optimization_fails_before_anything_runs(tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    with pytest.raises(shoal.ConfigError, match="unknown optimization 'preload-everything'"):
        touch(str(flag)).compute(progress=False, optimizations=["preload-everything"])
    assert not flag.exists()


# --------------------------------------------------------------------------- thresholds


def _model(kind: str, bandwidth: float | None = None) -> BackendModel:
    model = BackendModel.learn(kind, BackendStats(), "mean", Platform(2.0, 60.0, {}), 2)
    if bandwidth is not None:
        model.read_s_per_byte = model.write_s_per_byte = 1 / bandwidth
    return model


def test_the_cluster_threshold_follows_the_backend_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLUSTER_ABOVE_ENV, raising=False)
    slow, fast = _model("gateway", 100e6), _model("gateway", 400e6)
    # Where moving the output (up and down) costs a warm hand-out.
    assert cluster_threshold(slow) == pytest.approx(slow.handout_warm_s * 100e6 / 2)
    assert cluster_threshold(fast) == pytest.approx(4 * cluster_threshold(slow))
    assert cluster_threshold(None) == math.inf  # workers share the client's memory
    assert tuning_for(frozenset(), slow) == OFF
    assert tuning_for(None, slow) == DEFAULT and DEFAULT.tree and DEFAULT.cluster_above is None
    assert tuning_for(frozenset({"cluster"}), slow).cluster_above == cluster_threshold(slow)
    monkeypatch.setenv(CLUSTER_ABOVE_ENV, "0")
    assert cluster_threshold(slow) == 0
    monkeypatch.setenv(CLUSTER_ABOVE_ENV, "lots")
    with pytest.raises(shoal.ConfigError, match=r"\$SHOAL_CLUSTER_ABOVE must be a number"):
        cluster_threshold(slow)


def test_a_large_output_keeps_every_child_a_small_one_leaves_them() -> None:
    def nbytes(value: bytes) -> int:
        return len(value)

    assert keep_all((3, 4, 5), b"x" * 100, 100, nbytes) == (True, True, True)
    assert keep_all((3, 4, 5), b"x" * 99, 100, nbytes) is None
    assert keep_all((), b"x" * 100, 100, nbytes) is None  # a sink: nothing to keep
    assert keep_all((3,), b"x", None, nbytes) is None  # clustering off


def test_a_single_child_is_no_fan_out_to_keep() -> None:
    assert keep_all((3,), b"x" * 100, 1, len) is None  # the plan's, or its readier's


# A reduction: leaves 0-3, 4 = 0+1, 5 = 2+3, 6 = 4+5.
TREE = {4: (0, 1), 5: (2, 3), 6: (4, 5)}


def test_a_worker_makes_what_it_owns_and_what_only_its_own_work_feeds() -> None:
    owned = {1, 2, 3}
    assert made_here(2, TREE.get, owned.__contains__)
    assert made_here(5, TREE.get, owned.__contains__)  # both its inputs are owned
    assert not made_here(4, TREE.get, owned.__contains__)  # 0 is not
    assert not made_here(5, TREE.get, owned.__contains__, depth=0)  # looks no higher
    assert not made_here(5, lambda t: None, owned.__contains__)  # planned elsewhere


def test_an_output_waits_aside_only_while_its_fan_ins_other_inputs_are_coming_here() -> None:
    def aside(made: set[int], owned: set[int], inputs: tuple[int, ...]) -> bool:
        return stays_for_fan_in(inputs, made.__contains__, owned.__contains__, TREE.get)

    assert aside({0}, {1, 2, 3}, TREE[4])  # 1 is its own work: 0 waits, unstored
    assert not aside({0, 1}, {2, 3}, TREE[4])  # both made: they complete together
    assert not aside({0}, {2, 3}, TREE[4])  # 1 is another worker's: 0 is stored
    assert aside({0, 1, 4}, {2, 3}, TREE[6])  # 5 comes from 2 and 3, both its own
    assert not aside({0, 1, 4}, {3}, TREE[6])


# --------------------------------------------------------------------------- acting


@shoal.task
def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@shoal.task
def strided(array: np.ndarray, i: int) -> float:
    return float(array[i::8].sum())


@shoal.task
def total(*parts: float) -> float:
    return float(sum(parts))


def _fan_out(n: int = 500_000) -> shoal.Node:
    array = make_array(n)  # 4 MB: above the default threshold on a gateway (~0.8 MB)
    return total(*[strided(array, i) for i in range(8)])


def _last_record(where: str) -> Any:
    return shoal.history(where).runs(limit=1)[0]


def test_clustering_runs_a_fan_out_on_its_producer_and_stores_only_the_sink(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    where = str(tmp_path / "h.db")
    options = {"storage": redis_url, "workers": gateway_url, "history": where, "progress": False}
    expected = float(np.arange(500_000, dtype=np.float64).sum())

    assert _fan_out().compute(**options, optimizations=["cluster"]) == expected
    clustered = shoal.last_run()
    assert clustered is not None and clustered.outputs_stored == 1  # the sink's only
    assert clustered.workers == 1
    assert len({t.worker for t in _last_record(where).tasks}) == 1  # all on the producer

    assert _fan_out().compute(**options, optimizations=[]) == expected
    spread = shoal.last_run()
    assert spread is not None and spread.workers > 1
    assert spread.bytes_moved >= 4_000_000 > clustered.bytes_moved


@shoal.task(cpus=2)
def two_cpu_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@shoal.task(cpus=2)
def slow_strided(array: np.ndarray, i: int) -> float:
    time.sleep(0.3)  # a wait that holds no lock: the threads overlap
    return float(array[i::4].sum())


def test_a_clustered_fan_out_runs_on_as_many_threads_as_its_worker_has_cpus(
    redis_url: str, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLUSTER_ABOVE_ENV, "0")
    where = str(tmp_path / "h.db")
    array = two_cpu_array(1000)
    node = total(*[slow_strided(array, i) for i in range(4)])
    options = {"storage": redis_url, "workers": gateway_url, "history": where, "progress": False}
    assert node.compute(**options, optimizations=["cluster"]) == float(np.arange(1000).sum())
    children = [t for t in _last_record(where).tasks if t.task in (1, 2, 3, 4)]
    assert len({t.worker for t in children}) == 1  # all on the producer's worker
    children.sort(key=lambda t: t.start)
    overlapping = sum(b.start < a.end for a, b in zip(children, children[1:], strict=False))
    assert overlapping >= 2  # two at a time: 1 and 2 together, then 3 and 4
    assert children[2].start >= min(children[0].end, children[1].end)  # no third at once


def test_without_a_planner_or_a_forced_list_nothing_clusters(
    redis_url: str, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OPTIMIZATIONS_ENV, raising=False)
    options = {"storage": redis_url, "workers": gateway_url, "progress": False}
    _fan_out().compute(**options, history=str(tmp_path / "h.db"))
    summary = shoal.last_run()
    assert summary is not None and summary.workers > 1 and summary.bytes_moved >= 4_000_000


@shoal.task
def slow_array(n: int) -> np.ndarray:
    # Long enough that its worker stores each completion as it comes, even on a full
    # platform (where quicker tasks share a step).
    time.sleep(FLUSH_AFTER_S + 0.005)
    return np.arange(n, dtype=np.float64)


@shoal.task
def pair_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


@shoal.task
def checksum(array: np.ndarray) -> float:
    return float(array.sum())


def _reduction(leaves: int = 8, n: int = 500_000) -> shoal.Node:
    nodes = [slow_array(n) for _ in range(leaves)]
    while len(nodes) > 1:
        nodes = [pair_sum(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return checksum(nodes[0])


def test_clustering_runs_a_reduction_where_its_inputs_are_and_stores_none_of_them(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One gateway worker at a time: every leaf and merge runs on one worker. Clustered,
    and by default (arrays over ASIDE_ABOVE), each merge's first input waits unstored until
    its worker has made the other input, so no array is stored; with every optimization
    off, every array that completes before its sibling is."""
    monkeypatch.delenv(OPTIMIZATIONS_ENV, raising=False)
    expected = 8 * float(np.arange(500_000, dtype=np.float64).sum())
    with gateway("--max-workers", "1") as url:
        options = {"storage": redis_url, "workers": url, "progress": False}
        assert _reduction().compute(**options, optimizations=["cluster"]) == expected
        clustered = shoal.last_run()
        assert _reduction().compute(**options) == expected
        by_default = shoal.last_run()
        assert _reduction().compute(**options, optimizations=[]) == expected
        spread = shoal.last_run()
    assert clustered is not None and by_default is not None and spread is not None
    assert clustered.outputs_stored == by_default.outputs_stored == 1  # the checksum's only
    assert spread.bytes_moved >= 4 * 4_000_000 > max(clustered.bytes_moved, by_default.bytes_moved)


@shoal.task
def ident(x: Any) -> Any:
    return x


@shoal.task
def add(a: int, b: int) -> int:
    return a + b


def test_a_kept_child_reads_an_output_an_earlier_child_of_its_batch_read_already() -> None:
    """One worker (fan-out 1): ``c`` readies ``add`` (run at once) and, with ``add``, the
    child needing both; ``c``'s output is then not stored (every child stayed), so the
    worker must still hold it after ``add`` read it."""

    async def run() -> list[Any]:
        store, workers = MemoryStore(), LocalWorkers(parallelism=1)
        await workers.start(store)
        c = ident(5)
        try:
            return await run_graph(
                build([ident([c, add(c, c)])]),
                store,
                workers,
                run_id=new_run_id(),
                on_events=lambda e: None,
            )
        finally:
            await workers.close()

    assert asyncio.run(run()) == [[5, 10]]


# --------------------------------------------------------------------------- invoke tree


@settings(deadline=None)
@given(st.integers(0, 3000), st.integers(2, 20))
def test_a_tree_hands_out_every_invocation_once_in_log_rounds(n: int, branching: int) -> None:
    sent: list[int] = []
    deepest = 0

    def walk(items: list[int], depth: int) -> None:
        nonlocal deepest
        heads = split_tree(items, branching)
        assert len(heads) <= branching  # never more in flight than an invoker may have
        for head, share in heads:
            sent.append(head)
            deepest = max(deepest, depth)
            walk(share, depth + 1)

    walk(list(range(n)), 0)
    assert sorted(sent) == list(range(n))
    if n:  # rounds: 1 + log_branching(n), not n / branching
        assert deepest <= math.ceil(math.log(n, branching)) if n > 1 else deepest == 0


def test_a_forwarded_invocation_carries_its_tasks_pages_and_lease_parent() -> None:
    from shoal.backends import Invocation

    pages = {0: b"page0", 1: b"page1", 2: b"page2"}
    head = Invocation("run", (1,), 4, pages={0: pages[0]}, id="h", parent="p")
    others = [
        Invocation("run", (70,), 4, pages={1: pages[1]}, id="a", parent="p"),
        Invocation("run", (130, 131), 4, pages={2: pages[2]}, id="b", parent="p", redo=(5,)),
    ]
    carrying = head.forwarding(others)
    assert carrying.pages == pages and [f.id for f in carrying.forward] == ["a", "b"]
    sent = carrying.forwarded()
    assert [(i.id, i.tasks, i.parent, i.redo, i.forward) for i in sent] == [
        ("a", (70,), "p", (), ()),
        ("b", (130, 131), "p", (5,), ()),
    ]
    assert [i.pages for i in sent] == [{1: b"page1"}, {2: b"page2"}]
    assert head.forwarding([]) is head


def test_a_hand_out_of_a_tree_head_does_not_send_its_share_again() -> None:
    from shoal.backends import Invocation

    head = Invocation("run", (1,), 4, id="h").forwarding([Invocation("run", (7,), 4, id="a")])
    later = head.handing_out([9], None, head.size)  # e.g. the fan-in its last task readies
    assert later.forward == () and later.parent == "h"
    waited = Invocation("run", (1,), 4, request_s=0.2)  # its hand-out's, not its own's
    assert waited.handing_out([9], None, Size()).request_s is None


def test_a_flat_hand_out_stamps_each_later_invocation_with_the_request_it_waited_for() -> None:
    """BRANCHING requests in flight; each further one goes as one is answered, and carries
    how long after that one's sending it went: the history learns the invoker's wait from
    it. Those sent at once carry nothing."""
    from shoal.backends import Invocation, invoke_all

    answer = asyncio.Event()
    sent: list[Invocation] = []

    class Held:  # a platform whose first requests are answered when the test says so
        in_process = False

        async def invoke(self, invocation: Invocation) -> None:
            sent.append(invocation)
            if len(sent) <= BRANCHING:
                await answer.wait()

    async def main() -> None:
        wide = [Invocation("run", (i,), 4, id=str(i), tuning=OFF) for i in range(BRANCHING + 3)]
        going = asyncio.ensure_future(invoke_all(Held(), wide))  # type: ignore[arg-type]
        while len(sent) < BRANCHING:
            await asyncio.sleep(0)
        assert len(sent) == BRANCHING  # the rest wait for answers
        answer.set()
        await going

    asyncio.run(main())
    assert [i.request_s for i in sent[:BRANCHING]] == [None] * BRANCHING
    waits = [i.request_s for i in sent[BRANCHING:]]
    assert len(waits) == 3 and all(w is not None and w >= 0 for w in waits)
    first_sent = min(i.sent for i in sent[:BRANCHING])
    for later in sent[BRANCHING:]:
        assert later.request_s is not None and later.sent - later.request_s >= first_sent


@shoal.task
def seed() -> int:
    return 0


@shoal.task
def plus(x: int, i: int) -> int:
    return x + i


def test_a_wide_hand_out_goes_out_as_a_tree_unless_turned_off(redis_url: str) -> None:
    """20 children of one task on a gateway that runs 20 at once: the root's worker keeps
    one and hands 19 out. As a tree, it sends 8 heads, which send the other 11 on; flat,
    it sends all 19 itself."""
    s = seed()
    node = total(*[plus(s, i) for i in range(20)])
    with gateway("--max-workers", "20", "--invoke-latency", "0.01") as url:
        options = {"storage": redis_url, "workers": url, "history": "none", "progress": False}
        assert node.compute(**options) == sum(range(20))
        tree = shoal.last_run()
        assert tree is not None and tree.forwarded == 19 - BRANCHING
        assert node.compute(**options, optimizations=[]) == sum(range(20))
        flat = shoal.last_run()
        assert flat is not None and flat.forwarded == 0 and flat.workers == tree.workers


def test_the_optimizing_planner_clusters_only_once_history_shows_it_pays(
    redis_url: str, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without history it plans nothing (planner none: no optimization on); once two runs
    show the 4 MB array's moves, it plans the fan-out on its producer's worker."""
    monkeypatch.delenv(OPTIMIZATIONS_ENV, raising=False)
    where = str(tmp_path / "h.db")
    options = {"storage": redis_url, "workers": gateway_url, "history": where, "progress": False}
    _fan_out().compute(**options, planner="optimizing")
    unplanned = shoal.last_run()
    assert unplanned is not None and unplanned.planner == "none" and unplanned.workers > 1
    _fan_out().compute(**options)
    _fan_out().compute(**options, planner="optimizing")
    planned = shoal.last_run()
    assert planned is not None and planned.planner == "optimizing"
    assert planned.workers == 1 and planned.outputs_stored == 1


# --------------------------------------------------------------------------- fan-ins


def test_one_inputs_worker_holds_back_and_only_for_a_large_enough_output() -> None:
    delayed = Tuning(delay_above=1000, delay_s_per_byte=1e-3)
    assert holder([3, 4], None, []) == 3  # without a plan: the first input
    assert holder([3, 4, 5], 7, [6, 7, 7]) == 4  # with one: the first in the fan-in's group
    assert holder([3, 4], 7, [6, 6]) is None  # none planned with it: nobody holds back
    assert hold_back(3, 3, 2000, delayed) == Hold(2.0, 2.0)  # as long as moving it
    assert hold_back(4, 3, 2000, delayed) is None  # 3's worker holds back for it
    assert hold_back(3, 3, 999, delayed) is None  # too small to be worth it
    preload = Tuning(preload=True, preload_above=1000, hold_idle_s=0.5)
    assert hold_back(3, 3, 1000, preload) == Hold(math.inf, 0.5)
    assert hold_back(3, 3, 999, preload) is None  # nothing worth reading ahead
    assert hold_back(3, 3, 10**9, OFF) is None
    assert wants_fan_in((9,), (2,), None) and wants_fan_in((9,), (2,), (True,))
    assert not wants_fan_in((9,), (2,), (False,))  # the plan puts the fan-in elsewhere
    assert not wants_fan_in((9, 10), (2, 2), None) and not wants_fan_in((9,), (1,), None)


@shoal.task
def late(seconds: float, n: int) -> np.ndarray:
    time.sleep(seconds)
    return np.full(n, seconds)


@shoal.task
def join_all(*arrays: np.ndarray) -> float:
    return float(sum(a.sum() for a in arrays))


def _fan_in_run(options: dict[str, Any], where: str, delays: list[float], n: int) -> Any:
    node = join_all(*[late(d, n) for d in delays])
    assert node.compute(**options, history=where) == pytest.approx(sum(d * n for d in delays))
    return _last_record(where).tasks


def test_preload_runs_the_fan_in_on_the_first_inputs_worker_with_every_input_read_ahead(
    redis_url: str, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three 400 KB inputs landing 0.15 s apart (counted large here): the first input's
    worker waits, reads the others as they are stored, and runs the fan-in having read
    nothing when it started."""
    monkeypatch.setenv(CLUSTER_ABOVE_ENV, "100000")
    options = {"storage": redis_url, "workers": gateway_url, "progress": False}
    delays, where = [0.0, 0.15, 0.3], str(tmp_path / "h.db")
    plain = _fan_in_run({**options, "optimizations": []}, where, delays, 50_000)
    assert plain[-1].worker == plain[2].worker and plain[-1].read_bytes  # the last input's
    preloaded = _fan_in_run({**options, "optimizations": ["preload"]}, where, delays, 50_000)
    assert preloaded[-1].worker == preloaded[0].worker != preloaded[2].worker
    assert preloaded[-1].read_bytes == 0  # every input was in memory when it started


def test_delayed_io_keeps_a_large_output_from_being_stored_when_the_other_input_is_quick(
    redis_url: str, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40 MB input done first, and a small one 0.5 s later, through Redis: held back (up
    to what moving 40 MB takes, here pinned to 50 MB/s each way instead of learned from
    one run, so 1.6 s), the large one is the last input, so its worker runs the fan-in
    with it in memory and stores nothing of it."""
    monkeypatch.setattr(optimizations, "_move_s_per_byte", lambda model: 4e-8)
    options = {"storage": redis_url, "workers": gateway_url, "progress": False, "blobs": "off"}
    where = str(tmp_path / "h.db")
    node = join_all(late(0.0, 5_000_000), late(0.5, 10))
    expected = 0.5 * 10
    assert node.compute(**options, history=where, optimizations=[]) == pytest.approx(expected)
    plain = shoal.last_run()
    assert plain is not None and plain.bytes_moved >= 40_000_000
    assert node.compute(**options, history=where, optimizations=["delayed-io"]) == pytest.approx(
        expected
    )
    held = shoal.last_run()
    assert held is not None and held.bytes_moved < 1_000_000
    tasks = _last_record(where).tasks
    assert tasks[-1].worker == tasks[0].worker


# --------------------------------------------------------------------------- pre-warm


def test_sizes_to_warm_are_the_childrens_other_sizes_at_most_a_fan_out_each() -> None:
    own, small, big = Size(), Size(1, 512), Size(2, 4096)
    assert sizes_to_warm(own, [own, small, small, small, big], fanout=2) == {small: 2, big: 1}
    assert sizes_to_warm(own, [own, own], fanout=8) == {}


def test_each_size_is_warmed_at_the_earliest_delay_of_the_tasks_needing_it() -> None:
    own, small, big = Size(), Size(1, 512), Size(2, 4096)
    children = {0: [small, own], 1: [small, big], 2: [own]}
    assert warm_ups(own, children, 8, {0: 2.0, 1: 0.5}) == [(0.5, small, 2), (0.5, big, 1)]
    assert warm_ups(own, children, 8, {}) == [(0.0, small, 2), (0.0, big, 1)]  # at once
    assert warm_ups(own, {2: [own]}, 8, {}) == []


@shoal.task
def stage_one(seconds: float) -> int:
    time.sleep(seconds)
    return 1


@shoal.task(memory_mb=1024)
def stage_two(x: int, i: int) -> int:
    return x + i


@pytest.mark.parametrize(("optimizations", "cold"), [(["prewarm"], 1), ([], 2)])
def test_prewarm_starts_the_second_stage_warm(
    redis_url: str, optimizations: list[str], cold: int
) -> None:
    """A 0.3 s first stage whose children need a size no worker has: pre-warmed as it
    starts, the children's worker starts warm; otherwise, cold (a fresh gateway each)."""
    first = stage_one(0.3)
    node = total(*[stage_two(first, i) for i in range(3)])
    with gateway() as url:
        options = {"storage": redis_url, "workers": url, "history": "none", "progress": False}
        assert node.compute(**options, optimizations=optimizations) == 3 + 3
        summary = shoal.last_run()
        assert summary is not None and summary.cold_starts == cold


# --------------------------------------------------------------------------- sharing


def test_a_worker_shares_only_work_worth_a_start() -> None:
    assert worth_sharing(3, SHARE_WORK_S / 2)  # two more tasks: enough
    assert not worth_sharing(2, SHARE_WORK_S / 2)  # one: less than a start
    assert not worth_sharing(1, 10.0)  # nothing to share: it runs its last task


@given(
    ready=st.lists(st.integers(0, 10_000), unique=True, max_size=40),
    stuck=st.sets(st.integers(0, 40)),
    live=st.integers(1, 12),
    cap=st.integers(1, 12),
)
def test_ready_tasks_are_shared_evenly_with_a_new_worker_per_free_slot(
    ready: list[int], stuck: set[int], live: int, cap: int
) -> None:
    """``stuck``: the places in ``ready`` of tasks that cannot move (an input of theirs
    is in the worker's memory only)."""
    movable = {t for i, t in enumerate(ready) if i not in stuck}
    groups = shared(ready, movable, live, cap)
    free = cap - live
    if free <= 0 or len(ready) < 2:
        assert groups == []
        return
    handed = [t for g in groups for t in g]
    assert all(g for g in groups) and len(groups) <= free  # a worker per free slot at most
    assert set(handed) <= movable and len(set(handed)) == len(handed)
    assert ready[0] not in handed  # the task it runs next stays
    own = -(-len(ready) // (free + 1))
    assert len(ready) - len(handed) >= own  # it keeps at least its share...
    later = [t for t in ready[1:] if t in movable][-(len(ready) - own) :]
    assert handed == later  # ... handing out the movable ones it would run last, in order
    if groups:
        assert max(map(len, groups)) - min(map(len, groups)) <= 1  # even groups


def test_readied_children_are_split_over_the_free_slots_and_the_worker() -> None:
    assert groups_for(4, 1, 0, 8) == 4  # only this worker alive: three free slots and its own
    assert groups_for(4, 3, 0, 8) == 2
    assert groups_for(4, 4, 0, 8) == 1  # none free: it keeps them all
    assert groups_for(4, 9, 0, 8) == 1  # queued invocations count too
    assert groups_for(1, 1, 0, 8) == 1


def test_readied_children_stay_when_older_ready_tasks_fill_the_free_slots() -> None:
    # One slot free, 5 ready tasks held and 2 children: 3 of the 7 go, all of the backlog.
    assert groups_for(2, 1, 5, 2) == 1
    assert groups_for(2, 1, 1, 2) == 1  # 1 of 3 to hand out: the backlog's one
    assert groups_for(2, 1, 1, 4) == 2  # 2 of 5: the backlog's one is not enough
    assert groups_for(4, 1, 3, 8) == 4  # 3 of the 8 to hand out: the children go too
    assert groups_for(4, 1, 9, 3) == 1  # 9 of 12 handed out, all from the backlog


def test_a_worker_shares_its_chains_heads_not_the_chain_it_runs() -> None:
    """Run order: the rest of its chain (its input in memory), then three chains' heads.
    One free slot: two of the four ready tasks go, both heads; three slots: all heads."""
    ready, heads = [9, 3, 2, 1], {3, 2, 1}
    assert shared(ready, heads, 1, 2) == [[2, 1]]
    assert shared(ready, heads, 1, 4) == [[3], [2], [1]]
    assert shared(ready, heads, 2, 2) == []  # no free slot
    assert shared([9, 3], {3}, 1, 2) == [[3]]


def test_a_worker_handing_tasks_out_while_outputs_wait_aside_steps_at_once() -> None:
    """An output set aside waits for a fan-in whose other inputs its worker would make; once
    the worker hands some of its ready tasks out, they may be made elsewhere: its next step
    is urgent, so that the worker looks again which outputs still wait (and stores the
    others) before running on. With nothing aside, sharing changes nothing about steps."""

    class Spec:
        deps: tuple[int, ...] = ()
        group = dynamic = None

    class Source:
        async def spec(self, task: int) -> Spec:
            return Spec()

        def pages_for(self, tasks: list[int]) -> None:
            return None

    class Invocation:
        def handing_out(self, tasks: list[int], pages: None, size: Size) -> list[int]:
            return tasks

    def worker(aside: list[int]) -> Any:
        handed: list[Any] = []

        async def hand_out(invocations: list[Any]) -> None:
            handed.extend(invocations)

        state = SimpleNamespace(
            owned=[4, 3, 2, 1], aside=aside, urgent=False, held={}, early=set(),
            unflushed=set(), in_store=set(), live=1, fanout=2, name="w", source=Source(),
            workers=SimpleNamespace(in_process=True), invocation=Invocation(),
            hand_out=hand_out, handed=handed,
        )  # fmt: skip
        asyncio.run(hand_over_backlog(state))
        return state

    waiting = worker(aside=[7])
    assert waiting.handed == [[1, 2, 3, 4]] and waiting.owned == []  # before its long task
    assert waiting.urgent
    assert not worker(aside=[]).urgent


def test_a_worker_with_nothing_left_to_run_completes_what_waited_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An output waits aside for a fan-in whose other inputs its worker would make (here
    every one does: :func:`set_aside` stands in); once the worker owns nothing (it handed
    their makers out), nothing here makes them: its step completes the output. A worker
    that stopped with it unsent hung its run (a work-stealing draft did, in Montage)."""

    async def all_aside(state: Any, batch: list[Any]) -> tuple[list[Any], list[Any]]:
        return [], list(batch)

    monkeypatch.setattr(worker_module, "set_aside", all_aside)

    def flushed(owned: list[int]) -> tuple[list[int], list[int]]:
        completed: list[int] = []

        async def complete(batch: list[Any], timed: bool = True) -> bool:
            completed.extend(c.task for c in batch)
            return True

        state = SimpleNamespace(
            in_flight=None, held_back=[], aside=[SimpleNamespace(task=7)], batch=[],
            unflushed=set(), urgent=False, fan_ins=set(), aside_above=0, holding=[],
            owned=owned, pipelines=False, complete=complete,
        )  # fmt: skip
        assert asyncio.run(worker_module._Worker.flush(state)) is True  # type: ignore[arg-type]
        return completed, [c.task for c in state.aside]

    assert flushed(owned=[3]) == ([], [7])  # 3 may make the fan-in's other input: it waits
    assert flushed(owned=[]) == ([7], [])


def test_an_output_does_not_wait_for_a_fan_in_input_its_worker_handed_away() -> None:
    """TREE's 6 = 4 + 5, 5 = 2 + 3, all made on one worker but 5. With 2 and 3 completed
    earlier, 5 was readied by them; not owned here, it was handed away: 4 completes now
    instead of waiting for it. With 3's completion still in the batch, 5 will be readied
    here: 4 waits aside (3 completes: both of 5's inputs are made)."""
    deps = {0: (), 1: (), 2: (), 3: (), **TREE}
    children = {t: tuple(c for c, ds in TREE.items() if t in ds) for t in deps}

    class Source:
        async def spec(self, task: int) -> Any:
            return SimpleNamespace(deps=deps[task], group=None)

    def completion(task: int) -> Completion:
        finished = Event(EventKind.TASK_FINISHED, "w", task, 1.0, None, 0.5)
        kids = children[task]
        return Completion(task, "x" * 100, Upload.NEVER, kids, (2,) * len(kids), finished)

    def split(batch: list[int]) -> tuple[list[int], list[int]]:
        state = SimpleNamespace(
            aside_above=0, owned=[], fanout=2, made={0, 1, 2, 3, 4}, source=Source()
        )
        now, aside = asyncio.run(set_aside(state, [completion(t) for t in batch]))  # type: ignore[arg-type]
        return [c.task for c in now], [c.task for c in aside]

    assert split([4]) == ([4], [])  # 5 was handed away
    assert split([3, 4]) == ([3], [4])  # 5 comes from this very step


@shoal.task
def after_flags(folder: str, names: list[str], within_s: float) -> bool:
    """Wait (up to ``within_s``) for the flags the other workers' tasks leave."""
    deadline = time.monotonic() + within_s
    while not all((Path(folder) / n).exists() for n in names):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@shoal.task
def flag(folder: str, name: str) -> str:
    (Path(folder) / name).touch()
    return name


@shoal.task
def work(seconds: float) -> float:
    time.sleep(seconds)  # the task's work (a worker ready to share is one still working)
    return seconds


def test_idle_capacity_takes_ready_tasks_off_a_busy_worker(
    engine: dict[str, Any], flags: Path
) -> None:
    """The client hands the roots out in one group per worker the platform runs at once:
    one group of slow tasks, the others quick. Once the quick groups' workers have
    stopped, the slow group's worker hands half of its ready tasks to a new worker; with
    sharing off, it runs them all itself."""
    on_gateway = "gateway+" in engine["workers"]  # its concurrency cap is the CPU count
    slots = (os.cpu_count() or 1) if on_gateway else LocalWorkers().parallelism
    if slots < 2:
        pytest.skip("a platform running one worker at once has no capacity to share")
    per_group = 12

    def graph(folder: Path) -> list[shoal.Node]:
        folder.mkdir()
        quick = [f"q{i}" for i in range(per_group * (slots - 1))]
        slow = [after_flags(str(folder), quick, 60.0)]
        slow += [work(0.06) for _ in range(per_group - 1)]
        return slow + [flag(str(folder), name) for name in quick]

    forced = engine.get("optimizations")
    results = shoal.compute(*graph(flags / "on"), **engine)
    assert results[0] is True and len(results) == per_group * slots
    assert shoal.last_run().workers > slots  # a new worker took some of the slow ones

    off = [name for name in forced if name != "share"] if forced else []
    shoal.compute(*graph(flags / "off"), **{**engine, "optimizations": off})
    assert shoal.last_run().workers == slots


@shoal.task
def fan_out_when_flagged(before: str, folder: str, flag_names: list[str], n: int) -> list[int]:
    """Once every other slot's task has started (its flag is there): n values to fan out.
    ``before``: the worker's first tasks, whose steps told it the platform is full."""
    assert after_flags.func(folder, flag_names, 60.0)
    return list(range(n))


@shoal.task
def slow_step(*inputs: str) -> str:
    """Slow enough that its store step is not put off: its reply is in by the next's end."""
    time.sleep(2 * SMALL_TASK_S)
    return "step"


@shoal.task
def nth(values: list[int], i: int, folder: str) -> int:
    (Path(folder) / f"child{i}").touch()
    return values[i]


@shoal.task
def hold_slot(folder: str, name: str, children: list[str]) -> bool:
    """Take a slot of the platform until the fan-out's children have run."""
    (Path(folder) / name).touch()
    return after_flags.func(folder, children, 60.0)


def test_a_fan_out_readied_while_the_platform_is_full_stays_on_its_worker(
    engine: dict[str, Any], flags: Path
) -> None:
    """Every other slot of the platform is taken by a task that waits for the fan-out's
    children: the fan-out's worker keeps them all, instead of handing half to a worker
    that would wait for a slot (with sharing off, it hands them out: one worker more).
    Its first step told it so: the fan-out's output, read by no other worker, is not
    stored (only the sinks' are)."""
    on_gateway = "gateway+" in engine["workers"]  # its concurrency cap is the CPU count
    slots = (os.cpu_count() or 1) if on_gateway else LocalWorkers().parallelism
    if slots < 2:
        pytest.skip("a platform running one worker at once has no slot to fill")

    def graph(folder: Path) -> list[shoal.Node]:
        folder.mkdir()
        children = [f"child{i}" for i in range(4)]
        holders = [f"slot{i}" for i in range(slots - 1)]
        values = fan_out_when_flagged(slow_step(slow_step()), str(folder), holders, 4)
        fan = [nth(values, i, str(folder)) for i in range(4)]
        return fan + [hold_slot(str(folder), name, children) for name in holders]

    results = shoal.compute(*graph(flags / "on"), **engine)
    assert results == (0, 1, 2, 3, *[True] * (slots - 1))
    assert shoal.last_run().workers == slots  # the roots' workers only
    if engine.get("optimizations"):
        return  # clustering, forced on, keeps a fan-out on its worker anyway
    assert shoal.last_run().outputs_stored == 4 + slots - 1

    shoal.compute(*graph(flags / "off"), **{**engine, "optimizations": ["invoke-tree"]})
    assert shoal.last_run().workers == slots + 1


def test_ranked_children_kept_on_a_full_platform_can_still_be_shared(flags: Path) -> None:
    """Ranked (a history's ranks), a worker may run its kept children long after their
    parent: their input is stored, so that a worker that frees up can take them."""
    slots = 2
    folder = flags / "ranked"
    folder.mkdir()
    children = [f"child{i}" for i in range(4)]
    values = fan_out_when_flagged(slow_step(slow_step()), str(folder), ["slot0"], 4)
    sinks = [nth(values, i, str(folder)) for i in range(4)]
    sinks.append(hold_slot(str(folder), "slot0", children))
    graph = build(sinks)
    summary = RunSummary("ranked", graph.structure_hash, len(graph))
    assert run_ranked(graph, slots, [1.0] * len(graph), summary.add) == [0, 1, 2, 3, True]
    assert summary.outputs_stored == len(sinks) + 1  # the fan-out's too
