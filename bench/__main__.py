"""Command line: ``python -m bench [--engines ...] [--shapes ...] [--size N] [--repeat N]
[--baseline ENGINE] [--json PATH]``. See ``bench/__init__.py`` and ``bench/README.md``."""

import argparse
import gc
import statistics
import sys
import time

from .engines import ENGINES
from .graphs import SHAPES
from .report import print_table, write_json

WARMUP_SIZE = 200


def run_once(engine, shape, size):
    """Build and compute one graph; return (total_s, build_s, value, n_tasks, expected)."""
    gc.collect()
    t0 = time.perf_counter()
    sink, n_tasks, expected = SHAPES[shape](engine.delayed, size)
    t1 = time.perf_counter()
    (value,) = engine.compute(sink)
    t2 = time.perf_counter()
    return t2 - t0, t1 - t0, value, n_tasks, expected


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--engines",
        default="shoal-local,dask-graph,dask-threads",
        help=f"comma list of {', '.join(ENGINES)}",
    )
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--size", type=int, default=10_000, help="tasks per graph (about)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per (engine, shape)")
    p.add_argument("--baseline", default="dask-graph", help="engine the ratios refer to")
    p.add_argument("--json", metavar="PATH", help="write the raw figures to PATH")
    args = p.parse_args(argv)
    names, shapes = args.engines.split(","), args.shapes.split(",")
    for bad in [n for n in names if n not in ENGINES] + [s for s in shapes if s not in SHAPES]:
        p.error(f"unknown engine or shape: {bad}")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    engines, skipped = [], {}
    for name in names:
        engine = ENGINES[name]()
        try:
            engine.setup()
            for shape in shapes:  # warm-up: imports, thread pools, caches
                run_once(engine, shape, WARMUP_SIZE)
            engines.append(engine)
        except Exception as exc:  # engine not available (yet): report it, run the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] skipping {name}: {skipped[name]}", file=sys.stderr)

    rows = []
    for shape in shapes:
        cells = {
            e.name: {
                "shape": shape,
                "engine": e.name,
                "times_s": [],
                "build_s": [],
                "ok": True,
                "error": None,
            }
            for e in engines
        }
        for _ in range(args.repeat):  # interleave engines so drift hits them alike
            for e in engines:
                cell = cells[e.name]
                if cell["error"]:
                    continue
                try:
                    total, build, value, n_tasks, expected = run_once(e, shape, args.size)
                except Exception as exc:
                    cell["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                cell["times_s"].append(total)
                cell["build_s"].append(build)
                cell.update(tasks=n_tasks, result=value, expected=expected, info=e.info())
                cell["ok"] = cell["ok"] and value == expected
        base = cells.get(args.baseline, {}).get("times_s")
        for cell in cells.values():
            if cell["times_s"]:
                cell["median_s"] = statistics.median(cell["times_s"])
                cell["median_build_s"] = statistics.median(cell["build_s"])
                cell["us_per_task"] = cell["median_s"] / cell["tasks"] * 1e6
                cell["ratio"] = cell["median_s"] / statistics.median(base) if base else None
            rows.append(cell)

    for e in engines:
        e.close()
    config = {k: v for k, v in vars(args).items() if k != "json"}
    print_table(rows, config, skipped)
    if args.json:
        write_json(args.json, rows, config, skipped)
    return 0 if all(r["ok"] and not r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
