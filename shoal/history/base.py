"""The history protocol: what the client, the planners, the CLI and the dashboard need from
a history store, and what each store shares (record encoding, merging, bounds)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from .records import BackendStats, FunctionStats, RunRecord, StatsKey

#: Runs kept per workflow (older ones are dropped; their statistics stay).
DEFAULT_KEEP = 100


class Workflow(NamedTuple):
    """A workflow the history knows: its structure hash, name, runs kept, last start."""

    workflow: str
    name: str
    runs: int
    last_started: float


class History(Protocol):
    """Everything Shoal asks of a history store; chosen by URL in :func:`open_history`."""

    url: str
    keep: int  # runs kept per workflow

    def record(
        self,
        run: RunRecord,
        stats: Mapping[StatsKey, FunctionStats],
        backend: BackendStats,
    ) -> None:
        """Add a run and merge the statistics it brings, atomically with respect to other
        processes recording at the same time; drop the workflow's runs beyond ``keep``."""

    def function_stats(self, workflow: str, backend: str) -> dict[StatsKey, FunctionStats]:
        """The statistics of every function and size of ``workflow`` on ``backend``."""

    def backend_stats(self, backend: str) -> BackendStats: ...

    def runs(self, workflow: str | None = None, limit: int = 100) -> list[RunRecord]:
        """The newest runs first, of one workflow or of all."""

    def run(self, run_id: str) -> RunRecord | None:
        """One run (a unique prefix of its id is enough), or None."""

    def workflows(self) -> list[Workflow]:
        """Every workflow with runs kept, the most recently run first."""

    def close(self) -> None: ...


def encode_record(run: RunRecord) -> bytes:
    return zlib.compress(json.dumps(run.to_json(), separators=(",", ":")).encode(), 1)


def decode_record(blob: bytes) -> RunRecord:
    return RunRecord.from_json(json.loads(zlib.decompress(blob)))


def merged(old: str | bytes | None, new: Any) -> str:
    """``new`` stats merged into the JSON ``old`` ones (if any), as JSON."""
    if old is not None:
        kind = type(new)
        both = kind.from_json(json.loads(old))
        both.merge(new)
        new = both
    return json.dumps(new.to_json(), separators=(",", ":"))
