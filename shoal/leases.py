"""Leases: who owns which ready task, and what happens when an owner disappears. Pure
decisions over plain data; the memory store applies them under a lock, the Redis store's
scripts (:mod:`shoal.stores.scripts`) do the same in Lua.

Every invocation has an id and, while it lives, a lease: *pending* from when it is handed
to a backend until a worker claims it (renewed by a backend that queues it, such as the
gateway), *claimed* while a worker runs it (renewed by the worker's heartbeat thread).
Every task that is ready but not finished has exactly one owner, an invocation:

- the client hands the roots to their invocations (:func:`hand_off`);
- a completion makes its invocation the owner of each child it readies (the store's
  completion step); a worker hands those it does not keep to new invocations
  (:func:`hand_off`), each of which takes them over when its worker claims it;
- a worker claims an invocation once (:func:`claim`): a second delivery or a replayed
  payload, or one whose tasks were recovered meanwhile, is refused before any user code;
- a worker that stops releases its lease (:func:`release`): by then it owns nothing.

The client holds a lease too (:data:`CLIENT`): a run whose client was killed is deleted by
the next heartbeat of any of its workers (or of a backend keeping its queue), instead of
waiting for its keys' TTL.

Whoever sees a lease expire (the waiting client) calls :func:`recover` with the tasks it
knows to be ready and unfinished: those whose owner's lease expired (or is gone, or was
reported dead) move, in one atomic step, to a new pending invocation per lost owner, and
each counts one loss against its retries. The client also calls it when no invocation of
a run is live but results are missing: a ready task can then only be owned by a worker that
stopped without running it (a bug, never by design), and it is recovered, not waited for
forever. A second call finds them owned by a live lease:
each expiry is recovered exactly once. A lost worker that was only slow finds its lease
gone at its next heartbeat and stops at its next task boundary; if it completes a task
first, the completion's marks are idempotent, so results are still recorded once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

#: A pending lease that never expires: the backend's queue lives in the client's process.
NEVER = 0.0
#: The lease of the run's client, renewed by its heartbeat: when it expires, the client is
#: gone (killed) and the run is abandoned: the next heartbeat of any worker deletes it.
CLIENT = "client"


@dataclass(slots=True)
class Lease:
    """One invocation's lease. ``expires`` on the store's clock (:data:`NEVER`: never)."""

    expires: float
    claimed: bool = False
    worker: str = ""
    task: int | None = None  # the task its worker runs now, as of its last heartbeat


@dataclass(slots=True)
class LeaseTable:
    """A run's leases, the owner of each ready task, the invocations ever claimed, and the
    losses counted per task."""

    leases: dict[str, Lease] = field(default_factory=dict)
    owners: dict[int, str] = field(default_factory=dict)
    claimed: set[str] = field(default_factory=set)
    losses: dict[int, int] = field(default_factory=dict)


class Recovered(NamedTuple):
    """Tasks taken from a lost invocation and given to a new pending one."""

    lost: str  # the lost invocation
    worker: str  # its worker, if it had claimed it
    running: int | None  # the task its worker last said it ran
    invocation: str  # the new one
    tasks: tuple[int, ...]
    losses: tuple[int, ...]  # per task, the losses counted so far (this one included)


class Invocations(NamedTuple):
    """A run's live invocations: ``waiting``, handed out and not yet claimed (queued for a
    platform's concurrency cap, or starting); ``running``, claimed by a worker."""

    waiting: int
    running: int


def live(table: LeaseTable) -> int:
    """How many of the run's invocations are handed out or running (the client's lease is
    none of them)."""
    return len(table.leases) - (CLIENT in table.leases)


def count(table: LeaseTable) -> Invocations:
    """The run's live invocations (the client's lease is not one)."""
    waiting = running = 0
    for invocation, lease in table.leases.items():
        if lease.claimed:
            running += invocation != CLIENT
        else:
            waiting += 1
    return Invocations(waiting, running)


def _expiry(now: float, lease_s: float) -> float:
    return NEVER if lease_s <= 0 else now + lease_s


def hand_off(
    table: LeaseTable,
    now: float,
    parent: str,
    handed: Iterable[tuple[str, Sequence[int]]],
    lease_s: float,
) -> None:
    """``parent`` (``""``: the client) hands each ``(invocation, tasks)`` over: the tasks it
    owns pass to the invocation, under a pending lease of ``lease_s`` (0: never expires).
    An invocation already claimed took its tasks itself; tasks recovered meanwhile stay
    with their new owner."""
    owners = table.owners
    for invocation, tasks in handed:
        if invocation in table.claimed:
            continue
        moved = False
        for task in tasks:
            if owners.get(task, "") == parent:
                owners[task] = invocation
                moved = True
        if moved:
            table.leases[invocation] = Lease(_expiry(now, lease_s))


def claim(
    table: LeaseTable,
    now: float,
    invocation: str,
    parent: str,
    tasks: Sequence[int],
    worker: str,
    lease_s: float,
) -> bool:
    """A worker starts on ``invocation``: True if it may run it, under a claimed lease.
    False for an invocation claimed before (a redelivery, a replay) or one whose tasks
    belong to someone else now (recovered after its lease expired)."""
    if invocation in table.claimed:
        return False
    owners = table.owners
    if any(owners.get(t, parent) not in (invocation, parent) for t in tasks):
        return False
    table.claimed.add(invocation)
    for task in tasks:
        owners[task] = invocation
    table.leases[invocation] = Lease(_expiry(now, lease_s), True, worker)
    return True


def renew(
    table: LeaseTable, now: float, invocation: str, lease_s: float, task: int | None = None
) -> bool:
    """Extend ``invocation``'s lease (a worker's heartbeat, with the task it runs; or a
    backend keeping a queued invocation alive). False when the lease is gone: its tasks
    were recovered, or the run ended."""
    lease = table.leases.get(invocation)
    if lease is None:
        return False
    lease.expires = _expiry(now, lease_s)
    if task is not None:
        lease.task = task
    return True


def release(table: LeaseTable, invocation: str) -> None:
    """The worker of ``invocation`` stopped: it owns nothing any more."""
    table.leases.pop(invocation, None)


def abandoned(table: LeaseTable, now: float) -> bool:
    """Whether the run's client lost its lease (it holds one while it waits)."""
    lease = table.leases.get(CLIENT)
    return lease is not None and not alive(lease, now)


def alive(lease: Lease | None, now: float) -> bool:
    return lease is not None and (lease.expires == NEVER or lease.expires >= now)


def expired(table: LeaseTable, now: float) -> list[str]:
    """Invocations whose lease ran out."""
    return [inv for inv, lease in table.leases.items() if not alive(lease, now)]


def recover(
    table: LeaseTable,
    now: float,
    candidates: Iterable[int],
    finished: Callable[[int], bool],
    new_id: Callable[[int], str],
    lease_s: float,
    dead: Iterable[str] = (),
) -> list[Recovered]:
    """Give the ``candidates`` (tasks believed ready and unfinished) whose owner is lost
    (its lease expired or gone, or it is in ``dead``) to new pending invocations, one per
    lost owner, named by ``new_id(k)``. Expired leases are dropped, owning or not."""
    dead = set(dead)
    lost: dict[str, list[int]] = {}
    for task in candidates:
        owner = table.owners.get(task)
        if owner is None or finished(task):
            continue
        if owner in dead or not alive(table.leases.get(owner), now):
            lost.setdefault(owner, []).append(task)
    gone = {
        inv: table.leases.pop(inv) for inv in [*expired(table, now), *dead] if inv in table.leases
    }
    out = []
    for k, (owner, tasks) in enumerate(lost.items()):
        invocation = new_id(k)
        lease = gone.get(owner) or Lease(now)
        losses = []
        for task in tasks:
            table.owners[task] = invocation
            table.losses[task] = table.losses.get(task, 0) + 1
            losses.append(table.losses[task])
        table.leases[invocation] = Lease(_expiry(now, lease_s))
        out.append(
            Recovered(owner, lease.worker, lease.task, invocation, tuple(tasks), tuple(losses))
        )
    return out
