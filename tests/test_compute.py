"""The shared suite: graph shapes and semantics, run on every backend (``engine``)."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
from signals import count, mark, wait_for

import shoal


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


@shoal.task
def inc(x: int) -> int:
    return x + 1


@shoal.task
def ident(x: Any) -> Any:
    return x


@shoal.task
def total(xs: list[int]) -> int:
    return sum(xs)


@shoal.task
def nothing() -> None:
    return None


@shoal.task
def forty_two() -> int:
    return 42


def test_single_task(engine: dict[str, Any]) -> None:
    assert add(1, 2).compute(**engine) == 3
    summary = shoal.last_run()
    assert summary is not None and summary.ok and summary.tasks == 1 and summary.tasks_done == 1


def test_task_without_arguments(engine: dict[str, Any]) -> None:
    assert forty_two().compute(**engine) == 42


def test_none_results_flow_downstream(engine: dict[str, Any]) -> None:
    n = nothing()
    assert shoal.compute(n, ident([n, n]), **engine) == (None, [None, None])


def test_diamond(engine: dict[str, Any]) -> None:
    top = inc(1)
    left, right = inc(top), add(top, 10)
    assert add(left, right).compute(**engine) == 3 + 12
    assert shoal.last_run().tasks == 4  # type: ignore[union-attr]


def test_one_node_used_many_times_is_one_task(engine: dict[str, Any], flags: Path) -> None:
    calls = flags / "calls"

    @shoal.task
    def counted(x: int) -> int:
        mark(calls)
        return x

    c = counted(5)
    assert ident([c, (c, {"k": c}), add(c, c)]).compute(**engine) == [5, (5, {"k": 5}), 10]
    assert count(calls) == 1


def test_nested_arguments_keep_their_structure(engine: dict[str, Any]) -> None:
    Point = namedtuple("Point", "x y")
    x = inc(1)  # 2
    arg = {
        "list": [x, 1],
        "tuple": (x, (x, 3)),
        "set": {x, 7},
        "frozen": frozenset({x}),
        "point": Point(x, 0),
        "const": "c",
    }
    assert ident(arg).compute(**engine) == {
        "list": [2, 1],
        "tuple": (2, (2, 3)),
        "set": {2, 7},
        "frozen": frozenset({2}),
        "point": Point(2, 0),
        "const": "c",
    }


def test_nesting_depth_five_in_args_and_kwargs(engine: dict[str, Any]) -> None:
    @shoal.task
    def pair(a: Any, *, b: Any) -> tuple[Any, Any]:
        return a, b

    x = inc(0)
    deep = [[[[[x]]]]]
    assert pair(deep, b={"a": ({"b": [x]},)}).compute(**engine) == (
        [[[[[1]]]]],
        {"a": ({"b": [1]},)},
    )


def test_several_sinks_one_run(engine: dict[str, Any]) -> None:
    @shoal.task
    def both(a: Any, b: Any) -> tuple[Any, Any]:
        return a, b

    x = add(1, 2)
    y = both(x, {"k": [x, (3, x)]})
    assert shoal.compute(x, y, x, **engine) == (3, (3, {"k": [3, (3, 3)]}), 3)
    assert shoal.last_run().tasks == 2  # type: ignore[union-attr]


def test_sink_upstream_of_another_sink(engine: dict[str, Any]) -> None:
    a = inc(1)
    b = inc(a)
    c = add(a, b)
    assert shoal.compute(c, a, b, **engine) == (5, 2, 3)


def test_root_reached_late_in_the_walk(engine: dict[str, Any]) -> None:
    late_root = forty_two()
    chain = inc(0)
    for _ in range(50):
        chain = inc(chain)
    assert add(chain, late_root).compute(**engine) == 51 + 42


def test_wide_fan_out_and_fan_in(engine: dict[str, Any]) -> None:
    root = forty_two()
    leaves = [add(root, i) for i in range(10_000)]
    assert total(leaves).compute(**engine) == sum(42 + i for i in range(10_000))
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == 10_002


def test_long_chain(engine: dict[str, Any]) -> None:
    x = inc(0)
    for _ in range(100_000 - 1):
        x = inc(x)
    assert x.compute(**engine) == 100_000


def test_tree_reduction(engine: dict[str, Any]) -> None:
    xs = [ident(i) for i in range(1024)]
    while len(xs) > 1:
        xs = [add(xs[i], xs[i + 1]) for i in range(0, len(xs), 2)]
    assert xs[0].compute(**engine) == sum(range(1024))


def test_large_numpy_output(engine: dict[str, Any]) -> None:
    @shoal.task
    def big() -> np.ndarray:
        return np.ones(100 * 1024 * 1024 // 8)  # 100 MB

    @shoal.task
    def checksum(a: np.ndarray) -> float:
        return float(a.sum())

    arr = big()
    result, s = shoal.compute(arr, checksum(arr), **engine)
    assert result.nbytes == 100 * 1024 * 1024 and s == result.size


def test_workers_run_in_parallel(engine: dict[str, Any], flags: Path) -> None:
    @shoal.task
    def meet(i: int) -> int:
        """Both must be inside their function at once to see each other."""
        (flags / f"in-{i}").touch()
        if not wait_for(flags / "in-1", flags / "in-2", timeout=30):
            raise TimeoutError(f"task {i} ran alone")
        return i

    assert add(meet(1), meet(2)).compute(**engine) == 3


@shoal.task
def letters_in(text: str, letter: str = "a", *, extra: Any = None) -> int:
    return text.count(letter) + (0 if extra is None else int(extra.sum()))


def test_big_constant_arguments_reach_their_tasks(engine: dict[str, Any]) -> None:
    """Constants too big to sit in a page of specs (shoal.codec lifts them out) arrive as
    given: positional, keyword, one object shared by many tasks, beside small ones."""
    texts = [("a" * (i + 1)) + "b" * 200_000 for i in range(40)]
    shared = np.ones(50_000)  # 400 KB, given to every task
    counts = [letters_in(t, "a", extra=shared) for t in texts]
    counts.append(letters_in(texts[0], letter="b"))
    assert total(counts).compute(**engine) == sum(range(1, 41)) + 40 * 50_000 + 200_000
