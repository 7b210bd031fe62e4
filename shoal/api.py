"""``shoal.compute``: choose the store and the workers, run, report."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from .backends import open_workers
from .errors import ConfigError
from .graph import Node, build
from .progress import Progress
from .protocol import new_run_id, run_graph
from .security import client_signer
from .stores import open_store
from .summary import RunSummary, record

DEFAULT_STORAGE = "memory://"
DEFAULT_WORKERS = "local"


def compute(
    *nodes: Node,
    storage: str | None = None,
    workers: str | None = None,
    progress: bool | None = None,
    timeout: float | None = None,
) -> tuple[Any, ...]:
    """Run the graph ending in ``nodes`` (one run) and return their values as a tuple.

    ``storage``: store URL (``memory://`` by default, or ``$SHOAL_STORAGE``).
    ``workers``: worker backend (``local`` by default, or ``$SHOAL_WORKERS``).
    ``progress``: progress bar; None shows it on a terminal for runs longer than a second.
    ``timeout``: seconds before the run is abandoned with :class:`shoal.RunTimeout`.

    A task that raises makes this raise the task's own exception. The run's summary is
    then available from :func:`shoal.last_run`.
    """
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    storage = storage or os.environ.get("SHOAL_STORAGE") or DEFAULT_STORAGE
    workers = workers or os.environ.get("SHOAL_WORKERS") or DEFAULT_WORKERS
    # The values come back beside asyncio.run, not through it: on its way out it formats
    # the finished task, results and all (a slow repr() of a big result costs seconds).
    outcome: dict[str, tuple[Any, ...]] = {}
    coro = _compute(nodes, storage, workers, progress, timeout, outcome)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
    else:
        _run_in_thread(coro)  # called from async code (e.g. a notebook): don't block its loop
    return outcome["values"]


def _run_in_thread(coro: Any) -> None:
    failed: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target, name="shoal-compute")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


async def _compute(
    nodes: tuple[Node, ...],
    storage: str,
    workers: str,
    progress: bool | None,
    timeout: float | None,
    outcome: dict[str, tuple[Any, ...]],
) -> None:
    started = time.perf_counter()
    graph = build(nodes)
    backend = open_workers(workers)
    signer = client_signer(backend.private)
    store = open_store(storage, signer)
    if store.in_process and not backend.in_process:
        raise ConfigError(
            f"storage {storage!r} lives in this process, so workers {workers!r} cannot reach "
            "it: use a shared store such as redis://"
        )
    run_id = new_run_id()
    summary = RunSummary(run_id, graph.structure_hash, len(graph), storage=storage, backend=workers)
    bar = Progress(len(graph), progress)

    def on_events(events: list[Any]) -> None:
        summary.add(events)
        bar.update(summary.tasks_done)

    try:
        await backend.start(store, signer)
        values = await run_graph(
            graph, store, backend, run_id=run_id, on_events=on_events, timeout=timeout
        )
        summary.ok = True
        outcome["values"] = tuple(values)
    finally:
        bar.close()
        await backend.close()
        await store.close()
        summary.wall_s = time.perf_counter() - started
        record(summary)
