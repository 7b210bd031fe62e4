"""The history of runs: what planners learn from, and what ``shoal history`` and the
dashboard show. Chosen by URL (``compute(history=…)``, ``$SHOAL_HISTORY``):

    (unset)                         a SQLite file in the user's data directory
    sqlite:///path/to/file.db       a SQLite file (a bare path works too)
    redis://host:port/db, rediss://…, redis+cluster://…   a Redis a team shares
    none                            no history: nothing recorded, nothing to plan from

``?keep=N`` keeps the newest N runs per workflow (default 100); statistics are summaries
(:mod:`.stats`), so the history stays bounded however many runs it sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import ConfigError
from .base import DEFAULT_KEEP, History, Workflow
from .records import BackendStats, Cost, FunctionStats, RunRecord, StatsKey, TaskRecord
from .trace import RunTrace

HISTORY_ENV = "SHOAL_HISTORY"
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")

log = logging.getLogger(__name__)

#: The history's writer thread (one: writes go in order), and the writes still to finish.
_writer: ThreadPoolExecutor | None = None
_behind: list[Future[None]] = []

#: A write waits at most this long for the runs that are starting (:func:`starting`) ...
START_WAIT_S = 1.0
#: ... and this long after it was left behind, for the next run to start (runs back to
#: back: the next starts a few ms after the last returned), unless the process exits.
NEXT_RUN_S = 0.05


class _StartGate:
    """Holds the writer back while a run starts. A record takes 15 to 35 ms of Python
    (its statistics, SQLite): on the writer's thread it held the GIL each time the next
    run's start waited on I/O, up to the 5 ms switch interval a time, and delayed its
    first task by 20 to 35 ms (measured here, runs back to back). Once the workers run,
    the client mostly waits on the store: the write then costs it nothing it waits for.
    A write left behind waits a moment for the next run, too: begun, it goes on through
    that run's start."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._starting = 0  # runs between their start and their workers' first events
        self._settling = 0  # callers of settle(): they need the writes now
        self._mine = threading.local()  # whether this thread's run is starting
        self._exiting = False

    def start(self) -> None:
        if not getattr(self._mine, "held", False):
            self._mine.held = True
            self._count(starting=1)

    def started(self) -> None:
        if getattr(self._mine, "held", False):
            self._mine.held = False
            self._count(starting=-1)

    @contextlib.contextmanager
    def settling(self) -> Iterator[None]:
        self._count(settling=1)
        try:
            yield
        finally:
            self._count(settling=-1)

    def _count(self, starting: int = 0, settling: int = 0) -> None:
        with self._changed:
            self._starting += starting
            self._settling += settling
            self._changed.notify_all()

    def exiting(self) -> None:
        with self._changed:
            self._exiting = True
            self._changed.notify_all()

    def wait(self, left_at: float) -> None:
        """Until no run is starting, the write ``left_at`` (monotonic) having waited
        :data:`NEXT_RUN_S` for the next; at once when the writes are waited for, or the
        interpreter exits."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._settling > 0 or self._exiting or self._starting > 0,
                left_at + NEXT_RUN_S - time.monotonic(),
            )
            self._changed.wait_for(
                lambda: self._settling > 0 or self._exiting or not self._starting, START_WAIT_S
            )


_gate = _StartGate()
#: This thread's run starts: writes left behind wait until :func:`started` (at most
#: :data:`START_WAIT_S`), unless something waits for them (:func:`settle`).
starting = _gate.start
#: This thread's run has started (its workers are running): writes go on.
started = _gate.started


def write_behind(job: Callable[[], object]) -> None:
    """Do ``job`` (a run's record, a history's closing) on the history's writer thread,
    after those given before it: the caller has its results without waiting for the
    write (a few ms; ~20 on a process's first run, which imports the sketches' codec).
    The process waits for it before it exits (as for any executor's work), and so does
    the next :func:`open_history` (what it reads then has every earlier run)."""
    global _writer
    if _writer is None:
        _writer = ThreadPoolExecutor(1, thread_name_prefix="shoal-history")
        # Called as the interpreter exits, before it joins the writer (as the executor
        # itself is told to stop): the last record then waits for no next run.
        getattr(threading, "_register_atexit", lambda fn: None)(_gate.exiting)
    _behind.append(_writer.submit(_logged, job, time.monotonic()))


def _logged(job: Callable[[], object], left_at: float) -> None:
    _gate.wait(left_at)
    try:
        job()
    except Exception:  # a failed write costs no run (its results are the user's)
        log.warning("a history write failed", exc_info=True)


def settle() -> None:
    """Wait until the writes left behind are done (a run starting no longer holds them)."""
    with _gate.settling():
        while _behind:
            _behind.pop(0).result()


def writing() -> bool:
    """Whether a write left behind is still going on."""
    return any(not job.done() for job in _behind)


def default_path() -> Path:
    """The default history file, in the user's data directory (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("shoal", appauthor=False)) / "history.sqlite3"


class NoHistory:
    """``none``: records nothing, knows nothing."""

    url = "none"
    keep = 0

    def record(
        self,
        run: RunRecord,
        stats: Mapping[StatsKey, FunctionStats],
        backend: BackendStats,
    ) -> None:
        return None

    def function_stats(self, workflow: str, backend: str) -> dict[StatsKey, FunctionStats]:
        return {}

    def backend_stats(self, backend: str) -> BackendStats:
        return BackendStats()

    def runs(self, workflow: str | None = None, limit: int = 100) -> list[RunRecord]:
        return []

    def run(self, run_id: str) -> RunRecord | None:
        return None

    def workflows(self) -> list[Workflow]:
        return []

    def close(self) -> None:
        return None


def open_history(url: str | None = None, wait: bool = True) -> History:
    """The history at ``url`` (default: ``$SHOAL_HISTORY``, else the default SQLite file).
    :class:`~shoal.ConfigError` for a URL it cannot use. Waits for the writes earlier runs
    left behind (:func:`write_behind`), unless not to ``wait``: a run then reads what
    needs them only after :func:`settle`."""
    if wait:
        settle()
    url = url or os.environ.get(HISTORY_ENV) or ""
    if url.strip().lower() == "none":
        return NoHistory()
    if not url:
        from .sqlite import SqliteHistory

        return SqliteHistory(default_path())
    parts = urlsplit(url) if "://" in url else None
    if parts is None and "?" in url:  # a bare path with options
        bare, query = url.split("?", 1)
        url = f"sqlite://{Path(bare).expanduser().absolute()}?{query}"
        parts = urlsplit(url)
    options = dict(parse_qsl(parts.query)) if parts else {}
    unknown = sorted(set(options) - {"keep"})
    if unknown:
        raise ConfigError(f"history {url!r}: unknown option(s) {', '.join(unknown)}; expected keep")
    try:
        keep = int(options.get("keep", DEFAULT_KEEP))
    except ValueError:
        keep = 0
    if keep < 1:
        raise ConfigError(f"history {url!r}: keep must be a whole number >= 1")
    if parts is None or parts.scheme == "sqlite":
        from .sqlite import SqliteHistory

        path = Path(parts.netloc + parts.path if parts else url).expanduser()
        return SqliteHistory(path, url=url, keep=keep)
    if parts.scheme in _REDIS_SCHEMES:
        try:
            from .redis import RedisHistory
        except ImportError:
            raise ConfigError(
                f"history {parts.scheme}:// needs the 'redis' package: pip install 'shoal[redis]'"
            ) from None
        return RedisHistory(urlunsplit(parts._replace(query="")), keep=keep)
    raise ConfigError(
        f"unknown history URL {url!r}: expected sqlite:///PATH, a file path, "
        "redis://HOST:PORT/DB (rediss://, redis+cluster://) or none"
    )


def history(url: str | None = None) -> History:
    """The run history at ``url`` (see :func:`open_history`), to read runs from:
    ``shoal.history().runs(workflow=None, limit=100)``, newest first."""
    return open_history(url)


class _CallableModule(types.ModuleType):
    """``shoal.history`` is this package and :func:`history` at once: importing any of its
    modules makes it the package's attribute, so the package itself answers the call."""

    def __call__(self, url: str | None = None) -> History:
        return history(url)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "BackendStats",
    "Cost",
    "FunctionStats",
    "History",
    "NoHistory",
    "RunRecord",
    "RunTrace",
    "StatsKey",
    "TaskRecord",
    "Workflow",
    "history",
    "open_history",
    "settle",
    "started",
    "starting",
    "write_behind",
    "writing",
]
