"""Delayed I/O and pre-load (Wukong): a worker holds its completion back for a fan-in.

When a task's only child is a fan-in that still waits for other inputs, its completion
would store the output for whoever finishes the fan-in's last input, and that worker would
download it. Instead the worker, once it has nothing else to run, holds the completion
back while it watches the run's events for the fan-in's other inputs:

- ``delayed-io``: for an output of at least the threshold, at most as long as moving it
  would take; if the other inputs all land meanwhile, its completion is the last one, so
  it keeps the fan-in and runs it with the output in memory, never uploading it.
- ``preload``: for an output of at least the threshold too, until every other input has
  landed, downloading each one as soon as it is stored; the fan-in then starts here the
  moment the last lands, its inputs in memory. A worker holding back keeps its platform
  slot, and invocations queued behind it (a concurrency cap) might be the very producers
  it waits for: when no input has landed for as long as a cold start takes and some of
  the run's invocations wait to start, at two such checks in a row, it stops holding.

Workers in the client's process (``local``) pass outputs by reference: none holds back.

One worker per fan-in holds back, so two holders never wait on each other: the producer
of its first input, or with a plan the first input planned in the fan-in's group (the
plan names the worker that runs the fan-in: :func:`holder`). Deciding is a pure function of plain
data (:func:`hold_back`); the worker loop carries it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from . import Tuning


class Hold(NamedTuple):
    """How long a worker holds its completion back: ``total`` seconds at most, and at most
    ``idle`` seconds without another input landing."""

    total: float
    idle: float


def holder(
    inputs: Sequence[int], fan_in_group: int | None, groups: Sequence[int | None]
) -> int | None:
    """The input of a fan-in whose worker holds back for it: the first; with a plan, the
    first planned in the fan-in's group (``groups``: each input's), if any."""
    if fan_in_group is None:
        return inputs[0] if inputs else None
    return next((d for d, g in zip(inputs, groups, strict=True) if g == fan_in_group), None)


def hold_back(task: int, designated: int | None, nbytes: int, tuning: Tuning) -> Hold | None:
    """Whether, and how long, the worker of ``task`` holds its completion back for its
    fan-in child, whose holder is ``designated`` (see :func:`holder`; None: it does not)."""
    if designated != task:  # another input's worker holds back, or none
        return None
    if tuning.preload and tuning.hold_idle_s > 0 and nbytes >= tuning.preload_above:
        return Hold(math.inf, tuning.hold_idle_s)
    if tuning.delay_above is None or nbytes < tuning.delay_above:
        return None
    wait = nbytes * tuning.delay_s_per_byte
    return Hold(wait, wait) if wait > 0 else None


def wants_fan_in(
    children: Sequence[int], child_deps: Sequence[int], stay: Sequence[bool] | None
) -> bool:
    """Whether a completion may be held back at all: its only child is a fan-in, which
    may run on this worker (a plan may put it elsewhere). Cheap: asked of every task."""
    return len(children) == 1 and child_deps[0] >= 2 and (stay is None or stay[0])
