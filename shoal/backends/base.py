"""The worker-backend protocol: how a worker is started. Everything a worker does once
started is the one worker loop in :mod:`shoal.protocol`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..graph import ShippedGraph
    from ..stores import Store


@dataclass(frozen=True, slots=True)
class Invocation:
    """One request to start a worker on some ready tasks of a run."""

    run_id: str
    tasks: tuple[int, ...]
    fanout: int  # how many workers the backend can usefully spread a fan-out over
    graph: ShippedGraph | None = None  # specs travelling with the invocation (no graph reads)


class Workers(Protocol):
    url: str
    #: How many workers run at once at most; the fan-out hint for handing out work.
    parallelism: int

    async def start(self, store: Store) -> None:
        """Get ready to run workers of runs kept in ``store``."""

    async def invoke(self, invocation: Invocation) -> None:
        """Start a worker on ``invocation`` (asynchronously: do not wait for it to finish)."""

    async def close(self) -> None: ...
