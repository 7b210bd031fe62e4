"""Engine adapters. An adapter exposes ``delayed`` (a decorator that makes a function lazy)
and ``compute(*sinks) -> tuple`` (one run). To add a backend write or parametrize an
adapter and register a factory in ``ENGINES``; it is then selectable with ``--engines``.

Distributed engines: ``shoal-gateway`` (Shoal on a redis-server and a ``shoal gateway`` the
harness starts, see ``bench/servers.py``), ``dask-distributed`` (a ``LocalCluster`` of one
single-threaded worker process per core, running the same raw task dict as ``dask-graph``
through ``Client.get``) and ``dask-distributed-delayed`` (the same cluster, ``delayed``)."""

import functools
import os
from typing import Any


class Engine:
    name = "engine"

    def setup(self):
        """Import libraries / start clusters. May raise: the engine is then skipped."""

    def before_run(self):
        """Called before each run, outside the timing (e.g. counters snapshot)."""

    def after_run(self):
        """Called after each run, outside the timing."""

    def delayed(self, fn):
        raise NotImplementedError

    def compute(self, *sinks):
        raise NotImplementedError

    def info(self):
        """Extra figures about the last run (stored in the JSON output)."""
        return {}

    def close(self):
        pass


class ShoalEngine(Engine):
    def __init__(self, name, workers="local", storage="memory://"):
        self.name, self.workers, self.storage = name, workers, storage

    def setup(self):
        import shoal

        self.shoal = shoal
        self.delayed = shoal.task

    def compute(self, *sinks):
        return self.shoal.compute(
            *sinks, workers=self.workers, storage=self.storage, progress=False
        )

    def info(self):
        run = self.shoal.last_run()
        keys = ("tasks", "workers", "makespan_s", "bytes_moved")
        return {k: getattr(run, k, None) for k in keys}


class DaskEngine(Engine):
    def __init__(self, name, scheduler="threads", **compute_kwargs):
        self.name, self.scheduler, self.kwargs = name, scheduler, compute_kwargs

    def setup(self):
        import dask

        self.dask = dask
        self.delayed = functools.partial(dask.delayed, pure=False)

    def compute(self, *sinks):
        return self.dask.compute(*sinks, scheduler=self.scheduler, **self.kwargs)


class _Key:
    """A lazy call recorded into a raw Dask graph (what ``DaskGraphEngine.delayed`` returns)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


class DaskGraphEngine(Engine):
    """Dask's fastest path: a plain task dict (``{key: (func, *args)}``) run by
    ``dask.threaded.get``, with none of ``dask.delayed``'s graph merging. The fair baseline
    for per-task overhead, since delayed's building grows faster than linearly."""

    def __init__(self, name):
        self.name = name

    def setup(self):
        import dask.threaded

        self.get = dask.threaded.get
        self.graph = {}

    def delayed(self, fn):
        graph, name = self.graph, fn.__name__

        def call(*args):
            key = f"{name}-{len(graph)}"
            graph[key] = (fn, *[_raw(a) for a in args])
            return _Key(key)

        return call

    def compute(self, *sinks):
        graph, self.graph = self.graph, {}
        return tuple(self.get(graph, [s.key for s in sinks]))


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class ShoalGatewayEngine(ShoalEngine):
    """Shoal on redis + gateway. Setup starts both servers and one warm worker process per
    core; each run's Redis commands (``INFO commandstats`` before and after, once the
    gateway is idle again) land in ``info()``."""

    def __init__(self, name):
        super().__init__(name)
        self.servers, self.commands = None, {}

    def setup(self):
        from .servers import ShoalServers

        super().setup()
        self.servers = ShoalServers(max_workers=cores())  # set first: close() stops a half start
        self.servers.start()
        self.storage, self.workers = self.servers.storage, self.servers.workers
        self.servers.prewarm(cores())

    def before_run(self):
        self.servers.wait_idle()
        self._before = self.servers.command_stats()

    def after_run(self):
        from .servers import diff_stats

        self.servers.wait_idle()
        self.commands = diff_stats(self._before, self.servers.command_stats())

    def info(self):
        calls = sum(self.commands.values())
        return {**super().info(), "redis_calls": calls, "redis_commands": self.commands}

    def close(self):
        if self.servers is not None:
            self.servers.close()


class _LocalCluster:
    """One ``LocalCluster(n_workers=cores, threads_per_worker=1, processes=True)`` + Client."""

    def start_cluster(self):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=cores(), threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)

    def close(self):
        for part in ("client", "cluster"):
            if hasattr(self, part):
                getattr(self, part).close()


class DaskDistributedEngine(_LocalCluster, DaskGraphEngine):
    """``dask.distributed`` computing a raw task dict with ``Client.get``: no ``delayed``
    graph merging, Dask's fastest path and so the fair baseline (as ``dask-graph`` is for
    the threaded scheduler)."""

    def setup(self):
        self.graph = {}
        self.start_cluster()
        self.get = self.client.get


class DaskDistributedDelayedEngine(_LocalCluster, DaskEngine):
    """``dask.delayed(pure=False)`` + ``Client.compute``: what most users write."""

    def setup(self):
        super().setup()
        self.start_cluster()

    def compute(self, *sinks):
        return tuple(self.client.gather(self.client.compute(list(sinks))))


def _raw(arg):
    if isinstance(arg, _Key):
        return arg.key
    if isinstance(arg, list):
        return [_raw(a) for a in arg]
    return arg


ENGINES = {
    "shoal-local": lambda: ShoalEngine("shoal-local", workers="local", storage="memory://"),
    "dask-threads": lambda: DaskEngine("dask-threads", scheduler="threads"),
    "dask-graph": lambda: DaskGraphEngine("dask-graph"),
    "shoal-gateway": lambda: ShoalGatewayEngine("shoal-gateway"),
    "dask-distributed": lambda: DaskDistributedEngine("dask-distributed"),
    "dask-distributed-delayed": lambda: DaskDistributedDelayedEngine("dask-distributed-delayed"),
    # Dask without graph optimization (skips cull, whose cost grows with the layer count).
    "dask-threads-noopt": lambda: DaskEngine(
        "dask-threads-noopt", scheduler="threads", optimize_graph=False
    ),
}


def installed(names: str, every: dict[str, Any]) -> list[Any]:
    """The engines of ``every`` that ``names`` (a comma list) picks, in that order; Ray,
    optional, is skipped (saying so) where it is not installed."""
    picked = []
    for name in names.split(","):
        if name == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray is not installed: skipped (pip install ray)")
                continue
        picked.append(every[name])
    return picked
