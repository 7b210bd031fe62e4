"""Property-based: random DAGs of task calls, with upstream nodes at random depth inside
list/tuple/dict/set arguments and kwargs, computed on the engine and compared with plain
eager evaluation of the same structure."""

from __future__ import annotations

import hashlib
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal

Pair = namedtuple("Pair", "left right")


def _canon(obj: Any) -> str:
    """A deterministic text for any value the tasks produce or receive (sets sorted)."""
    t = type(obj)
    if t is dict:
        items = sorted((repr(k), _canon(v)) for k, v in obj.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if t in (set, frozenset):
        return f"{t.__name__}(" + ",".join(sorted(_canon(v) for v in obj)) + ")"
    if t in (list, tuple, Pair):
        return f"{t.__name__}[" + ",".join(_canon(v) for v in obj) + "]"
    return repr(obj)


def _digest(salt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    data = f"{salt}|{_canon(args)}|{_canon(kwargs)}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=6).digest(), "big")


# Deterministic, pure, and all return hashable values (a node's value may land in a set).
@shoal.task
def mix(*args: Any, **kwargs: Any) -> int:
    return _digest("mix", args, kwargs)


@shoal.task
def label(*args: Any, **kwargs: Any) -> str:
    return f"L{_digest('label', args, kwargs) % 997}"


@shoal.task
def spread(*args: Any, **kwargs: Any) -> tuple[int, ...]:
    d = _digest("spread", args, kwargs)
    return (d % 7, d % 11, d % 13)


@shoal.task
def bag(*args: Any, **kwargs: Any) -> frozenset[int]:
    d = _digest("bag", args, kwargs)
    return frozenset({d % 5, d % 17})


@shoal.task
def first_or(*args: Any, **kwargs: Any) -> Any:
    """Passes its first argument through unchanged when it is hashable (values travel intact)."""
    if args:
        try:
            hash(args[0])
        except TypeError:
            pass
        else:
            return args[0]
    return _digest("first", args, kwargs)


TASKS = [mix, label, spread, bag, first_or]


@dataclass(frozen=True)
class Up:
    """In a generated program: the value of the ``i``-th earlier node."""

    i: int


_consts = st.one_of(st.integers(-1000, 1000), st.text(max_size=3), st.none())
# Up(k) is a hole for an earlier node; _resolve points it at a node before node i.
_leaf = st.one_of(st.integers(0, 10**6).map(Up), st.integers(0, 10**6).map(Up), _consts)
_small_tuple = st.lists(_leaf, max_size=2).map(tuple)
_hashable = st.one_of(
    _leaf,
    _small_tuple,
    st.frozensets(_leaf, max_size=2),
    st.tuples(_small_tuple, st.frozensets(_small_tuple, max_size=2)),
)
#: An argument: constants and earlier nodes at random depth in list/tuple/dict/set/namedtuple.
_argument = st.recursive(
    _leaf,
    lambda c: (
        st.lists(c, max_size=3)
        | st.lists(c, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["x", "y", "z", ""]), c, max_size=3)
        | st.sets(_hashable, max_size=3)
        | st.frozensets(_hashable, max_size=3)
        | st.tuples(c, c).map(lambda p: Pair(*p))
    ),
    max_leaves=8,
)
_kwargs = st.dictionaries(st.sampled_from(["a", "b", "kw"]), _argument, max_size=2)


def _resolve(obj: Any, i: int) -> Any:
    """Point every hole of node ``i``'s arguments at an earlier node (a constant for node 0)."""
    t = type(obj)
    if t is Up:
        if not i:
            return obj.i
        k, recent = divmod(obj.i, 2)  # half the holes pick one of the last 3 nodes: deep chains
        return Up(i - 1 - k % min(i, 3)) if recent else Up(k % i)
    if t is dict:
        return {k: _resolve(v, i) for k, v in obj.items()}
    if t in (list, tuple, set, frozenset):
        return t(_resolve(v, i) for v in obj)
    if t is Pair:
        return Pair(*(_resolve(v, i) for v in obj))
    return obj


Program = tuple[list[tuple[int, list[Any], dict[str, Any]]], list[int]]


@st.composite
def programs(draw: st.DrawFn) -> Program:
    n = draw(st.integers(1, 60))
    nodes = []
    for i in range(n):
        task = draw(st.integers(0, len(TASKS) - 1))
        args = _resolve(draw(st.lists(_argument, max_size=3)), i)
        kwargs = _resolve(draw(_kwargs), i)
        nodes.append((task, args, kwargs))
    sink = st.one_of(st.just(n - 1), st.integers(0, n - 1))  # the last node often a sink
    sinks = draw(st.lists(sink, min_size=1, max_size=4))
    return nodes, sinks


def _substitute(obj: Any, values: list[Any]) -> Any:
    """The structure with every ``Up(i)`` replaced by ``values[i]``."""
    t = type(obj)
    if t is Up:
        return values[obj.i]
    if t is dict:
        return {k: _substitute(v, values) for k, v in obj.items()}
    if t in (list, tuple, set, frozenset):
        return t(_substitute(v, values) for v in obj)
    if t is Pair:
        return Pair(*(_substitute(v, values) for v in obj))
    return obj


def _ups(obj: Any) -> set[int]:
    t = type(obj)
    if t is Up:
        return {obj.i}
    if t is dict:
        obj = obj.values()
    elif t not in (list, tuple, set, frozenset, Pair):
        return set()
    found: set[int] = set()
    for v in obj:
        found |= _ups(v)
    return found


def _reachable(nodes: list[tuple[int, list[Any], dict[str, Any]]], sinks: list[int]) -> set[int]:
    seen = set(sinks)
    stack = list(seen)
    while stack:
        _, args, kwargs = nodes[stack.pop()]
        for up in _ups(args) | _ups(list(kwargs.values())):
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(program=programs())
def test_random_dags_compute_like_eager_evaluation(
    engine: dict[str, Any], program: Program
) -> None:
    nodes, sinks = program
    lazy: list[shoal.Node] = []
    eager: list[Any] = []
    for task, args, kwargs in nodes:
        fn = TASKS[task]
        lazy.append(fn(*_substitute(args, lazy), **_substitute(kwargs, lazy)))
        eager.append(fn.func(*_substitute(args, eager), **_substitute(kwargs, eager)))

    results = shoal.compute(*(lazy[s] for s in sinks), **engine)

    assert results == tuple(eager[s] for s in sinks)
    for got, s in zip(results, sinks, strict=True):
        assert type(got) is type(eager[s])
    summary = shoal.last_run()
    assert summary is not None
    assert summary.ok is True
    assert summary.tasks == summary.tasks_done == len(_reachable(nodes, sinks))
