"""Real workflows, quiet and beside a busy process: ``python -m bench.busy [--recipes
montage,epigenomics,cycles,genome] [--engines shoal,shoal-no-cgroups,dask]``.

A WfCommons-shaped workflow whose tasks really compute (about ``--seconds`` of work on
this machine's cores) and pass bytes, on Redis + a gateway as it places workers
(``shoal``: memory limits, quotas for fractions of a CPU, whole CPUs pinned), with
``--no-cgroups`` (``shoal-no-cgroups``), and on Dask distributed (``dask``: a LocalCluster
of one single-threaded worker process per core), each quiet and then beside a competing
busy-loop process: the makespan against the ideal bound (the longer of the critical path
and the work over the cores; beside the busy process, also against the bound on half a
core less, which is what the busy process leaves a run whose workers share a core with
it). Medians of ``--repeat`` runs after one warm-up. Shoal keeps a history of its own (a
new file per workflow): from the warm-up on, each run learns from the one before (its
ranks: :func:`shoal.planning.rank_tasks`), as a user's second run does; ``--no-history``
runs it without."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import shoal

from .live import _critical_path, _spin, scaled, wf_graph
from .servers import ShoalServers
from .wfcommons import WfTask, workflow


def _spin_forever() -> None:
    while True:
        pass


@contextmanager
def busy(on: bool) -> Iterator[None]:
    """A competing process that keeps one CPU busy, while the block runs."""
    if not on:
        yield
        return
    proc = multiprocessing.Process(target=_spin_forever, daemon=True)
    proc.start()
    try:
        yield
    finally:
        proc.kill()
        proc.join()


@contextmanager
def gateway(cgroups: bool) -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    flag = "--cgroups" if cgroups else "--no-cgroups"
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "gateway", flag, "--fd",
                             str(listener.fileno())], pass_fds=[listener.fileno()])  # fmt: skip
    url = f"gateway+http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.busy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--recipes", default="montage")
    p.add_argument("--engines", default="shoal,dask")
    p.add_argument("--size", type=int, default=250)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-history", dest="history", action="store_false")
    args = p.parse_args(argv)
    os.environ["SHOAL_HISTORY"] = "none"
    os.environ.setdefault("SHOAL_SECRET", secrets.token_hex(32))
    cores = os.cpu_count() or 1
    servers = ShoalServers().start()  # its Redis; its own gateway is not used here
    try:
        print(f"load {os.getloadavg()[0]:.2f} before")
        print(f"{'recipe':12} {'engine':16} {'machine':6} {'makespan':>9} {'x bound':>8}")
        for recipe in args.recipes.split(","):
            tasks = workflow(recipe, args.size, 0)
            scale = scaled(tasks, args.seconds, cores)
            work, path = sum(t.runtime_s for t in tasks) * scale, _critical_path(tasks) * scale
            bound = max(path, work / cores)
            # Beside the busy process, which shares a core half and half with a worker
            # (pinned, or as the scheduler balances it), the run has half a core less.
            busy_bound = max(path, work / (cores - 0.5))
            medians: dict[tuple[str, bool], float] = {}
            engines = args.engines.split(",")
            for engine in engines:  # one at a time: an idle Dask cluster burns ~14 % of a CPU
                with _engine(engine, servers.storage, args.history) as run:
                    for loaded in (False, True):
                        times = []
                        with busy(loaded):
                            for _ in range(args.repeat + 1):  # the first warms up
                                started = time.perf_counter()
                                run(tasks, scale)
                                times.append(time.perf_counter() - started)
                        median = medians[engine, loaded] = statistics.median(times[1:])
                        print(f"{recipe:12} {engine:16} {'busy' if loaded else 'quiet':6} "
                              f"{median:8.2f}s {median / bound:8.2f}"
                              + (f" ({median / busy_bound:.2f}x the bound on "
                                 f"{cores - 0.5:g} cores)" if loaded else ""),
                              flush=True)  # fmt: skip
            slowdowns = (f"{e} {medians[e, True] / medians[e, False]:.2f}x" for e in engines)
            print(
                f"{recipe:12} slowdown beside the busy process: {', '.join(slowdowns)} "
                f"(at best {busy_bound / bound:.2f}x, from the bound to the busy one)"
            )
    finally:
        servers.close()


@contextmanager
def _engine(
    name: str, storage: str, history: bool
) -> Iterator[Callable[[list[WfTask], float], None]]:
    """A function that runs a workflow (its tasks, its runtime scale) on ``name``; Shoal
    with a ``history`` of its own, if asked."""
    if name == "dask":
        import dask
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:  # fmt: skip

            def on_dask(tasks: list[WfTask], scale: float) -> None:
                spin = dask.delayed(_spin, pure=False)
                nodes: list[Any] = []
                for t in tasks:
                    nbytes = min(200_000, int(t.output_bytes * 1e-3))  # as wf_graph
                    nodes.append(spin(t.runtime_s * scale, nbytes, *(nodes[p] for p in t.parents)))
                has_child = {p for t in tasks for p in t.parents}
                sinks = [nodes[t.id] for t in tasks if t.id not in has_child]
                client.compute(sinks, sync=True)

            yield on_dask
        return
    with gateway(name != "shoal-no-cgroups") as url, tempfile.TemporaryDirectory() as tmp:
        where = str(Path(tmp) / "history.db") if history else "none"

        def on_shoal(tasks: list[WfTask], scale: float) -> None:
            shoal.compute(wf_graph(tasks, scale, 1e-3), storage=storage, workers=url,
                          progress=False, history=where)  # fmt: skip

        yield on_shoal


if __name__ == "__main__":
    main()
