"""From sink nodes to a :class:`Graph`: task ids, topological order, children, the
structure hash, and the shipped form.

Nodes are numbered by creation (``Node.seq``), which is already a topological order, so
the walk only has to find which nodes the sinks reach: iteratively, with no recursion
limit, and the same program numbers its tasks the same way every time.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..decisions import floating
from .maps import Collect, Family, Stage, families
from .node import Node, TaskFunction
from .spec import ShippedGraph, TaskSpec
from .template import refs_in, renumber

if TYPE_CHECKING:
    from ..planning import Plan


@dataclass(eq=False)
class Graph:
    """A built graph. Task ``i`` is ``nodes[i]``; every task's deps have smaller ids."""

    nodes: list[Node]
    deps: list[tuple[int, ...]]
    children: list[list[int]]
    sinks: tuple[int, ...]  # one per requested node, in request order (may repeat)
    functions: list[TaskFunction[Any, Any]]
    func_of: list[int]  # function table index of each task
    #: Each map expander's stages (shoal.graph.maps), its own first.
    families: dict[int, list[Stage]] = field(default_factory=dict)
    stage_func: dict[Stage, int] = field(default_factory=dict)  # function table index

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def roots(self) -> list[int]:
        return [i for i, d in enumerate(self.deps) if not d]

    def name(self, task: int) -> str:
        return f"{self.nodes[task].fn.name}-{task}"

    @cached_property
    def structure_hash(self) -> str:
        """The workflow's identity: equal for the same program run on other inputs.
        Covers the functions and the edges; argument values are left out, and so is the
        order of a task's inputs (nodes inside a set have no stable order)."""
        keys = [f.key for f in self.functions]
        edges = [d if len(d) < 2 else tuple(sorted(d)) for d in self.deps]
        maps = [(x, _shape(self.family(x))) for x in sorted(self.families)]
        data = pickle.dumps((keys, self.func_of, edges, self.sinks, maps), pickle.HIGHEST_PROTOCOL)
        return hashlib.blake2b(data, digest_size=8).hexdigest()

    @property
    def workflow_name(self) -> str:
        """The workflow's name: its sinks' functions (its identity is the structure hash)."""
        return "+".join(dict.fromkeys(self.nodes[s].fn.name for s in self.sinks))

    def ship(self, plan: Plan | None = None, ranks: Sequence[float] | None = None) -> ShippedGraph:
        """The partitioned form: one spec per task and the function table; with a plan,
        each spec carries its task's group and size, and which children stay with it;
        with ``ranks``, each its task's rank (:attr:`TaskSpec.rank`)."""
        with _no_gc():
            shipped = self._ship()
        if ranks is not None:
            specs = shipped.specs
            for t, rank in enumerate(ranks):
                specs[t] = specs[t]._replace(rank=rank)
        if plan is not None:
            groups, specs = plan.groups, shipped.specs
            floats = floating(self.deps, groups, plan.sizes)
            # (A plan also times the elements it predicts a map makes: not shipped.)
            for t, (spec, size) in enumerate(zip(specs, plan.sizes[: len(specs)], strict=True)):
                specs[t] = spec._replace(
                    group=groups[t],
                    size=(size.cpus, size.memory_mb),
                    stay=tuple(floats[c] or groups[c] == groups[t] for c in spec.children),
                )
        return shipped

    def _ship(self) -> ShippedGraph:
        need = [len(d) for d in self.deps].__getitem__
        new = tuple.__new__  # TaskSpec's own __new__ is a Python function: too slow for 100k
        specs = [
            new(
                TaskSpec,
                (
                    f,
                    node.args,
                    node.kwargs,
                    deps,
                    tuple(kids),
                    tuple(map(need, kids)),
                    False,
                    None,
                    None,
                    None,
                    None,
                    0.0,
                ),  # fmt: skip
            )
            for f, node, deps, kids in zip(
                self.func_of, self.nodes, self.deps, self.children, strict=True
            )
        ]
        for s in set(self.sinks):
            specs[s] = specs[s]._replace(sink=True)
        for x in self.families:
            family = self.family(x)
            # Its expansion is read by the collectors, wherever they run; so are the inputs
            # its elements read (and the elements go to other workers): stored as a sink's.
            specs[x] = specs[x]._replace(sink=True, dynamic=family)
            for s, collector in enumerate(family.collectors):
                if collector >= 0:
                    specs[collector] = specs[collector]._replace(dynamic=Collect(s))
            for k in family.uses:
                dep = self.deps[x][k]
                specs[dep] = specs[dep]._replace(sink=True)
        return ShippedGraph(specs, self.functions)

    def family(self, x: int) -> Family:
        """Expander ``x``'s :class:`~shoal.graph.maps.Family` as its spec carries it."""
        stages, node = self.families[x], self.nodes[x]
        number = {stage: s for s, stage in enumerate(stages)}
        collectors = dict.fromkeys(range(len(stages)), -1)
        for child in self.children[x]:
            stage = self.nodes[child].stage
            if stage is not None and self.nodes[child].deps[0] is node:
                collectors[number[stage]] = child
        rest = node.args[1:]
        uses = sorted(set().union(*map(refs_in, (*rest, *node.kwargs.values()))))
        slots = {k: j for j, k in enumerate(uses)}
        return Family(
            name=stages[0].fn.name + ".map",
            slot=node.args[0].k,
            funcs=tuple(self.stage_func[stage] for stage in stages),
            args=tuple(
                tuple(renumber(a, slots) for a in rest) if st.parent is None else st.args or ()
                for st in stages
            ),
            kwargs=tuple(
                {k: renumber(v, slots) for k, v in node.kwargs.items()}
                if st.parent is None
                else st.kwargs or {}
                for st in stages
            ),
            parents=tuple(-1 if st.parent is None else number[st.parent] for st in stages),
            collectors=tuple(collectors.values()),
            uses=tuple(uses),
        )


def _shape(family: Family) -> tuple[Any, ...]:
    """What of a map's family is the workflow's structure (not its arguments)."""
    return (family.slot, family.funcs, family.parents, [c >= 0 for c in family.collectors])


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: building allocates many long-lived objects and
    no cycles, so collections then only re-scan the growing graph (a quarter of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build(sinks: Sequence[Node]) -> Graph:
    """Find every node the ``sinks`` reach and number them in topological order."""
    for s in sinks:
        if type(s) is not Node:
            raise TypeError(
                f"shoal.compute takes shoal.Node objects, got {type(s).__name__}: {s!r}"
            )
    with _no_gc():
        return _build(sinks)


def _build(sinks: Sequence[Node]) -> Graph:
    seen = dict.fromkeys(sinks)
    stack = list(seen)
    while stack:
        for dep in stack.pop().deps:
            if dep not in seen:
                seen[dep] = None
                stack.append(dep)
    order = sorted(seen, key=attrgetter("seq"))
    index = {node: i for i, node in enumerate(order)}
    deps = [tuple([index[d] for d in node.deps]) for node in order]
    children: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(deps):
        for d in ds:
            children[d].append(i)
    fns = [node.fn for node in order]
    maps = families(order, index)
    mapped = [stage.fn for stages in maps.values() for stage in stages]
    functions = list(dict.fromkeys(fns + mapped))  # the function table, deduplicated
    fn_index = {fn: f for f, fn in enumerate(functions)}
    func_of = [fn_index[fn] for fn in fns]
    sink_ids = tuple(index[s] for s in sinks)
    stage_func = {stage: fn_index[stage.fn] for stages in maps.values() for stage in stages}
    return Graph(order, deps, children, sink_ids, functions, func_of, maps, stage_func)
