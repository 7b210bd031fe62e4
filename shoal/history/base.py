"""The history protocol: what the client, the planners, the CLI and the dashboard need from
a history store, and what each store shares (record encoding, merging, bounds)."""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping
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


class Merger:
    """Merges a run's stats into those a history holds as JSON, keeping decoded what it
    wrote last: a sketch rebuilt from JSON costs ~0.1 ms (ddsketch adds its bins back one
    by one), a run's record merges dozens, and the next run of the process mostly finds
    the rows as it left them (if another process wrote one since, it is decoded anew)."""

    def __init__(self, keep: int = 1024) -> None:
        self._wrote: OrderedDict[Hashable, tuple[str, Any]] = OrderedDict()
        self._keep = keep

    def __call__(self, where: Hashable, old: str | bytes | None, new: Any) -> str:
        """``new`` stats merged into the JSON ``old`` ones (if any) of row ``where``, as
        JSON: what to write there."""
        wrote = self._wrote.pop(where, None)
        if old is None:
            return json.dumps(new.to_json(), separators=(",", ":"))  # ``new`` stays theirs
        text = old.decode() if isinstance(old, bytes) else old
        both = wrote[1] if wrote is not None and wrote[0] == text else None
        if both is None:
            both = type(new).from_json(json.loads(text))
        both.merge(new)
        out = json.dumps(both.to_json(), separators=(",", ":"))
        self._wrote[where] = (out, both)
        if len(self._wrote) > self._keep:
            self._wrote.popitem(last=False)
        return out


#: The process's merger: a run opens its history anew, the next finds what this one wrote.
merged = Merger()
