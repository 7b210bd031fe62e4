"""A worker's memory of outputs it stored for fan-ins that other inputs still held back:
should the worker ready the fan-in itself, it reads none of them back from the store.
Bounded in bytes; the oldest go first."""

from __future__ import annotations

from typing import Any

from ..metrics import approx_nbytes

#: At most this many bytes, and an eighth of the worker's size.
RECENT_BYTES = 64 << 20


class RecentOutputs:
    """Outputs by task, within ``limit`` bytes (by :func:`~shoal.metrics.approx_nbytes`)."""

    __slots__ = ("_kept", "limit", "nbytes")

    def __init__(self, memory_mb: int) -> None:
        self.limit = min(RECENT_BYTES, memory_mb << 17)
        self.nbytes = 0
        self._kept: dict[int, tuple[Any, int]] = {}  # oldest first

    def __bool__(self) -> bool:
        return bool(self._kept)

    def __contains__(self, task: int) -> bool:
        return task in self._kept

    def keep(self, task: int, output: Any) -> None:
        nbytes = approx_nbytes(output)
        if nbytes > self.limit:
            return
        kept = self._kept
        kept[task] = (output, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.limit:
            self.nbytes -= kept.pop(next(iter(kept)))[1]

    def take(self, task: int) -> tuple[Any] | None:
        """``(output,)`` if it is kept (and no longer afterwards: a fan-in reads it once),
        else None."""
        entry = self._kept.pop(task, None)
        if entry is None:
            return None
        self.nbytes -= entry[1]
        return (entry[0],)
