"""The repository's examples as benchmarks: ``examples/wordcount.py`` and
``examples/matmul.py``, each with its default inputs, timed per engine (graph building
included) and checked against the example's own ``reference()``.

A Shoal engine runs the example's ``build()`` as written. Another engine runs the very same
``build()`` with the example's ``@shoal.task`` functions swapped, for the duration of the
call, for the engine's ``delayed`` of their plain functions (``.func``): same code, same
inputs, same graph.
"""

import contextlib
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _same_counts(value, expected):
    return value == expected


def _same_matrix(value, expected):
    import numpy as np

    return value.shape == expected.shape and bool(np.allclose(value, expected))


#: name -> (keyword arguments of build() and reference(), result check)
EXAMPLES = {
    "wordcount": ({"chunks": 16, "n": 10}, _same_counts),
    "matmul": ({"n": 256, "k": 4, "seed": 0}, _same_matrix),
}


def load(name):
    """Import ``examples/NAME.py`` as module ``NAME`` (registered, so it pickles by value)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _tasks_as(module, delayed):
    """Swap the module's task functions for ``delayed(task.func)`` while building."""
    import shoal

    tasks = {k: v for k, v in vars(module).items() if isinstance(v, shoal.TaskFunction)}
    try:
        for name, fn in tasks.items():
            setattr(module, name, delayed(fn.func))
        yield
    finally:
        for name, fn in tasks.items():
            setattr(module, name, fn)


def build(module, engine, kwargs):
    from .engines import ShoalEngine

    if isinstance(engine, ShoalEngine):
        return module.build(**kwargs)
    with _tasks_as(module, engine.delayed):
        return module.build(**kwargs)


def run_examples(engines, repeat, baseline, names=tuple(EXAMPLES)):
    """One row per (example, engine): run times (after one untimed warm-up round), median,
    ratio to ``baseline``'s median, and whether every result equals the reference."""
    import cloudpickle

    rows = []
    for name in names:
        kwargs, same = EXAMPLES[name]
        module = load(name)
        cloudpickle.register_pickle_by_value(module)  # Dask's workers cannot import it
        expected = module.reference(**kwargs)
        cells = {e.name: _cell(name, e.name) for e in engines}
        for attempt in range(repeat + 1):  # interleaved, as the shapes are
            for e in engines:
                cell = cells[e.name]
                if cell["error"]:
                    continue
                try:
                    e.before_run()
                    gc.collect()
                    t0 = time.perf_counter()
                    (value,) = e.compute(build(module, e, kwargs))
                    elapsed = time.perf_counter() - t0
                    e.after_run()
                except Exception as exc:
                    cell["error"], cell["ok"] = f"{type(exc).__name__}: {exc}", False
                    continue
                cell["ok"] = cell["ok"] and same(value, expected)
                if attempt:
                    cell["times_s"].append(elapsed)
                    cell["info"] = e.info()
        for cell in cells.values():
            if cell["times_s"]:
                cell["median_s"] = statistics.median(cell["times_s"])
        base = cells.get(baseline, {}).get("median_s")
        for cell in cells.values():
            if "median_s" in cell:
                cell["ratio"] = cell["median_s"] / base if base else None
            rows.append(cell)
    return rows


def _cell(example, engine):
    return {"example": example, "engine": engine, "times_s": [], "ok": True, "error": None}
