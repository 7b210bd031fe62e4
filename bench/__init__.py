"""Shoal benchmark harness: per-task overhead of Shoal versus Dask on no-op graphs.

Run from the repository root::

    python -m bench                                  # all shapes, ~10,000 tasks, 5 repeats
    python -m bench --shapes chain,tree --size 2000 --repeat 3
    python -m bench --engines dask-threads --json bench.json
    python -m bench --suite distributed              # shoal-gateway vs dask-distributed

Each (engine, shape) pair builds and computes the same graph ``--repeat`` times after a small
warm-up per engine; the table shows the median wall time (graph building included), the
overhead per task in microseconds, and the ratio to the baseline engine (``--baseline``,
default ``dask-graph``). Results are checked against the known answer of each graph.
Engines are adapters in ``bench/engines.py``; shapes are builders in ``bench/graphs.py``.

``--suite distributed`` runs Shoal on a redis-server + ``shoal gateway`` it starts itself
(``bench/servers.py``) against ``dask.distributed`` on a LocalCluster, ~2,000-task graphs,
with Redis commands per task, the shipping of a 100,000-task graph
(``bench/shipping.py``) and the wordcount and matmul examples (``bench/examples.py``).
"""
