"""Shoal benchmark harness: per-task overhead of Shoal versus Dask on no-op graphs.

Run from the repository root::

    python -m bench                                  # all shapes, ~10,000 tasks, 5 repeats
    python -m bench --shapes chain,tree --size 2000 --repeat 3
    python -m bench --engines dask-threads --json bench.json

Each (engine, shape) pair builds and computes the same graph ``--repeat`` times after a small
warm-up per engine; the table shows the median wall time (graph building included), the
overhead per task in microseconds, and the ratio to the baseline engine (``--baseline``,
default ``dask-graph``). Results are checked against the known answer of each graph.
Engines are adapters in ``bench/engines.py``; shapes are builders in ``bench/graphs.py``.
"""
