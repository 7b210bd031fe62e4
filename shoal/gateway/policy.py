"""The gateway's decisions as pure functions over plain data: where an invocation runs,
and which idle worker processes retire."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..backends import Size


@dataclass(slots=True)
class ProcessInfo:
    """What the gateway knows of one worker process."""

    id: int
    size: Size
    busy: bool
    idle_since: float  # when it last finished (or started), on a monotonic clock
    env: str = ""  # the key of the requirement set its environment has ("": the gateway's)


class Place(StrEnum):
    WARM = "warm"  # reuse an idle process of the right size
    COLD = "cold"  # start a new process
    WAIT = "wait"  # queue: the concurrency cap is reached


@dataclass(frozen=True, slots=True)
class Placement:
    place: Place
    process: int | None = None  # the warm process to use
    retire: int | None = None  # an idle process to stop first, to make room


def place(
    size: Size, processes: Sequence[ProcessInfo], cap: int, limit: int, env: str = ""
) -> Placement:
    """Where an invocation for a worker of ``size`` in environment ``env`` runs: pools
    are per (size, environment).

    At most ``cap`` processes are busy at once (the concurrency cap) and at most ``limit``
    exist. A warm idle process of the same size is preferred, the most recently used one
    (its caches are the warmest); else a new process starts, after retiring the idle
    process unused for longest if ``limit`` is reached.
    """
    if sum(p.busy for p in processes) >= cap:
        return Placement(Place.WAIT)
    idle = [p for p in processes if not p.busy]
    same = [p for p in idle if p.size == size and p.env == env]
    if same:
        return Placement(Place.WARM, process=max(same, key=lambda p: p.idle_since).id)
    if len(processes) < limit:
        return Placement(Place.COLD)
    if not idle:
        return Placement(Place.WAIT)
    return Placement(Place.COLD, retire=min(idle, key=lambda p: p.idle_since).id)


def expired(processes: Sequence[ProcessInfo], now: float, keep_warm_s: float) -> list[int]:
    """Idle processes unused for ``keep_warm_s`` or longer: they retire."""
    return [p.id for p in processes if not p.busy and now - p.idle_since >= keep_warm_s]


def cpu_set(cpus: float, available: Sequence[int], start: int) -> list[int]:
    """The CPUs a worker of ``cpus`` CPUs is pinned to: ``ceil(cpus)`` of ``available``,
    taken round-robin from ``start`` so that workers spread over the machine."""
    n = min(len(available), max(1, math.ceil(cpus)))
    return [available[(start + i) % len(available)] for i in range(n)]
