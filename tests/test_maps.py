"""Dynamic fan-outs (``task.map``), on every backend: expansion in the worker, chains that
run element by element, errors, retries, and random programs of maps against eager
evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signals import wait_for

import shoal
from shoal.graph import build
from shoal.graph.maps import Element, Expansion, Family, expand, reserved


@shoal.task
def words(text: str) -> list[str]:
    return text.split()


@shoal.task
def length(word: str, times: int = 1) -> int:
    return len(word) * times


@shoal.task
def inc(x: int, by: int = 1) -> int:
    return x + by


@shoal.task
def total(xs: Any) -> int:
    return sum(xs)


@shoal.task
def ident(x: Any) -> Any:
    return x


@shoal.task
def upto(n: int) -> list[int]:
    return list(range(n))


def test_map_over_a_node_broadcasts_the_other_arguments(engine: dict[str, Any]) -> None:
    counts = length.map(words("a bb ccc dddd"), times=2)
    assert shoal.compute(counts, total(counts), **engine) == ([2, 4, 6, 8], 20)
    summary = shoal.last_run()
    assert summary is not None
    # The static graph (words, expander, collector, total) and the four elements it grew.
    assert summary.tasks == summary.tasks_done == 8


def test_map_as_sink_and_nested_in_arguments(engine: dict[str, Any]) -> None:
    counts = length.map(words("x yy"))
    assert ident({"counts": [counts], "n": 1}).compute(**engine) == {"counts": [[1, 2]], "n": 1}


def test_empty_and_one_element_inputs(engine: dict[str, Any]) -> None:
    empty, one = inc.map(upto(0)), inc.map(upto(1))
    assert shoal.compute(empty, one, total(empty), inc.map(empty), **engine) == ([], [1], 0, [])


def test_map_of_plain_values_and_nodes(engine: dict[str, Any]) -> None:
    assert inc.map([1, inc(1), 3], by=10).compute(**engine) == [11, 12, 13]
    assert inc.map(()).compute(**engine) == []


def test_chains_of_maps_and_maps_fed_by_maps(engine: dict[str, Any]) -> None:
    firsts = inc.map(upto(5))
    chained = inc.map(inc.map(firsts, by=10), by=100)
    again = inc.map(ident(firsts))  # not a map's node: no chain, a new expansion
    broadcast = inc.map(firsts, by=total(firsts))  # a node argument: waits for it
    assert shoal.compute(chained, again, broadcast, **engine) == (
        [111, 112, 113, 114, 115],
        [2, 3, 4, 5, 6],
        [16, 17, 18, 19, 20],
    )


def test_a_chain_runs_element_by_element(engine: dict[str, Any], flags: Path) -> None:
    """The last element of the first map waits for the first of the second: without
    element-wise chaining the second map would wait for all of the first, and never run."""

    @shoal.task
    def first(i: int) -> int:
        if i == 3 and not wait_for(flags / "second-0", timeout=30):
            raise TimeoutError("the second map waited for all of the first")
        return i

    @shoal.task
    def second(i: int) -> int:
        (flags / f"second-{i}").touch()
        return -i

    assert second.map(first.map(upto(4))).compute(**engine) == [0, -1, -2, -3]


def test_structure_hash_ignores_the_inputs_length() -> None:
    short = build([total(length.map(words("a b")))])
    long = build([total(length.map(words("a b c d e f")))])
    other = build([total(inc.map(length.map(words("a b"))))])
    assert short.structure_hash == long.structure_hash != other.structure_hash


def test_a_mapped_input_that_is_not_iterable_fails_naming_it(engine: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"inc\.map maps the output of task total-\d+, a int"):
        inc.map(total([1, 2])).compute(**engine)


def test_mapping_a_constant_that_is_not_iterable_fails_at_once() -> None:
    with pytest.raises(TypeError, match=r"inc\.map needs a node or an iterable.*int"):
        inc.map(5)


def test_a_failing_element_fails_the_run_with_its_index(engine: dict[str, Any]) -> None:
    @shoal.task
    def picky(x: int) -> int:
        if x == 2:
            raise ValueError(f"no {x}")
        return x

    with pytest.raises(ValueError, match="no 2") as info:
        picky.map(upto(4)).compute(**engine)
    assert any("picky[2]" in note for note in info.value.__notes__)


def test_retries_apply_per_element(engine: dict[str, Any], flags: Path) -> None:
    @shoal.task(retries=1)
    def flaky(x: int) -> int:
        mark = flags / f"tried-{x}"
        if x % 2 and not mark.exists():
            mark.touch()
            raise RuntimeError(f"first try of {x}")
        return x * 10

    assert flaky.map(upto(4)).compute(**engine) == [0, 10, 20, 30]
    summary = shoal.last_run()
    assert summary is not None and summary.retries == 2


def test_wide_map(engine: dict[str, Any]) -> None:
    assert total(inc.map(upto(3000))).compute(**engine) == sum(range(1, 3001))


@shoal.task
def spin(i: int) -> int:
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:
        pass
    return i


def test_history_keeps_a_maps_elements_and_planners_predict_its_width(tmp_path: Path) -> None:
    where = str(tmp_path / "h.db")
    for _ in range(2):
        assert total(spin.map(upto(6))).compute(history=where) == 15
    run = shoal.history(where).runs(limit=1)[0]
    assert run.widths == {"1": 6}  # the expander, task 1, made six elements
    assert [t.name.split("-")[0] for t in run.tasks[4:]] == ["spin"] * 6
    assert total(spin.map(upto(6))).compute(history=where, planner="critical-path") == 15
    summary = shoal.last_run()
    # Without the width, the plan would see four quick tasks (well under a millisecond):
    # its elements, 20 ms each, are in the prediction.
    assert summary is not None and summary.predicted_makespan_s is not None
    assert summary.predicted_makespan_s > 0.015


# ----------------------------------------------------------------- the pure expansion


def _family(**changes: Any) -> Family:
    base = Family("f.map", 0, (5,), ((),), ({},), (-1,), (9,), ())
    return base._replace(**changes)


def _spec(children: tuple[int, ...] = (9,)) -> shoal.graph.TaskSpec:
    return shoal.graph.TaskSpec(1, (), {}, (0,), children, (1,) * len(children))


def test_expand_makes_one_element_per_item_readied_by_the_expander() -> None:
    made = expand(_spec(), _family(), ["a", "b", "c"], 128)
    assert sorted(made.specs) == [128, 129, 130]
    assert made.children == (128, 129, 130) and made.child_deps == (1, 1, 1)
    for i, (task, spec) in enumerate(sorted(made.specs.items())):
        assert spec.args == ("abc"[i],) and spec.deps == ()
        assert spec.children == (9,) and spec.child_deps == (3,)  # the collector, of 3
        assert spec.dynamic == Element(i) and task == 128 + i


def test_expand_chains_stages_element_by_element() -> None:
    family = _family(
        funcs=(5, 6), args=((), (7,)), kwargs=({}, {}), parents=(-1, 0), collectors=(-1, 9)
    )
    made = expand(_spec(), family, [10, 20], 64)
    assert made.children == (64, 66)  # stage 0 of each element
    assert made.specs[64].children == (65,) and made.specs[65].deps == (64,)
    assert made.specs[65].children == (9,) and made.specs[65].child_deps == (2,)
    assert made.specs[65].args[1:] == (7,)
    assert Expansion(64, 2, 2).elements(1) == range(65, 69, 2)


def test_expanding_nothing_readies_the_collectors() -> None:
    made = expand(_spec((9, 11)), _family(), [], 0)
    assert made.specs == {} and made.children == (9, 11)


def test_reservations_are_whole_pages() -> None:
    assert reserved(0, 1) == 0 and reserved(1, 1) == 64 and reserved(64, 2) == 128


# ----------------------------------------------------------------- random programs


@dataclass(frozen=True)
class Op:
    """One node of a generated program: ``kind`` over the values of earlier nodes ``ups``
    (every node's value is a list of ints)."""

    kind: str
    ups: tuple[int, ...]
    k: int


@shoal.task
def source(k: int) -> list[int]:
    return list(range(k))


@shoal.task
def merge(*lists: list[int]) -> list[int]:
    return [x for xs in lists for x in xs]


@shoal.task
def scale(x: int, k: int = 1, plus: int = 0) -> int:
    return x * k + plus


def _eager(op: Op, values: list[list[int]]) -> list[int]:
    if op.kind == "source":
        return list(range(op.k))
    ins = [values[u] for u in op.ups]
    if op.kind == "merge":
        return [x for xs in ins for x in xs]
    plus = sum(ins[1]) if len(ins) > 1 else 0
    return [x * op.k + plus for x in ins[0]]


def _lazy(op: Op, nodes: list[shoal.Node]) -> shoal.Node:
    if op.kind == "source":
        return source(op.k)
    ins = [nodes[u] for u in op.ups]
    if op.kind == "merge":
        return merge(*ins)
    if len(ins) > 1:  # another node broadcast to every element
        return scale.map(ins[0], k=op.k, plus=total(ins[1]))
    return scale.map(ins[0], k=op.k)


@st.composite
def map_programs(draw: st.DrawFn) -> tuple[list[Op], list[int]]:
    ops = [Op("source", (), draw(st.sampled_from([0, 1, 2, 5])))]
    for i in range(1, draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["source", "map", "map", "map", "merge", "broadcast"]))
        up = st.integers(0, i - 1)
        if kind == "source":
            ops.append(Op(kind, (), draw(st.sampled_from([0, 1, 3]))))
        elif kind == "merge":
            ops.append(Op(kind, tuple(draw(st.lists(up, min_size=1, max_size=3))), 0))
        elif kind == "broadcast":
            ops.append(Op("map", (draw(up), draw(up)), draw(st.integers(-2, 3))))
        else:  # most often the last node: chains of maps
            ops.append(Op("map", (draw(st.one_of(st.just(i - 1), up)),), draw(st.integers(-2, 3))))
    sinks = draw(st.lists(st.integers(0, len(ops) - 1), min_size=1, max_size=3))
    return ops, [len(ops) - 1, *sinks]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=map_programs())
def test_random_programs_of_maps_compute_like_eager_evaluation(
    engine: dict[str, Any], program: tuple[list[Op], list[int]]
) -> None:
    ops, sinks = program
    nodes: list[shoal.Node] = []
    values: list[list[int]] = []
    for op in ops:
        nodes.append(_lazy(op, nodes))
        values.append(_eager(op, values))
    results = shoal.compute(*(nodes[s] for s in sinks), **engine)
    assert results == tuple(values[s] for s in sinks)
    summary = shoal.last_run()
    assert summary is not None and summary.ok and summary.tasks == summary.tasks_done
