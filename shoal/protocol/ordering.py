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
        owned, specs, source = state.owned, state.specs, state.source
        next_rank = (specs[owned[-1]] if specs else await source.spec(owned[-1])).rank
        if next_rank >= DEPTH_FIRST_WITHIN * self.peak:
            return
        window = owned[-RANK_WINDOW:]
        ranks = [(specs[t] if specs else await source.spec(t)).rank for t in window]
        self.peak = max(ranks)
        owned.append(owned.pop(len(owned) - len(window) + most_urgent(ranks)))

    async def hands_over_before(self, state: _Worker, spec: TaskSpec) -> bool:
        """Whether ``state`` hands its other ready tasks over before it runs the task of
        ``spec`` (see :data:`LONG_TASK_S`)."""
        if spec.rank < LONG_TASK_S:
            return False
        specs, source = state.specs, state.source
        ahead = [(specs[c] if specs else await source.spec(c)).rank for c in spec.children]
        if spec.rank - max(ahead, default=0.0) < LONG_TASK_S:  # its own time
            return False
        put_off = DEPTH_FIRST_WITHIN * spec.rank
        for task in state.owned[-RANK_WINDOW:]:
            if (specs[task] if specs else await source.spec(task)).rank >= put_off:
                return False
        return True
