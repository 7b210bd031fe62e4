"""Pre-warm: a worker that starts asks its platform to warm workers of the sizes its tasks'
children will need, when those differ from its own, so that they start warm when it hands
them out (their cold start overlaps its own work).

Forced on (``optimizations=["prewarm"]``), every worker does it as it starts, for the
children of the tasks it was invoked for; on the gateway it is ``POST /prewarm``. Deciding
is a pure function (:func:`sizes_to_warm`); the worker loop carries it out.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..backends.base import Size


def sizes_to_warm(own: Size, children: Iterable[Size], fanout: int) -> dict[Size, int]:
    """How many workers of each size to warm: one per child whose size is not ``own``,
    at most ``fanout`` per size (no more can be handed out at once)."""
    wanted: dict[Size, int] = {}
    for size in children:
        if size != own:
            wanted[size] = min(fanout, wanted.get(size, 0) + 1)
    return wanted
