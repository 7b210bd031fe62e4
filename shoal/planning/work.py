"""The simulator's plain data (:mod:`.simulate`): a graph's shape, what each task is
predicted to do, and the schedule predicted of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..backends import Size
from ..history.records import Cost


class Shape(NamedTuple):
    """A graph as plain data: each task's inputs and children, and the sinks."""

    deps: Sequence[Sequence[int]]
    children: Sequence[Sequence[int]]
    sinks: frozenset[int]

    @classmethod
    def of(cls, graph: object) -> Shape:
        return cls(graph.deps, graph.children, frozenset(graph.sinks))  # type: ignore[attr-defined]

    @property
    def roots(self) -> list[int]:
        return [t for t, d in enumerate(self.deps) if not d]


def bottom_levels(shape: Shape, seconds: Sequence[float]) -> list[float]:
    """Longest path from each task to the end of the graph, itself included."""
    level = list(seconds)
    for t in range(len(seconds) - 1, -1, -1):
        below = max((level[c] for c in shape.children[t]), default=0.0)
        level[t] = seconds[t] + below
    return level


@dataclass
class Work:
    """What each task does, as predicted: seconds on its size (its inputs in hand), CPUs
    it keeps busy, output bytes, the size of the worker it wants, the seconds its worker
    loop takes after it (the completion step; None: the backend's usual), and the seconds
    per byte it runs longer for inputs it reads from the store (a blob's pages faulted in
    as it touches them; None: none), and the seconds its loop takes after it where its
    output stays home, unwritten (None: as ``gap``)."""

    duration: list[float]
    demand: list[float]
    out_bytes: list[float]
    size: list[Size]
    gap: list[float] | None = None
    touch: list[float] | None = None
    home_gap: list[float] | None = None


@dataclass
class Schedule:
    start: list[float]  # seconds from the first task start
    end: list[float]
    worker: list[int]
    makespan_s: float
    cost: Cost
    workers: int
