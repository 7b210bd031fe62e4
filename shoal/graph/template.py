"""Argument templates: a task's arguments with every upstream node replaced by a reference.

When a task is called, its arguments are scanned once. Each distinct upstream node gets a
slot ``k`` (its position in the task's ``deps``) and is replaced by :class:`Ref` ``k``; a
container that holds nodes at any depth is rebuilt as :class:`Nested`, so that at run time
only those containers are walked again. Constants pass through untouched, uncopied.

Containers looked into: ``list``, ``tuple``, ``set``, ``frozenset``, ``dict`` (values) and
named tuples. Other objects are treated as constants, whatever they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})


class Ref:
    """Placeholder for the ``k``-th upstream value of a task."""

    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k

    def __reduce__(self) -> tuple[Any, ...]:
        return (ref, (self.k,))

    def __repr__(self) -> str:
        return f"Ref({self.k})"


_REFS = [Ref(k) for k in range(256)]


def ref(k: int) -> Ref:
    """The shared :class:`Ref` for slot ``k``."""
    return _REFS[k] if k < 256 else Ref(k)


class Lifted:
    """Placeholder for a big constant argument kept apart from the specs (see
    :meth:`shoal.codec.Codec.encode_graph`): constant ``i`` of the run."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple[Any, ...]:
        return (Lifted, (self.i,))

    def __repr__(self) -> str:
        return f"Lifted({self.i})"


class Nested:
    """A container that holds upstream references somewhere inside it."""

    __slots__ = ("kind", "items")

    def __init__(self, kind: type, items: list[Any]) -> None:
        self.kind = (
            kind  # list, tuple, set, frozenset, dict (items are (key, value)) or a namedtuple
        )
        self.items = items

    def __reduce__(self) -> tuple[Any, ...]:
        return (Nested, (self.kind, self.items))

    def __repr__(self) -> str:
        return f"Nested({self.kind.__name__}, {self.items!r})"

    def fill(self, values: Sequence[Any]) -> Any:
        kind = self.kind
        if kind is dict:
            return {key: fill(v, values) for key, v in self.items}
        filled = [fill(v, values) for v in self.items]
        if kind is list:
            return filled
        if kind is tuple or kind is set or kind is frozenset:
            return kind(filled)
        return kind(*filled)  # a named tuple


def fill(template: Any, values: Sequence[Any]) -> Any:
    """The value of one template: references replaced by ``values``."""
    t = type(template)
    if t is Ref:
        return values[template.k]
    if t is Nested:
        return template.fill(values)
    return template


def scan(obj: Any, is_node: Callable[[Any], bool], slot: Callable[[Any], Ref]) -> Any:
    """The template of ``obj``: nodes replaced by ``slot(node)``, containers rebuilt only
    when they hold a node. Recursion here follows the nesting of one argument, not the graph.
    """
    t = type(obj)
    if t in _SCALARS:
        return obj
    if is_node(obj):
        return slot(obj)
    if t is list or t is tuple or t is set or t is frozenset:
        items = [scan(v, is_node, slot) for v in obj]
        if any(type(v) is Ref or type(v) is Nested for v in items):
            return Nested(t, items)
        return obj
    if t is dict:
        pairs = [(k, scan(v, is_node, slot)) for k, v in obj.items()]
        if any(type(v) is Ref or type(v) is Nested for _, v in pairs):
            return Nested(dict, pairs)
        return obj
    if isinstance(obj, tuple) and hasattr(t, "_fields"):
        items = [scan(v, is_node, slot) for v in obj]
        if any(type(v) is Ref or type(v) is Nested for v in items):
            return Nested(t, items)
    return obj


def refs_in(template: Any) -> set[int]:
    """The slots a template refers to."""
    t = type(template)
    if t is Ref:
        return {template.k}
    if t is Nested:
        items = template.items if template.kind is not dict else [v for _, v in template.items]
        return set().union(*map(refs_in, items)) if items else set()
    return set()


def renumber(template: Any, slots: dict[int, int]) -> Any:
    """``template`` with each reference to slot ``k`` made one to ``slots[k]``."""
    t = type(template)
    if t is Ref:
        return ref(slots[template.k])
    if t is Nested:
        if template.kind is dict:
            return Nested(dict, [(key, renumber(v, slots)) for key, v in template.items])
        return Nested(template.kind, [renumber(v, slots) for v in template.items])
    return template
