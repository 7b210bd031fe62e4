"""A busy worker hands ready tasks to idle capacity, and keeps a task's children when
there is none; on a full platform it offers some to whichever worker runs out of work
first (:mod:`shoal.optimizations.share` decides; this carries it out)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..backends import Size
from ..graph.maps import Element
from ..optimizations.share import groups_for, offered, shared

if TYPE_CHECKING:
    from .worker import _Worker

log = logging.getLogger(__name__)


def keeps_children(state: _Worker, children: int) -> bool:
    """Whether the ``children`` of a task ``state`` just ran all stay with it, by the run's
    live invocations as its last step told (:func:`groups_for`): with no room for them
    elsewhere, no step need ask the store where they go, and its output is not stored for
    them (unless ranked: a child may wait long, and another worker take it)."""
    live = state.live
    return (
        live is not None
        and state.fanout > 1
        and state.tuning.share
        and not state.invocation.mixed
        and groups_for(state.fanout, live, len(state.owned), children) == 1
    )


async def share_ready(state: _Worker, live: int) -> None:
    """Share the ready tasks of ``state`` with a new worker per slot the platform has
    free, ``live`` of the run's invocations being alive
    (:func:`~shoal.optimizations.share.shared`): those whose inputs are all in the store
    may go."""
    ready = state.owned[::-1]  # in the order it runs them
    movable = {t for t in ready[1:] if await _movable(state, t)}
    if not movable:
        return
    groups = shared(ready, movable, live, state.fanout)
    if groups:
        await _hand(state, groups, live)


async def hand_over_backlog(state: _Worker) -> None:
    """Hand every ready task of ``state`` that may go to one new worker, which the
    platform starts in the first slot that frees (its own, at the latest): ``state`` is
    about to run a long task while every slot is taken."""
    group = [t for t in state.owned[::-1] if await _movable(state, t)]
    if len(group) >= 2:
        await _hand(state, [group], state.live or 0)


async def _hand(state: _Worker, groups: list[list[int]], live: int) -> None:
    """Hand ``groups`` of the ready tasks of ``state`` to new workers."""
    handed = {t for group in groups for t in group}
    state.owned[:] = [t for t in state.owned if t not in handed]
    if state.aside:  # some may wait for what now runs elsewhere: the next step looks again
        state.urgent = True
    await _forget_inputs(state, handed)
    sized = not state.workers.in_process
    handing = [
        state.invocation.handing_out(
            group,
            state.source.pages_for(group),
            await state.source.size(group) if sized else Size(),
        )
        for group in groups
    ]
    log.debug(
        "worker %s: %d of the run's workers alive, %d at once: sharing %d ready tasks",
        state.name,
        live,
        state.fanout,
        len(handed),
    )
    await state.hand_out(handing)


async def offer_backlog(state: _Worker) -> None:
    """On a full platform, offer the ready tasks ``state`` would run last
    (:func:`~shoal.optimizations.share.offered`) to the first worker that runs out of
    work: it takes them one by one (:func:`steal_offered`) instead of stopping, where a
    hand-out would wait for a slot to free and a new worker to start. Only tasks that
    need no other worker size than its own are offered."""
    ready = state.owned[::-1]  # in the order it runs them
    size = _size_tag(state)
    own = state.invocation.size
    movable = set()
    for task in ready[1:]:
        if await _movable(state, task) and (not size or await state.source.size([task]) == own):
            movable.add(task)
    tasks = offered(ready, movable)
    if not tasks:
        return
    await state.store.offer(state.run_id, state.invocation.id, tasks, size)
    taken = set(tasks)
    state.owned[:] = [t for t in state.owned if t not in taken]
    state.offered = tasks
    log.debug("worker %s: the platform is full: offering %d ready tasks", state.name, len(tasks))


async def reclaim_offers(state: _Worker) -> None:
    """``state`` ran out of its own work: it takes back what it offered and no worker
    took, to run it in its order."""
    offered_, state.offered = state.offered, []
    mine = await state.store.reclaim(state.run_id, state.invocation.id, offered_)
    state.owned[:] = mine[::-1]
    kept = set(mine)
    await _forget_inputs(state, [t for t in offered_ if t not in kept])


async def steal_offered(state: _Worker) -> bool:
    """``state`` ran out of work: take over a task another worker offers (the one it
    would run last), instead of stopping. False when none is left."""
    state.steals += 1
    task = await state.store.steal(
        state.run_id, state.invocation.id, _size_tag(state), state.steals
    )
    if task is None:
        state.offers = False
        return False
    state.owned.append(task)
    return True


def _size_tag(state: _Worker) -> str:
    """The worker size that tasks a worker offers need ("" where workers have none)."""
    if state.workers.in_process:
        return ""
    size = state.invocation.size
    return f"{size.cpus:g}x{size.memory_mb}"


async def _forget_inputs(state: _Worker, tasks: Iterable[int]) -> None:
    """Tasks of ``state`` now run elsewhere: their inputs are read from the store there,
    not from here, so it need not hold them for them."""
    held = state.held
    for task in tasks:
        for dep in (await state.source.spec(task)).deps:
            entry = held.get(dep)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del held[dep]


async def _movable(state: _Worker, task: int) -> bool:
    """Whether another worker can run ``task`` as well: it is no plan's, no map's part
    but an element, and every input of it is in the store."""
    if task in state.early:  # its input's completion is not in the store yet
        return False
    spec = await state.source.spec(task)
    if spec.group is not None or (spec.dynamic is not None and type(spec.dynamic) is not Element):
        return False
    held, unflushed, in_store = state.held, state.unflushed, state.in_store
    return all(d not in unflushed and (d not in held or d in in_store) for d in spec.deps)
