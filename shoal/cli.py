"""The ``shoal`` command line."""

from __future__ import annotations

import logging
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import ConfigError
from .planning import PLANNER_NAMES
from .summary import RunSummary, add_listener


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shoal")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Level of Shoal's log messages on stderr.",
)
def cli(log_level: str) -> None:
    """Shoal: task graphs on short-lived workers with no central scheduler."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--storage", help="Store URL for every run of the script (sets SHOAL_STORAGE).")
@click.option("--workers", help="Worker backend for every run (sets SHOAL_WORKERS).")
@click.option("--blobs", help="Blob store for big outputs: a URL, off or auto (sets SHOAL_BLOBS).")
@click.option(
    "--planner",
    type=click.Choice(PLANNER_NAMES),
    help="Planner for every run (sets SHOAL_PLANNER) [default: none].",
)
@click.option("--sla", help="mean or a percentile p1..p99 for predictions (sets SHOAL_SLA).")
@click.option(
    "--deadline", type=float, help="Seconds, with --planner deadline (sets SHOAL_DEADLINE)."
)
@click.option(
    "--optimizations",
    help="Force these on, comma-separated (e.g. cluster), or none for all off "
    "(sets SHOAL_OPTIMIZATIONS) [default: the planner decides].",
)
@click.option("--history", help="History URL, or none (sets SHOAL_HISTORY).")
@click.option(
    "--metrics", help="Upload policy of task metrics, e.g. batch, off (sets SHOAL_METRICS)."
)
@click.option(
    "--requirements",
    type=click.Path(exists=True, dir_okay=False),
    help="A requirements file for every task of every run (sets SHOAL_REQUIREMENTS).",
)
@click.option(
    "--summary/--no-summary", default=True, show_default=True, help="Print a run summary."
)
def run(
    script: Path,
    args: tuple[str, ...],
    summary: bool,
    **settings: str | float | None,
) -> None:
    """Run a Python SCRIPT that computes Shoal graphs, then summarize its runs."""
    for name, value in settings.items():
        if value is not None:
            os.environ[f"SHOAL_{name.upper()}"] = str(value)
    runs: list[RunSummary] = []
    remove = add_listener(runs.append)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        remove()
        if summary:
            _print_summary(runs)


@cli.group(invoke_without_command=True)
@click.option(
    "--history",
    "url",
    envvar="SHOAL_HISTORY",
    help="History URL [default: $SHOAL_HISTORY, else the SQLite file in the user data dir].",
)
@click.pass_context
def history(ctx: click.Context, url: str | None) -> None:
    """Show the history of runs: the workflows (with no command), their runs, and one
    run's tasks planned against real."""
    ctx.obj = url
    if ctx.invoked_subcommand is None:
        from .history import open_history
        from .history.report import WORKFLOW_COLUMNS, workflow_rows

        kept = open_history(url)
        try:
            _table("Workflows", WORKFLOW_COLUMNS, workflow_rows(kept.workflows()))
        finally:
            kept.close()


@history.command("runs")
@click.option("--workflow", help="Only this workflow (its structure hash).")
@click.option("--limit", default=20, show_default=True, help="Newest runs to show.")
@click.pass_obj
def history_runs(url: str | None, workflow: str | None, limit: int) -> None:
    """The newest runs, with their makespan, the planned one and its error, and cost."""
    from .history import open_history
    from .history.report import RUN_COLUMNS, run_rows

    kept = open_history(url)
    try:
        _table("Runs", RUN_COLUMNS, run_rows(kept.runs(workflow, limit)))
    finally:
        kept.close()


@history.command("show")
@click.argument("run_id")
@click.option("--limit", default=25, show_default=True, help="Tasks to show, worst first.")
@click.pass_obj
def history_show(url: str | None, run_id: str, limit: int) -> None:
    """One run (RUN_ID or a unique prefix): each task planned against real, the worst
    predictions first."""
    from .history import open_history
    from .history.report import TASK_COLUMNS, run_heading, task_rows

    kept = open_history(url)
    try:
        record = kept.run(run_id)
    finally:
        kept.close()
    if record is None:
        raise click.ClickException(f"no run {run_id!r} (or more than one) in the history")
    click.echo(run_heading(record))
    _table("Tasks, worst predictions first", TASK_COLUMNS, task_rows(record, limit))


def _console() -> Any:
    """A rich console: the terminal's width, or a wide one for a file or a pipe (no need to
    squeeze a table into 80 columns there)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table if rows else f"[dim]{title}: none[/]")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8471, show_default=True, help="Port to listen on.")
@click.option("--fd", type=int, hidden=True, help="Serve on this already listening socket.")
@click.option(
    "--max-workers",
    type=int,
    default=None,
    help="Concurrency cap: workers busy at once [default: CPU count].",
)
@click.option(
    "--keep-warm",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds an idle worker process stays warm before it retires.",
)
@click.option(
    "--token",
    envvar="SHOAL_GATEWAY_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (needed to listen beyond 127.0.0.1).",
)
@click.option(
    "--fork/--no-fork",
    default=True,
    show_default=True,
    help="Fork workers from a template process that imported the worker runtime (fast cold "
    "starts), or start a new Python for each.",
)
@click.option(
    "--cgroups/--no-cgroups",
    default=True,
    show_default=True,
    help="Enforce each worker's CPU share and memory with cgroups where the host allows it "
    "(else CPUs are pinned and memory capped by RLIMIT_DATA).",
)
@click.option(
    "--lambda-cpu",
    is_flag=True,
    help="A worker's CPU share follows its memory, 1 CPU per 1769 MB, as on AWS Lambda.",
)
@click.option(
    "--invoke-latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds each invocation request takes to answer, as a FaaS platform's invoke API "
    "does (Lambda: ~0.05): makes wide hand-outs' costs measurable here.",
)
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Build the environment of this requirements file at start-up (before serving), "
    "so that the first run needing it does not wait.",
)
@click.option(
    "--cache-dir",
    envvar="SHOAL_CACHE_DIR",
    help="Where environments are built and kept [default: the user cache directory].",
)
@click.option(
    "--exit-with-stdin",
    is_flag=True,
    hidden=True,
    help="Shut down when stdin ends (a private gateway: its client stopped it, or died).",
)
def gateway(
    host: str,
    port: int,
    fd: int | None,
    max_workers: int | None,
    keep_warm: float,
    token: str | None,
    fork: bool,
    cgroups: bool,
    lambda_cpu: bool,
    invoke_latency: float,
    requirements_file: str | None,
    cache_dir: str | None,
    exit_with_stdin: bool,
) -> None:
    """Run a local FaaS gateway: pools of worker processes per size and environment, with
    warm reuse, cold starts, a keep-warm period and a concurrency cap. Needs SHOAL_SECRET.

    Tasks with requirements run in an environment per requirement set, built once with uv
    in the cache directory and reused by later runs and restarts.

    Use it with workers="gateway+http://HOST:PORT" and the same SHOAL_SECRET."""
    requirements: list[str] = []
    if requirements_file:
        from .envs import read_requirements

        requirements = read_requirements(requirements_file)
    template = None
    if fork and hasattr(os, "fork"):  # first: it imports the worker runtime while we import
        from .gateway.template import take_template

        template = take_template()
    from .gateway.server import serve

    serve(
        host=host,
        port=port,
        fd=fd,
        max_workers=max_workers,
        keep_warm_s=keep_warm,
        token=token,
        fork=fork,
        cgroups=cgroups,
        lambda_cpu=lambda_cpu,
        invoke_latency_s=invoke_latency,
        exit_with_stdin=exit_with_stdin,
        template=template,
        cache_dir=cache_dir,
        requirements=requirements,
    )


@cli.group()
def env() -> None:
    """Environments for tasks' requirements (built with uv, cached)."""


@env.command("key")
@click.argument("requirements_file", type=click.Path(exists=True, dir_okay=False))
def env_key(requirements_file: str) -> None:
    """Print the key of REQUIREMENTS_FILE's requirement set: what names its gateway pool
    and its Lambda functions (PREFIX-MEMORY-KEY)."""
    from .envs import key, normalise, read_requirements

    click.echo(key(normalise(read_requirements(requirements_file))))


@env.command("build")
@click.argument("requirements_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--cache-dir",
    envvar="SHOAL_CACHE_DIR",
    help="Where environments are built and kept [default: the user cache directory]; give "
    "a gateway the same one.",
)
def env_build(requirements_file: str, cache_dir: str | None) -> None:
    """Build the environment of REQUIREMENTS_FILE for this Python, without a gateway (a
    gateway on the same cache directory then finds it ready). Prints its key and path."""
    from .envs import normalise, read_requirements
    from .envs.build import Environments

    requirements = normalise(read_requirements(requirements_file))
    if not requirements:
        raise ConfigError(f"{requirements_file} names no requirements")
    from .errors import EnvironmentBuildError

    try:
        built, fresh = Environments(cache_dir).ensure(requirements)
    except EnvironmentBuildError as exc:
        click.echo(f"shoal: error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{built.key} {built.path}" + ("" if fresh else " (already built)"))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--fd", type=int, hidden=True, help="Serve on this already listening socket.")
@click.option(
    "--token",
    envvar="SHOAL_WORKER_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (needed to listen beyond 127.0.0.1).",
)
def worker(host: str, port: int, fd: int | None, token: str | None) -> None:
    """Serve Shoal workers over HTTP, for a FaaS or container platform (Knative, OpenFaaS,
    Cloud Run). Needs SHOAL_SECRET.

    POST /invoke runs one invocation and answers when it is done; one runs at a time, so
    give the platform a concurrency of 1 per instance. Use it with
    workers="http(s)://HOST:PORT/invoke", the same SHOAL_SECRET, and the token in
    ?token=... or SHOAL_WORKER_TOKEN."""
    from .service import serve_worker

    serve_worker(host, port, token, fd=fd)


@cli.command()
@click.option(
    "--history",
    "history_url",
    help="History URL (default: SHOAL_HISTORY, else the default SQLite file).",
)
@click.option("--storage", help="Store whose runs are watched live (default: SHOAL_STORAGE).")
@click.option("--port", default=8501, show_default=True, help="Port to serve the app on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def dashboard(history_url: str | None, storage: str | None, port: int, host: str) -> None:
    """Open the dashboard (needs the dashboard extra): runs live, a finished run's graph,
    timeline, critical path and planned vs real, and the history of each workflow."""

    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "the dashboard needs Streamlit and Plotly: pip install 'shoal[dashboard]'"
        ) from None
    app = Path(__file__).parent / "dashboard" / "app.py"  # a Streamlit script: not imported
    env = dict(os.environ)
    if history_url:
        env["SHOAL_HISTORY"] = history_url
    if storage:
        env["SHOAL_STORAGE"] = storage
    click.echo(f"Shoal dashboard on http://{host}:{port}  (Ctrl-C stops it)")
    # Streamlit's own options.
    options = {
        "server.port": port,
        "server.address": host,
        "server.headless": "true",
        "browser.gatherUsageStats": "false",
        "global.developmentMode": "false",
        "client.toolbarMode": "minimal",
    }
    command = [sys.executable, "-m", "streamlit", "run", str(app)]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    # This process becomes Streamlit: a signal to it (Ctrl-C, a supervisor's SIGTERM)
    # reaches the server itself, with no child left running behind a stopped parent.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def _print_summary(runs: list[RunSummary]) -> None:
    from rich.table import Table

    console = _console()
    if not runs:
        console.print("[dim]shoal: the script started no run[/]")
        return
    table = Table(title="Shoal runs", title_justify="left")
    columns = ("run", "status", "tasks", "workers", "makespan", "planned", "wall", "moved")
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for r in runs:
        planned = "-"
        if r.predicted_makespan_s is not None:
            planned = f"{r.predicted_makespan_s:.3f} s ({r.prediction_error:+.0%}, {r.planner})"
        table.add_row(
            r.run_id,
            "[green]ok[/]" if r.ok else "[red]failed[/]",
            f"{r.tasks_done:,}/{r.tasks:,}",
            str(r.workers),
            f"{r.makespan_s:.3f} s",
            planned,
            f"{r.wall_s:.3f} s",
            f"{r.bytes_moved:,} B",
        )
    console.print(table)


def main(args: list[str] | None = None) -> None:
    try:
        cli(args, prog_name="shoal")
    except ConfigError as exc:  # a wrong option, URL or environment: the message says it all
        click.echo(f"shoal: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
