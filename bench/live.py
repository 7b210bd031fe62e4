"""The planning benchmarks that run for real (see ``bench/planning.py`` for the command):
prediction accuracy, sizing on the gateway, metrics policies, and the history's size.

Everything runs on a redis-server and a ``shoal gateway`` this module starts itself
(``bench/servers.py``), but ``history`` (the embedded engine), and records into a
throw-away history.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import shoal

from .examples import load
from .servers import ShoalServers
from .wfcommons import WfTask, workflow

# --------------------------------------------------------------------------- workloads


def _spin(seconds: float, nbytes: int, *inputs: Any) -> bytes:
    """Compute for ``seconds`` of this thread's CPU time (so a task that shares its CPU
    takes longer, as real work does), then return ``nbytes`` bytes."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return b"x" * nbytes


def wf_graph(tasks: Sequence[WfTask], scale: float, bytes_scale: float) -> shoal.Node:
    """A Shoal graph of a WfCommons-shaped workflow whose tasks really compute: one task
    function per category (so history keeps them apart), each task busy for its trace
    runtime times ``scale`` and returning its trace output size times ``bytes_scale``."""
    functions = {c: shoal.task(name=c)(_spin) for c in sorted({t.category for t in tasks})}
    nodes: list[shoal.Node] = []
    children = {t.id: 0 for t in tasks}
    for t in tasks:
        for p in t.parents:
            children[p] += 1
    for t in tasks:
        nbytes = min(200_000, int(t.output_bytes * bytes_scale))
        inputs = (nodes[p] for p in t.parents)
        nodes.append(functions[t.category](t.runtime_s * scale, nbytes, *inputs))
    sinks = [nodes[t.id] for t in tasks if not children[t.id]]
    if len(sinks) == 1:
        return sinks[0]
    return shoal.task(name="wf-sinks")(lambda *xs: len(xs))(*sinks)


def scaled(tasks: Sequence[WfTask], seconds: float, cores: int) -> float:
    """The runtime scale at which ``tasks`` take about ``seconds`` on ``cores``."""
    work = sum(t.runtime_s for t in tasks)
    longest = _critical_path(tasks)
    return seconds / max(work / cores, longest)


def _critical_path(tasks: Sequence[WfTask]) -> float:
    finish: dict[int, float] = {}
    for t in tasks:
        finish[t.id] = max((finish[p] for p in t.parents), default=0.0) + t.runtime_s
    return max(finish.values())


class _Live:
    """A redis-server and a ``shoal gateway`` (one worker process per core, warm unless
    asked otherwise), a throw-away history, and runs on them; a context manager."""

    def __init__(self, prewarm: bool = True) -> None:
        self.cores = os.cpu_count() or 1
        self.prewarm = prewarm

    def __enter__(self) -> _Live:
        self.servers = ShoalServers(max_workers=self.cores).start()
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.history = str(self.dir / "history.db")
        if self.prewarm:
            self.servers.prewarm(self.cores)
        return self

    def compute(self, node: shoal.Node, **options: Any) -> None:
        shoal.compute(
            node,
            storage=self.servers.storage,
            workers=self.servers.workers,
            history=self.history,
            progress=False,
            **options,
        )

    def run(self, node: shoal.Node, **options: Any) -> Any:
        """Compute ``node`` here, wait for the gateway to be idle; the run's record."""
        self.compute(node, **options)
        self.servers.wait_idle()
        return shoal.history(self.history).runs(limit=1)[0]

    def __exit__(self, *exc: Any) -> None:
        self.servers.close()
        self._tmp.cleanup()


# --------------------------------------------------------------------------- accuracy


def accuracy(
    recipes: Sequence[str], size: int, runs: int, seconds: float, planner: str = "uniform"
) -> list[dict[str, Any]]:
    """Each workload ``runs`` times with ``planner`` on Redis + gateway; the prediction
    error of every run (the first has no history, so no plan)."""
    rows = []
    with _Live() as live:
        workloads: list[tuple[str, Callable[[], shoal.Node]]] = []
        for recipe in recipes:
            tasks = workflow(recipe, size, 0)
            scale = scaled(tasks, seconds, live.cores)
            workloads.append(
                (f"{recipe}-{len(tasks)}", lambda ts=tasks, s=scale: wf_graph(ts, s, 0.001))
            )
        text = load("text_pipeline")
        # The example's own input runs in ~40 ms, where scheduling noise on a busy 2-core
        # machine is most of the makespan: the text 20 times over, in 10 chains.
        bigger = live.dir / "genesis-x20.txt"
        bigger.write_text(text.TEXT.read_text(encoding="utf-8") * 20, encoding="utf-8")
        workloads.append(("text_pipeline x20", lambda: text.build(per_group=100, path=bigger)))
        for name, build in workloads:
            row: dict[str, Any] = {"workload": name, "runs": []}
            for _ in range(runs):
                record = live.run(build(), planner=planner)
                row["runs"].append(_accuracy_of(shoal.last_run(), record))
            rows.append(row)
    return rows


def _accuracy_of(summary: Any, record: Any) -> dict[str, Any]:
    errors = []
    for t in record.tasks:
        if t.error_s is not None and t.end is not None and t.end - t.start > 0.005:
            errors.append(abs(t.error_s) / (t.end - t.start))
    return {
        "makespan_s": summary.makespan_s,
        "predicted_s": summary.predicted_makespan_s,
        "error": summary.prediction_error,
        "task_error_median": statistics.median(errors) if errors else None,
        "wall_s": summary.wall_s,
    }


def print_accuracy(rows: list[dict[str, Any]], after: int) -> None:
    every = []
    print(f"{'workload':22} {'runs':>4} {'makespan':>9} {'median |err|':>13} {'p90 |err|':>10} "
          f"{'task |err| (median)':>20}")  # fmt: skip
    for row in rows:
        later = [r for r in row["runs"][after:] if r["error"] is not None]
        errs = sorted(abs(r["error"]) for r in later)
        every += errs
        tasks = [r["task_error_median"] for r in later if r["task_error_median"] is not None]
        makespan = statistics.median(r["makespan_s"] for r in row["runs"])
        print(
            f"{row['workload']:22} {len(later):4d} {makespan:8.3f}s "
            f"{_pct(statistics.median(errs)) if errs else '-':>13} {_pct(_p90(errs)):>10} "
            f"{_pct(statistics.median(tasks)) if tasks else '-':>20}"
        )
    every.sort()
    if every:
        print(f"{'all':22} {len(every):4d} {'':9} {_pct(statistics.median(every)):>13} "
              f"{_pct(_p90(every)):>10}")  # fmt: skip


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(0.9 * len(values)))]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


# --------------------------------------------------------------------------- sizing


def _numpy_step(seed: int, *inputs: Any) -> float:
    """Multi-threaded work: BLAS matrix products (they use every CPU the worker has)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((900, 900))
    for _ in range(6):
        a = a @ a
        a /= np.abs(a).max()
    return float(a[0, 0])


def _python_step(n: int, *inputs: Any) -> int:
    """Single-threaded work: a pure-Python loop (one CPU, whatever the worker has)."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


def mixed_graph(cpus: float | None) -> shoal.Node:
    """A chain of NumPy steps beside a fan of pure-Python steps, joined. ``cpus``: the
    size every task declares (None: none; the planner decides)."""
    opts: dict[str, Any] = {} if cpus is None else {"cpus": cpus}
    numpy_step = shoal.task(name="numpy_step", **opts)(_numpy_step)
    python_step = shoal.task(name="python_step", **opts)(_python_step)
    join = shoal.task(name="join", **opts)(lambda *xs: len(xs))
    chain = numpy_step(0)
    for i in range(1, 4):
        chain = numpy_step(i, chain)
    fan = [python_step(3_000_000 + i) for i in range(16)]
    return join(chain, *fan)


def sizing(runs: int) -> dict[str, Any]:
    """uniform 2-CPU (every task declares 2 CPUs, no planner) against critical-path (the
    planner sizes each task), on Redis + gateway: median makespan and vCPU-s of ``runs``
    runs each, after runs at 1 and 2 CPUs that give the planner its history."""
    out: dict[str, Any] = {}
    with _Live(prewarm=False) as live:

        def measure(build: Callable[[], shoal.Node], planner: str) -> dict[str, float]:
            records = [live.run(build(), planner=planner) for _ in range(runs)]
            return {
                "makespan_s": statistics.median(r.makespan_s for r in records),
                "vcpu_s": statistics.median(r.cost.vcpu_s for r in records),
            }

        for cpus in (1, 2):  # history at both sizes; also warms both pools
            for _ in range(2):
                live.run(mixed_graph(cpus))
        out["uniform-2cpu"] = measure(lambda: mixed_graph(2), "none")
        out["critical-path"] = measure(lambda: mixed_graph(None), "critical-path")
        plan = shoal.history(live.history).runs(limit=1)[0]
        out["sizes"] = sorted({(t.function, t.cpus) for t in plan.tasks})
    out["makespan_ratio"] = out["critical-path"]["makespan_s"] / out["uniform-2cpu"]["makespan_s"]
    out["vcpu_ratio"] = out["critical-path"]["vcpu_s"] / out["uniform-2cpu"]["vcpu_s"]
    return out


# --------------------------------------------------------------------------- metrics policies

POLICIES = ("off", "batch", "task", "periodic:1", "buffer:100", "shutdown")


def policies(shapes: Sequence[str], size: int, repeat: int) -> list[dict[str, Any]]:
    """The cost per task of each metrics upload policy on Redis + gateway: no-op graphs
    (``bench/graphs.py``), median of ``repeat`` runs, graph building and the history's
    record included (what a user pays)."""
    from .graphs import SHAPES

    rows = []
    with _Live() as live:
        for shape in shapes:
            for policy in POLICIES:
                times = []
                for i in range(repeat + 1):  # the first warms up
                    started = time.perf_counter()
                    sink, n, _ = SHAPES[shape](shoal.task, size)
                    live.compute(sink, metrics=policy)
                    if i:
                        times.append((time.perf_counter() - started) / n)
                    live.servers.wait_idle()
                rows.append({"shape": shape, "policy": policy, "tasks": n,
                             "us_per_task": 1e6 * statistics.median(times)})  # fmt: skip
    return rows


def print_policies(rows: list[dict[str, Any]]) -> None:
    off = {r["shape"]: r["us_per_task"] for r in rows if r["policy"] == "off"}
    print(f"{'shape':8} {'policy':12} {'tasks':>6} {'us/task':>8} {'vs off':>8}")
    for r in rows:
        extra = r["us_per_task"] - off[r["shape"]]
        print(f"{r['shape']:8} {r['policy']:12} {r['tasks']:6d} {r['us_per_task']:8.1f} "
              f"{extra:+8.1f}")  # fmt: skip


# --------------------------------------------------------------------------- history size


def history_size(runs: int, tasks: int) -> dict[str, Any]:
    """``runs`` runs of one workflow of about ``tasks`` tasks on the embedded engine, into
    a fresh SQLite history (it keeps the newest 100 runs): the file's size at the end,
    and what a run's recording costs."""
    from .graphs import SHAPES

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.db"
        sizes = []
        started = time.perf_counter()
        for i in range(runs):
            sink, n, _ = SHAPES["tree"](shoal.task, tasks)
            shoal.compute(sink, history=str(path), progress=False)
            if (i + 1) % max(1, runs // 10) == 0:
                sizes.append((i + 1, _bytes_on_disk(path)))
        took = time.perf_counter() - started
        kept = len(shoal.history(str(path)).runs(limit=10_000))
        return {"runs": runs, "tasks": n, "kept": kept, "sizes": sizes,
                "seconds_per_run": took / runs}  # fmt: skip


def _bytes_on_disk(path: Path) -> int:
    """The database and its write-ahead log."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
