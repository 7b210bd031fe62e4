"""Engine adapters. An adapter exposes ``delayed`` (a decorator that makes a function lazy)
and ``compute(*sinks) -> tuple`` (one run). To add a backend (Shoal on redis + gateway,
dask.distributed on a LocalCluster, ...) write or parametrize an adapter and register a
factory in ``ENGINES``; it is then selectable with ``--engines``."""

import functools


class Engine:
    name = "engine"

    def setup(self):
        """Import libraries / start clusters. May raise: the engine is then skipped."""

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
    # Dask without graph optimization (skips cull, whose cost grows with the layer count).
    "dask-threads-noopt": lambda: DaskEngine(
        "dask-threads-noopt", scheduler="threads", optimize_graph=False
    ),
}
