"""Cold starts on the gateway: ``python -m bench.coldstart [--repeat N]``.

A no-op run on a fresh ``shoal gateway`` (Redis started here) whose worker starts cold,
with workers forked from the gateway's template process and, for comparison, started as
new Pythons (``--no-fork``): the cold start as the worker reports it (from its dispatch to
its worker loop running). Then runs of two no-op tasks on a private gateway
(``workers="gateway"``), each in a new client process: the first ``compute()`` call (the
gateway's own start included), the later ones (on the gateway the process keeps), and the
process's exit (which stops the gateway in order); and, as the floor of such a first run,
how long a new process takes to import what the run needs on the client alone. Medians of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import shoal

from .servers import ShoalServers


def _inc(x: int) -> int:
    return x + 1


def cold_start(storage: str, fork: bool) -> tuple[float, float]:
    """The cold start of the one worker of a no-op run on a gateway of its own, as the
    worker reports it (from the invocation's dispatch), and the whole run's wall time
    (the fork itself, the invocation's trip, the task and the completion included)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    args = ["--fork" if fork else "--no-fork", "--fd", str(listener.fileno())]
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "gateway", *args],
                            pass_fds=[listener.fileno()])  # fmt: skip
    url = f"gateway+http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    try:
        # The gateway (and its template) up first, on a worker of another size: the timed
        # run's worker then starts cold.
        warm_up = shoal.task(memory_mb=1024)(_inc)(0)
        shoal.compute(warm_up, storage=storage, workers=url, progress=False)
        started = time.perf_counter()
        shoal.compute(shoal.task(_inc)(1), storage=storage, workers=url, progress=False)
        wall = time.perf_counter() - started
        summary = shoal.last_run()
        assert summary is not None
        return summary.cold_start_s, wall
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    os.environ["SHOAL_HISTORY"] = "none"
    os.environ.setdefault("SHOAL_SECRET", secrets.token_hex(32))
    servers = ShoalServers().start()
    try:
        storage = servers.storage
        for fork in (True, False):
            got = [cold_start(storage, fork) for _ in range(args.repeat)]
            label = "forked from the template" if fork else "a new Python (--no-fork)"
            start = statistics.median(s for s, _ in got)
            wall = statistics.median(w for _, w in got)
            print(f"cold start, {label}: {1e3 * start:.1f} ms as the worker tells it; "
                  f"a one-task run on it {1e3 * wall:.1f} ms (median of {len(got)})")  # fmt: skip
        floor = statistics.median(_imports_alone() for _ in range(args.repeat))
        print(f"a new Python importing what a client's first run on Redis needs (Shoal's run, "
              f"redis-py's asyncio client): {1e3 * floor:.0f} ms (median of {args.repeat}): "
              "a first run's floor, before any gateway or worker")  # fmt: skip
        runs = [_private_runs(storage) for _ in range(args.repeat)]
        first, later, exit_s, scripted = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"private gateway, two no-op tasks: the first run of a process {1e3 * first:.0f}"
              f" ms ({1e3 * scripted:.0f} ms from the script's start, imports included), a "
              f"later run {1e3 * later:.1f} ms, the process's exit {1e3 * exit_s:.0f} ms"
              f" (medians of {len(runs)} processes)")  # fmt: skip
    finally:
        servers.close()


PRIVATE_RUNS = """
import time
began = time.perf_counter()
import json, sys
import shoal

@shoal.task
def inc(x):
    return x + 1

walls = []
for _ in range(6):
    started = time.perf_counter()
    shoal.compute(inc(1), inc(2), storage=sys.argv[1], workers="gateway", progress=False)
    walls.append(time.perf_counter() - started)
    if len(walls) == 1:
        since_start = time.perf_counter() - began
print(json.dumps({"walls": walls, "since_start": since_start, "done": time.time()}), flush=True)
"""


IMPORTS_ALONE = """
import time
began = time.perf_counter()
import shoal, shoal.run, shoal.stores.redis
print(time.perf_counter() - began)
"""


def _imports_alone() -> float:
    """How long a new client process takes to import what its first run on a Redis store
    needs, timed inside it (the interpreter's own start left out)."""
    out = subprocess.run([sys.executable, "-c", IMPORTS_ALONE], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return float(out.split()[-1])


def _private_runs(storage: str) -> tuple[float, float, float, float]:
    """In a new client process: its first run, the median of its later runs, its exit, and
    its first result from the start of its script (``import shoal`` included: Shoal's
    imports are partly lazy, so the first run pays for some of them)."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_SECRET"}  # its own secret
    proc = subprocess.run([sys.executable, "-c", PRIVATE_RUNS, storage], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    ended = time.time()
    got = json.loads(proc.stdout.splitlines()[-1])
    first, later = got["walls"][0], statistics.median(got["walls"][1:])
    return first, later, ended - got["done"], got["since_start"]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
