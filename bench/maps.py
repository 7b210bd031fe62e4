"""Dynamic fan-outs against static ones, Dask's ``client.map`` and Ray:
``python -m bench.maps [--size 10000] [--repeat 3]``.

One workload, ``--size`` no-op tasks (``x + 1``) and a sum of their results, run by every
engine in turn (interleaved, after one warm-up run each), medians of ``--repeat`` runs;
servers and clusters start before and are not timed:

- ``shoal-local-map``: ``total(inc.map(upto(n)))`` on the embedded engine: the list is
  made by a task, and the worker that made it expands the map;
- ``shoal-local-static``: ``total([inc(i) for i in range(n)])``, the same fan-out built
  on the client, where the length is known;
- ``shoal-gateway-map`` / ``shoal-gateway-static``: the same on Redis + a ``shoal
  gateway`` (one pre-warmed worker process per core);
- ``dask``: distributed (a LocalCluster of one single-threaded worker process per core),
  ``client.map(inc, range(n))`` then ``client.submit(sum, futures)``;
- ``ray``: ``[inc.remote(i) for i in range(n)]`` then a task summing them (optional:
  skipped without ``pip install ray``).

Dask and Ray map over a list the client has; neither expands a graph inside its workers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any


def inc(x: int) -> int:
    return x + 1


def upto(n: int) -> list[int]:
    return list(range(n))


def total(xs: list[int]) -> int:
    return sum(xs)


def add_all(*xs: int) -> int:
    return sum(xs)


class Shoal:
    def __init__(self, name: str, gateway: bool, dynamic: bool) -> None:
        self.name, self.gateway, self.dynamic = name, gateway, dynamic

    def start(self, servers: Any) -> None:
        import shoal

        self.options: dict[str, Any] = {"history": "none", "progress": False}
        if self.gateway:
            self.options.update(storage=servers.storage, workers=servers.workers)
        self.inc, self.upto, self.total = (shoal.task(f) for f in (inc, upto, total))

    def run(self, n: int) -> int:
        if self.dynamic:
            node = self.total(self.inc.map(self.upto(n)))
        else:
            node = self.total([self.inc(i) for i in range(n)])
        result: int = node.compute(**self.options)
        return result

    def stop(self) -> None:
        pass


class Dask:
    name = "dask"

    def start(self, servers: Any) -> None:
        from distributed import Client, LocalCluster

        cores = os.cpu_count() or 1
        self.cluster = LocalCluster(
            n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)

    def run(self, n: int) -> int:
        futures = self.client.map(inc, range(n), pure=False)
        result: int = self.client.submit(total, futures, pure=False).result()
        return result

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()


class Ray:
    name = "ray"

    def start(self, servers: Any) -> None:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        self.ray, self.inc, self.add_all = ray, ray.remote(inc), ray.remote(add_all)

    def run(self, n: int) -> int:
        refs = [self.inc.remote(i) for i in range(n)]
        result: int = self.ray.get(self.add_all.remote(*refs))  # top-level refs resolve
        return result

    def stop(self) -> None:
        self.ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--engines",
        default="shoal-local-map,shoal-local-static,shoal-gateway-map,shoal-gateway-static,"
        "dask,ray",
    )
    args = parser.parse_args()

    from .engines import installed
    from .servers import ShoalServers

    every: dict[str, Any] = {
        "shoal-local-map": Shoal("shoal-local-map", False, True),
        "shoal-local-static": Shoal("shoal-local-static", False, False),
        "shoal-gateway-map": Shoal("shoal-gateway-map", True, True),
        "shoal-gateway-static": Shoal("shoal-gateway-static", True, False),
        "dask": Dask(),
        "ray": Ray(),
    }
    engines = installed(args.engines, every)
    servers = ShoalServers().start()
    servers.prewarm(os.cpu_count() or 1)
    expected = sum(range(1, args.size + 1))
    times: dict[str, list[float]] = {}
    try:
        for engine in engines:
            engine.start(servers)
            assert engine.run(args.size) == expected, engine.name  # warm-up
        for _ in range(args.repeat):
            for engine in engines:
                started = time.perf_counter()
                engine.run(args.size)
                times.setdefault(engine.name, []).append(time.perf_counter() - started)
    finally:
        for engine in engines:
            engine.stop()
        servers.close()
    load = os.getloadavg()[0]
    print(f"{args.size:,} tasks; load at the end {load:.2f}; medians of {args.repeat} runs")
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    for name, runs in times.items():
        per_task = medians[name] / args.size * 1e6
        ratios = []
        for base in ("dask", "ray"):
            if base in medians:
                ratios.append(f"{medians[name] / medians[base]:5.2f}x {base}")
        static = name.replace("-map", "-static")
        if name.endswith("-map") and static in medians:
            ratios.append(f"{medians[name] / medians[static]:5.2f}x static")
        print(
            f"{name:22} {medians[name] * 1e3:8.1f} ms ({min(runs) * 1e3:.1f}-"
            f"{max(runs) * 1e3:.1f})  {per_task:7.1f} us/task  " + "  ".join(ratios)
        )


if __name__ == "__main__":
    main()
