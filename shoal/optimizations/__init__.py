"""Wukong's optimizations and Shoal's own, each switchable per run (``compute(optimizations=…)``):

    cluster     a task whose output is large keeps every child of a fan-out it readies on
                its own worker, which reads the output from memory: nothing is uploaded
                for them, no worker is started for them; and one feeding a fan-in whose
                other inputs its worker makes waits for them unstored (:mod:`.cluster`)
    invoke-tree a wide hand-out goes out through a tree of invokers, each sending on a
                share as it starts, so the last worker starts after O(log n) invocation
                rounds, not O(n) (:mod:`.tree`); on unless a list leaves it out
    delayed-io  a task whose large output feeds a fan-in that still waits for other inputs
                holds its completion back for a while (no longer than moving the output
                would take), so that it is the fan-in's last input and runs it with the
                output in memory (:mod:`.fanin`)
    prewarm     a worker that starts asks its platform to warm workers of the sizes its
                tasks' children need, where they differ from its own, when the plan
                says (:mod:`.prewarm`)
    preload     the same worker waits for every other input of the fan-in, downloading
                each as soon as it is stored, and runs the fan-in the moment the last
                lands (:mod:`.fanin`)
    share       a worker holding several ready tasks whose inputs are in the store hands
                some to new workers while the run has fewer than the platform runs at
                once, so that no worker runs alone what several could (:mod:`.share`);
                on unless a list leaves it out
    rank        of its ready tasks, a worker runs first one whose path ahead is much
                longer than that of the task depth first would run next, by how long each
                task ran in the workflow's newest run in the history
                (:func:`shoal.planning.rank_tasks`, :func:`shoal.decisions.most_urgent`):
                a branch that leads to little waits while the critical path goes on; on
                unless a list leaves it out, without a plan

``optimizations=None`` (the default, or ``$SHOAL_OPTIMIZATIONS`` unset) leaves them to the
planner: ``planner="optimizing"`` turns one on for a task where the simulator predicts it
pays; the other planners, and every planner without history, turn none on. A list forces
exactly the named ones on, for every task where they apply, and the others off: ``[]``
(or ``$SHOAL_OPTIMIZATIONS=none``) turns them all off.

What a worker needs to apply a forced optimization travels with every invocation as a
:class:`Tuning`, its thresholds taken from the backend model (the history's measured
bandwidths and hand-out times, or the model's defaults), not constants.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..planning.model import BackendModel

#: The optimizations by name, as ``compute(optimizations=[...])`` takes them.
NAMES = ("cluster", "invoke-tree", "delayed-io", "preload", "prewarm", "share", "rank")
OPTIMIZATIONS_ENV = "SHOAL_OPTIMIZATIONS"
#: Overrides the cluster threshold (bytes) of :func:`tuning_for`, e.g. to see clustering
#: act on small outputs.
CLUSTER_ABOVE_ENV = "SHOAL_CLUSTER_ABOVE"


def check_optimizations(value: Iterable[str] | str | None) -> frozenset[str] | None:
    """The optimizations forced on (a set, maybe empty), or None to leave them to the
    planner; :class:`~shoal.ConfigError` for a name that is not one, before anything runs.
    A string is read as names separated by commas (``"none"``: none)."""
    if value is None:
        value = os.environ.get(OPTIMIZATIONS_ENV)
        if value is None:
            return None
    if isinstance(value, str):
        value = [] if value.strip() in ("", "none") else value.split(",")
    try:
        names = [str(name).strip() for name in value]
    except TypeError:
        raise ConfigError(
            f"optimizations must be a list of names, None or a string, got {value!r}"
        ) from None
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise ConfigError(
            f"unknown optimization{'s' if len(unknown) > 1 else ''} {listed}: expected some "
            f"of {', '.join(NAMES)} (or [] for none)"
        )
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class Tuning:
    """The optimizations a run forces on, as its workers apply them.

    ``cluster_above``: a completion whose output is at least this many bytes keeps every
    child of a fan-out it readies (None: clustering is off); ``aside_above``: one whose
    output of at least this many bytes feeds a fan-in this worker will make waits for it
    unstored (:mod:`.cluster`). ``tree``: wide hand-outs go out through a
    tree of invokers. ``delay_above``: an output of at least this many bytes feeding a
    fan-in may be held back (delayed I/O), for up to ``delay_s_per_byte`` seconds per byte
    of it (what moving it would take). ``preload``: the fan-in's waiting worker waits for
    all its inputs, downloading each as it is stored, where its own output is at least
    ``preload_above`` bytes (small outputs have nothing to read ahead); after
    ``hold_idle_s`` seconds (a
    cold start's time) without one landing, it checks that no invocation waits for its
    platform slot. ``prewarm``: a worker warms workers of its children's sizes, each
    ``warm_after`` seconds after it starts (a plan's timing, by task; none: at once).
    ``share``: a worker hands ready tasks of its own to new workers while the platform has
    room for them. ``ranked``: the specs carry ranks (a history's): a worker runs first,
    of its ready tasks, one with a much longer path ahead than depth first's next."""

    cluster_above: float | None = None
    aside_above: float | None = None
    tree: bool = False
    delay_above: float | None = None
    delay_s_per_byte: float = 0.0
    preload: bool = False
    preload_above: float = 0.0
    hold_idle_s: float = 0.0
    prewarm: bool = False
    warm_after: tuple[tuple[int, float], ...] = ()
    share: bool = False
    ranked: bool = False


OFF = Tuning()
#: Without a list, an output of at least this many bytes feeding a fan-in its worker will
#: make waits for it unstored: stored, only that worker would read it back, from memory
#: (a tree reduction's partial results: the word count's Counters, 5 to 14 % of its run).
ASIDE_ABOVE = 16 << 10
#: Without a list: what needs no plan to pay (a wide hand-out goes out as a tree, idle
#: capacity takes a busy worker's ready tasks, the history's ranks order them, and an
#: output its own worker will read waits unstored).
DEFAULT = Tuning(tree=True, share=True, ranked=True, aside_above=ASIDE_ABOVE)


def tuning_for(forced: frozenset[str] | None, model: BackendModel | None) -> Tuning:
    """The thresholds for the ``forced`` optimizations (None: the default, without a
    list) on a backend as ``model`` knows it (None: one that moves no bytes, its workers
    sharing the client's memory)."""
    if forced is None:
        return DEFAULT
    large = cluster_threshold(model) if forced & {"cluster", "delayed-io", "preload"} else None
    delay = "delayed-io" in forced
    preload = "preload" in forced and model is not None  # by reference: nothing to read
    return Tuning(
        cluster_above=large if "cluster" in forced else None,
        aside_above=aside_threshold(model) if "cluster" in forced else None,
        tree="invoke-tree" in forced,
        delay_above=large if delay else None,
        delay_s_per_byte=_move_s_per_byte(model) if delay else 0.0,
        preload=preload,
        preload_above=large if preload and large is not None else 0.0,  # worth holding
        hold_idle_s=model.handout_cold_s if preload and model is not None else 0.0,
        prewarm="prewarm" in forced and model is not None,
        share="share" in forced,
        ranked="rank" in forced,
    )


def _move_s_per_byte(model: BackendModel | None) -> float:
    """Seconds to move a byte to another worker: its upload and download."""
    return 0.0 if model is None else model.write_s_per_byte + model.read_s_per_byte


def aside_threshold(model: BackendModel | None) -> float:
    """The output size from which a completion waits unstored for a fan-in its worker will
    make: where storing and reading it back takes longer than the worker loop's own step
    between two tasks (that is all waiting costs)."""
    return _costlier_to_move(model, lambda m: m.gap_s)


def cluster_threshold(model: BackendModel | None) -> float:
    """The output size from which keeping a task's children on its worker beats handing
    them out: where moving the output to another worker (its upload and download, at the
    backend's measured bandwidth) takes longer than starting one warm."""
    return _costlier_to_move(model, lambda m: m.handout_warm_s)


def _costlier_to_move(model: BackendModel | None, than: Callable[[BackendModel], float]) -> float:
    """The output size from which moving it (up and down) takes longer than ``than`` of
    the model; infinite where outputs move for free (workers in the client's process).
    ``$SHOAL_CLUSTER_ABOVE`` overrides it."""
    override = os.environ.get(CLUSTER_ABOVE_ENV)
    if override:
        try:
            return float(override)
        except ValueError:
            raise ConfigError(
                f"${CLUSTER_ABOVE_ENV} must be a number of bytes, got {override!r}"
            ) from None
    per_byte = _move_s_per_byte(model)
    if model is None or per_byte <= 0:
        return math.inf
    return than(model) / per_byte
