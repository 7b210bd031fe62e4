"""Output: a rich table on the terminal and the raw figures as JSON."""

import json
import platform
import subprocess

from rich.console import Console
from rich.table import Table

#: Targets of the distributed suite (shoal-gateway), printed next to the figures.
TARGET_US_PER_TASK, TARGET_RATIO, TARGET_CALLS_PER_TASK = 250, 0.15, 6


def _console():
    return Console(width=max(Console().width, 120))


def print_table(rows, config, skipped):
    t = Table(
        title=f"no-op graphs, ~{config['size']:,} tasks, median of {config['repeat']} "
        f"runs (build + compute)",
        caption=f"ratio = median / median of {config['baseline']}",
    )
    redis = any("redis_calls_per_task" in r for r in rows)
    cols = ["shape", "engine", "tasks", "median s", "build s", "µs/task", "ratio"]
    for col in cols + ["redis cmds/task"] * redis + ["result"]:
        t.add_column(
            col, no_wrap=True, justify="left" if col in ("shape", "engine", "result") else "right"
        )
    for r in rows:
        if r["error"] and not r["times_s"]:
            cells = [r["shape"], r["engine"]] + [""] * (len(cols) - 2 + redis)
            t.add_row(*cells, f"[red]{r['error'][:60]}")
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "–"
        ok = "[green]ok" if r["ok"] and not r["error"] else f"[red]WRONG {r.get('result')!r}"
        calls = r.get("redis_calls_per_task")
        t.add_row(
            r["shape"],
            r["engine"],
            f"{r['tasks']:,}",
            f"{r['median_s']:.3f}",
            f"{r['median_build_s']:.3f}",
            f"{r['us_per_task']:.1f}",
            ratio,
            *([f"{calls:.3f}" if calls is not None else "–"] if redis else []),
            ok,
        )
    console = _console()
    console.print(t)
    for name, why in skipped.items():
        console.print(f"[yellow]skipped {name}: {why}")
    console.print(
        "µs/task = median wall time (graph build included) / tasks; "
        "ratio < 1 means faster than the baseline."
    )


def _check(ok):
    return "n/a" if ok is None else "[green]met[/]" if ok else "[red]MISSED[/]"


def print_extras(found, rows, config):
    """Redis commands by kind, the targets of the distributed suite, shipping, examples."""
    console = _console()
    gateway = [r for r in rows if r["engine"] == "shoal-gateway" and r.get("times_s")]
    for r in gateway:
        top = ", ".join(f"{k} {v:.4f}" for k, v in list(r["redis_per_task"].items())[:8])
        console.print(f"shoal-gateway {r['shape']} Redis calls/task by command: {top}")
    if gateway:
        t = Table(title=f"targets of shoal-gateway (ratio to {config['baseline']})")
        for col in ("shape", "µs/task", f"≤ {TARGET_US_PER_TASK}", "ratio", f"≤ {TARGET_RATIO}"):
            t.add_column(col, no_wrap=True, justify="left" if col == "shape" else "right")
        t.add_column("Redis cmds/task", justify="right")
        t.add_column(f"≤ {TARGET_CALLS_PER_TASK}", justify="right")
        for r in gateway:
            us, ratio, calls = r["us_per_task"], r.get("ratio"), r["redis_calls_per_task"]
            t.add_row(
                r["shape"],
                f"{us:.1f}",
                _check(us <= TARGET_US_PER_TASK),
                "–" if ratio is None else f"{ratio:.3f}",
                _check(None if ratio is None else ratio <= TARGET_RATIO),
                f"{calls:.3f}",
                _check(calls <= TARGET_CALLS_PER_TASK),
            )
        console.print(t)
    if "ship" in found:
        _print_ship(console, found["ship"])
    if found.get("examples"):
        _print_examples(console, found["examples"], config)


def _print_ship(console, s):
    from .shipping import TARGET_BYTES, TARGET_S

    if "error" in s:
        console.print(f"[red]shipping: {s['error']}")
        return
    t = Table(
        title=f"shipping a {s['tasks']:,}-task no-op chain into Redis",
        caption="Redis bytes: " + ", ".join(f"{k} {v:,}" for k, v in s["redis_memory"].items()),
    )
    for col in ("measure", "value", "target", ""):
        t.add_column(col, no_wrap=True, justify="left" if col == "measure" else "right")
    total, spec, mem = s["total_s"], s["spec_bytes_per_task"], s["redis_bytes_per_task"]
    t.add_row(
        "build + ship + create_run", f"{total:.3f} s", f"< {TARGET_S:g} s", _check(total < TARGET_S)
    )
    t.add_row("  build (graph, structure hash)", f"{s['build_s']:.3f} s", "", "")
    t.add_row("  ship (per-task specs)", f"{s['ship_s']:.3f} s", "", "")
    t.add_row("  create_run (encode + write)", f"{s['create_run_s']:.3f} s", "", "")
    t.add_row("    encoding alone (timed apart)", f"{s['encode_s']:.3f} s", "", "")
    t.add_row("nodes (user's calls; not in the total)", f"{s['nodes_s']:.3f} s", "", "")
    t.add_row(
        "encoded spec bytes / task",
        f"{spec:.1f} B",
        f"≤ {TARGET_BYTES} B",
        _check(spec <= TARGET_BYTES),
    )
    t.add_row(
        "Redis MEMORY USAGE (specs+functions+marks) / task",
        f"{mem:.1f} B",
        f"≤ {TARGET_BYTES} B",
        _check(mem <= TARGET_BYTES),
    )
    console.print(t)


def _print_examples(console, rows, config):
    t = Table(
        title=f"examples, median of {config['repeat']} runs after a warm-up (build + compute)",
        caption=f"ratio = median / median of {config['baseline']}",
    )
    for col in ("example", "engine", "median s", "runs s", "ratio", "result"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("median s", "ratio") else "left")
    for r in rows:
        if not r["times_s"]:
            t.add_row(r["example"], r["engine"], "", "", "", f"[red]{(r['error'] or '')[:60]}")
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "–"
        ok = "[green]ok" if r["ok"] and not r["error"] else f"[red]{r['error'] or 'WRONG'}"[:60]
        runs = " ".join(f"{x:.3f}" for x in r["times_s"])
        t.add_row(r["example"], r["engine"], f"{r['median_s']:.3f}", runs, ratio, ok)
    console.print(t)


def _git():
    """The commit measured and the files that differed from it (read-only git calls)."""

    def git(*args):
        run = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return run.stdout.strip() if run.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"head": git("rev-parse", "HEAD"), "changed": status.splitlines() if status else []}


def write_json(path, rows, config, skipped, extras=None):
    doc = {
        "config": config,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "git": _git(),
        "skipped": skipped,
        "results": rows,
        **(extras or {}),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=repr)
