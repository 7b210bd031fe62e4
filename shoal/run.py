"""One run of :func:`shoal.compute`: open the store and the workers, plan, run the graph
through the protocol, and record the run in the history."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .backends import Workers, open_workers
from .blobs import storage_with_blobs
from .errors import ConfigError, RunCancelled
from .graph import Graph, Node, build
from .history import History, RunRecord, RunTrace, settle, started, write_behind, writing
from .metrics import machine_busy_s
from .optimizations import Tuning, tuning_for
from .planning import Plan, make_plan, rank_by, rank_tasks
from .progress import Progress
from .protocol import new_run_id, run_graph
from .security import client_signer
from .stores import open_store
from .summary import RunSummary, record

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """A run's options, as :func:`shoal.compute` resolved and checked them."""

    storage: str
    workers: str
    blobs: str
    progress: bool | None
    timeout: float | None
    metrics: str
    history: History
    planner: str
    sla: str
    deadline: float | None
    optimizations: frozenset[str] | None
    requirements: tuple[str, ...]


def run(nodes: tuple[Node, ...], options: RunOptions) -> tuple[Any, ...]:
    """Run the graph ending in ``nodes``; its values, or the first failing task's error."""
    # The values come back beside asyncio.run, not through it: on its way out it formats
    # the finished task, results and all (a slow repr() of a big result costs seconds).
    outcome: dict[str, tuple[Any, ...]] = {}
    coro = _compute(nodes, options, outcome)
    if _in_event_loop():
        _run_in_thread(coro)  # called from async code (e.g. a notebook): don't block it
    else:
        asyncio.run(coro)
    return outcome["values"]


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
    nodes: tuple[Node, ...], options: RunOptions, outcome: dict[str, tuple[Any, ...]]
) -> None:
    """:func:`_run`, which SIGTERM and SIGINT cancel, in the main thread (the only one that
    may handle signals): once its cleanup has run, they raise RunCancelled and
    KeyboardInterrupt. The handlers that were there before come back afterwards."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    caught: list[signal.Signals] = []

    def cancel(sig: signal.Signals) -> None:
        log.info("%s: cancelling the run", sig.name)
        caught.append(sig)
        task.cancel()  # a second signal interrupts the cleanup too

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(sig)
            if handler not in (signal.SIG_IGN, None):  # ignored (or not Python's): left alone
                previous[sig] = handler
                loop.add_signal_handler(sig, cancel, sig)
    error: BaseException | None = None
    try:
        await _run(nodes, options, outcome)
    except BaseException as exc:
        if not caught:
            raise
        error = exc
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)  # remove_signal_handler would leave the default
    if caught:
        cause = None if isinstance(error, asyncio.CancelledError) else error
        if caught[0] is signal.SIGINT:
            raise KeyboardInterrupt from cause
        raise RunCancelled(f"the run was cancelled by {caught[0].name}") from cause


async def _run(
    nodes: tuple[Node, ...], options: RunOptions, outcome: dict[str, tuple[Any, ...]]
) -> None:
    started_at = time.time()
    began = time.perf_counter()
    graph = build(nodes)
    if options.requirements:
        from .envs.check import with_run_requirements

        graph.functions = with_run_requirements(graph.functions, options.requirements)
    backend = open_workers(options.workers)
    signer = client_signer(backend.private)
    store = open_store(
        storage_with_blobs(options.storage, options.blobs, backend.same_host), signer
    )
    if store.in_process and not backend.in_process:
        raise ConfigError(
            f"storage {options.storage!r} lives in this process, so workers "
            f"{options.workers!r} cannot reach it: use a shared store such as redis://"
        )
    run_id = new_run_id()
    summary = RunSummary(
        run_id, graph.structure_hash, len(graph), storage=options.storage, backend=options.workers
    )
    bar = Progress(len(graph), options.progress)
    trace = RunTrace() if options.history.url != "none" else None

    def on_events(events: list[Any]) -> None:
        started()  # its workers run: writes left behind may go on
        summary.add(events)
        if trace is not None:
            trace.add(events)
        bar.update(summary.tasks_done, summary.tasks)

    error: BaseException | None = None
    plan: Plan | None = None
    ranks: list[float] | None = None
    try:
        await backend.start(store, signer)
        if options.requirements or any(f.options.requirements for f in graph.functions):
            from .envs.check import prepare

            await prepare(backend, graph)  # before any task: a clear error, nothing ran
        tuning = _tuning(options, backend)
        if options.planner != "none":
            settle()  # a plan learns from every earlier run
            plan = make_plan(
                graph,
                options.history,
                planner=options.planner,
                sla=options.sla,
                deadline=options.deadline,
                backend=backend.kind,
                platform=await backend.platform(),
                cap=backend.parallelism,
                tuning=tuning,
                forced=options.optimizations,
            )
            summary.planned(plan, options.planner, options.sla)
            if plan is not None and plan.tuning is not None:
                # The planner's say where the run leaves it, else the forced ones as the
                # plan times them (pre-warm).
                tuning = plan.tuning
        if tuning.ranked:  # without a plan, the history still says what is critical
            known = trace is not None and plan is None
            ranks = _ranks(graph, options.history, backend.kind) if known else None
            if ranks is None:
                tuning = dataclasses.replace(tuning, ranked=False)
        busy_at = machine_busy_s() if backend.same_host else None
        values = await run_graph(
            graph,
            store,
            backend,
            run_id=run_id,
            on_events=on_events,
            timeout=options.timeout,
            metrics=options.metrics,
            plan=plan,
            ranks=ranks,
            tuning=tuning,
        )
        if trace is not None and busy_at is not None:  # the workers' machine is this one
            trace.machine_cpu_s = (machine_busy_s() or busy_at) - busy_at
        summary.ok = True
        outcome["values"] = tuple(values)
        if trace is not None:  # for the next run's ranks, while its record is on its way
            _unwritten[options.history.url, graph.structure_hash, backend.kind] = (
                trace.task_seconds(graph)
            )
            while len(_unwritten) > UNWRITTEN_KEPT:
                del _unwritten[next(iter(_unwritten))]
    except BaseException as exc:
        error = exc
        raise
    finally:
        bar.close()
        await backend.close(ok=error is None)
        await store.close()
        summary.wall_s = time.perf_counter() - began
        record(summary)
        if trace is not None:
            run = _record(summary, graph, backend.kind, started_at, error, plan)
            write_behind(functools.partial(_keep, options.history, trace, graph, run, plan))


def _tuning(options: RunOptions, backend: Workers) -> Tuning:
    """The thresholds of the optimizations the run forces on, from the backend's model."""
    if backend.in_process:  # outputs pass by reference: nothing to save by not moving them
        return dataclasses.replace(tuning_for(options.optimizations, None), aside_above=None)
    if not options.optimizations:  # the default, or all off
        return tuning_for(options.optimizations, None)
    from .backends import Platform
    from .planning.model import BackendModel

    # Thresholds need the backend's rates only (from the history), not its platform now:
    # no request to the backend for them.
    settle()
    stats = options.history.backend_stats(backend.kind)
    platform = Platform(float(backend.parallelism), 0.0, {})
    model = BackendModel.learn(backend.kind, stats, options.sla, platform, backend.parallelism)
    return tuning_for(options.optimizations, model)


#: The task times of the newest good run of each workflow (by history, workflow and
#: backend) this process made, the last few workflows' (see :func:`_ranks`).
_unwritten: dict[tuple[str, str, str], list[float]] = {}
UNWRITTEN_KEPT = 16


def _ranks(graph: Graph, history: History, backend: str) -> list[float] | None:
    """The tasks' ranks (:func:`rank_tasks`) from the newest run of the workflow the
    history holds. The record of the run just before, if still being written behind it,
    is not waited for (10 to 50 ms of a run's start here; 30 more for the first record
    of a process, which imports the sketches' codec): the run before that ranks its
    tasks as well; without one, that run's task times, kept in this process, do."""
    ranks = rank_tasks(graph, history, backend)
    if ranks is None and writing():
        seconds = _unwritten.get((history.url, graph.structure_hash, backend))
        if seconds is not None:
            return rank_by(graph, seconds)
        settle()
        ranks = rank_tasks(graph, history, backend)
    return ranks


def _record(
    summary: RunSummary,
    graph: Graph,
    backend: str,
    started_at: float,
    error: BaseException | None,
    plan: Plan | None,
) -> RunRecord:
    return RunRecord(
        run_id=summary.run_id,
        workflow=graph.structure_hash,
        name=graph.workflow_name,
        started=started_at,
        backend=backend,
        storage=urlsplit(summary.storage).scheme or summary.storage,
        planner=summary.planner,
        sla=summary.sla,
        ok=summary.ok,
        error=_error_text(error),
        tasks_total=summary.tasks,
        tasks_done=summary.tasks_done,
        makespan_s=summary.makespan_s,
        wall_s=summary.wall_s,
        predicted_makespan_s=None if plan is None else plan.makespan_s,
        predicted_cost=None if plan is None else plan.cost,
        deadline_s=None if plan is None else plan.deadline_s,
    )


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, asyncio.CancelledError):  # a signal (see _compute) or the caller
        return "RunCancelled: the run was cancelled"
    return f"{type(error).__name__}: {error}"


def _keep(
    history: History, trace: RunTrace, graph: Graph, run: RunRecord, plan: Plan | None
) -> None:
    """Record the run in the history. A history that fails costs the run nothing: the
    user has the results (or the task's error); the failure is logged with its cause."""
    try:
        stats, backend_stats = trace.fold(graph, run, plan)
        history.record(run, stats, backend_stats)
    except Exception:
        log.warning("run %s was not recorded in %s", run.run_id, history.url, exc_info=True)
