"""What a worker does as it starts, before any task: send on its share of a wide
hand-out (:mod:`shoal.optimizations.tree`), and warm workers of the sizes its tasks'
children need (:mod:`shoal.optimizations.prewarm`). Both ask the platform only: what to
ask is decided by those modules' pure functions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..backends import Invocation, Size, Workers, invoke_all
from ..optimizations.prewarm import warm_ups

if TYPE_CHECKING:
    from .worker import _Worker

log = logging.getLogger(__name__)


async def prewarm(state: _Worker, worker: str) -> None:
    """Warm workers of the sizes the children of this invocation's tasks need, each when
    the plan says (:func:`~shoal.optimizations.prewarm.warm_ups`): asked now, before any
    task (which may hold this loop), the platform keeping the time."""
    source, inv = state.source, state.invocation
    sizes: dict[tuple[Any, int], Size] = {}  # by (planned size, function): few of them

    async def size_of(task: int) -> Size:
        spec = await source.spec(task)
        key = (spec.size, spec.func)
        if key not in sizes:
            sizes[key] = await source.size([task])
        return sizes[key]

    try:
        children = {
            t: [await size_of(c) for c in (await source.spec(t)).children] for t in inv.tasks
        }
        warm_after = dict(inv.tuning.warm_after)
        for after_s, size, count in warm_ups(inv.size, children, inv.fanout, warm_after):
            await state.workers.prewarm(size.cpus, size.memory_mb, count, after_s)
    except Exception as exc:  # a missed warm-up costs a cold start, not the run
        log.warning("worker %s: could not pre-warm workers (%r)", worker, exc)


async def forward(invocation: Invocation, workers: Workers, worker: str) -> None:
    """Send on the invocations this one carries (shoal.optimizations.tree). One that
    cannot be sent is left to its pending lease: it expires, and the run recovers it."""
    try:
        await invoke_all(workers, invocation.forwarded())
    except Exception as exc:
        log.warning(
            "worker %s: could not send on %d invocations of run %s (%r): they will be "
            "recovered when their leases expire",
            worker,
            len(invocation.forward),
            invocation.run_id,
            exc,
        )
