"""Output: a rich table on the terminal and the raw figures as JSON."""

import json
import platform

from rich.console import Console
from rich.table import Table


def print_table(rows, config, skipped):
    t = Table(
        title=f"no-op graphs, ~{config['size']:,} tasks, median of {config['repeat']} "
        f"runs (build + compute)",
        caption=f"ratio = median / median of {config['baseline']}",
    )
    for col in ("shape", "engine", "tasks", "median s", "build s", "µs/task", "ratio", "result"):
        t.add_column(
            col, no_wrap=True, justify="left" if col in ("shape", "engine", "result") else "right"
        )
    for r in rows:
        if r["error"] and not r["times_s"]:
            t.add_row(r["shape"], r["engine"], "", "", "", "", "", f"[red]{r['error'][:60]}")
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "–"
        ok = "[green]ok" if r["ok"] and not r["error"] else f"[red]WRONG {r.get('result')!r}"
        t.add_row(
            r["shape"],
            r["engine"],
            f"{r['tasks']:,}",
            f"{r['median_s']:.3f}",
            f"{r['median_build_s']:.3f}",
            f"{r['us_per_task']:.1f}",
            ratio,
            ok,
        )
    console = Console(width=max(Console().width, 100))
    console.print(t)
    for name, why in skipped.items():
        console.print(f"[yellow]skipped {name}: {why}")
    console.print(
        "µs/task = median wall time (graph build included) / tasks; "
        "ratio < 1 means faster than the baseline."
    )


def write_json(path, rows, config, skipped):
    doc = {
        "config": config,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "skipped": skipped,
        "results": rows,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=repr)
