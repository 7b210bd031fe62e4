"""What only the embedded engine promises: no pickling, nothing left behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from inprocess import run_on_threads

import shoal
from shoal.graph import build
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
    return await run_on_threads(build([node]), store)


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


renewed = threading.Event()  # set by the heartbeat's renewal of a run's leases


@shoal.task
def until_renewed(i: int) -> bool:
    return renewed.wait(10)


def test_runs_one_after_another_each_keep_their_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run has a store of its own, all named memory://: the heartbeat renews each
    run's leases in its own store (it renewed them in the first run's, where the second
    run is not, and that run was cancelled as abandoned)."""
    monkeypatch.setenv("SHOAL_LEASE_S", "0.4")  # a renewal every 0.1 s
    original = MemoryStore.renew

    async def renew(self: MemoryStore, run_id: str, held: dict[str, Any], lease_s: float) -> Any:
        lost = await original(self, run_id, held, lease_s)
        if not lost:
            renewed.set()
        return lost

    monkeypatch.setattr(MemoryStore, "renew", renew)
    for i in range(2):
        renewed.clear()
        assert until_renewed(i).compute(progress=False) is True
