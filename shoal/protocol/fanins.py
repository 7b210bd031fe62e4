"""What a worker does for a fan-in it may run with its inputs in memory: keep a
completion aside, unstored, while it makes the fan-in's other inputs itself (cluster,
:mod:`shoal.optimizations.cluster`), or hold its completion back while other workers make
them (delayed I/O and preload, :mod:`shoal.optimizations.fanin`). Decided by those
modules' pure functions; carried out here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..decisions import Completion, Marks, complete_batch, keeps
from ..events import EventKind
from ..metrics import approx_nbytes
from ..optimizations.cluster import LOOKAHEAD, stays_for_fan_in
from ..optimizations.fanin import Hold

if TYPE_CHECKING:
    from .worker import _Worker

#: How many tasks a worker looks at, at most, to see that it will make a fan-in's inputs.
NEARBY_TASKS = 256
#: A worker holding its completion back for a fan-in checks its lease this often.
HOLD_POLL_S = 1.0
FINISHED = EventKind.TASK_FINISHED


async def set_aside(
    state: _Worker, batch: list[Completion]
) -> tuple[list[Completion], list[Completion]]:
    """``batch`` split into what completes now and what waits aside, unstored: a large
    output whose fan-in child the worker will run once it has made the fan-in's other
    inputs itself (:func:`~shoal.optimizations.cluster.stays_for_fan_in`)."""
    above = state.aside_above
    assert above is not None
    candidates = [
        c
        for c in batch
        if len(c.children) == 1
        and c.child_deps[0] >= 2
        and (c.stay is None or c.stay[0])
        and approx_nbytes(c.output) >= above
    ]
    if not candidates:
        return batch, []
    # Its own work, and the children this batch readies and keeps (found as the store
    # will find them: tasks only this worker's marks concern).
    owned = set(state.owned)
    readies, _ = complete_batch(Marks(), batch, state.fanout)
    for c, ready in zip(batch, readies, strict=True):
        owned.update(keeps(c, ready, state.fanout))
    made = state.made.__contains__
    pending = {c.task for c in batch}  # made here, their completions not yet sent
    aside = []
    stays: dict[tuple[int, int | None], bool] = {}  # one answer per fan-in (and group)
    for c in candidates:
        group = (await state.source.spec(c.task)).group
        key = (c.children[0], group)
        if key not in stays:
            inputs = (await state.source.spec(c.children[0])).deps
            deps = await _deps_near(state, inputs, group, owned, pending)
            stays[key] = stays_for_fan_in(inputs, made, owned.__contains__, deps.get)
        if stays[key]:
            aside.append(c)
    waiting = {c.task for c in aside}
    return [c for c in batch if c.task not in waiting], aside


async def _deps_near(
    state: _Worker,
    tasks: Sequence[int],
    group: int | None,
    owned: set[int],
    pending: set[int],
) -> dict[int, Sequence[int] | None]:
    """The inputs of ``tasks`` and of theirs, up to :data:`LOOKAHEAD` levels, stopping at
    tasks made here or ``owned``. None for a task that runs elsewhere: planned outside
    ``group``, or readied already by this worker's completions of all its inputs (none
    of them ``pending``) and neither owned nor made here: handed away."""
    deps: dict[int, Sequence[int] | None] = {}
    made = state.made
    frontier = [t for t in tasks if t not in made and t not in owned]
    for _ in range(LOOKAHEAD):
        found: list[int] = []
        for t in frontier:
            if t in deps or len(deps) >= NEARBY_TASKS:
                continue
            spec = await state.source.spec(t)
            readied = all(d in made and d not in pending for d in spec.deps)
            deps[t] = spec.deps if spec.group == group and not readied else None
            found += [d for d in spec.deps if d not in made and d not in owned]
        frontier = found
    return deps


async def wait_for_inputs(state: _Worker, child: int, others: Sequence[int], hold: Hold) -> None:
    """Until ``others`` (the fan-in ``child``'s other inputs) have all finished, or the
    ``hold`` is over: follow the run's events; with preload, read each input as soon
    as it is stored, and hold it for the fan-in. Past ``hold.idle`` seconds without an
    input landing, and again after as long, it stops holding if invocations of the
    run wait to start both times: this worker keeps a platform slot, and they may be
    waiting for it (once only, they may just be starting)."""
    left = set(others)
    now = time.monotonic()
    deadline, quiet_until = now + hold.total, now + hold.idle
    cursor: Any = None
    suspect = False  # invocations were waiting at the last check
    lease = state.lease
    while left and (lease is None or not lease.lost):
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= quiet_until:
            # Waiting at two checks in a row: not just starting, but held up (by the
            # platform's cap: maybe for this worker's slot).
            waiting = (await state.store.count_invocations(state.run_id)).waiting > 0
            if waiting and suspect:
                return
            suspect = waiting
            quiet_until = now + hold.idle
        timeout = min(deadline, quiet_until, now + HOLD_POLL_S) - now
        events, cursor = await state.store.read_events(state.run_id, cursor, timeout)
        landed = [e.task for e in events if e.kind is FINISHED and e.task in left]
        if landed:
            quiet_until = time.monotonic() + hold.idle
        left.difference_update(landed)  # type: ignore[arg-type]
        # A finished event is stored in the step that marked the fan-in: once all are
        # in, its own completion readies the fan-in here, and its output is no one's.
        state.marked.setdefault(child, set()).update(landed)  # type: ignore[arg-type]
        fetch = [t for t in landed if t is not None and t not in state.held]
        if state.tuning.preload and fetch:
            values, _ = await state.store.get_outputs(state.run_id, fetch)
            for dep, value in zip(fetch, values, strict=True):
                state.held[dep] = [value, 0]  # counted once the fan-in is kept here
            state.prefetched.update(fetch)
