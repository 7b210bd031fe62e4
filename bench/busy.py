"""Placement under a busy machine: ``python -m bench.busy [--recipes montage,...]``.

A WfCommons-shaped workflow whose tasks really compute (about ``--seconds`` of work on
this machine's cores) on Redis + a gateway as it places workers (``--cgroups``: memory
limits, quotas for fractions of a CPU, whole CPUs pinned) and with ``--no-cgroups``, each
quiet and then beside a competing busy-loop process: the makespan against the ideal bound
(the longer of the critical path and the work over the cores). Medians of ``--repeat``
runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import shoal

from .live import _critical_path, scaled, wf_graph
from .servers import ShoalServers
from .wfcommons import workflow


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
    p.add_argument("--size", type=int, default=250)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    os.environ["SHOAL_HISTORY"] = "none"
    os.environ.setdefault("SHOAL_SECRET", secrets.token_hex(32))
    cores = os.cpu_count() or 1
    servers = ShoalServers().start()  # its Redis; its own gateway is not used here
    try:
        print(f"{'recipe':12} {'placement':10} {'machine':6} {'makespan':>9} {'x bound':>8}")
        for recipe in args.recipes.split(","):
            tasks = workflow(recipe, args.size, 0)
            scale = scaled(tasks, args.seconds, cores)
            bound = max(_critical_path(tasks), sum(t.runtime_s for t in tasks) / cores) * scale
            for cgroups in (True, False):
                with gateway(cgroups) as url:
                    for loaded in (False, True):
                        times = []
                        with busy(loaded):
                            for _ in range(args.repeat + 1):  # the first warms up
                                started = time.perf_counter()
                                shoal.compute(wf_graph(tasks, scale, 1e-3),
                                              storage=servers.storage, workers=url,
                                              progress=False)  # fmt: skip
                                times.append(time.perf_counter() - started)
                        median = statistics.median(times[1:])
                        print(f"{recipe:12} {'cgroups' if cgroups else 'no-cgroups':10} "
                              f"{'busy' if loaded else 'quiet':6} {median:8.2f}s "
                              f"{median / bound:8.2f}")  # fmt: skip
    finally:
        servers.close()


if __name__ == "__main__":
    main()
