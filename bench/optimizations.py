"""Each of Wukong's optimizations off and on, on the workload that shows it, on Redis + a
``shoal gateway``: ``python -m bench.optimizations [--repeat 5] [--workloads ...]``.

- ``cluster-fanout``: one task makes a 50 MB NumPy array, 16 children each read all of it
  (a strided sum), one task adds their results: ``optimizations=[]`` against
  ``["cluster"]`` (the children run on the producer, reading the array from memory).
- ``cluster-tree``: 16 tasks make 10 MB arrays, summed pairwise in a tree: ``[]`` against
  ``["cluster"]``.
- ``preload``: 8 tasks each make a 20 MB array, the i-th after ``i * 100 ms`` (producers
  that finish at staggered times), one task sums them all: ``[]`` against ``["preload"]``
  (the first producer's worker reads each array as it is stored, and sums the moment the
  last lands), on a gateway running 8 workers at once.
- ``delayed-io``: 4 tasks make an array after 50 ms each (near-equal durations), one of
  40 MB and three of 10 MB, one task sums them: ``[]`` (whichever producer's step is the
  last runs the sum, the other outputs stored: most often the 40 MB one, whose upload takes
  longest) against ``["delayed-io"]`` (the 40 MB producer's worker holds its array back
  until the others are in, and sums with it in memory, never storing it), 4 workers at
  once. Of equal outputs there is nothing to gain: without it too, the last producer's
  worker runs the fan-in with its own output in memory.
- ``prewarm``: a first stage of 1 s (a sleep) readies 4 children that need a size no
  worker has (1 GB, against the default 2 GB), 50 ms each, on a gateway keeping idle
  workers warm for 0.5 s: ``[]`` (the children start cold) against ``["prewarm"]`` (the
  first stage's worker warms a worker per child a cold start before their predicted
  start: warmed as it starts, they would have retired again). The gateway is left to
  retire its idle workers between runs.
- ``wide-fanout``: one task readies 2 000 no-op children on a gateway that runs 64
  workers at once and answers each invocation after 50 ms (``--invoke-latency 0.05``, as
  Lambda's invoke API): the 63 invocations it hands out go out flat (at most 8 in flight:
  ``[]``) or as a tree of invokers (``["invoke-tree"]``). Also shown: when the last
  worker started, after the first task's end.

Every run is planned by ``planner="optimizing"``, with the optimizations forced as said
(so its plan is critical-path's, with the forced ones simulated): the predicted makespan
is shown beside the measured one.

``preload-redis`` and ``delayed-io-redis`` are the same with every output through Redis
(``blobs="off"``), where moving an output costs its bytes' time: on the default data plane
a read of a big output is a mapping of its file in ``/dev/shm``, which costs next to
nothing until the task touches it.

The variants alternate, after two warm-up runs each (the
history the plans learn from); medians of ``--repeat`` runs of the wall time
(``compute()``), the makespan (first task start to last task end), the predicted makespan,
and the bytes moved through the store. The load is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import shoal

from .servers import ShoalServers

FAN = 16
ARRAY_BYTES = 50 * 10**6
LEAVES = 16
LEAF_BYTES = 10 * 10**6
WIDE = 2000
WARM_UP = 2


@shoal.task
def make_array(nbytes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(nbytes // 8)


@shoal.task
def strided_sum(array: np.ndarray, i: int) -> float:
    return float(array[i::FAN].sum())


@shoal.task
def add_all(*parts: float) -> float:
    return float(sum(parts))


@shoal.task
def add_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


@shoal.task
def checksum(array: np.ndarray) -> float:
    return float(array.sum())


@shoal.task
def seed() -> int:
    return 0


@shoal.task
def noop(x: int, i: int) -> int:
    return x + i


@shoal.task
def count(values: list[int]) -> int:
    return len(values)


def cluster_fanout() -> shoal.Node:
    array = make_array(ARRAY_BYTES)
    return add_all(*[strided_sum(array, i) for i in range(FAN)])


def cluster_tree() -> shoal.Node:
    nodes = [make_array(LEAF_BYTES, i) for i in range(LEAVES)]
    while len(nodes) > 1:
        nodes = [add_arrays(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return checksum(nodes[0])


@shoal.task
def produce(delay_s: float, nbytes: int, seed: int) -> np.ndarray:
    time.sleep(delay_s)
    return np.full(nbytes // 8, float(seed))


@shoal.task
def sum_all(*arrays: np.ndarray) -> float:
    return float(sum(a.sum() for a in arrays))


def preload() -> shoal.Node:
    return sum_all(*[produce(0.1 * i, 20 * 10**6, i) for i in range(8)])


def delayed_io() -> shoal.Node:
    sizes = [40 * 10**6, *[10 * 10**6] * 3]
    return sum_all(*[produce(0.05, nbytes, i) for i, nbytes in enumerate(sizes)])


@shoal.task
def first_stage(seconds: float) -> int:
    time.sleep(seconds)
    return 1


@shoal.task(memory_mb=1024)
def second_stage(x: int, i: int) -> int:
    time.sleep(0.05)
    return x + i


def prewarm() -> shoal.Node:
    first = first_stage(1.0)
    return add_all(*[second_stage(first, i) for i in range(4)])


def wide_fanout() -> shoal.Node:
    root = seed()
    return count([noop(root, i) for i in range(WIDE)])


@dataclass
class Workload:
    name: str
    graph: Callable[[], shoal.Node]
    off: list[str]
    on: list[str]
    max_workers: int | None = None
    gateway_args: tuple[str, ...] = ()
    blobs: str = "auto"  # "off": every output through Redis
    settle_s: float = 0.0  # a pause between runs (idle workers retire)
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)


WORKLOADS = [
    Workload("cluster-fanout", cluster_fanout, [], ["cluster"]),
    Workload("cluster-tree", cluster_tree, [], ["cluster"]),
    Workload("preload", preload, [], ["preload"], 8),
    Workload("preload-redis", preload, [], ["preload"], 8, blobs="off"),
    Workload("delayed-io", delayed_io, [], ["delayed-io"], 4),
    Workload("delayed-io-redis", delayed_io, [], ["delayed-io"], 4, blobs="off"),
    Workload(
        "prewarm",
        prewarm,
        [],
        ["prewarm"],
        gateway_args=("--keep-warm", "0.5", "--no-fork"),
        settle_s=0.7,
    ),
    Workload("wide-fanout", wide_fanout, [], ["invoke-tree"], 64, ("--invoke-latency", "0.05")),
]


def _last_worker_start(history: str) -> float:
    """Seconds from the first task's end to the last worker's first task start."""
    tasks = shoal.history(history).runs(limit=1)[0].tasks
    first_end = min(t.end for t in tasks if t.end is not None)
    first: dict[str, float] = {}
    for t in tasks:
        if t.start is not None:
            first[t.worker] = min(first.get(t.worker, t.start), t.start)
    return max(first.values()) - first_end


def run(workload: Workload, repeat: int, folder: str) -> None:
    servers = ShoalServers(workload.max_workers, gateway_args=workload.gateway_args).start()
    node = workload.graph()
    history = os.path.join(folder, f"{workload.name}.db")
    try:
        variants = {"off": workload.off, "on": workload.on}
        for round_ in range(repeat + WARM_UP):
            for label, optimizations in variants.items():
                started = time.perf_counter()
                node.compute(storage=servers.storage, workers=servers.workers, history=history,
                             optimizations=optimizations, planner="optimizing",
                             blobs=workload.blobs,
                             progress=False)  # fmt: skip
                wall = time.perf_counter() - started
                servers.wait_idle()
                time.sleep(workload.settle_s)
                summary = shoal.last_run()
                assert summary is not None and summary.ok
                if round_ >= WARM_UP:
                    assert summary.predicted_makespan_s is not None
                    workload.runs.setdefault(label, []).append({
                        "wall": wall, "makespan": summary.makespan_s,
                        "predicted": summary.predicted_makespan_s,
                        "moved": summary.bytes_moved, "workers": summary.workers,
                        "cold": summary.cold_starts,
                        "last_start": _last_worker_start(history),
                    })  # fmt: skip
    finally:
        servers.close()


def report(workload: Workload) -> None:
    medians = {
        label: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for label, runs in workload.runs.items()
    }
    for label, m in medians.items():
        extra = f", last worker started {1e3 * m['last_start']:.0f} ms after the first task's end"
        print(f"{workload.name:15} {label:3} {str(getattr(workload, label)):17} wall "
              f"{1e3 * m['wall']:7.1f} ms, makespan {1e3 * m['makespan']:7.1f} ms (predicted "
              f"{1e3 * m['predicted']:.1f}: {m['predicted'] / m['makespan'] - 1:+.0%}), "
              f"{m['moved'] / 1e6:7.1f} MB moved, {m['workers']:.0f} workers "
              f"({m['cold']:.0f} cold)"
              + (extra if workload.name == "wide-fanout" else ""))  # fmt: skip
    off, on = medians["off"], medians["on"]
    print(f"{'':15} on/off: wall {on['wall'] / off['wall']:.2f}x, "
          f"makespan {on['makespan'] / off['makespan']:.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.optimizations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    p.add_argument("--keep-history", metavar="DIR",
                   help="write the histories (<workload>.db) in DIR and keep them")  # fmt: skip
    args = p.parse_args(argv)
    chosen = [w for w in WORKLOADS if w.name in args.workloads.split(",")]
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as folder:
        if args.keep_history:
            os.makedirs(args.keep_history, exist_ok=True)
        for workload in chosen:
            run(workload, args.repeat, args.keep_history or folder)
    print(f"load at the end: {os.getloadavg()[0]:.2f}; medians of {args.repeat} runs")
    for workload in chosen:
        report(workload)


if __name__ == "__main__":
    main()
