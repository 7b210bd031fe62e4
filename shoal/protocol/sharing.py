"""A busy worker hands ready tasks to idle capacity, and keeps a task's children when
there is none (:mod:`shoal.optimizations.share` decides; this carries it out)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..backends import Size
from ..graph.maps import Element
from ..optimizations.share import groups_for, shared

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
    held = state.held
    for task in handed:  # their inputs are read from the store there, not from here
        for dep in (await state.source.spec(task)).deps:
            entry = held.get(dep)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del held[dep]
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
