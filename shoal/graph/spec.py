"""The shipped form of a graph (design step 3): one small spec per task plus one table of
functions, deduplicated, so that a worker fetches only the specs it needs.

In one process (the embedded engine) specs travel as objects; across a process boundary
:func:`encode` turns them into bytes: each spec pickled on its own, each function
cloudpickled once.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

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

    specs: list[TaskSpec]
    functions: list[TaskFunction[Any, Any]]


@dataclass(slots=True)
class EncodedGraph:
    """:class:`ShippedGraph` as bytes, for stores and workers in other processes."""

    specs: list[bytes]
    functions: list[bytes]

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.specs)) + sum(map(len, self.functions))


def encode(graph: ShippedGraph) -> EncodedGraph:
    dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
    # As plain tuples: a named tuple would carry its class path in every spec.
    specs = [dumps(tuple(s), protocol) for s in graph.specs]
    functions = [cloudpickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL) for f in graph.functions]
    return EncodedGraph(specs, functions)


def decode_spec(data: bytes) -> TaskSpec:
    return TaskSpec._make(pickle.loads(data))


def decode_function(data: bytes) -> TaskFunction[Any, Any]:
    func: TaskFunction[Any, Any] = pickle.loads(data)
    return func
