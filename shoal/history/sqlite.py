"""A history in a SQLite file: the default, in the user's data directory.

Several processes may record at once: each records in one ``BEGIN IMMEDIATE`` transaction
(SQLite's write lock; others wait for it, up to 30 s), in WAL mode so that readers never
wait for a writer.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .base import DEFAULT_KEEP, Workflow, decode_record, encode_record, merged
from .records import BackendStats, FunctionStats, RunRecord, StatsKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS function_stats (
    workflow TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (workflow, key));
CREATE TABLE IF NOT EXISTS backend_stats (backend TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, name TEXT NOT NULL,
    started REAL NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, started);
"""


class SqliteHistory:
    """``sqlite:///path/to/file`` (or a bare path)."""

    def __init__(self, path: Path, *, url: str | None = None, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self.url = url or f"sqlite://{path}"
        self.keep = keep
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # compute() called where an event loop runs (a notebook) runs on another thread
            # than the one that opened the history; one run at a time uses it.
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._prepare()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"history {self.url}: cannot open the SQLite file: {exc}") from None

    def _prepare(self) -> None:
        """WAL mode and the tables, for a new file. Switching to WAL takes a lock SQLite
        refuses at once, without waiting, while another process does the same: retried."""
        db = self._db
        for attempt in itertools.count():
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
                if not {"function_stats", "backend_stats", "runs"} <= tables:
                    db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt >= 100:
                    raise
                time.sleep(0.01 * random.random())

    def record(
        self,
        run: RunRecord,
        stats: Mapping[StatsKey, FunctionStats],
        backend: BackendStats,
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, new in stats.items():
                row = db.execute(
                    "SELECT data FROM function_stats WHERE workflow = ? AND key = ?",
                    (run.workflow, key.text()),
                ).fetchone()
                where = (self.url, run.workflow, key)
                db.execute(
                    "INSERT OR REPLACE INTO function_stats VALUES (?, ?, ?)",
                    (run.workflow, key.text(), merged(where, row[0] if row else None, new)),
                )
            row = db.execute(
                "SELECT data FROM backend_stats WHERE backend = ?", (run.backend,)
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO backend_stats VALUES (?, ?)",
                (
                    run.backend,
                    merged((self.url, run.backend), row[0] if row else None, backend),
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                (run.run_id, run.workflow, run.name, run.started, encode_record(run)),
            )
            db.execute(
                "DELETE FROM runs WHERE workflow = ? AND run_id NOT IN "
                "(SELECT run_id FROM runs WHERE workflow = ? ORDER BY started DESC LIMIT ?)",
                (run.workflow, run.workflow, self.keep),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def function_stats(self, workflow: str, backend: str) -> dict[StatsKey, FunctionStats]:
        rows = self._db.execute(
            "SELECT key, data FROM function_stats WHERE workflow = ?", (workflow,)
        ).fetchall()
        out = {}
        for text, data in rows:
            key = StatsKey.parse(text)
            if key.backend == backend:
                out[key] = FunctionStats.from_json(json.loads(data))
        return out

    def backend_stats(self, backend: str) -> BackendStats:
        row = self._db.execute(
            "SELECT data FROM backend_stats WHERE backend = ?", (backend,)
        ).fetchone()
        return BackendStats.from_json(json.loads(row[0])) if row else BackendStats()

    def runs(self, workflow: str | None = None, limit: int = 100) -> list[RunRecord]:
        if workflow is None:
            query, args = "SELECT record FROM runs ORDER BY started DESC LIMIT ?", (limit,)
        else:
            query = "SELECT record FROM runs WHERE workflow = ? ORDER BY started DESC LIMIT ?"
            args = (workflow, limit)  # type: ignore[assignment]
        return [decode_record(blob) for (blob,) in self._db.execute(query, args)]

    def run(self, run_id: str) -> RunRecord | None:
        rows = self._db.execute(
            "SELECT record FROM runs WHERE run_id LIKE ? LIMIT 2", (_escape(run_id) + "%",)
        ).fetchall()
        return decode_record(rows[0][0]) if len(rows) == 1 else None

    def workflows(self) -> list[Workflow]:
        rows = self._db.execute(
            "SELECT workflow, (SELECT name FROM runs r2 WHERE r2.workflow = r.workflow "
            "ORDER BY started DESC LIMIT 1), COUNT(*), MAX(started) FROM runs r "
            "GROUP BY workflow ORDER BY MAX(started) DESC"
        ).fetchall()
        return [Workflow(*row) for row in rows]

    def close(self) -> None:
        self._db.close()


def _escape(text: str) -> str:
    """``text`` with LIKE's wildcards made literal (run ids are hex anyway)."""
    return text.replace("%", "").replace("_", "")
