"""What only the embedded engine promises: no pickling, nothing left behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import shoal
from shoal.backends.local import LocalWorkers
from shoal.graph import build
from shoal.protocol import new_run_id, run_graph
from shoal.stores.memory import MemoryStore


@shoal.task
def ident(x: Any) -> Any:
    return x


@shoal.task
def boom(x: Any) -> Any:
    raise ValueError("boom")


def test_values_pass_by_reference_without_pickling() -> None:
    lock = threading.Lock()  # cannot be pickled
    assert ident(ident([lock])).compute(progress=False)[0] is lock


async def _run(node: shoal.Node, store: MemoryStore) -> list[Any]:
    workers = LocalWorkers()
    await workers.start(store)
    try:
        return await run_graph(
            build([node]), store, workers, run_id=new_run_id(), on_events=lambda e: None
        )
    finally:
        await workers.close()


def test_a_finished_run_leaves_nothing_in_the_store() -> None:
    store = MemoryStore()
    assert asyncio.run(_run(ident(ident(1)), store)) == [1]
    assert store.run_ids() == []


def test_a_failed_run_leaves_nothing_in_the_store() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(_run(ident(boom(1)), store))
    assert store.run_ids() == []


def test_compute_from_async_code() -> None:
    async def main() -> Any:
        return ident(5).compute(progress=False)

    assert asyncio.run(main()) == 5
