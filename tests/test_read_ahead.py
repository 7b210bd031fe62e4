"""A worker on a store across a network reads the inputs of its next tasks ahead, in one
read sent before the task ahead of them runs (shoal.protocol.ahead); on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from inprocess import run_on_threads

import shoal
from shoal.decisions import SMALL_TASK_S, inputs_to_read_ahead
from shoal.errors import RunNotFound
from shoal.graph import build
from shoal.protocol.ahead import InputsAhead
from shoal.stores.redis import RedisStore


@shoal.task
def made(name: str) -> str:
    end = time.perf_counter() + 2 * SMALL_TASK_S  # long enough that its step is not put off
    while time.perf_counter() < end:
        pass
    return name


@shoal.task
def joined(a: str, b: str, i: int) -> str:
    return f"{a}{b}{i}"


@shoal.task
def collect(*values: str) -> list[str]:
    return list(values)


def run_counting_reads(
    redis_url: str, node: shoal.Node, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Any], list[list[int]]]:
    """``node``'s graph run on two in-process workers over the Redis at ``redis_url``: its
    values, and the tasks of each read of outputs the workers made."""
    reads: list[list[int]] = []
    get_outputs = RedisStore.get_outputs

    async def counted(self: RedisStore, run_id: str, tasks: Sequence[int]) -> Any:
        reads.append(list(tasks))
        return await get_outputs(self, run_id, tasks)

    monkeypatch.setattr(RedisStore, "get_outputs", counted)

    async def go() -> list[Any]:
        store = RedisStore.from_url(redis_url)
        try:
            return await run_on_threads(build([node]), store, 2)
        finally:
            await store.close()

    return asyncio.run(go()), reads


def test_a_workers_next_tasks_read_their_inputs_ahead_in_one_read(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two roots on two workers, then 16 tasks that read both: the worker whose step
    readies them keeps half and reads the other root's output once, for its first; the
    rest take it along (without reading ahead: once per task, 8 reads). The other half's
    worker reads both roots once for all its tasks (an invocation's shared inputs)."""
    a, b = made("a"), made("b")
    node = collect(*(joined(a, b, i) for i in range(16)))
    values, reads = run_counting_reads(redis_url, node, monkeypatch)
    assert values == [[f"ab{i}" for i in range(16)]]
    assert len([r for r in reads if {0, 1} & set(r)]) <= 3, reads  # the roots are 0 and 1


def test_without_reading_ahead_each_task_reads_its_inputs(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph above with reads ahead off: the count the test above bounds is the
    feature's, not the graph's."""
    monkeypatch.setattr(InputsAhead, "worth", lambda self, task: False)
    a, b = made("a"), made("b")
    node = collect(*(joined(a, b, i) for i in range(16)))
    values, reads = run_counting_reads(redis_url, node, monkeypatch)
    assert values == [[f"ab{i}" for i in range(16)]]
    assert len([r for r in reads if {0, 1} & set(r)]) >= 8, reads


def test_a_read_ahead_raises_where_its_value_is_taken_and_is_dropped_unread(
    redis_url: str,
) -> None:
    """A read ahead for a run that is gone raises RunNotFound for the task that takes its
    value, as its own read would; one nobody takes is dropped without a warning."""

    async def go() -> None:
        store = RedisStore.from_url(redis_url)
        try:
            ahead = InputsAhead(store, "gone-run")
            ahead.learn(100, 1)
            assert ahead.worth(7)
            await ahead.ask({7: (1, 2), 8: (2, 3)}, lambda d: d == 3, {})
            assert not ahead.worth(7) and not ahead.worth(8)  # asked for already
            assert 1 in ahead and 2 in ahead and 3 not in ahead
            with pytest.raises(RunNotFound):
                await ahead.take(1)
            ahead.close()  # the read of 2 failed too: nobody waits for its error
            assert 2 not in ahead
        finally:
            await store.close()

    asyncio.run(go())


def test_large_inputs_are_not_read_ahead() -> None:
    ahead = InputsAhead(None, "run")  # type: ignore[arg-type]
    assert not ahead.worth(1)  # nothing read yet: sizes unknown
    ahead.learn(10 << 20, 2)
    assert not ahead.worth(1)
    ahead.learn(10 << 10, 2)
    assert ahead.worth(1)


def test_inputs_to_read_ahead_counts_the_tasks_that_read_each_and_skips_those_present() -> None:
    uses = inputs_to_read_ahead([(1, 2), (2, 3), (4,), (2,)], lambda d: d == 3)
    assert uses == {1: 1, 2: 3, 4: 1}
    assert list(uses) == [1, 2, 4]  # in the order the tasks read them
    assert inputs_to_read_ahead([], lambda d: False) == {}
