"""Processor sharing of the store's pace by the transfers at once (one Redis thread, or a
machine's memory bandwidth), for the simulator (:mod:`.simulate`)."""

from __future__ import annotations

from typing import Any


class Shared:
    """Transfers of one kind through the store (its writes, or its reads), which it
    serves all at once, each at an equal share of its pace (processor sharing: one Redis
    thread, or a machine's memory bandwidth). Each is done when the store's clock for
    them (seconds of work each got so far) reaches its end."""

    __slots__ = ("moving", "clock", "since", "version")

    def __init__(self) -> None:
        self.moving: list[tuple[float, int, float, Any]] = []  # (end, id, latency, then)
        self.clock = 0.0
        self.since = 0.0
        self.version = 0

    def advance(self, time: float) -> None:
        if self.moving:
            self.clock += (time - self.since) / len(self.moving)
        self.since = time

    def next_done(self, time: float) -> float | None:
        """When the next transfer is done, at the pace it shares now (a new version)."""
        self.version += 1
        if not self.moving:
            return None
        return time + max(0.0, self.moving[0][0] - self.clock) * len(self.moving)
