"""``shoal dashboard`` in a real browser: Debian's Chromium driven by Playwright. A real
workflow runs on Redis + gateway while the live view watches it; then the run's analysis
and the history. Screenshots of each view are saved as test artefacts (in
``$SHOAL_SCREENSHOTS``, else the test's temporary folder)."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import _stop, free_port
from signals import wait_for

import shoal

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

# As the machine's probe runs it: headless, and no background traffic to a closed network.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHOAL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def dashboard(redis_url: str, history_file: Path) -> Iterator[str]:
    """``shoal dashboard`` on a free port, over the session's Redis and history."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "dashboard", "--storage", redis_url,
         "--history", str(history_file), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # Streamlit's own health check, with a deadline
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        yield url
    finally:
        _stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()
        serving = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _serves(p, port)]
        assert serving == [], "the dashboard left a server behind"


def _serves(cmdline: Path, port: int) -> bool:
    try:
        return f"--server.port\0{port}\0".encode() in cmdline.read_bytes()
    except OSError:  # gone meanwhile
        return False


@pytest.fixture
def page(dashboard: str) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Tall enough for a whole view: Streamlit scrolls inside the page, so a
            # full-page screenshot is only what the window shows.
            tab = browser.new_page(viewport={"width": 1400, "height": 2300})
            tab.set_default_timeout(30_000)
            yield tab
        finally:
            browser.close()


def test_a_run_is_watched_live_then_analysed_then_found_in_the_history(
    redis_url: str, gateway_url: str, dashboard: str, page: Any, flags: Path, screenshots: Path
) -> None:
    @shoal.task
    def split(n: int) -> list[int]:
        return list(range(n))

    @shoal.task
    def work(xs: list[int], i: int, folder: str) -> int:
        if i >= 4:  # the last ones wait: the live view sees them running
            (Path(folder) / f"under-way-{i}").touch()
            wait_for(Path(folder) / "go", timeout=60)
        return xs[i] * 2

    @shoal.task
    def total(*parts: int) -> int:
        return sum(parts)

    def compute(folder: Path, planner: str) -> tuple[Any, Any]:
        folder.mkdir(exist_ok=True)
        xs = split(6)
        value = total(*[work(xs, i, str(folder)) for i in range(6)]).compute(
            storage=redis_url, workers=gateway_url, progress=False, planner=planner
        )
        return value, shoal.last_run()

    first = flags / "first"  # a first run, unwatched and unhindered, for the plan to learn from
    first.mkdir()
    (first / "go").touch()
    assert compute(first, "none")[0] == 30
    watched = flags / "watched"
    go = watched / "go"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(compute, watched, "uniform")
        assert wait_for(watched / "under-way-4", timeout=30)
        page.goto(dashboard)
        page.get_by_role("heading", name="Live run").wait_for()
        states = page.locator("[data-testid='shoal-live-states']")
        states.filter(has_text="running").wait_for()
        text = states.inner_text()
        assert "done" in text and "running" in text and "waiting 1" in text, text
        page.wait_for_timeout(500)  # let the graph draw before the picture
        page.screenshot(path=str(screenshots / "live.png"), full_page=True)
        go.touch()
        value, summary = run.result(timeout=60)
        assert value == 30 and summary is not None and summary.planner == "uniform", summary
        page.get_by_text("8 of 8 tasks done").wait_for()  # how it ended, from its record

    page.get_by_test_id("stRadioGroup").get_by_text("Run analysis").click()
    page.get_by_role("heading", name="Timeline").wait_for()
    page.get_by_role("heading", name="Graph (critical path in red)").wait_for()
    page.get_by_text("Critical path: split-0").wait_for()
    page.get_by_role("heading", name="Planned vs real").wait_for()  # the run was planned
    assert page.get_by_text("This run was not planned").count() == 0
    page.locator("[data-testid='stDataFrame']").wait_for()  # the table, worst first
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "analysis.png"), full_page=True)

    page.get_by_test_id("stRadioGroup").get_by_text("History").click()
    page.get_by_text(f"2 runs, newest first (the newest: {summary.run_id})").wait_for()
    page.get_by_role("heading", name="Compare two runs").wait_for()
    compared = page.get_by_test_id("stTable")
    assert f"B {summary.run_id}" in compared.inner_text()  # side by side with the first
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "history.png"), full_page=True)


def test_the_live_graph_grows_as_a_map_expands(
    redis_url: str, gateway_url: str, dashboard: str, page: Any, flags: Path, screenshots: Path
) -> None:
    @shoal.task
    def split(n: int) -> list[int]:
        return list(range(n))

    @shoal.task
    def work(x: int, folder: str) -> int:
        if x >= 4:  # the last ones wait: the live view sees the map's elements running
            (Path(folder) / f"under-way-{x}").touch()
            wait_for(Path(folder) / "go", timeout=60)
        return x * 2

    @shoal.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    node = total(work.map(split(6), str(flags)))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(node.compute, storage=redis_url, workers=gateway_url, progress=False)
        assert wait_for(flags / "under-way-4", timeout=30)
        page.goto(dashboard)
        page.get_by_role("heading", name="Live run").wait_for()
        states = page.locator("[data-testid='shoal-live-states']")
        states.filter(has_text="running").wait_for()
        text = states.inner_text()
        # split, the expander, the collector, total and the six elements the map made
        counts = [int(word) for word in text.split() if word.isdigit()]
        assert sum(counts) == 10 and "waiting 2" in text, text
        page.wait_for_timeout(500)  # let the graph draw before the picture
        page.screenshot(path=str(screenshots / "live-map.png"), full_page=True)
        (flags / "go").touch()
        assert run.result(timeout=60) == 30
