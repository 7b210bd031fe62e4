"""Wide fan-outs handed out by a tree of invokers (Wukong): a worker has at most
:data:`BRANCHING` invocations in flight, as a FaaS client's connection pool allows, so
handing out n invocations one round after another starts the last worker n / BRANCHING
invocation latencies late. Instead it invokes BRANCHING of them, each carrying an even
share of the rest to invoke in turn as it starts: the last worker starts after about
log_BRANCHING(n) rounds.

Every invocation of the fan-out is handed off (its tasks leased to it, pending) before
any is sent, so one whose invoker dies first is recovered like any lost invocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

#: Invocations a worker (or the client) has in flight at once, and so the tree's width:
#: a FaaS client's pool of connections (boto3 keeps 10) on a small worker.
BRANCHING = 8


def split_tree(items: Sequence[T], branching: int = BRANCHING) -> list[tuple[T, list[T]]]:
    """The invocations to send now, each with those it forwards as it starts: all of them
    with nothing to forward when there are at most ``branching``; else ``branching`` heads,
    each with an even share of the rest (which it splits the same way)."""
    if len(items) <= branching:
        return [(item, []) for item in items]
    rest = items[branching:]
    return [(items[k], list(rest[k::branching])) for k in range(branching)]
