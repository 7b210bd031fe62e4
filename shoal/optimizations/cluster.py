"""Task clustering (Wukong): a task whose output is large runs the children it readies on
its own worker, which holds the output in memory, instead of uploading it and starting a
worker per group of children that each download it.

Forced on (``optimizations=["cluster"]``), a worker decides it per completion from the
output's real size (:func:`keep_all`); the completion then carries the same "these
children stay here" mask a plan's groups give (:class:`shoal.decisions.Completion`), so
the store and the worker loop need nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def keep_all(
    children: Sequence[int],
    output: Any,
    cluster_above: float | None,
    nbytes: Callable[[Any], int],
) -> tuple[bool, ...] | None:
    """A stay mask keeping every child on this worker when the output is large enough to
    cluster (``nbytes(output) >= cluster_above``); None to leave the children to the usual
    split. ``nbytes`` is asked only when there is something to decide."""
    if cluster_above is None or not children or nbytes(output) < cluster_above:
        return None
    return (True,) * len(children)
