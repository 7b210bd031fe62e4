"""Dynamic fan-outs: ``task.map(node)`` runs one task per element of a value known only at
run time, expanded by the worker that has that value, with no central scheduler.

``f.map(x, *args, **kwargs)`` is two tasks of the static graph:

- the **expander** (``f.expand``), whose inputs are ``x`` and the nodes among ``args``:
  its worker reads ``x``'s value, has the store reserve ids for the elements, makes their
  specs (:func:`expand`, pure) and stores them in its completion step, which readies them
  all; it owns them and hands them out as it would any ready tasks. Its output, always
  stored, is the :class:`Expansion`: where the elements are.
- the **collector** (``f.map``, the node returned): readied by its elements' completions,
  its value is the list of their outputs, in order.

A map over a map with no other node arguments, ``g.map(f.map(x))``, joins ``f``'s
*family*: one expansion makes both stages' elements, and element ``i`` of ``g`` is a child
of element ``i`` of ``f``, run right after it (on the same worker), not after all of
``f``. A stage's collector is a task only where something uses it.

Element ids follow the static graph's, reserved by the store in whole pages (so two
expansions never write one page of specs): stage ``s`` of element ``i`` is
``first + i * stages + s``, and an element's stages share a page.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .node import Node, TaskFunction, TaskOptions, _scan_arg
from .spec import PAGE, TaskSpec
from .template import ref

if TYPE_CHECKING:
    from .build import Graph


class Stage:
    """One mapped function of a family, at build time: its function, the arguments after
    the element (None for the first stage: the expander's own), and the stage whose
    elements it maps (None: the expander's input)."""

    __slots__ = ("fn", "args", "kwargs", "parent", "seq")

    def __init__(
        self,
        fn: TaskFunction[Any, Any],
        args: tuple[Any, ...] | None,
        kwargs: dict[str, Any] | None,
        parent: Stage | None,
    ) -> None:
        self.fn, self.args, self.kwargs, self.parent = fn, args, kwargs, parent
        self.seq = next(_stages)


_stages = itertools.count()


class Family(NamedTuple):
    """In an expander's spec: what its expansion makes, per stage."""

    name: str  # the map's, for errors
    slot: int  # which of the expander's inputs is mapped
    funcs: tuple[int, ...]  # function table indices
    args: tuple[tuple[Any, ...], ...]  # after the element: templates over ``uses`` for stage 0
    kwargs: tuple[dict[str, Any], ...]
    parents: tuple[int, ...]  # the stage whose element is the element; -1: the mapped input
    collectors: tuple[int, ...]  # the stage's collector task; -1: none
    uses: tuple[int, ...]  # the expander's input slots that stage 0's elements read too


class Collect(NamedTuple):
    """In a collector's spec: which stage of its expander's family it collects."""

    stage: int


class Element(NamedTuple):
    """In an element's spec: its place in the mapped input."""

    at: int  # its index


class Expansion(NamedTuple):
    """An expander's output: its elements are ``first + i * stages + s``, ``i < n``."""

    first: int
    n: int
    stages: int

    def elements(self, stage: int) -> range:
        """The ids of ``stage``'s elements, in order."""
        return range(self.first + stage, self.first + self.n * self.stages, self.stages)


def reserved(n: int, stages: int) -> int:
    """How many ids an expansion reserves: whole pages."""
    return -(-n * stages // PAGE) * PAGE


class Expanded(NamedTuple):
    """What :func:`expand` makes: the element specs by id, and the expander's children
    (with their inputs' counts) for its completion step."""

    specs: dict[int, TaskSpec]
    children: tuple[int, ...]
    child_deps: tuple[int, ...]


def expand(spec: TaskSpec, family: Family, items: Sequence[Any], first: int) -> Expanded:
    """The elements of an expansion of ``items`` at ids from ``first`` (pure)."""
    n, stages = len(items), len(family.funcs)
    if n == 0:  # nothing to map: the collectors are ready at once
        return Expanded({}, spec.children, spec.child_deps)
    kids: list[list[int]] = [[] for _ in range(stages)]
    for s, parent in enumerate(family.parents):
        if parent >= 0:
            kids[parent].append(s)
    top_deps = tuple(spec.deps[k] for k in family.uses)
    specs: dict[int, TaskSpec] = {}
    for i, item in enumerate(items):
        base = first + i * stages
        for s in range(stages):
            collector = family.collectors[s]
            children = tuple(base + c for c in kids[s]) + ((collector,) if collector >= 0 else ())
            needs = (1,) * len(kids[s]) + ((n,) if collector >= 0 else ())
            if family.parents[s] < 0:
                args, deps = (item, *family.args[s]), top_deps
            else:
                args, deps = (ref(0), *family.args[s]), (base + family.parents[s],)
            specs[base + s] = TaskSpec(
                family.funcs[s], args, family.kwargs[s], deps, children, needs,
                dynamic=Element(i),
            )  # fmt: skip
    roots = [s for s, parent in enumerate(family.parents) if parent < 0]
    children = tuple(first + i * stages + s for i in range(n) for s in roots)
    return Expanded(specs, children, (1,) * len(children))


# ----------------------------------------------------------------- building maps


def _expand_in_worker(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a map's expander runs in the worker loop, not as a function")


def _collect_in_worker(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a map's collector runs in the worker loop, not as a function")


def _as_list(*items: Any) -> list[Any]:
    return list(items)


@functools.cache
def _expander(fn: TaskFunction[Any, Any]) -> TaskFunction[Any, Any]:
    return TaskFunction(_expand_in_worker, TaskOptions(name=f"{fn.name}.expand"))


@functools.cache
def _collector(fn: TaskFunction[Any, Any]) -> TaskFunction[Any, Any]:
    return TaskFunction(_collect_in_worker, TaskOptions(name=f"{fn.name}.map"))


@functools.cache
def _lister(fn: TaskFunction[Any, Any]) -> TaskFunction[Any, Any]:
    return TaskFunction(_as_list, TaskOptions(name=f"{fn.name}.map"))


def map_node(
    fn: TaskFunction[Any, Any], iterable: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Node:
    """The node of ``fn.map(iterable, *args, **kwargs)`` (see the module's docstring)."""
    if type(iterable) is Node:
        stage = iterable.stage
        if stage is not None and not _holds_node((args, kwargs)):  # joins the family
            collector = Node(_collector(fn), (iterable.deps[0],), {})
            collector.stage = Stage(fn, args, kwargs, stage)
            return collector
        expander = Node(_expander(fn), (iterable, *args), kwargs)
        collector = Node(_collector(fn), (expander,), {})
        collector.stage = Stage(fn, None, None, None)
        return collector
    if not isinstance(iterable, Iterable):
        raise TypeError(
            f"{fn.name}.map needs a node or an iterable to map over, got "
            f"{type(iterable).__name__}: {iterable!r}"
        )
    return Node(_lister(fn), tuple(fn(item, *args, **kwargs) for item in iterable), {})


def _holds_node(obj: Any) -> bool:
    deps: list[Node] = []
    _scan_arg(obj, deps, {})
    return bool(deps)


def families(nodes: Sequence[Node], index: dict[Node, int]) -> dict[int, list[Stage]]:
    """Each expander's stages, first its own, in the order they were made (a stage after
    the one it maps): those that the collectors among ``nodes`` reach."""
    found: dict[int, dict[Stage, None]] = {}
    for node in nodes:
        stage = node.stage
        if stage is None:
            continue
        chain = found.setdefault(index[node.deps[0]], {})
        while stage is not None and stage not in chain:
            chain[stage] = None
            stage = stage.parent
    return {x: sorted(chain, key=lambda s: s.seq) for x, chain in found.items()}


class Grown:
    """A run's tasks as its client knows them: the graph's, and those its maps made, as
    the expanders' finished events tell (for taking a lost worker's tasks back)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.families = {x: graph.family(x) for x in graph.families}
        self.expansions: dict[int, Expansion] = {}  # expander -> where its elements are
        self.firsts: list[tuple[int, int]] = []  # (first element, expander), sorted

    def expanded(self, expander: int, data: dict[str, Any]) -> None:
        """Expander ``expander`` finished with ``data`` (its event's)."""
        if expander in self.expansions or "first" not in data:
            return
        stages = len(self.families[expander].funcs)
        self.expansions[expander] = Expansion(int(data["first"]), int(data["n"]), stages)
        if data["n"]:
            bisect.insort(self.firsts, (int(data["first"]), expander))

    def tasks(self) -> Iterator[int]:
        """Every task known so far: the graph's, then each map's, by expander."""
        yield from range(len(self.graph))
        for _, expansion in sorted(self.expansions.items()):
            yield from range(expansion.first, expansion.first + expansion.n * expansion.stages)

    def _element(self, task: int) -> tuple[int, int, int]:
        """The expander, index and stage of element ``task``."""
        first, expander = self.firsts[bisect.bisect_right(self.firsts, (task, 1 << 62)) - 1]
        i, stage = divmod(task - first, self.expansions[expander].stages)
        return expander, i, stage

    def deps(self, task: int) -> tuple[int, ...]:
        graph = self.graph
        if task < len(graph):
            collected = graph.nodes[task].stage
            expansion = self.expansions.get(graph.deps[task][0]) if collected else None
            if expansion is None or collected is None:
                return graph.deps[task]
            number = graph.families[graph.deps[task][0]].index(collected)
            return (*graph.deps[task], *expansion.elements(number))
        expander, i, stage = self._element(task)
        family = self.families[expander]
        parent = family.parents[stage]
        if parent < 0:
            return tuple(graph.deps[expander][k] for k in family.uses)
        return (self.expansions[expander].first + i * len(family.funcs) + parent,)

    def func_index(self, task: int) -> int:
        """The function table index of ``task``'s function."""
        if task < len(self.graph):
            return self.graph.func_of[task]
        expander, _, stage = self._element(task)
        return self.families[expander].funcs[stage]

    def function(self, task: int) -> TaskFunction[Any, Any]:
        return self.graph.functions[self.func_index(task)]

    def dense(self) -> tuple[list[int], list[int], list[list[int]]]:
        """Every task known so far numbered densely (the graph's first, then each
        expansion's; a record's numbering): their ids, functions and inputs."""
        ids = list(self.tasks())
        index = {t: k for k, t in enumerate(ids)}
        deps = [[index[d] for d in self.deps(t)] for t in ids]
        return ids, [self.func_index(t) for t in ids], deps

    def name(self, task: int) -> str:
        if task < len(self.graph):
            return self.graph.name(task)
        _, i, _ = self._element(task)
        return f"{self.function(task).name}[{i}]-{task}"


def predicted(graph: Graph, widths: dict[int, int]) -> tuple[list[int], list[list[int]]]:
    """The function and inputs of each task of ``graph`` with each map expanded to the
    width ``widths`` predicts (none: empty), numbered as a run's record numbers them."""
    grown, first = Grown(graph), len(graph)
    for expander in sorted(graph.families):
        n = widths.get(expander, 0)
        grown.expanded(expander, {"first": first, "n": n})
        first += n * len(graph.families[expander])
    _, func_of, deps = grown.dense()
    return func_of, deps
