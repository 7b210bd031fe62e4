"""Task clustering (Wukong): work stays where its large inputs already are.

- A fan-out: a task whose output is large runs the children it readies on its own worker,
  which holds the output in memory, instead of uploading it and starting a worker per
  group of children that each download it (:func:`keep_all`). The completion then carries
  the same "these children stay here" mask a plan's groups give
  (:class:`shoal.decisions.Completion`), so the store needs nothing new.
- A fan-in: a task whose large output feeds a fan-in whose other inputs this worker will
  make itself (it owns them, or everything they need: a subtree of a reduction) keeps its
  completion aside, unstored, until they are made (:func:`stays_for_fan_in`); the last of
  them then readies the fan-in here, where all its input bytes are, and none of them is
  ever uploaded.

Forced on (``optimizations=["cluster"]``), a worker decides both per completion from the
output's real size; the simulator decides them the same way from predicted sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: How many levels up a worker looks for the inputs of a fan-in it will make itself: a
#: reduction's subtree of 2**LOOKAHEAD leaves.
LOOKAHEAD = 4


def keep_all(
    children: Sequence[int],
    output: Any,
    cluster_above: float | None,
    nbytes: Callable[[Any], int],
) -> tuple[bool, ...] | None:
    """A stay mask keeping every child of a fan-out on this worker when the output is large
    enough to cluster (``nbytes(output) >= cluster_above``); None to leave the children to
    the usual split (a single child is the plan's, or the worker's that readies it).
    ``nbytes`` is asked only when there is something to decide."""
    if cluster_above is None or len(children) < 2 or nbytes(output) < cluster_above:
        return None
    return (True,) * len(children)


def made_here(
    task: int,
    deps_of: Callable[[int], Sequence[int] | None],
    here: Callable[[int], bool],
    depth: int = LOOKAHEAD,
) -> bool:
    """Whether this worker makes ``task``: ``here(task)`` (it made it, or owns it to run),
    or, up to ``depth`` levels up, every input of it is made here, so that the last one's
    completion readies it on this worker. ``deps_of``: a task's inputs, or None where it
    would run elsewhere (planned in another group, or readied already and handed away)."""
    if here(task):
        return True
    if depth <= 0:
        return False
    deps = deps_of(task)
    if not deps:  # a root it does not own, or one planned elsewhere
        return False
    return all(made_here(d, deps_of, here, depth - 1) for d in deps)


def stays_for_fan_in(
    inputs: Sequence[int],
    made: Callable[[int], bool],
    owned: Callable[[int], bool],
    deps_of: Callable[[int], Sequence[int] | None],
) -> bool:
    """Whether a completion whose only child is a fan-in of ``inputs`` (one it may run)
    waits unstored on its worker: some input is not ``made`` there yet, and every such
    input will be, from what the worker ``owned`` (:func:`made_here`)."""
    waiting = [d for d in inputs if not made(d)]

    def here(t: int) -> bool:
        return made(t) or owned(t)

    return bool(waiting) and all(made_here(d, deps_of, here) for d in waiting)
