"""The user-facing graph: ``@task`` turns a function into a :class:`TaskFunction`, and
calling it makes a lazy :class:`Node`.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .template import _REFS, _SCALARS, Ref, ref, scan

if TYPE_CHECKING:
    from .maps import Stage

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-function options of ``@task``. Sizes are hints for planners and backends;
    ``requirements`` is the task's requirement set, normalised (see :mod:`shoal.envs`)."""

    name: str | None = None
    retries: int = 0
    retry_delay: float = 0.1
    memory_mb: int | None = None
    cpus: float | None = None
    requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.requirements:
            if isinstance(self.requirements, str) or not all(
                isinstance(r, str) for r in self.requirements
            ):
                raise ValueError(
                    "task option requirements must be a list of requirement strings, "
                    f"got {self.requirements!r}"
                )
            from ..envs import normalise  # packaging's import only where requirements are

            object.__setattr__(self, "requirements", normalise(self.requirements))
        elif not isinstance(self.requirements, tuple):
            object.__setattr__(self, "requirements", ())
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"task option name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"task option retries must be an int >= 0, got {self.retries!r}")
        _check_number("retry_delay", self.retry_delay, minimum=0.0)
        if self.memory_mb is not None:
            _check_number("memory_mb", self.memory_mb, minimum=1, integer=True)
        if self.cpus is not None:
            _check_number("cpus", self.cpus, minimum=0.0, exclusive=True)


def _check_number(
    option: str, value: Any, *, minimum: float, integer: bool = False, exclusive: bool = False
) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (value > minimum if exclusive else value >= minimum)
    if not ok:
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        kind = "an int" if integer else "a number"
        raise ValueError(f"task option {option} must be {kind} {bound}, got {value!r}")


_OPTION_NAMES = tuple(f.name for f in fields(TaskOptions))


class TaskFunction(Generic[P, R]):
    """A function decorated with ``@shoal.task``. Calling it builds a :class:`Node`;
    the original function is ``.func``."""

    def __init__(self, func: Callable[P, R], options: TaskOptions) -> None:
        if not callable(func):
            raise TypeError(f"@shoal.task needs a callable, got {func!r}")
        functools.update_wrapper(self, func)
        self.func = func
        self.options = options
        self.name: str = options.name or getattr(func, "__name__", None) or type(func).__name__
        module = getattr(func, "__module__", None) or "?"
        qualname = getattr(func, "__qualname__", self.name)
        # The key names the function in function tables and in the workflow's identity.
        self.key = f"{module}.{qualname}" if options.name is None else options.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Node:
        return Node(self, args, kwargs)

    def map(self, iterable: Any, /, *args: Any, **kwargs: Any) -> Node:
        """One call per element of ``iterable`` (a node, whose length is known only when
        it runs, or a list or other iterable of values and nodes), with the other
        arguments the same for each; the node's value is the list of results, in order.
        A node is expanded by the worker that made it (:mod:`shoal.graph.maps`)."""
        from .maps import map_node

        return map_node(self, iterable, args, kwargs)

    def __repr__(self) -> str:
        return f"<shoal.task {self.key}>"


@overload
def task(func: Callable[P, R], /) -> TaskFunction[P, R]: ...
@overload
def task(
    *,
    name: str | None = ...,
    retries: int = ...,
    retry_delay: float = ...,
    memory_mb: int | None = ...,
    cpus: float | None = ...,
    requirements: Sequence[str] = ...,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(func: Any = None, /, **options: Any) -> Any:
    """Make ``func`` a Shoal task: calling it returns a lazy :class:`Node`, and
    ``.map(iterable, ...)`` one call per element (:meth:`TaskFunction.map`).

    Use bare (``@shoal.task``) or with options (``@shoal.task(retries=2, memory_mb=1024)``):
    ``name`` (display name and identity in history), ``retries`` (extra attempts after a
    failure), ``retry_delay`` (base seconds of the exponential backoff), ``memory_mb`` and
    ``cpus`` (worker size hints), ``requirements`` (a list of PEP 508 requirement strings
    such as ``"pillow>=10"``: the task runs in an environment that has them; a bad string
    is a :class:`~shoal.ConfigError` naming it, now).
    """
    unknown = [k for k in options if k not in _OPTION_NAMES]
    if unknown:
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)"
            if (m := difflib.get_close_matches(k, _OPTION_NAMES, 1))
            else repr(k)
            for k in unknown
        ]
        raise TypeError(
            f"unknown @shoal.task option {', '.join(hints)}; valid options: "
            + ", ".join(_OPTION_NAMES)
        )
    opts = TaskOptions(**options)
    if func is None:
        return lambda f: TaskFunction(f, opts)
    return TaskFunction(func, opts)


class Node:
    """A lazy call of a task: nothing runs until ``compute()``.

    ``args``/``kwargs`` are templates (see :mod:`shoal.graph.template`); ``deps`` are the
    distinct upstream nodes in order of first appearance; ``seq`` orders nodes by creation,
    which is a topological order (a node's inputs always exist before it). ``stage``: the
    stage a map's collector collects (:mod:`shoal.graph.maps`), else None.
    """

    __slots__ = ("fn", "args", "kwargs", "deps", "seq", "stage", "__weakref__")

    def __init__(self, fn: TaskFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        deps: list[Node] = []
        index: dict[int, int] = {}  # id(node) -> slot
        targs = []
        for a in args:  # fast path for the common case: constants and nodes at the top level
            t = type(a)
            if t is Node:
                k = index.get(id(a))
                if k is None:
                    k = index[id(a)] = len(deps)
                    deps.append(a)
                targs.append(_REFS[k] if k < 256 else ref(k))
            elif t in _SCALARS:
                targs.append(a)
            else:
                targs.append(_scan_arg(a, deps, index))
        self.fn = fn
        self.args = tuple(targs)
        self.kwargs = (
            {k: _scan_arg(v, deps, index) for k, v in kwargs.items()} if kwargs else kwargs
        )
        self.deps = tuple(deps)
        self.seq = next(_sequence)
        self.stage: Stage | None = None

    def compute(self, **options: Any) -> Any:
        """Run the graph that ends in this node and return its value.

        Options are those of :func:`shoal.compute`.
        """
        from ..api import compute

        return compute(self, **options)[0]

    def __repr__(self) -> str:
        return f"<shoal.Node {self.fn.name} deps={len(self.deps)}>"

    def __iter__(self) -> Any:
        raise TypeError(
            f"a shoal.Node ({self.fn.name}) is lazy and cannot be iterated or unpacked; "
            "write a task that picks the part you need"
        )

    def __bool__(self) -> bool:
        raise TypeError(f"a shoal.Node ({self.fn.name}) is lazy and has no truth value yet")


_sequence = itertools.count()


def _is_node(obj: Any) -> bool:
    return type(obj) is Node


def _scan_arg(obj: Any, deps: list[Node], index: dict[int, int]) -> Any:
    """The template of one argument, adding the nodes it holds to ``deps``."""
    if type(obj) in _SCALARS:
        return obj

    def slot(node: Node) -> Ref:
        k = index.get(id(node))
        if k is None:
            k = index[id(node)] = len(deps)
            deps.append(node)
        return ref(k)

    return scan(obj, _is_node, slot)
