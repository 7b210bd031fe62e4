"""The protocol's pure decisions (shoal/decisions.py), with exact-state asserts."""

from __future__ import annotations

import random
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.decisions import (
    FLUSH_AFTER_S,
    FLUSH_TASKS,
    LINKS_FLUSH_AFTER_S,
    SMALL_TASK_S,
    Completion,
    Marks,
    Upload,
    backoff_delays,
    complete_batch,
    group_roots,
    mark_children,
    most_urgent,
    must_store,
    remember_marks,
    runs_on,
    settled_here,
    should_flush,
    split_ready,
    splits,
    upload_mode,
    waits_for_next,
    wakes_client,
)
from shoal.events import Event, EventKind

# --------------------------------------------------------------------------- mark_children


def test_a_child_is_ready_exactly_once_when_its_last_input_arrives() -> None:
    marks = Marks()
    assert mark_children(marks, 1, [10], [3]) == []
    assert marks.inputs == {10: {1}} and marks.owner == {}
    assert mark_children(marks, 2, [10], [3]) == []
    assert marks.inputs == {10: {1, 2}} and marks.owner == {}
    assert mark_children(marks, 3, [10], [3]) == [10]
    assert marks.inputs == {10: {1, 2, 3}} and marks.owner == {10: 3}
    # every later delivery, of any parent, readies nothing again
    for parent in (1, 2, 3):
        assert mark_children(marks, parent, [10], [3]) == []
    assert marks.inputs == {10: {1, 2, 3}} and marks.owner == {10: 3}


def test_duplicate_delivery_of_the_same_parent_readies_nothing() -> None:
    marks = Marks()
    assert mark_children(marks, 1, [10], [2]) == []
    assert mark_children(marks, 1, [10], [2]) == []  # redelivered: still one input of two
    assert marks.inputs == {10: {1}}
    assert mark_children(marks, 2, [10], [2]) == [10]
    assert mark_children(marks, 2, [10], [2]) == []
    assert marks.owner == {10: 2}


def test_single_input_children_are_ready_at_once_and_only_once() -> None:
    marks = Marks()
    assert mark_children(marks, 5, [6, 7, 8], [1, 1, 1]) == [6, 7, 8]
    assert marks.owner == {6: 5, 7: 5, 8: 5} and marks.inputs == {}
    assert mark_children(marks, 5, [6, 7, 8], [1, 1, 1]) == []
    assert marks.owner == {6: 5, 7: 5, 8: 5}


def test_mixed_needs_in_one_completion() -> None:
    marks = Marks(inputs={12: {4}})  # child 12 already has one of its two inputs
    ready = mark_children(marks, 5, [10, 11, 12, 13], [1, 2, 2, 3])
    assert ready == [10, 12]  # in children order
    assert marks.inputs == {11: {5}, 12: {4, 5}, 13: {5}}
    assert marks.owner == {10: 5, 12: 5}
    ready = mark_children(marks, 6, [11, 13], [2, 3])
    assert ready == [11]
    assert marks.inputs == {11: {5, 6}, 12: {4, 5}, 13: {5, 6}}
    assert mark_children(marks, 7, [13], [3]) == [13]
    assert marks.owner == {10: 5, 11: 6, 12: 5, 13: 7}


def test_no_children_changes_nothing() -> None:
    marks = Marks(owner={1: 0})
    assert mark_children(marks, 3, [], []) == []
    assert marks == Marks(owner={1: 0})


def test_concurrent_marks_from_threads_ready_each_child_exactly_once() -> None:
    """Many threads deliver the inputs of shared children at once, with no lock: when the
    last inputs of a child land together, several threads see it complete; one owns it."""
    n_parents, n_children = 8, 2000
    marks = Marks()
    readied: list[list[int]] = [[] for _ in range(n_parents)]
    start = threading.Barrier(n_parents)
    children = list(range(100, 100 + n_children))

    def deliver(parent: int) -> None:
        start.wait()
        for child in children:  # one call per child: the most interleavings
            readied[parent] += mark_children(marks, parent, [child], [n_parents])

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=deliver, args=(p,)) for p in range(n_parents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    everything = sorted(c for ready in readied for c in ready)
    assert everything == children
    for child in children:  # the recorded owner is the thread that got the child
        assert child in readied[marks.owner[child]]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_each_child_is_readied_by_exactly_one_delivery_in_any_order(data: st.DataObject) -> None:
    n_parents = data.draw(st.integers(1, 6))
    parents = list(range(n_parents))
    # child c depends on a non-empty subset of the parents
    needs = data.draw(
        st.lists(st.sets(st.sampled_from(parents), min_size=1), min_size=1, max_size=6)
    )
    children_of = {p: [c for c, need in enumerate(needs) if p in need] for p in parents}
    deliveries = data.draw(st.permutations(parents * 2))  # every parent delivered twice
    marks = Marks()
    readied: list[int] = []
    seen: set[int] = set()
    for p in deliveries:
        kids = [100 + c for c in children_of[p]]
        ready = mark_children(marks, p, kids, [len(needs[k - 100]) for k in kids])
        seen.add(p)
        for k in ready:  # a child is ready only once all its parents have been delivered
            assert needs[k - 100] <= seen
        readied.extend(ready)
    assert sorted(readied) == [100 + c for c in range(len(needs))]


# --------------------------------------------------------------------------- upload decisions


def test_a_sink_always_uploads() -> None:
    for child_deps, fanout in [((), 1), ((), 8), ((1,), 1), ((2,), 8), ((1, 1, 3), 1)]:
        mode = upload_mode(True, child_deps, fanout)
        assert mode is Upload.ALWAYS
        children = range(10, 10 + len(child_deps))
        assert must_store(mode, children, kept=set(children))


def test_a_chain_child_is_never_uploaded() -> None:
    """Its only input is this task, so the completion readies it, and this worker keeps it:
    the output is not even sent to the store."""
    assert upload_mode(False, (1,), 8) is Upload.NEVER


def test_a_child_with_other_inputs_forces_the_upload_only_while_pending() -> None:
    mode = upload_mode(False, (2,), 8)
    assert mode is Upload.IF_PENDING
    assert must_store(mode, [10], kept=set()) is True  # the child waits for another
    assert must_store(mode, [10], kept={10}) is False  # input; else it stays here
    mode = upload_mode(False, (1, 2, 3), 1)
    assert mode is Upload.IF_PENDING
    assert must_store(mode, [10, 11, 12], kept={10, 11}) is True
    assert must_store(mode, [10, 11, 12], kept=set()) is True
    assert must_store(mode, [10, 11, 12], kept={10, 11, 12, 99}) is False


def test_a_fan_out_with_room_to_hand_out_always_uploads() -> None:
    for fanout in (2, 3, 64):
        for n_children in (2, 5, 100):
            mode = upload_mode(False, (1,) * n_children, fanout)
            assert mode is Upload.ALWAYS
            assert must_store(mode, range(n_children), kept=set(range(n_children)))


def test_a_fan_out_with_fanout_one_keeps_everything_local() -> None:
    assert upload_mode(False, (1, 1, 1, 1), 1) is Upload.NEVER


def test_a_task_without_children_that_is_no_sink_stores_nothing() -> None:
    assert upload_mode(False, (), 8) is Upload.NEVER


def test_never_means_never() -> None:
    assert must_store(Upload.NEVER, [10, 11], kept=set()) is False


def _done(task: int, children: tuple[int, ...], needs: tuple[int, ...], mode: Upload) -> Completion:
    return Completion(
        task, f"out{task}", mode, children, needs, Event(EventKind.TASK_FINISHED, "w")
    )


def test_a_batch_readies_a_child_whose_inputs_all_finished_in_it_and_stores_neither() -> None:
    """Both leaves of one add finish on this worker: the batch readies the add, which this
    worker owns, so neither leaf output needs the store."""
    marks = Marks()
    batch = [_done(0, (2,), (2,), Upload.IF_PENDING), _done(1, (2,), (2,), Upload.IF_PENDING)]
    readies, stored = complete_batch(marks, batch, 8)
    assert readies == [[], [2]]
    assert stored == [False, False]
    assert marks.owner == {2: 1} and marks.inputs == {2: {0, 1}}


def test_a_batch_stores_the_output_of_a_child_still_pending_after_it() -> None:
    marks = Marks()
    batch = [_done(0, (5, 6), (1, 2), Upload.IF_PENDING), _done(1, (), (), Upload.NEVER)]
    readies, stored = complete_batch(marks, batch, 8)
    assert readies == [[5], []]
    assert stored == [True, False]  # child 6 waits for another input: someone reads task 0


def test_an_input_of_a_child_handed_out_by_a_fan_out_in_the_same_batch_is_stored() -> None:
    """Task 0's only child, 10, is readied in the batch by task 1, a fan-out that keeps 11
    and hands 10 to another worker: that worker reads task 0's output from the store."""
    marks = Marks()
    batch = [
        _done(0, (10,), (2,), Upload.IF_PENDING),
        _done(1, (11, 10), (1, 2), Upload.ALWAYS),
    ]
    readies, stored = complete_batch(marks, batch, 2)
    assert readies == [[], [11, 10]]
    assert split_ready(readies[1], 2) == ([11], [[10]])
    assert stored == [True, True]
    # with a fan-out of one, the worker keeps both: task 0's output stays in its memory
    readies, stored = complete_batch(Marks(), batch, 1)
    assert stored == [False, True]


def test_a_worker_skips_encoding_what_its_own_marks_settle() -> None:
    """Leaves 0 and 1 of add 2: stored together, neither is needed by anyone else; stored
    one after the other, the second is settled by the first's mark, which the worker
    remembers; a mark only another worker made leaves the output to the store's say."""
    both = [_done(0, (2,), (2,), Upload.IF_PENDING), _done(1, (2,), (2,), Upload.IF_PENDING)]
    assert settled_here(both, 8, {}) == [Upload.NEVER, Upload.NEVER]
    sent: dict[int, set[int]] = {}
    assert settled_here(both[:1], 8, sent) == [Upload.IF_PENDING]  # 1 may be anyone's
    remember_marks(sent, both[:1], [[]])
    assert sent == {2: {0}}
    assert settled_here(both[1:], 8, sent) == [Upload.NEVER]
    remember_marks(sent, both[1:], [[2]])
    assert sent == {}  # readied: nothing left to remember
    # a child it readies but hands out (a fan-out of two groups) is another worker's
    fan = [_done(0, (10,), (2,), Upload.IF_PENDING), _done(1, (11, 10), (1, 2), Upload.ALWAYS)]
    assert settled_here(fan, 2, {}) == [Upload.IF_PENDING, Upload.ALWAYS]


def test_a_redelivered_batch_readies_nothing() -> None:
    marks = Marks()
    batch = [_done(0, (1,), (1,), Upload.NEVER), _done(1, (3,), (2,), Upload.IF_PENDING)]
    assert complete_batch(marks, batch, 8) == ([[1], []], [False, True])
    assert complete_batch(marks, batch, 8) == ([[], []], [None, None])  # stores nothing


def test_a_worker_flushes_when_it_must_and_batches_otherwise() -> None:
    assert should_flush(0, 1.0, 1.0, True) is False  # nothing to flush
    assert should_flush(1, 0.0, 0.0, True) is True  # a sink, or children for others
    assert should_flush(FLUSH_TASKS, 0.0, 0.0, False) is True  # batch full
    assert should_flush(3, FLUSH_AFTER_S, 0.0, False) is True  # held back long enough
    assert should_flush(3, 0.0, SMALL_TASK_S, False) is True  # tasks are not small
    assert should_flush(3, FLUSH_AFTER_S / 2, SMALL_TASK_S / 2, False) is False
    # Every slot taken: tasks up to FLUSH_AFTER_S share a step, unless another waits.
    assert should_flush(3, FLUSH_AFTER_S / 2, SMALL_TASK_S, False, full=True) is False
    assert should_flush(3, 0.0, FLUSH_AFTER_S, False, full=True) is True
    assert should_flush(3, FLUSH_AFTER_S, 0.0, False, full=True) is True
    assert should_flush(1, 0.0, SMALL_TASK_S, True, full=True) is True
    # ... and a chain's links up to LINKS_FLUSH_AFTER_S (no fan-in waits on their marks).
    assert should_flush(3, FLUSH_AFTER_S, FLUSH_AFTER_S, False, full=True, links=True) is False
    assert should_flush(3, LINKS_FLUSH_AFTER_S, 0.0, False, full=True, links=True) is True
    assert should_flush(3, 0.0, LINKS_FLUSH_AFTER_S, False, full=True, links=True) is True
    assert should_flush(1, 0.0, 0.0, True, full=True, links=True) is True  # a sink
    assert should_flush(3, FLUSH_AFTER_S, 0.0, False, full=False, links=True) is True


def test_a_step_is_in_flight_while_the_next_task_runs_only_when_no_one_waits_on_it() -> None:
    done = Event(EventKind.TASK_FINISHED, "w", 0, 1.0)
    link = Completion(0, "out", Upload.NEVER, (1,), (1,), done)  # a chain's: child is its own
    fan_in_input = Completion(2, "out", Upload.IF_PENDING, (3,), (2,), done)
    fan_out = Completion(4, "out", Upload.ALWAYS, (5, 6), (1, 1), done)
    sink = Completion(7, "out", Upload.ALWAYS, (), (), done)
    for full in (False, True):  # a reply that can tell nothing new
        assert runs_on([link], 2, full) and runs_on([link, link._replace(task=5)], 2, full)
    # A reply that may ready a fan-in here: waited for, unless every slot is taken.
    assert not runs_on([link, fan_in_input], 2, False)
    assert runs_on([link, fan_in_input, sink], 2, True)  # one child each, at most
    assert not runs_on([link, fan_out], 2, True)  # its children may be split
    assert runs_on([fan_out], 1, True)  # ... unless the worker keeps every group
    assert runs_on([fan_out._replace(stay=(True, True))], 2, True)  # or all stay
    assert not runs_on([fan_out._replace(stay=(True, False))], 2, True)  # one planned away


def test_only_a_completion_of_several_unplanned_children_has_what_a_step_splits() -> None:
    done = Event(EventKind.TASK_FINISHED, "w", 0, 1.0)
    link = Completion(0, "out", Upload.NEVER, (1,), (1,), done)
    fan_in_input = Completion(2, "out", Upload.IF_PENDING, (3,), (2,), done)
    sink = Completion(7, "out", Upload.ALWAYS, (), (), done)
    fan_out = Completion(4, "out", Upload.ALWAYS, (5, 6), (1, 1), done)
    assert not splits([link, fan_in_input, sink, link._replace(task=9)])
    assert splits([link, fan_out]) and splits([fan_out._replace(child_deps=(2, 2))])
    assert not splits([fan_out._replace(stay=(True, False))])  # a plan places them


def test_a_completion_waits_for_the_next_task_only_if_every_child_takes_it_too() -> None:
    assert waits_for_next([(0, 1)], 1) is True  # a pair's first: its sibling is next
    assert waits_for_next([(0, 1), (1, 0, 5)], 1) is True
    assert waits_for_next([(0, 1), (0,)], 1) is False  # a child it readies alone
    assert waits_for_next([(0, 2)], 1) is False  # the sibling is not next
    assert waits_for_next([], 1) is False  # a sink
    assert waits_for_next([(0, 1)], None) is False  # nothing next


# --------------------------------------------------------------------------- split_ready


def test_split_ready_makes_even_contiguous_groups_and_keeps_the_first() -> None:
    keep, handouts = split_ready(list(range(10)), 3)
    assert keep == [0, 1, 2, 3]
    assert handouts == [[4, 5, 6], [7, 8, 9]]


def test_split_ready_exact_division() -> None:
    assert split_ready([1, 2, 3, 4, 5, 6], 2) == ([1, 2, 3], [[4, 5, 6]])


def test_split_ready_fewer_tasks_than_fanout_gives_one_task_per_group() -> None:
    assert split_ready([7, 8, 9], 8) == ([7], [[8], [9]])


def test_split_ready_keeps_all_for_one_task_or_fanout_one() -> None:
    assert split_ready([], 4) == ([], [])
    assert split_ready([3], 4) == ([3], [])
    assert split_ready([3, 4, 5], 1) == ([3, 4, 5], [])
    assert split_ready([3, 4, 5], 0) == ([3, 4, 5], [])


@settings(max_examples=200, deadline=None)
@given(ready=st.lists(st.integers(), max_size=60), fanout=st.integers(0, 20))
def test_split_ready_properties(ready: list[int], fanout: int) -> None:
    keep, handouts = split_ready(list(ready), fanout)
    groups = [keep, *handouts]
    assert [t for g in groups for t in g] == ready
    if len(ready) <= 1 or fanout <= 1:
        assert keep == ready and handouts == []
        return
    assert len(groups) <= fanout
    assert len(groups) == min(len(ready), fanout)
    sizes = [len(g) for g in groups]
    assert all(s >= 1 for s in sizes)
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the bigger groups come first


# --------------------------------------------------------------------------- group_roots


def test_group_roots() -> None:
    assert group_roots([], 4) == []
    assert group_roots([0], 4) == [[0]]
    assert group_roots([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert group_roots([0, 1, 2], 8) == [[0], [1], [2]]
    assert group_roots([0, 1, 2], 1) == [[0, 1, 2]]


@settings(max_examples=100, deadline=None)
@given(roots=st.lists(st.integers(0, 10**6), unique=True, max_size=50), fanout=st.integers(1, 16))
def test_group_roots_covers_every_root_once(roots: list[int], fanout: int) -> None:
    groups = group_roots(roots, fanout)
    assert [r for g in groups for r in g] == roots
    assert all(groups) and len(groups) <= fanout


# --------------------------------------------------------------------------- backoff


@pytest.mark.parametrize("retries", [0, 1, 3, 10])
def test_backoff_delays_one_per_retry_within_the_exponential_bound(retries: int) -> None:
    base, cap = 0.1, 5.0
    delays = backoff_delays(retries, base, cap=cap, rng=random.Random(retries))
    assert len(delays) == retries
    for i, d in enumerate(delays):
        assert 0.0 <= d <= min(cap, base * 2**i)


def test_backoff_delays_are_capped() -> None:
    delays = backoff_delays(20, 1.0, cap=2.0, rng=random.Random(0))
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert max(delays[5:]) > 1.0  # the bound grew to the cap, so some jitter exceeds base


def test_backoff_delays_are_reproducible_with_a_seeded_rng() -> None:
    a = backoff_delays(8, 0.5, rng=random.Random(42))
    b = backoff_delays(8, 0.5, rng=random.Random(42))
    c = backoff_delays(8, 0.5, rng=random.Random(43))
    assert a == b
    assert a != c
    assert len(set(a)) == 8  # jittered, not constant


def test_backoff_with_zero_base_never_waits() -> None:
    assert backoff_delays(4, 0.0, rng=random.Random(1)) == [0.0, 0.0, 0.0, 0.0]


@settings(max_examples=100, deadline=None)
@given(
    retries=st.integers(0, 30),
    base=st.floats(0, 10, allow_nan=False),
    cap=st.floats(0, 60, allow_nan=False),
    seed=st.integers(),
)
def test_backoff_delays_bounds_property(retries: int, base: float, cap: float, seed: int) -> None:
    delays = backoff_delays(retries, base, cap=cap, rng=random.Random(seed))
    assert len(delays) == retries
    for i, d in enumerate(delays):
        assert 0.0 <= d <= min(cap, base * 2**i)


# --------------------------------------------------------------------------- wakes_client


def _ev(kind: EventKind, task: int | None = None) -> Event:
    return Event(kind, "w-1", task, 0.0)


def test_a_finished_sink_wakes_the_client() -> None:
    assert wakes_client([_ev(EventKind.TASK_FINISHED, 3)], frozenset({3, 9})) is True


def test_a_finished_non_sink_does_not_wake_the_client() -> None:
    assert wakes_client([_ev(EventKind.TASK_FINISHED, 4)], frozenset({3})) is False


@pytest.mark.parametrize(
    "kind", [EventKind.TASK_FAILED, EventKind.WORKER_FAILED, EventKind.WORKER_STOPPED]
)
def test_failures_and_stopping_workers_wake_the_client(kind: EventKind) -> None:
    # after the sinks, the client waits for each worker's stop (its last metrics)
    task = 1 if kind is EventKind.TASK_FAILED else None
    assert wakes_client([_ev(kind, task)], frozenset({99})) is True


@pytest.mark.parametrize(
    "kind",
    [
        EventKind.TASK_STARTED,
        EventKind.TASK_RETRIED,
        EventKind.WORKER_STARTED,
        EventKind.TASK_METRICS,
    ],
)
def test_other_events_do_not_wake_the_client(kind: EventKind) -> None:
    # even when they name a sink task
    assert wakes_client([_ev(kind, 3)], frozenset({3})) is False


def test_one_waking_event_in_a_batch_is_enough() -> None:
    batch = [
        _ev(EventKind.WORKER_STARTED),
        _ev(EventKind.TASK_STARTED, 1),
        _ev(EventKind.TASK_FINISHED, 1),
        _ev(EventKind.TASK_FINISHED, 2),
    ]
    assert wakes_client(batch, frozenset({2})) is True
    assert wakes_client(batch[:3], frozenset({2})) is False
    assert wakes_client([], frozenset({2})) is False


def test_a_workers_recent_outputs_keep_within_their_bytes_oldest_out_first() -> None:
    import numpy as np

    from shoal.protocol.recent import RecentOutputs

    recent = RecentOutputs(memory_mb=8)  # an eighth: 1 MiB
    assert recent.limit == 1 << 20
    block = np.zeros(400_000, dtype=np.uint8)
    for task in range(3):
        recent.keep(task, block)
    assert recent.take(0) is None  # the oldest went for the third
    assert recent.take(1) == (block,) and recent.take(1) is None  # read once
    recent.keep(9, np.zeros(2 << 20, dtype=np.uint8))  # above the limit: not kept
    assert recent.take(9) is None and recent.take(2) == (block,)
    recent.keep(5, None)  # a None output is kept too (told apart from a miss)
    assert recent.take(5) == (None,) and not recent


def test_a_worker_runs_depth_first_unless_a_ready_task_leads_to_much_more() -> None:
    assert most_urgent([5.0]) == 0
    assert most_urgent([1.0, 1.0, 1.0]) == 2  # equals: depth first, the newest
    assert most_urgent([2.0, 9.0, 5.0]) == 2  # the next leads to over half the most
    assert most_urgent([2.0, 9.0, 4.0]) == 1  # ... else the one leading to the most runs
    assert most_urgent([9.0, 9.0, 1.0]) == 1  # the newest of those
