"""What a user sees: the public names, the progress bar, the summary, the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import shoal
from shoal.cli import cli
from shoal.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def test_public_names_are_exactly_the_intended_ones() -> None:
    assert sorted(shoal.__all__) == sorted(
        [
            "BadSignature",
            "ConfigError",
            "EnvironmentBuildError",
            "Event",
            "EventKind",
            "Node",
            "RemoteTraceback",
            "RequirementsUnsatisfied",
            "RunCancelled",
            "RunNotFound",
            "RunSummary",
            "RunTimeout",
            "ShoalError",
            "StoreUnavailable",
            "TaskFailed",
            "TaskFunction",
            "WorkerLost",
            "__version__",
            "compute",
            "history",
            "last_run",
            "task",
        ]
    )
    assert all(hasattr(shoal, name) for name in shoal.__all__)
    assert (Path(shoal.__file__).parent / "py.typed").exists()


def test_httpx_after_shoal_leaves_its_command_line_unimported_until_run() -> None:
    code = "import shoal, httpx, sys; print('pygments' in sys.modules); httpx.main(['--help'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("False\n")
    assert "HTTPX" in done.stdout  # its command line still works


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=80), out


def test_progress_bar_draws_tasks_done_of_total_once_the_run_is_long() -> None:
    console, out = _console()
    bar = Progress(10, enabled=True, show_after=0.0, console=console)
    bar.update(4)
    bar.close()
    assert "4/10" in out.getvalue()


def test_progress_bar_stays_silent_for_short_runs_and_when_disabled() -> None:
    console, out = _console()
    short = Progress(10, enabled=True, show_after=3600.0, console=console)
    short.update(10)
    short.close()
    off = Progress(10, enabled=False, show_after=0.0, console=console)
    off.update(10)
    off.close()
    assert out.getvalue() == ""


def test_progress_bar_is_off_by_default_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert Progress(10).enabled is False


def test_summary_reports_the_run() -> None:
    @shoal.task
    def inc(x: int) -> int:
        return x + 1

    assert inc(inc(1)).compute(progress=False) == 3
    summary = shoal.last_run()
    assert summary is not None
    assert (summary.ok, summary.tasks, summary.tasks_done) == (True, 2, 2)
    assert summary.workers >= 1 and summary.makespan_s >= 0 and summary.wall_s > 0
    assert len(summary.structure_hash) == 16
    assert "2/2 tasks" in str(summary)


def _shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, [*path, name])
    return found


@pytest.mark.parametrize("command", _commands(cli, []))
def test_every_command_has_help(command: list[str]) -> None:
    result = _shoal(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_shoal_run_plans_from_the_history_and_shoal_history_shows_it(tmp_path: Path) -> None:
    where = str(tmp_path / "h.db")
    first = _shoal("run", "--history", where, "examples/fanout_fanin.py")
    assert first.returncode == 0, first.stderr
    planned = _shoal(
        "run", "--history", where, "--planner", "critical-path", "--sla", "p90",
        "examples/fanout_fanin.py",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert "critical-path" in planned.stdout  # the summary shows the planned makespan
    workflows = _shoal("history", "--history", where)
    assert workflows.returncode == 0 and "report" in workflows.stdout  # its sink
    runs = _shoal("history", "--history", where, "runs")
    assert "critical-path (p90)" in runs.stdout and "none" in runs.stdout
    run_id = shoal.history(where).runs(limit=1)[0].run_id
    shown = _shoal("history", "--history", where, "show", run_id[:6])
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}" in shown.stdout and "worst predictions first" in shown.stdout
    assert "plan end" in shown.stdout
    missing = _shoal("history", "--history", where, "show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_bad_planner_options_on_the_command_line_are_clear() -> None:
    result = _shoal("run", "--planner", "fastest", "examples/tree_reduction.py")
    assert result.returncode == 2 and "fastest" in result.stderr
    result = _shoal("run", "--sla", "p0", "examples/tree_reduction.py")
    assert result.returncode != 0 and "sla must be" in result.stderr
    result = _shoal("run", "--optimizations", "cluster,turbo", "examples/tree_reduction.py")
    assert result.returncode == 2 and "unknown optimization 'turbo'" in result.stderr


def test_shoal_run_prints_the_scripts_output_and_a_summary_table() -> None:
    result = _shoal("run", "examples/tree_reduction.py")
    assert result.returncode == 0, result.stderr
    assert "Shoal runs" in result.stdout and "ok" in result.stdout
    assert "2,047/2,047" in result.stdout


def test_shoal_run_of_a_failing_script_exits_non_zero_and_says_failed(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "import shoal\n@shoal.task\ndef bad():\n    raise ValueError('nope')\nbad().compute()\n"
    )
    result = _shoal("run", str(script))
    assert result.returncode != 0
    assert "ValueError: nope" in result.stderr
    assert "failed" in result.stdout
