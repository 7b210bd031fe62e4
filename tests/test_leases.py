"""The lease decisions (shoal.leases), pure: random interleavings of hand-outs, claims
(duplicated and late), completions (also by workers whose lease was lost), heartbeats,
crashes, the passing of time and recoveries. No task is lost, none is recovered twice for
one loss, and no invocation is claimed twice."""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shoal import leases
from shoal.leases import LeaseTable

LEASE_S = 10.0
# A forest: task t's parent is PARENT[t] (None: a root).
PARENT = [None, None, 0, 0, 1, 2, 2, 4, 4, 4]
CHILDREN = {t: [c for c, p in enumerate(PARENT) if p == t] for t in range(len(PARENT))}


class Leases(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = LeaseTable()
        self.now = 0.0
        self.ids = itertools.count()
        self.finished: set[int] = set()
        self.in_flight: list[tuple[str, str, tuple[int, ...]]] = []  # (id, parent, tasks)
        self.workers: dict[str, bool] = {}  # invocation -> still believes it holds its lease
        self.claims: dict[str, int] = {}
        roots = [t for t, p in enumerate(PARENT) if p is None]
        inv = self.new_id()
        leases.hand_off(self.table, self.now, "", [(inv, roots)], LEASE_S)
        self.in_flight.append((inv, "", tuple(roots)))

    def new_id(self) -> str:
        return f"i{next(self.ids)}"

    def ready(self) -> list[int]:
        return [
            t
            for t, p in enumerate(PARENT)
            if t not in self.finished and (p is None or p in self.finished)
        ]

    # ----------------------------------------------------------------- rules
    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), again=st.booleans())
    def deliver(self, data: st.DataObject, again: bool) -> None:
        """A backend starts a worker on an invocation (maybe twice: at least once)."""
        i = data.draw(st.integers(0, len(self.in_flight) - 1))
        inv, parent, tasks = self.in_flight[i] if again else self.in_flight.pop(i)
        if leases.claim(self.table, self.now, inv, parent, tasks, f"w-{inv}", LEASE_S):
            self.claims[inv] = self.claims.get(inv, 0) + 1
            self.workers[inv] = True

    @precondition(lambda self: self.workers)
    @rule(data=st.data(), hand_out=st.booleans())
    def complete(self, data: st.DataObject, hand_out: bool) -> None:
        """A worker (even one whose lease was lost, not knowing it yet) finishes a task it
        was given; its first completion readies the children, which it keeps or hands
        out."""
        inv = data.draw(st.sampled_from(sorted(self.workers)))
        mine = [t for t in self.ready() if self.table.owners.get(t) == inv]
        if not mine:
            return
        task = data.draw(st.sampled_from(mine))
        if task in self.finished:
            return
        self.finished.add(task)
        children = CHILDREN[task]
        for child in children:  # the store's completion step
            self.table.owners[child] = inv
        if hand_out and children and self.workers[inv]:
            new = self.new_id()
            leases.hand_off(self.table, self.now, inv, [(new, tuple(children))], LEASE_S)
            self.in_flight.append((new, inv, tuple(children)))

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        inv = data.draw(st.sampled_from(sorted(self.workers)))
        if not leases.renew(self.table, self.now, inv, LEASE_S, task=None):
            self.workers[inv] = False  # it stops at its next task boundary

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        """A worker stops: released when it owns nothing (or knows its lease is lost),
        else it crashed (no release: its lease runs out)."""
        inv = data.draw(st.sampled_from(sorted(self.workers)))
        owns = any(self.table.owners.get(t) == inv for t in self.ready())
        if not owns or not self.workers[inv]:
            leases.release(self.table, inv)
        del self.workers[inv]

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def recover(self) -> None:
        base = self.new_id()
        got = leases.recover(
            self.table,
            self.now,
            self.ready(),
            self.finished.__contains__,
            lambda k: f"{base}-{k}",
            LEASE_S,
        )
        recovered = [t for r in got for t in r.tasks]
        assert len(recovered) == len(set(recovered)), "a task recovered twice in one step"
        for r in got:
            self.in_flight.append((r.invocation, "", r.tasks))
        again = leases.recover(
            self.table, self.now, self.ready(), self.finished.__contains__, str, LEASE_S
        )
        assert again == [], "one loss recovered twice"

    # ----------------------------------------------------------------- invariants
    @invariant()
    def every_ready_task_has_an_owner(self) -> None:
        for t in self.ready():
            assert t in self.table.owners, f"task {t} is ready and owned by nobody"

    @invariant()
    def no_invocation_is_claimed_twice(self) -> None:
        assert all(n == 1 for n in self.claims.values())

    @invariant()
    def nothing_is_lost_for_good(self) -> None:
        """Once every lease ran out, a recovery finds each ready task a live owner."""
        table = LeaseTable(
            {k: leases.Lease(v.expires, v.claimed) for k, v in self.table.leases.items()},
            dict(self.table.owners),
            set(self.table.claimed),
            dict(self.table.losses),
        )
        later = self.now + 2 * LEASE_S
        leases.recover(table, later, self.ready(), self.finished.__contains__, str, LEASE_S)
        for t in self.ready():
            assert leases.alive(table.leases.get(table.owners[t]), later), f"task {t} lost"


Leases.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestLeases = Leases.TestCase


def test_a_claim_after_recovery_is_refused() -> None:
    table = LeaseTable()
    leases.hand_off(table, 0.0, "", [("a", [0, 1])], LEASE_S)
    assert leases.claim(table, 1.0, "a", "", [0, 1], "w1", LEASE_S)
    got = leases.recover(table, 20.0, [0, 1], lambda t: False, lambda k: f"b{k}", LEASE_S)
    assert [(r.lost, r.worker, r.invocation, r.tasks, r.losses) for r in got] == [
        ("a", "w1", "b0", (0, 1), (1, 1))
    ]
    assert not leases.renew(table, 21.0, "a", LEASE_S)  # the slow worker learns it
    assert not leases.claim(table, 21.0, "a", "", [0, 1], "w1", LEASE_S)  # a redelivery
    assert leases.claim(table, 21.0, "b0", "", [0, 1], "w2", LEASE_S)


def test_a_dead_worker_is_recovered_before_its_lease_expires() -> None:
    table = LeaseTable()
    leases.hand_off(table, 0.0, "", [("a", [0])], LEASE_S)
    assert leases.claim(table, 0.0, "a", "", [0], "w1", LEASE_S)
    assert leases.recover(table, 1.0, [0], lambda t: False, str, LEASE_S) == []
    (r,) = leases.recover(table, 1.0, [0], lambda t: False, str, LEASE_S, dead=["a"])
    assert r.tasks == (0,) and r.lost == "a"


def test_a_pending_lease_of_a_queue_in_this_process_never_expires() -> None:
    table = LeaseTable()
    leases.hand_off(table, 0.0, "", [("a", [0])], 0.0)
    assert leases.expired(table, 1e9) == []
    assert leases.recover(table, 1e9, [0], lambda t: False, str, LEASE_S) == []


def test_a_run_whose_client_lost_its_lease_is_abandoned() -> None:
    table = LeaseTable()
    assert not leases.abandoned(table, 1e9)  # no client lease: nothing to judge by
    assert leases.claim(table, 0.0, leases.CLIENT, "", (), leases.CLIENT, LEASE_S)
    assert not leases.abandoned(table, LEASE_S / 2)
    assert leases.renew(table, LEASE_S / 2, leases.CLIENT, LEASE_S)
    assert not leases.abandoned(table, LEASE_S)
    assert leases.abandoned(table, 2 * LEASE_S)
