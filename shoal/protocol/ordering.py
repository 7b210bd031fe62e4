"""Which of its ready tasks a worker runs next when the run is ranked
(:func:`shoal.decisions.most_urgent` decides; this reads the ranks and reorders)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..decisions import DEPTH_FIRST_WITHIN, RANK_WINDOW, most_urgent
from ..graph import TaskSpec

if TYPE_CHECKING:
    from .worker import _Worker


#: A ranked worker about to run a task it expects to take this long, while every slot of
#: the platform is taken and every other ready task it holds was put off for it (ranked
#: under :data:`~shoal.decisions.DEPTH_FIRST_WITHIN` of it), hands those to a new worker
#: first (:func:`~shoal.protocol.sharing.hand_over_backlog`): the first slot that frees
#: runs them, instead of a core idling until the long task is over.
LONG_TASK_S = 0.1


class RankedOrder:
    """A worker's pick of the most urgent of its newest ready tasks. It keeps the highest
    rank it saw when it last looked, and looks again only when its next task ranks under
    :data:`~shoal.decisions.DEPTH_FIRST_WITHIN` of it: a chain of tasks as urgent as the
    last look found costs no scan."""

    def __init__(self) -> None:
        self.peak = math.inf

    async def put_next(self, state: _Worker) -> None:
        """Move the most urgent of the newest :data:`~shoal.decisions.RANK_WINDOW` ready
        tasks of ``state`` to the end of its ``owned`` (the task it runs next)."""
        owned = state.owned
        if await _rank(state, owned[-1]) >= DEPTH_FIRST_WITHIN * self.peak:
            return
        window = owned[-RANK_WINDOW:]
        ranks = [await _rank(state, t) for t in window]
        self.peak = max(ranks)
        owned.append(owned.pop(len(owned) - len(window) + most_urgent(ranks)))

    async def outranks(self, state: _Worker) -> bool:
        """Whether the task ``state`` runs next ranks at least as high as every task of
        several inputs its buffered completions mark: any of them its step readies would
        wait for that task anyway, so the step may too (on a full platform, where no
        worker idles for it; :func:`~shoal.decisions.should_flush`)."""
        ahead = [await _rank(state, t) for t in state.fan_ins]
        return await _rank(state, state.owned[-1]) >= max(ahead)

    async def hands_over_before(self, state: _Worker, spec: TaskSpec) -> bool:
        """Whether ``state``, whose work may be shared, hands its other ready tasks over
        before it runs the task of ``spec`` (see :data:`LONG_TASK_S`)."""
        if spec.rank < LONG_TASK_S or len(state.owned) < 2 or not state.platform_full:
            return False
        ahead = [await _rank(state, c) for c in spec.children]
        if spec.rank - max(ahead, default=0.0) < LONG_TASK_S:  # its own time
            return False
        put_off = DEPTH_FIRST_WITHIN * spec.rank
        return all([await _rank(state, t) < put_off for t in state.owned[-RANK_WINDOW:]])


async def _rank(state: _Worker, task: int) -> float:
    spec = state.specs[task] if state.specs else await state.source.spec(task)
    return spec.rank
