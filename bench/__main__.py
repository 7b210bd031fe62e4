"""Command line: ``python -m bench [--suite local|distributed] [--engines ...] [--shapes ...]
[--size N] [--repeat N] [--baseline ENGINE] [--extras ...] [--json PATH]``.
See ``bench/__init__.py`` and ``bench/README.md``."""

import argparse
import gc
import signal
import statistics
import sys
import time

from . import servers
from .engines import ENGINES
from .graphs import FIXED_SIZE, SHAPES
from .report import print_extras, print_table, write_json

WARMUP_SIZE = 200

#: Defaults of each suite; an option given on the command line wins.
SUITES = {
    "local": dict(
        engines="shoal-local,dask-graph,dask-threads",
        shapes="chain,tree,fan",
        size=10_000,
        repeat=5,
        baseline="dask-graph",
        extras="",
    ),
    "distributed": dict(
        engines="shoal-gateway,dask-distributed",
        shapes="chain,tree,fan,tree1024",
        size=2_000,
        repeat=3,
        baseline="dask-distributed",
        extras="ship,examples",
    ),
}
EXTRAS = ("ship", "examples")


def run_once(engine, shape, size):
    """Build and compute one graph; return (total_s, build_s, value, n_tasks, expected)."""
    engine.before_run()
    gc.collect()
    t0 = time.perf_counter()
    sink, n_tasks, expected = SHAPES[shape](engine.delayed, size)
    t1 = time.perf_counter()
    (value,) = engine.compute(sink)
    t2 = time.perf_counter()
    engine.after_run()
    return t2 - t0, t1 - t0, value, n_tasks, expected


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the servers


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--suite",
        choices=SUITES,
        default="local",
        help="defaults for the options below: local (in-process engines, the default) or "
        "distributed (shoal-gateway vs dask-distributed, Redis commands, shipping, examples)",
    )
    p.add_argument("--engines", help=f"comma list of {', '.join(ENGINES)}")
    p.add_argument("--shapes", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--size", type=int, help="tasks per graph (about)")
    p.add_argument("--repeat", type=int, help="timed runs per (engine, shape)")
    p.add_argument("--baseline", help="engine the ratios refer to")
    p.add_argument(
        "--extras",
        help="comma list of ship (100 000-task graph into shoal-gateway's Redis), examples "
        "(examples/wordcount.py and matmul.py on every engine); '' for none",
    )
    p.add_argument(
        "--gateway-listen",
        choices=("fd", "port"),
        default="fd",
        help="shoal-gateway's gateway listens on a socket the harness binds and passes with "
        "--fd (default, as the tests and workers='gateway' do) or on --port N",
    )
    p.add_argument("--json", metavar="PATH", help="write the raw figures to PATH")
    args = p.parse_args(argv)
    servers.LISTEN = args.gateway_listen
    for key, value in SUITES[args.suite].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    names, shapes = args.engines.split(","), args.shapes.split(",")
    extras = [x for x in args.extras.split(",") if x]
    unknown = [n for n in names if n not in ENGINES] + [s for s in shapes if s not in SHAPES]
    for bad in unknown + [x for x in extras if x not in EXTRAS]:
        p.error(f"unknown engine, shape or extra: {bad}")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    signal.signal(signal.SIGTERM, _terminated)
    engines = []
    try:
        return _run(args, names, shapes, extras, engines)
    except KeyboardInterrupt:
        print("[bench] interrupted: stopping the engines' servers", file=sys.stderr)
        return 130
    finally:
        for e in engines:  # also on Ctrl-C, SIGTERM or an error: stop servers and clusters
            try:
                e.close()
            except Exception as exc:
                print(f"[bench] closing {e.name}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _run(args, names, shapes, extras, engines):
    skipped = {}
    warmup = [s for s in shapes if s not in FIXED_SIZE] or shapes
    for name in names:
        engine = ENGINES[name]()
        engines.append(engine)  # closed at the end even if its setup fails half-way
        try:
            engine.setup()
            for shape in warmup:  # warm-up: imports, thread pools, caches, connections
                run_once(engine, shape, WARMUP_SIZE)
        except Exception as exc:  # engine not available (yet): report it, run the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] skipping {name}: {skipped[name]}", file=sys.stderr)
    ready = [e for e in engines if e.name not in skipped]

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
            for e in ready
        }
        for _ in range(args.repeat):  # interleave engines so drift hits them alike
            for e in ready:
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
                info = e.info()
                cell.update(tasks=n_tasks, result=value, expected=expected, info=info)
                cell["ok"] = cell["ok"] and value == expected
                if "redis_calls" in info:
                    cell.setdefault("runs_redis", []).append(info["redis_commands"])
        base = cells.get(args.baseline, {}).get("times_s")
        for cell in cells.values():
            if cell["times_s"]:
                cell["median_s"] = statistics.median(cell["times_s"])
                cell["median_build_s"] = statistics.median(cell["build_s"])
                cell["us_per_task"] = cell["median_s"] / cell["tasks"] * 1e6
                cell["ratio"] = cell["median_s"] / statistics.median(base) if base else None
            if cell.get("runs_redis"):
                runs, n = cell["runs_redis"], cell["tasks"]
                cell["redis_calls_per_task"] = statistics.median(sum(c.values()) for c in runs) / n
                commands = sorted({k for c in runs for k in c}, key=lambda k: -runs[0].get(k, 0))
                cell["redis_per_task"] = {  # median calls of each command / tasks
                    cmd: statistics.median(c.get(cmd, 0) for c in runs) / n for cmd in commands
                }
            rows.append(cell)

    config = {k: v for k, v in vars(args).items() if k != "json"}
    print_table(rows, config, skipped)
    found = _extras(extras, ready, args)
    print_extras(found, rows, config)
    if args.json:
        write_json(args.json, rows, config, skipped, found)
    bad = [r for r in rows + found.get("examples", []) if not r["ok"] or r["error"]]
    return 1 if bad or "error" in found.get("ship", {}) else 0


def _extras(extras, engines, args):
    """The shipping measurement (needs shoal-gateway's Redis) and the examples."""
    found = {}
    gateway = next((e for e in engines if e.name == "shoal-gateway"), None)
    if "ship" in extras:
        if gateway is None:
            found["ship"] = {"error": "needs the shoal-gateway engine (its Redis)"}
        else:
            from .shipping import measure_ship

            try:
                found["ship"] = measure_ship(gateway.storage, gateway.servers.secret)
            except Exception as exc:
                found["ship"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "examples" in extras:
        from .examples import run_examples

        found["examples"] = run_examples(engines, args.repeat, args.baseline)
    return found


if __name__ == "__main__":
    sys.exit(main())
