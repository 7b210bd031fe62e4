"""Work sharing: work goes where the platform has room for it.

Without a plan, where work goes is decided as it is readied: a fan-out's children are
split over at most ``fanout`` workers, and each worker runs its share depth first. When
the shares weigh unequally (Epigenomics' lanes of chains), one worker ends up running
alone the ready tasks left in its stack while the platform has room for more: on two
cores, a tenth of the run with one core idle. And when the platform has no room, the
groups handed out wait in its queue while the worker that holds their inputs runs on
(Montage's many small fan-ins: thirty queued workers of a task or two each).

So a worker holding two or more ready tasks worth more than a worker's start
(:func:`worth_sharing`) looks at how many of the run's invocations are alive (each of its
completion steps tells it; it asks the store when no step has lately); while fewer than
the platform runs at once, it shares its ready tasks evenly with a new worker per free
slot, handing out those it would run last (:func:`shared`). It
moves only tasks whose inputs are all in the store already (an input held only in its
memory would first have to be uploaded), and never a planned one (the plan placed it).
And the children a completion readies go to new workers only as far as the platform has
free slots that the worker's older ready tasks do not fill (:func:`groups_for`): else it
keeps them, and shares the tasks it would run last. The
worker loop carries both out (:func:`shoal.protocol.sharing.share_ready`).
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from ..decisions import group_roots

#: A worker shares only ready tasks worth at least this much work (by its last task's
#: time): less is done before a new worker would have started.
SHARE_WORK_S = 0.05
#: The live invocations its last step told a worker are asked again after this long.
ASK_EVERY_S = 0.05


def groups_for(fanout: int, live: int, backlog: int, children: int) -> int:
    """How many groups the ``children`` of a step's completions are split into (the
    worker keeping the first), with ``live`` of the run's invocations alive (the
    worker's included) on a platform running ``fanout`` at once: one per free slot and
    the worker's own. With none free, it keeps them all: a hand-out would wait in the
    platform's queue while the worker that holds their inputs could run them, and
    shares them later if a slot frees (:func:`shared`). It keeps them too when the
    ``backlog`` of ready tasks it already holds fills the free slots' shares: those it
    would run last go (:func:`shared`), and the children, whose input it holds, run
    here next."""
    free = fanout - live
    if free <= 0:
        return 1
    total = backlog + children
    if backlog >= total - _own_share(total, free):  # every task handed out is the backlog's
        return 1
    return min(fanout, free + 1)


def _own_share(ready: int, free: int) -> int:
    """What a worker keeps of ``ready`` tasks shared evenly with ``free`` new workers: its
    share, rounded up."""
    return -(-ready // (free + 1))


def worth_sharing(ready: int, last_task_s: float) -> bool:
    """Whether a worker holding ``ready`` ready tasks, whose last task took
    ``last_task_s``, has enough of them to share, if the platform has room."""
    return ready >= 2 and last_task_s * (ready - 1) >= SHARE_WORK_S


def shared(ready: Sequence[int], movable: Container[int], live: int, cap: int) -> list[list[int]]:
    """The groups of a worker's ``ready`` tasks (in the order it would run them) to hand to
    new workers, with ``live`` of the run's invocations alive (the asking worker's
    included) and the platform running ``cap`` at once. The ready tasks are shared evenly
    over the worker and one new worker per free slot, counted alike (a task's weight is
    not known): it hands out the ``movable`` ones it would run last, up to the share that
    is not its own, and keeps the one it runs next."""
    free = cap - live
    if free <= 0 or len(ready) < 2:
        return []
    own = _own_share(len(ready), free)
    handed: list[int] = []
    for task in reversed(ready[1:]):
        if len(handed) == len(ready) - own:
            break
        if task in movable:
            handed.append(task)
    handed.reverse()
    return group_roots(handed, min(free, len(handed)))
