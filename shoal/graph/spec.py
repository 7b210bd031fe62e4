"""The shipped form of a graph (design step 3): one small spec per task plus one table of
functions, deduplicated, so that a worker fetches only the specs it needs.

In one process (the embedded engine) specs travel as objects; across a process boundary
:class:`shoal.codec.Codec` turns them into signed bytes: pages of specs, and each function
cloudpickled once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .template import Ref, fill

if TYPE_CHECKING:
    from .node import TaskFunction


class TaskSpec(NamedTuple):
    """What a worker needs to run one task and hand on its result."""

    func: int  # index into the function table
    args: tuple[Any, ...]  # templates (see template.py)
    kwargs: dict[str, Any]
    deps: tuple[int, ...]  # upstream task ids, one per Ref slot
    children: tuple[int, ...]  # downstream task ids
    child_deps: tuple[int, ...]  # upstream count of each child, for the marks
    sink: bool = False  # the client downloads its output
    # A plan's decisions (all None without one): the task's worker group and size, and
    # for each child whether the plan puts it in this task's group (on this worker).
    group: int | None = None
    size: tuple[float, int] | None = None  # (cpus, memory_mb)
    stay: tuple[bool, ...] | None = None
    #: A map's part (shoal.graph.maps): Family (an expander), Collect (a collector) or
    #: Element (one of an expansion's tasks); None for any other task.
    dynamic: Any = None
    #: Its predicted longest path to the graph's end, itself included (from the history;
    #: 0 without one): of its ready tasks, a worker runs the highest ranked first.
    rank: float = 0.0

    def arguments(self, values: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's positional and keyword arguments, given the upstream ``values``."""
        if not self.deps:  # no upstream, so no references to fill
            return self.args, self.kwargs
        args = tuple([values[a.k] if type(a) is Ref else fill(a, values) for a in self.args])
        kwargs = {k: fill(v, values) for k, v in self.kwargs.items()} if self.kwargs else {}
        return args, kwargs


@dataclass(slots=True)
class ShippedGraph:
    """A graph as stored for one run: specs by task id, and the function table."""

    specs: list[TaskSpec]  # grown in place by maps' expansions (shoal.graph.maps)
    functions: list[TaskFunction[Any, Any]]
    size: int = -1  # the graph's own tasks: those before any expansion

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.specs)

    def shape(self) -> dict[str, Any]:
        """The graph as plain data, for a dashboard: function names, each task's function
        and its distinct inputs (no arguments, no code), and what each map's expansion
        makes (per stage: its function, the stage it maps, its collector or -1)."""
        from .maps import Family

        specs = self.specs[: self.size]
        return {
            "functions": [f.name for f in self.functions],
            "func_of": [s.func for s in specs],
            "deps": [list(dict.fromkeys(s.deps)) for s in specs],
            "maps": {
                str(x): {"funcs": s.dynamic.funcs, "parents": s.dynamic.parents,
                         "collectors": s.dynamic.collectors}
                for x, s in enumerate(specs)
                if type(s.dynamic) is Family
            },
        }  # fmt: skip


#: Specs travel in pages of this many tasks (page ``p`` holds tasks ``p*PAGE`` onwards): one
#: pickle and one signature per page cost a tenth of one per spec and a third of the bytes,
#: and a worker reads the specs of nearby tasks, which it is likely to run, at once.
PAGE = 64


def pages_of(tasks: Iterable[int]) -> set[int]:
    """The pages that hold ``tasks``."""
    return {t // PAGE for t in tasks}


@dataclass(slots=True)
class EncodedGraph:
    """:class:`ShippedGraph` as signed bytes (see :mod:`shoal.codec`), for stores and
    workers in other processes: pages of specs, and one blob per function."""

    pages: list[bytes]
    functions: list[bytes]
    #: Big constant arguments, each a signed blob, that the specs name by index (Lifted).
    constants: list[bytes] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        parts = (self.pages, self.functions, self.constants)
        return sum(sum(map(len, blobs)) for blobs in parts)
