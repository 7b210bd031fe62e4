"""Data-heavy work against Ray and Dask: ``python -m bench.data [--repeat 5]``.

Two workloads, each run by every engine, medians of ``--repeat`` runs in each of ``--rounds``
rounds. An engine runs alone: in a round each engine in turn starts (its servers or
cluster, not timed), runs each workload once to warm up and then ``--repeat`` times, and
stops. (Started together, the others' idle daemons took CPU from whichever ran: the word
count of Shoal took 90-97 ms beside Ray's and Dask's idle clusters, 77-79 ms alone.)

- ``wordcount``: the Book of Genesis x16 in 32 chunks, a Counter per chunk (map), merged
  pairwise in a tree (reduce): Counters of tens of KB pass between workers.
- ``fanout``: one task makes a 50 MB NumPy array, 16 children each read all of it (a
  strided sum), one task adds their results.

Engines: ``shoal`` (Redis + a ``shoal gateway``, the data plane on its default: outputs
over 1 MiB in files in ``/dev/shm``), ``shoal-cluster`` (the same with task clustering
forced on, ``optimizations=["cluster"]``, and the array's task sized to the machine's
CPUs, ``cpus=os.cpu_count()``: the 16 children stay on its worker, where the array is, and
run on its threads, as many at once as it has CPUs, where Ray runs them on one worker per
core), ``shoal-redis`` (as ``shoal``, every output through Redis: ``blobs="off"``),
``ray`` (``ray.remote`` tasks passing object refs, objects in its shared-memory store)
and ``dask`` (distributed, a LocalCluster of one single-threaded worker process per
core). Ray is optional (``pip install ray``): without it, it is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TEXT = Path(__file__).resolve().parent.parent / "examples" / "data" / "genesis_kjv.txt"
CHUNKS = 32
FAN = 16
ARRAY_BYTES = 50 * 10**6


# --------------------------------------------------------------------------- the work
def count(chunk: str) -> Counter:
    return Counter(chunk.lower().split())


def merge(a: Counter, b: Counter) -> Counter:
    return a + b


def top(counts: Counter) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]


def make_array(nbytes: int) -> np.ndarray:
    return np.random.default_rng(0).random(nbytes // 8)


def strided_sum(array: np.ndarray, i: int) -> float:
    return float(array[i::FAN].sum())


def add(parts: list[float]) -> float:
    return float(sum(parts))


def add_each(*parts: float) -> float:
    return add(list(parts))


def chunks() -> list[str]:
    text = TEXT.read_text(encoding="utf-8") * 16
    size = -(-len(text) // CHUNKS)
    return [text[i : i + size] for i in range(0, len(text), size)]


def tree(nodes: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
    while len(nodes) > 1:
        pairs = [combine(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        nodes = pairs + nodes[len(nodes) - len(nodes) % 2 :]
    return nodes[0]


def graph(tasks: dict[str, Any], workload: str, text: list[str]) -> Any:
    """The workload's sink, for engines whose tasks are called like the functions (Shoal's
    tasks, Dask's delayed)."""
    if workload == "wordcount":
        return tasks["top"](tree([tasks["count"](c) for c in text], tasks["merge"]))
    array = tasks["make_array"](ARRAY_BYTES)
    return tasks["add"]([tasks["strided_sum"](array, i) for i in range(FAN)])


# --------------------------------------------------------------------------- engines
class Shoal:
    def __init__(
        self,
        name: str,
        blobs: str,
        optimizations: list[str] | None = None,
        source_cpus: float | None = None,
    ) -> None:
        self.name, self.blobs, self.optimizations = name, blobs, optimizations
        self.source_cpus = source_cpus  # the size of make_array's worker

    def start(self) -> None:
        import shoal

        from .servers import ShoalServers

        self.shoal, self.servers = shoal, ShoalServers().start()
        self.tasks = {f.__name__: shoal.task(f) for f in (count, merge, top, make_array,
                                                         strided_sum, add)}  # fmt: skip
        if self.source_cpus is not None:
            self.tasks["make_array"] = shoal.task(make_array, cpus=self.source_cpus)

    def run(self, workload: str, text: list[str]) -> Any:
        return graph(self.tasks, workload, text).compute(
            storage=self.servers.storage,
            workers=self.servers.workers,
            blobs=self.blobs,
            optimizations=self.optimizations,
            history="none",
            progress=False,
        )

    def stop(self) -> None:
        self.servers.close()


class Ray:
    name = "ray"

    def start(self) -> None:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.tasks = {f.__name__: ray.remote(f) for f in (count, merge, top, make_array,
                                                          strided_sum, add)}  # fmt: skip
        self.add_refs = ray.remote(add_each)

    def run(self, workload: str, text: list[str]) -> Any:
        t = self.tasks
        if workload == "wordcount":
            counts = [t["count"].remote(c) for c in text]
            sink = t["top"].remote(tree(counts, lambda a, b: t["merge"].remote(a, b)))
        else:
            array = t["make_array"].remote(ARRAY_BYTES)
            parts = [t["strided_sum"].remote(array, i) for i in range(FAN)]
            sink = self.add_refs.remote(*parts)  # Ray resolves top-level refs only
        return self.ray.get(sink)

    def stop(self) -> None:
        self.ray.shutdown()


class Dask:
    name = "dask"

    def start(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        cores = os.cpu_count() or 1
        self.cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                                    dashboard_address=None)  # fmt: skip
        self.client = Client(self.cluster)
        self.tasks = {f.__name__: dask.delayed(f, pure=False) for f in (count, merge, top,
                      make_array, strided_sum, add)}  # fmt: skip

    def run(self, workload: str, text: list[str]) -> Any:
        return self.client.compute(graph(self.tasks, workload, text)).result()

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()


# --------------------------------------------------------------------------- harness
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="wordcount,fanout")
    parser.add_argument("--engines", default="shoal,shoal-cluster,shoal-redis,ray,dask")
    args = parser.parse_args()

    from .engines import installed

    every = {"shoal": Shoal("shoal", "auto"), "shoal-redis": Shoal("shoal-redis", "off"),
             "shoal-cluster": Shoal("shoal-cluster", "auto", ["cluster"], os.cpu_count()),
             "ray": Ray(), "dask": Dask()}  # fmt: skip
    engines = installed(args.engines, every)
    workloads = args.workloads.split(",")
    text = chunks()
    expected = {"wordcount": top(tree([count(c) for c in text], merge))}
    times: dict[tuple[str, str], list[float]] = {}
    rounds: list[dict[tuple[str, str], float]] = []  # each round's median per engine
    for n in range(args.rounds):
        this_round: dict[tuple[str, str], float] = {}
        for engine in engines if n % 2 == 0 else engines[::-1]:  # none always first
            engine.start()
            try:
                for workload in workloads:
                    result = engine.run(workload, text)  # warm-up: workers, imports, caches
                    if workload in expected:
                        assert result == expected[workload], (engine.name, result[:3])
                    walls = []
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        engine.run(workload, text)
                        walls.append(time.perf_counter() - started)
                    times.setdefault((workload, engine.name), []).extend(walls)
                    this_round[(workload, engine.name)] = statistics.median(walls)
            finally:
                engine.stop()
        rounds.append(this_round)
    load = os.getloadavg()[0]
    runs = args.rounds * args.repeat
    print(f"load at the end: {load:.2f}; medians of {runs} runs (min-max), each engine alone; "
          f"against Ray: the median of the {args.rounds} rounds' ratios (each round runs "
          "every engine in turn, so that a ratio compares engines on the machine as it ran "
          "then) and, in brackets, each round's")  # fmt: skip
    for workload in workloads:
        for engine in engines:
            runs = times[(workload, engine.name)]
            median = statistics.median(runs)
            print(f"{workload:10} {engine.name:12} {median * 1e3:8.1f} ms "
                  f"({min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f})  "
                  + _against_ray(rounds, workload, engine.name))  # fmt: skip


def _against_ray(rounds: list[dict[tuple[str, str], float]], workload: str, name: str) -> str:
    """The median of the rounds' ratios of ``name``'s median to Ray's, and each round's."""
    if (workload, "ray") not in rounds[0]:
        return ""
    ratios = [r[(workload, name)] / r[(workload, "ray")] for r in rounds]
    each = " ".join(f"{x:.2f}" for x in ratios)
    return f"{statistics.median(ratios):5.2f}x ray [{each}]"


if __name__ == "__main__":
    main()
