"""The ``shoal`` command line."""

from __future__ import annotations

import logging
import os
import runpy
import sys
from pathlib import Path

import click

from . import __version__
from .errors import ConfigError
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
@click.option(
    "--summary/--no-summary", default=True, show_default=True, help="Print a run summary."
)
def run(
    script: Path, args: tuple[str, ...], storage: str | None, workers: str | None, summary: bool
) -> None:
    """Run a Python SCRIPT that computes Shoal graphs, then summarize its runs."""
    if storage:
        os.environ["SHOAL_STORAGE"] = storage
    if workers:
        os.environ["SHOAL_WORKERS"] = workers
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
def gateway(
    host: str,
    port: int,
    fd: int | None,
    max_workers: int | None,
    keep_warm: float,
    token: str | None,
) -> None:
    """Run a local FaaS gateway: pools of worker processes per size, with warm reuse,
    cold starts, a keep-warm period and a concurrency cap. Needs SHOAL_SECRET.

    Use it with workers="gateway+http://HOST:PORT" and the same SHOAL_SECRET."""
    from .gateway.server import serve

    serve(host=host, port=port, fd=fd, max_workers=max_workers, keep_warm_s=keep_warm, token=token)


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


def _print_summary(runs: list[RunSummary]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not runs:
        console.print("[dim]shoal: the script started no run[/]")
        return
    table = Table(title="Shoal runs", title_justify="left")
    for column in ("run", "status", "tasks", "workers", "makespan", "wall", "moved"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for r in runs:
        table.add_row(
            r.run_id,
            "[green]ok[/]" if r.ok else "[red]failed[/]",
            f"{r.tasks_done:,}/{r.tasks:,}",
            str(r.workers),
            f"{r.makespan_s:.3f} s",
            f"{r.wall_s:.3f} s",
            f"{r.bytes_moved:,} B",
        )
    console.print(table)


def main() -> None:
    try:
        cli()
    except ConfigError as exc:  # a wrong option, URL or environment: the message says it all
        click.echo(f"shoal: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
