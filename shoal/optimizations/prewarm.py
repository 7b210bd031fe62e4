"""Pre-warm: a worker that starts asks its platform to warm workers of the sizes its tasks'
children will need, when those differ from its own, so that they start warm when it hands
them out (their cold start overlaps its own work).

Forced on (``optimizations=["prewarm"]``), every worker does it as it starts, for the
children of the tasks it was invoked for. Chosen by the optimizing planner, it is timed:
each task may carry a delay (:attr:`shoal.optimizations.Tuning.warm_after`), so that the
warm worker is ready a cold start before its child's predicted start, and not idling
towards its keep-warm limit meanwhile. On the gateway it is ``POST /prewarm``. Deciding is
a pure function (:func:`warm_ups`); the worker loop carries it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..backends.base import Size


def sizes_to_warm(own: Size, children: Iterable[Size], fanout: int) -> dict[Size, int]:
    """How many workers of each size to warm: one per child whose size is not ``own``,
    at most ``fanout`` per size (no more can be handed out at once)."""
    wanted: dict[Size, int] = {}
    for size in children:
        if size != own:
            wanted[size] = min(fanout, wanted.get(size, 0) + 1)
    return wanted


def warm_ups(
    own: Size,
    children: Mapping[int, Sequence[Size]],
    fanout: int,
    warm_after: Mapping[int, float],
) -> list[tuple[float, Size, int]]:
    """What a worker of size ``own`` warms, and when: ``(seconds after it starts, size,
    count)``, earliest first. ``children``: the sizes of each of its tasks' children;
    ``warm_after``: a task's delay (none: at once). A size is warmed at the earliest
    delay of the tasks whose children need it, :func:`sizes_to_warm` many."""
    counts = sizes_to_warm(own, [s for sizes in children.values() for s in sizes], fanout)
    when: dict[Size, float] = {}
    for task, sizes in children.items():
        delay = warm_after.get(task, 0.0)
        for size in sizes:
            if size in counts:
                when[size] = min(when.get(size, delay), delay)
    return sorted(((when[size], size, n) for size, n in counts.items()), key=lambda w: w[0])
