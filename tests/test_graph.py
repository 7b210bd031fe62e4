"""The graph model without running anything: @task, Node, build(), the structure hash,
the shipped/encoded form and argument templates."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal
from shoal.backends import Size
from shoal.codec import Codec
from shoal.graph import Graph, Node, TaskFunction, build
from shoal.graph.spec import PAGE
from shoal.graph.template import Nested, Ref, fill, scan
from shoal.history.records import Cost
from shoal.planning import Plan
from shoal.security import Signer

CODEC = Codec(Signer("a test secret of 16+ characters"))


def _decoded(graph: Graph) -> list[Any]:
    """Every spec of ``graph`` after encoding and decoding, in task order."""
    encoded = CODEC.encode_graph(graph.ship())
    return [spec for page in encoded.pages for spec in CODEC.decode_page(page)[0]]


Point = namedtuple("Point", "x y")


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


@shoal.task
def inc(x: int) -> int:
    return x + 1


@shoal.task
def src(i: int) -> int:
    return i


@shoal.task
def gather(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    return args, kwargs


@shoal.task
def noop(x: Any = None) -> None:
    return None


# --------------------------------------------------------------------------- @shoal.task


def test_bare_decorator_makes_a_task_function_with_default_options() -> None:
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    t = shoal.task(double)
    assert isinstance(t, TaskFunction)
    assert t.func is double
    assert t.__name__ == "double" and t.__doc__ == "Twice x."
    assert t.__wrapped__ is double
    assert t.name == "double"
    assert t.options.retries == 0 and t.options.memory_mb is None and t.options.cpus is None
    assert t.func(4) == 8


def test_decorator_with_options_keeps_them_and_the_metadata() -> None:
    @shoal.task(name="count", retries=3, retry_delay=0.5, memory_mb=1024, cpus=2)
    def count_words(words: list[str]) -> int:
        """Count the words."""
        return len(words)

    assert isinstance(count_words, TaskFunction)
    opts = count_words.options
    assert (opts.name, opts.retries, opts.retry_delay, opts.memory_mb, opts.cpus) == (
        "count",
        3,
        0.5,
        1024,
        2,
    )
    assert count_words.name == "count" and count_words.key == "count"
    assert count_words.__name__ == "count_words"
    assert count_words.__doc__ == "Count the words."
    assert count_words.func(["a", "b"]) == 2


def test_empty_parentheses_are_the_bare_form() -> None:
    @shoal.task()
    def f() -> int:
        return 1

    assert isinstance(f, TaskFunction) and f.options.retries == 0 and f.func() == 1


def test_task_key_is_module_and_qualname_without_a_name() -> None:
    assert add.key == f"{__name__}.add"
    assert add.name == "add"


def test_unknown_option_is_a_type_error_suggesting_the_close_match() -> None:
    with pytest.raises(TypeError, match="memroy_mb") as info:
        shoal.task(memroy_mb=512)
    assert "did you mean 'memory_mb'" in str(info.value)


def test_unknown_option_without_a_close_match_lists_valid_options() -> None:
    with pytest.raises(TypeError, match="colour") as info:
        shoal.task(colour="red")
    message = str(info.value)
    assert "did you mean" not in message
    for option in ("name", "retries", "retry_delay", "memory_mb", "cpus"):
        assert option in message


def test_unknown_option_also_rejected_in_direct_form() -> None:
    def f() -> None:
        return None

    with pytest.raises(TypeError, match="retires.*did you mean 'retries'"):
        shoal.task(f, retires=2)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("name", ""),
        ("name", 3),
        ("retries", -1),
        ("retries", 1.5),
        ("retries", True),
        ("retries", "2"),
        ("retry_delay", -0.1),
        ("retry_delay", float("nan")),
        ("retry_delay", "1"),
        ("memory_mb", 0),
        ("memory_mb", 1.5),
        ("memory_mb", True),
        ("cpus", 0),
        ("cpus", -1),
        ("cpus", "2"),
    ],
)
def test_bad_option_value_is_a_value_error_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        shoal.task(**{option: value})


def test_boundary_values_are_accepted() -> None:
    t = shoal.task(retries=0, retry_delay=0, memory_mb=1, cpus=0.25)(lambda: None)
    assert t.options.retry_delay == 0 and t.options.memory_mb == 1 and t.options.cpus == 0.25


# --------------------------------------------------------------------------- Node


def test_calling_a_task_is_lazy() -> None:
    calls: list[int] = []

    @shoal.task
    def counted(x: int) -> int:
        calls.append(x)
        return x

    n = counted(counted(1))
    assert isinstance(n, Node)
    assert calls == []
    assert n.fn is counted and len(n.deps) == 1 and n.deps[0].fn is counted
    build([n]).ship()
    assert calls == []  # neither build nor ship calls anything


def test_a_node_cannot_be_iterated_or_unpacked() -> None:
    n = add(1, 2)
    with pytest.raises(TypeError, match="lazy.*cannot be iterated or unpacked"):
        a, b = n  # noqa: F841
    with pytest.raises(TypeError, match="lazy"):
        list(n)
    with pytest.raises(TypeError, match="lazy"):
        for _ in n:
            pass


def test_a_node_has_no_truth_value() -> None:
    n = add(1, 2)
    with pytest.raises(TypeError, match="lazy.*truth value"):
        bool(n)
    with pytest.raises(TypeError, match="add"):
        if n:
            pass


def _values(n: Node) -> list[Any]:
    """A distinct marker value per dep, so a fill shows where each dep went."""
    return [f"<{i}>" for i in range(len(n.deps))]


def test_nodes_are_found_at_any_depth_in_args_and_kwargs() -> None:
    a, b, c, d, e, f = (src(i) for i in range(6))
    n = gather(
        [a, 1],
        (2, (b,)),
        {"k": {"deep": [[c]]}},
        {d, 3},
        frozenset({e}),
        Point(f, 4),
        kw=[{"x": (a, b)}],
    )
    assert set(n.deps) == {a, b, c, d, e, f}
    assert len(n.deps) == 6
    values = _values(n)
    slot = {dep: values[i] for i, dep in enumerate(n.deps)}
    spec = build([n]).ship().specs[-1]
    args, kwargs = spec.arguments(values)
    assert args == (
        [slot[a], 1],
        (2, (slot[b],)),
        {"k": {"deep": [[slot[c]]]}},
        {slot[d], 3},
        frozenset({slot[e]}),
        Point(slot[f], 4),
    )
    assert type(args[5]) is Point
    assert kwargs == {"kw": [{"x": (slot[a], slot[b])}]}


def test_nodes_at_depth_five_in_each_container_kind() -> None:
    x = src(0)
    n = gather([(({"k": [x]},),)], frozenset({(frozenset({(x,)}),)}), {((((x,),),),)})
    assert n.deps == (x,)
    args, _ = build([n]).ship().specs[-1].arguments(["v"])
    assert args == (
        [(({"k": ["v"]},),)],
        frozenset({(frozenset({("v",)}),)}),
        {(((("v",),),),)},
    )


def test_deps_are_deduplicated_in_order_of_first_appearance() -> None:
    x, y = src(1), src(2)
    assert add(x, x).deps == (x,)
    n = gather(y, [x, {"k": y}], kw=(x, y))
    assert n.deps == (y, x)
    g = build([n])
    assert g.deps[-1] == (g.nodes.index(y), g.nodes.index(x))
    assert build([add(x, x)]).deps[-1] == (0,)


def test_constants_pass_untouched() -> None:
    big = list(range(100_000))
    table = {"k": big}
    x = src(1)
    n = gather(big, [x, big], table, 7, "s", None, kw=big, kw2=(x, table))
    # a container without nodes is kept as is, not copied
    assert n.args[0] is big and n.args[2] is table and n.kwargs["kw"] is big
    assert n.args[3:] == (7, "s", None)
    assert n.deps == (x,)
    args, kwargs = build([n]).ship().specs[-1].arguments([11])
    assert args[0] is big and args[1][1] is big and args[2] is table
    assert args[1][0] == 11
    assert kwargs["kw"] is big and kwargs["kw2"][1] is table and kwargs["kw2"][0] == 11


def test_a_task_without_upstream_gets_its_arguments_back_unchanged() -> None:
    big = [object()]
    spec = build([gather(big, k=big)]).ship().specs[0]
    args, kwargs = spec.arguments([])
    assert args[0] is big and kwargs["k"] is big


# --------------------------------------------------------------------------- build()


def _assert_topological(g: Graph) -> None:
    for i, ds in enumerate(g.deps):
        assert all(d < i for d in ds), (i, ds)
        assert ds == tuple(g.nodes.index(d) for d in g.nodes[i].deps)
    for i, kids in enumerate(g.children):
        assert kids == [j for j, ds in enumerate(g.deps) if i in ds]


def test_tasks_are_numbered_in_topological_order() -> None:
    # create nodes in an interleaved order across several branches
    a = src(1)
    b = src(2)
    c = add(b, a)
    d = inc(a)
    e = gather(d, [c, {"b": b}])
    f = add(e, d)
    g = build([f])
    _assert_topological(g)
    assert len(g) == 6 and g.sinks == (5,) and g.roots == [0, 1]
    assert g.nodes == [a, b, c, d, e, f]
    assert g.functions == [src, add, inc, gather]
    assert g.func_of == [0, 0, 1, 2, 3, 1]
    assert g.name(2) == "add-2"


def test_one_node_used_many_times_is_one_task() -> None:
    x = src(1)
    users = [add(x, i) for i in range(50)]
    g = build([gather(users, x, {"x": [x, (x,)]})])
    assert len(g) == 52
    assert g.nodes.count(x) == 1
    assert len(g.children[0]) == 51
    _assert_topological(g)


def test_several_sinks_repeated_and_upstream_of_each_other() -> None:
    a = inc(1)
    b = inc(a)
    c = add(a, b)
    other = src(9)
    g = build([c, a, b, c, other])
    assert len(g) == 4
    ia, ib, ic, io = (g.nodes.index(n) for n in (a, b, c, other))
    assert g.sinks == (ic, ia, ib, ic, io)
    shipped = g.ship()
    assert [s.sink for s in shipped.specs] == [True] * 4
    _assert_topological(g)


def test_non_sink_tasks_are_not_sinks() -> None:
    a = inc(1)
    g = build([inc(a)])
    assert [s.sink for s in g.ship().specs] == [False, True]


def test_a_root_reached_late_in_the_walk() -> None:
    late = src(0)  # created first, reached last: the walk goes down the chain first
    chain = src(1)
    for _ in range(1000):
        chain = inc(chain)
    g = build([add(late, chain)])
    assert len(g) == 1003
    assert g.nodes[0] is late
    assert g.roots == [0, 1]
    assert g.deps[-1] == (0, 1001)
    _assert_topological(g)


def test_build_only_includes_reachable_nodes() -> None:
    a = src(1)
    unused = inc(a)
    g = build([add(a, 1)])
    assert unused not in g.nodes and len(g) == 2


def test_a_100k_chain_builds_without_recursion_error() -> None:
    x = noop()
    for _ in range(100_000):
        x = noop(x)
    g = build([x])
    assert len(g) == 100_001
    assert g.sinks == (100_000,)
    assert g.roots == [0]
    assert g.deps[100_000] == (99_999,) and g.children[0] == [1]
    assert len(g.ship().specs) == 100_001


def test_build_rejects_what_is_not_a_node() -> None:
    with pytest.raises(TypeError, match=r"shoal\.Node.*int"):
        build([add(1, 2), 3])  # type: ignore[list-item]


# --------------------------------------------------------------------------- structure hash


def _program(k: int, scale: Any) -> Node:
    xs = [src(k + i) for i in range(4)]
    ys = [add(x, scale) for x in xs]
    return gather(ys, {"first": xs[0]}, factor=scale)


def test_structure_hash_is_equal_for_the_same_program_on_other_inputs() -> None:
    h1 = build([_program(0, 1)]).structure_hash
    h2 = build([_program(100, "other")]).structure_hash
    h3 = build([_program(5, [1, 2, 3])]).structure_hash
    assert h1 == h2 == h3
    assert isinstance(h1, str) and len(h1) == 16


def test_structure_hash_differs_for_an_extra_edge() -> None:
    a1, b1 = src(1), src(2)
    a2, b2 = src(1), src(2)
    without = build([add(a1, 0), b1]).structure_hash
    with_edge = build([add(a2, b2), b2]).structure_hash
    assert without != with_edge


def test_structure_hash_differs_for_a_different_function() -> None:
    assert build([inc(src(1))]).structure_hash != build([noop(src(1))]).structure_hash


def test_structure_hash_differs_for_other_sinks() -> None:
    a1 = src(1)
    a2 = src(1)
    assert build([inc(a1)]).structure_hash != build([inc(a2), a2]).structure_hash


def test_structure_hash_is_stable_for_nodes_inside_a_set() -> None:
    """The same program must have the same identity however the allocator placed its
    nodes: the iteration order of a set of nodes (by id) must not leak into the hash."""
    hashes: dict[bool, str] = {}
    keep = []
    for _ in range(2000):
        x, y = src(1), src(2)
        keep.append((x, y))
        x_first = next(iter({x, y})) is x
        if x_first not in hashes:
            hashes[x_first] = build([gather({x, y})]).structure_hash
        if len(hashes) == 2:
            break
    assert len(hashes) == 2, "could not produce both set orders"
    assert hashes[True] == hashes[False]


# --------------------------------------------------------------------------- ship / encode


def _mixed_graph() -> tuple[Graph, list[Node]]:
    roots = [src(i) for i in range(5)]
    mids = [add(roots[i], roots[(i + 1) % 5]) for i in range(5)]
    tails = [gather(mids[i], {"r": roots[0]}, k=[mids[(i + 2) % 5]]) for i in range(5)]
    sinks = [gather(tails, set(roots)), tails[2], mids[0]]
    return build(sinks), sinks


def test_ship_specs_are_consistent_with_the_graph() -> None:
    g, _ = _mixed_graph()
    shipped = g.ship()
    assert len(shipped.specs) == len(g)
    assert shipped.functions == g.functions
    sinks = set(g.sinks)
    for i, spec in enumerate(shipped.specs):
        assert spec.deps == g.deps[i]
        assert spec.func == g.func_of[i]
        assert spec.children == tuple(j for j in range(len(g)) if i in g.deps[j])
        assert spec.child_deps == tuple(len(g.deps[c]) for c in spec.children)
        assert spec.sink == (i in sinks)
        for c in spec.children:
            assert i in shipped.specs[c].deps


def test_the_function_table_is_deduplicated() -> None:
    x = src(0)
    for i in range(9_999):
        x = inc(x) if i % 2 else src(x)
    g = build([x])
    assert len(g) == 10_000
    shipped = g.ship()
    assert shipped.functions == [src, inc]
    encoded = CODEC.encode_graph(shipped)
    assert len(encoded.functions) == 2 and len(encoded.pages) == -(-10_000 // PAGE)
    assert {s.func for s in shipped.specs} == {0, 1}


def test_encode_round_trips_specs_and_functions() -> None:
    g, _ = _mixed_graph()
    shipped = g.ship()
    encoded = CODEC.encode_graph(shipped)
    assert encoded.nbytes == sum(map(len, encoded.pages)) + sum(map(len, encoded.functions))
    functions = [CODEC.decode_function(b) for b in encoded.functions]
    assert [f.key for f in functions] == [f.key for f in shipped.functions]
    for i, (orig, spec) in enumerate(zip(shipped.specs, _decoded(g), strict=True)):
        assert (spec.func, spec.deps, spec.children, spec.child_deps, spec.sink) == (
            orig.func,
            orig.deps,
            orig.children,
            orig.child_deps,
            orig.sink,
        )
        values = [1000 * i + k for k in range(len(spec.deps))]
        assert spec.arguments(values) == orig.arguments(values)
        fn, orig_fn = functions[spec.func], shipped.functions[orig.func]
        args, kwargs = spec.arguments(values)
        oargs, okwargs = orig.arguments(values)
        assert fn.func(*args, **kwargs) == orig_fn.func(*oargs, **okwargs)


def test_encode_round_trips_named_tuples_and_refs_beyond_256() -> None:
    xs = [src(i) for i in range(300)]
    n = gather(Point(xs[0], xs[299]), xs, k={xs[257]})
    g = build([n])
    spec = g.ship().specs[-1]
    assert len(spec.deps) == 300
    decoded = _decoded(g)[-1]
    values = [g.nodes[d].args[0] for d in spec.deps]  # by slot: the value src() returns
    args, kwargs = decoded.arguments(values)
    assert (args, kwargs) == spec.arguments(values)
    assert args[0] == Point(0, 299) and type(args[0]) is Point
    assert args[1] == list(range(300)) and kwargs == {"k": {257}}


def test_bytes_per_spec_of_a_no_op_chain_is_small() -> None:
    x = noop()
    for _ in range(9_999):
        x = noop(x)
    encoded = CODEC.encode_graph(build([x]).ship())
    per_spec = sum(map(len, encoded.pages)) / 10_000
    assert per_spec < 40, per_spec  # a page pickles once: shared objects are written once


# --------------------------------------------------------------------------- templates


class Leaf:
    """Stands for a node in template tests (hashable by identity, like a Node)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __repr__(self) -> str:
        return f"Leaf({self.k})"


LEAVES = [Leaf(k) for k in range(6)]
_scalars = st.one_of(st.integers(-5, 5), st.text(max_size=2), st.none())
_leaf_or_scalar = st.one_of(st.sampled_from(LEAVES), _scalars)


def _hashable(depth: int) -> st.SearchStrategy[Any]:
    """A hashable structure nested exactly ``depth`` containers deep."""
    if depth == 0:
        return _leaf_or_scalar
    inner = _hashable(depth - 1)
    extra = st.lists(_leaf_or_scalar, max_size=2)
    return st.one_of(
        st.tuples(inner, extra).map(lambda p: (p[0], *p[1])),
        st.tuples(inner, extra).map(lambda p: frozenset([p[0], *p[1]])),
        st.tuples(inner, _leaf_or_scalar).map(lambda p: Point(*p)),
    )


def _nested(depth: int) -> st.SearchStrategy[Any]:
    """Any structure nested exactly ``depth`` containers deep (list/tuple/dict/set mixes)."""
    if depth == 0:
        return _leaf_or_scalar
    inner = _nested(depth - 1)
    extra = st.lists(_leaf_or_scalar, max_size=2)
    return st.one_of(
        st.tuples(inner, extra).map(lambda p: [*p[1], p[0]]),
        st.tuples(inner, extra).map(lambda p: (p[0], *p[1])),
        st.tuples(inner, extra).map(
            lambda p: {"deep": p[0], **{str(i): v for i, v in enumerate(p[1])}}
        ),
        st.tuples(_hashable(depth - 1), extra).map(lambda p: {p[0], *p[1]}),
        st.tuples(_hashable(depth - 1), extra).map(lambda p: frozenset([p[0], *p[1]])),
        st.tuples(inner, _leaf_or_scalar).map(lambda p: Point(*p)),
    )


def _substitute(obj: Any, values: dict[Leaf, Any]) -> Any:
    """Eager reference: the structure with every leaf replaced by its value."""
    if isinstance(obj, Leaf):
        return values[obj]
    t = type(obj)
    if t is dict:
        return {k: _substitute(v, values) for k, v in obj.items()}
    if t in (list, tuple, set, frozenset):
        return t(_substitute(v, values) for v in obj)
    if t is Point:
        return Point(*(_substitute(v, values) for v in obj))
    return obj


def _contains_leaf(obj: Any) -> bool:
    if isinstance(obj, Leaf):
        return True
    if isinstance(obj, dict):
        return any(_contains_leaf(v) for v in obj.values())
    if isinstance(obj, list | tuple | set | frozenset):
        return any(_contains_leaf(v) for v in obj)
    return False


@settings(max_examples=150, deadline=None)
@given(obj=st.integers(0, 5).flatmap(_nested))
def test_template_scan_fill_round_trip(obj: Any) -> None:
    slots: list[Leaf] = []

    def slot(leaf: Leaf) -> Ref:
        if leaf not in slots:
            slots.append(leaf)
        return Ref(slots.index(leaf))

    template = scan(obj, lambda o: isinstance(o, Leaf), slot)
    if not _contains_leaf(obj):
        assert template is obj and slots == []
    else:
        assert type(template) in (Ref, Nested)
    values = [f"value-{leaf.k}" for leaf in slots]
    expected = _substitute(obj, {leaf: values[i] for i, leaf in enumerate(slots)})
    filled = fill(template, values)
    assert filled == expected
    assert type(filled) is type(expected)


@settings(max_examples=60, deadline=None)
@given(obj=st.integers(0, 5).flatmap(_nested), kw=st.integers(0, 5).flatmap(_nested))
def test_node_arguments_round_trip_through_the_shipped_spec(obj: Any, kw: Any) -> None:
    nodes = {leaf: src(leaf.k) for leaf in LEAVES}
    n = gather(_substitute(obj, nodes), kw=_substitute(kw, nodes))
    g = build([n])
    spec = g.ship().specs[-1]
    values = [f"value-{g.nodes[d].args[0]}" for d in spec.deps]
    by_leaf = {leaf: f"value-{leaf.k}" for leaf in LEAVES}
    args, kwargs = spec.arguments(values)
    assert args == (_substitute(obj, by_leaf),)
    assert kwargs == {"kw": _substitute(kw, by_leaf)}
    assert _decoded(g)[-1].arguments(values) == (args, kwargs)


def test_fill_leaves_constants_and_unknown_objects_alone() -> None:
    marker = object()
    assert fill(marker, [1]) is marker
    assert fill(Ref(0), ["v"]) == "v"
    assert fill(Nested(dict, [("a", Ref(1)), ("b", 2)]), [0, "x"]) == {"a": "x", "b": 2}


def test_task_functions_compare_by_identity_in_the_function_table() -> None:
    def make() -> TaskFunction[..., Any]:
        @shoal.task
        def same_name(x: int) -> int:
            return x

        return same_name

    f1, f2 = make(), make()
    g = build([f1(f2(1))])
    assert g.functions == [f2, f1] and g.func_of == [0, 1]


def test_wraps_keeps_module_and_qualname() -> None:
    assert add.__module__ == __name__
    assert add.__qualname__ == "add"


def test_an_argument_that_cannot_be_pickled_is_named() -> None:
    import threading

    fine = [src(i) for i in range(70)]  # the culprit sits on the second page
    g = build([gather(fine, k=gather(1, lock=threading.Lock()))])
    with pytest.raises(TypeError, match=r"keyword argument 'lock' \(lock\) of task gather-70"):
        CODEC.encode_graph(g.ship())


def test_a_page_from_another_secret_is_refused() -> None:
    from shoal.errors import BadSignature

    page = Codec(Signer("another secret, 16+ characters")).encode_graph(build([src(1)]).ship())
    with pytest.raises(BadSignature, match="page of task specs"):
        CODEC.decode_page(page.pages[0])[0]


def test_big_constants_are_lifted_out_of_pages_once_per_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shoal.codec
    from shoal.graph.template import Lifted

    def whole_page(page: Any) -> bytes:
        raise AssertionError("a page of plainly big texts was pickled whole before lifting")

    big = "x" * 200_000
    other = [b"y" * 100_000]
    sinks = [noop(big) for _ in range(30)] + [noop(other), noop("small")]
    monkeypatch.setattr(shoal.codec, "_pickle_page", whole_page)
    encoded = CODEC.encode_graph(build(sinks).ship())
    monkeypatch.undo()
    assert len(encoded.constants) == 2  # one per object, however many tasks take it
    assert max(map(len, encoded.pages)) < 20_000
    specs, lifted = CODEC.decode_page(encoded.pages[0])
    assert set(lifted) == set(range(31))
    assert type(specs[0].args[0]) is Lifted and specs[31].args == ("small",)
    assert CODEC.load_constant(encoded.constants[specs[0].args[0].i]) == big


def test_a_plan_ships_which_children_stay_and_its_fan_ins_of_several_groups_float() -> None:
    """With a plan, a spec says which children its worker runs once it readies them: those
    of its group, and a fan-in of several groups' inputs (shoal.decisions.floating)."""
    graph = build([add(inc(src(1)), src(2))])
    assert graph.deps == [(), (0,), (), (1, 2)]
    sizes = [Size()] * 4
    plan = Plan("critical-path", "mean", sizes, [0, 0, 1, 0], [(0.0, 0.0)] * 4, 0.0, Cost())
    specs = graph.ship(plan).specs
    assert [s.stay for s in specs] == [(True,), (True,), (True,), ()]
    apart = Plan("critical-path", "mean", sizes, [0, 0, 1, 2], [(0.0, 0.0)] * 4, 0.0, Cost())
    assert [s.stay for s in graph.ship(apart).specs] == [(True,), (False,), (False,), ()]
