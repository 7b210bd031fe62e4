"""The dashboard's speed in a real browser: ``python -m bench.dashboard latency|history``.

- ``latency``: on Redis + gateway (started here), a 2 000-task run (a fan of quick tasks,
  then a chain of sixteen 0.3 s steps, each noting when it ended) watched in the live view:
  for each step, the time from its end to the browser showing it done (its completion step,
  the view's next read of the stream, the redraw of 2 000 nodes), the page's first draw (the
  first steps) left out. Median over ``--repeat`` runs.
- ``history``: a history of 1 000 runs of one workflow (made by real runs, kept with
  ``?keep=1000``), opened in the history view: from the click to the table and the three
  charts drawn. Median of ``--repeat`` loads.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

import shoal

from .servers import ShoalServers, free_port

ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def dashboard(storage: str, history: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "dashboard", "--storage", storage, "--history", history,
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(60_000)
            yield page
        finally:
            b.close()


def _quick(i: int) -> int:
    return i


def _total(*xs: int) -> int:
    return sum(xs)


def _step(x: int, flags: str, k: int) -> int:
    """A step of the slow chain: it takes a while, then notes when it ended."""
    time.sleep(CHAIN_STEP_S)
    Path(flags, f"done-{k}").write_text(repr(time.time()))
    return x + 1


CHAIN = 16
CHAIN_STEP_S = 0.3
#: The first steps are left out: the page is still drawing 2 000 nodes for the first time.
WARM_UP = 4


def latency(repeat: int) -> list[float]:
    """Seconds from a task's end to the browser showing it done, per task timed."""
    servers = ShoalServers().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            servers.prewarm(os.cpu_count() or 1)
            history = str(Path(tmp) / "history.sqlite3")
            with dashboard(servers.storage, history) as url, browser() as page:
                out = []
                for k in range(repeat):
                    out += _watch(servers, history, url, page, Path(tmp) / f"run-{k}")
                    servers.wait_idle()
                return out
    finally:
        servers.close()


def _watch(servers: ShoalServers, history: str, url: str, page: Any, flags: Path) -> list[float]:
    """One run of 2 000 tasks: a fan of quick tasks, then a chain of slow steps, each of
    whose ends the browser is watched for (the done count it makes)."""
    flags.mkdir()
    quick, total, step = shoal.task(_quick), shoal.task(_total), shoal.task(_step)
    root = quick(0)
    node = total(*[quick(root) for _ in range(2000 - CHAIN - 2)])
    for k in range(CHAIN):
        node = step(node, str(flags), k)
    options = {"storage": servers.storage, "workers": servers.workers, "history": history,
               "progress": False}  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(node.compute, **options)
        page.goto(url)
        states = page.locator("[data-testid='shoal-live-states']")
        states.wait_for()
        seen: dict[int, float] = {}  # done count -> when the browser first showed it
        first = 2000 - CHAIN
        while len([c for c in seen if c > first]) < CHAIN - 1 and not run.done():
            text = states.inner_text()
            now = time.time()
            page.wait_for_timeout(10)  # leave the page time to draw
            done = int(text.split("done ")[1].split()[0]) if "done " in text else 0
            seen.setdefault(done, now)
        run.result(60)
    ends = [float(Path(flags, f"done-{k}").read_text()) for k in range(CHAIN)]
    # Step k's end makes the count first + k + 1; the last one's goes with the run's keys.
    return [
        min(t for c, t in seen.items() if c >= first + k + 1) - ends[k]
        for k in range(WARM_UP, CHAIN - 1)
        if any(c >= first + k + 1 for c in seen)
    ]


def history_load(repeat: int) -> tuple[int, list[float]]:
    """Seconds from the click on History to its table and charts drawn, per load."""
    quick, total = shoal.task(_quick), shoal.task(_total)
    with tempfile.TemporaryDirectory() as tmp:
        history = f"sqlite:///{Path(tmp) / 'history.sqlite3'}?keep=1000"
        for _ in range(1000):
            total(*[quick(i) for i in range(8)]).compute(history=history, progress=False)
        out = []
        with dashboard("memory://", history) as url, browser() as page:
            for _ in range(repeat):
                page.goto(url)
                page.get_by_role("heading", name="Live run").wait_for()
                clicked = time.perf_counter()
                page.get_by_test_id("stRadioGroup").get_by_text("History").click()
                try:
                    page.get_by_text("1000 runs, newest first").wait_for()
                    page.locator(".js-plotly-plot .main-svg").nth(2).wait_for()  # 3 charts
                    page.locator("[data-testid='stDataFrame']").wait_for()
                except Exception:
                    page.screenshot(path=str(Path(tmp).parent / "shoal-dashboard-bench.png"))
                    raise
                out.append(time.perf_counter() - clicked)
        return 1000, out


def screenshots(out: Path) -> list[Path]:
    """The README's pictures: a Montage-shaped workflow (~100 tasks that compute) run on
    Redis + gateway unplanned, then planned; the live view mid-run, the analysis of the
    last (planned) run and the workflow's history."""
    from .live import scaled, wf_graph
    from .wfcommons import workflow

    out.mkdir(parents=True, exist_ok=True)
    tasks = workflow("montage", 100, 1)
    scale = scaled(tasks, 4.0, os.cpu_count() or 1)
    servers = ShoalServers().start()
    try:
        servers.prewarm(os.cpu_count() or 1)
        with tempfile.TemporaryDirectory() as tmp:
            history = str(Path(tmp) / "history.sqlite3")
            options = {"storage": servers.storage, "workers": servers.workers,
                       "history": history, "progress": False}  # fmt: skip
            for planner in ("none", "none", "uniform", "critical-path"):
                shoal.compute(wf_graph(tasks, scale, 1e-3), planner=planner, **options)
                servers.wait_idle()
            with dashboard(servers.storage, history) as url, browser() as page:
                page.set_viewport_size({"width": 1400, "height": 1150})
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    run = pool.submit(
                        shoal.compute, wf_graph(tasks, scale, 1e-3), planner="uniform", **options
                    )
                    page.goto(url)
                    states = page.locator("[data-testid='shoal-live-states']")
                    states.filter(has_text="running").wait_for()
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(out / "dashboard-live.png"))
                    run.result(120)
                page.set_viewport_size({"width": 1400, "height": 2700})
                page.get_by_test_id("stRadioGroup").get_by_text("Run analysis").click()
                page.get_by_role("heading", name="Timeline").wait_for()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-analysis.png"))
                page.set_viewport_size({"width": 1400, "height": 1000})
                page.get_by_test_id("stRadioGroup").get_by_text("History").click()
                page.get_by_role("heading", name="Compare two runs").wait_for()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-history.png"))
    finally:
        servers.close()
    return sorted(out.glob("dashboard-*.png"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("bench", choices=("latency", "history", "screenshots"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="docs", help="screenshots: where to save them")
    args = p.parse_args(argv)
    os.environ.setdefault("SHOAL_HISTORY", "none")
    if args.bench == "screenshots":
        for path in screenshots(Path(args.out)):
            print(path)
    elif args.bench == "latency":
        times = latency(args.repeat)
        print(f"live view, 2000-task run: completion to colour {statistics.median(times):.3f} s "
              f"(median of {len(times)}: {', '.join(f'{t:.3f}' for t in times)})")  # fmt: skip
    else:
        runs, times = history_load(args.repeat)
        print(f"history view, {runs} runs: drawn in {statistics.median(times):.3f} s "
              f"(median of {len(times)}: {', '.join(f'{t:.3f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
