"""The worker-backend protocol: how a worker is started. Everything a worker does once
started is the one worker loop in :mod:`shoal.protocol`."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import ssl
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ..graph.spec import pages_of
from ..optimizations import OFF, Tuning
from ..optimizations.tree import BRANCHING, split_tree

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..graph import EncodedGraph, ShippedGraph, TaskOptions
    from ..security import Signer
    from ..stores import Store


class Size(NamedTuple):
    """A worker's size, as FaaS platforms sell them."""

    cpus: float = 1.0
    memory_mb: int = 2048

    @classmethod
    def fitting(cls, options: Iterable[TaskOptions]) -> Size:
        """The smallest size that fits every task; a task that sets no size needs the
        default one."""
        default = cls()
        sizes = [(o.cpus or default.cpus, o.memory_mb or default.memory_mb) for o in options]
        if not sizes:
            return default
        return cls(max(c for c, _ in sizes), max(m for _, m in sizes))


class Platform(NamedTuple):
    """What a backend tells the planners of where its workers run."""

    #: CPUs its workers share (one machine), or None when each worker has its own.
    cpus: float | None
    #: How long an idle worker stays warm.
    keep_warm_s: float
    #: Warm idle workers now, per size.
    idle: dict[Size, int]
    #: CPUs per MB of memory when the platform sells CPU by memory (Lambda), else None.
    cpu_per_mb: float | None = None
    #: Workers alive at most, idle ones included (a new one retires the idlest), if any.
    alive: int | None = None
    #: How long one invocation request takes (a FaaS invoke API's latency).
    invoke_latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Invocation:
    """One request to start a worker on some ready tasks of a run."""

    run_id: str
    tasks: tuple[int, ...]
    fanout: int  # how many workers the backend can usefully spread a fan-out over
    #: The graph travelling with the invocation, so the worker reads none: as objects for
    #: workers in the client's process, as signed blobs for others; None: in the store.
    graph: ShippedGraph | EncodedGraph | None = None
    storage: str = ""  # the store's URL, for workers in other processes
    workers: str = ""  # where a worker hands out work: this backend's URL
    #: The signed pages of specs holding ``tasks``, when the graph does not travel whole
    #: (saves store reads).
    pages: dict[int, bytes] | None = None
    size: Size = Size()  # of the worker to run it on
    metrics: str = "batch"  # the upload policy of task metrics (shoal.metrics)
    sent: float = 0.0  # wall clock when it was handed to the backend
    #: Sent in the place of another of its hand-out (more than an invoker keeps in flight):
    #: from sending that one to sending this, the request as its invoker waited for it.
    request_s: float | None = None
    #: Its id, claimed once in the store by the worker that runs it (:mod:`shoal.leases`),
    #: and the invocation that handed it out ("": the client).
    id: str = ""
    parent: str = ""
    lease_s: float = 10.0  # its lease, renewed by a heartbeat a quarter as long
    #: Tasks whose outputs were lost with a worker: run again first, only for their outputs.
    redo: tuple[int, ...] = ()
    expires: float = 0.0  # wall clock after which a worker refuses it (0: never)
    tuning: Tuning = OFF  # the optimizations the run forces on (shoal.optimizations)
    #: Invocations its worker sends on as it starts: a share of a wide fan-out, handed out
    #: by a tree of invokers (shoal.optimizations.tree).
    forward: tuple[Forward, ...] = ()
    #: The requirement set of its tasks (normalised, :mod:`shoal.envs`): the worker runs in
    #: an environment that has them; a platform picks the pool (or function) by its key.
    requirements: tuple[str, ...] = ()
    #: Whether the run's tasks have several requirement sets: then a worker looks at its
    #: tasks' children's before keeping one (cheap, but not free: only where needed).
    mixed: bool = False

    def handing_out(
        self,
        tasks: Sequence[int],
        pages: dict[int, bytes] | None,
        size: Size,
        requirements: tuple[str, ...] | None = None,
    ) -> Invocation:
        """The invocation a worker of this one sends for ``tasks`` it hands out, now
        (``requirements``: theirs, when they differ from this invocation's)."""
        return replace(
            self,
            tasks=tuple(tasks),
            pages=pages,
            size=size,
            requirements=self.requirements if requirements is None else requirements,
            sent=time.time(),
            request_s=None,
            id=new_invocation_id(),
            parent=self.id,
            redo=(),
            forward=(),  # a tree head's share went out as it started: not again
        )

    def forwarding(self, share: Sequence[Invocation]) -> Invocation:
        """This invocation carrying ``share`` (invocations of the same hand-out) for its
        worker to send on, with the pages of their tasks."""
        if not share:
            return self
        pages = self.pages
        if pages is not None:
            pages = dict(pages)
            for other in share:
                pages.update(other.pages or {})
        forward = tuple(Forward(i.id, i.tasks, i.size, i.redo, i.requirements) for i in share)
        return replace(self, forward=forward, pages=pages)

    def forwarded(self) -> list[Invocation]:
        """The invocations this one carries, to send on now (from the same hand-out: their
        tasks were handed off to them already)."""
        now, pages = time.time(), self.pages
        return [
            replace(
                self,
                tasks=f.tasks,
                id=f.id,
                size=f.size,
                redo=f.redo,
                requirements=f.requirements,
                pages=None
                if pages is None
                else {p: pages[p] for p in pages_of(f.tasks) if p in pages},
                forward=(),
                sent=now,
            )
            for f in self.forward
        ]


class Forward(NamedTuple):
    """An invocation a worker sends on as it starts (see :attr:`Invocation.forward`)."""

    id: str
    tasks: tuple[int, ...]
    size: Size
    redo: tuple[int, ...] = ()
    requirements: tuple[str, ...] = ()


def new_invocation_id() -> str:
    return os.urandom(8).hex()


class Workers(Protocol):
    """Everything the engine asks of a worker backend; a new backend is written from this
    alone and registered by URL scheme in :data:`shoal.backends.BACKENDS`."""

    #: Where workers hand out more work (for a private gateway: known once started).
    url: str
    #: How many workers run at once at most; the fan-out hint for handing out work.
    parallelism: int
    #: True when workers are threads of this process: they get the graph by reference.
    in_process: bool
    #: True when the client starts these workers itself and may make up their secret.
    private: bool
    #: True when every worker runs on the client's host: they can share files (blobs).
    same_host: bool
    #: The kind of platform ("local", "gateway", "http", "lambda"): history and plans are
    #: kept per kind, as timings on one say nothing of another.
    kind: str

    @classmethod
    def from_url(cls, url: str) -> Workers:
        """The backend for ``url``; :class:`~shoal.ConfigError` for a URL it cannot use."""

    async def start(self, store: Store, signer: Signer | None) -> None:
        """Get ready to run workers of runs kept in ``store``, signing with ``signer``."""

    async def invoke(self, invocation: Invocation) -> None:
        """Start a worker on ``invocation`` (asynchronously: do not wait for it to finish)."""

    async def platform(self) -> Platform:
        """Where workers run, for the planners: shared CPUs, keep-warm, idle workers."""

    async def prewarm(self, cpus: float, memory_mb: int, count: int, after_s: float = 0.0) -> int:
        """Start up to ``count`` idle workers of a size ahead of need, ``after_s`` seconds
        from now where the platform can keep the time (else at once: FaaS platforms keep
        an idle instance for minutes); how many (0 where the platform cannot be asked)."""

    async def close(self, ok: bool = True) -> None:
        """Done with the run (``ok``: it finished well, so workers kept for the next run
        of this process may stay)."""


async def invoke_all(workers: Workers, invocations: Sequence[Invocation]) -> None:
    """Start a worker on each of ``invocations`` (one hand-out), at most
    :data:`~shoal.optimizations.tree.BRANCHING` in flight at once: with a platform's
    invoke latency, one after another would start the last worker N latencies late. More
    than that go out as a tree of invokers, unless the run turned it off."""
    if len(invocations) == 1:
        await workers.invoke(invocations[0])
        return
    if not invocations:
        return
    if workers.in_process:  # a queue in this process: no latency to hide
        await asyncio.gather(*(workers.invoke(i) for i in invocations))
        return
    if invocations[0].tuning.tree and len(invocations) > BRANCHING:
        heads = split_tree(invocations, BRANCHING)
        invocations = [head.forwarding(share) for head, share in heads]
    in_flight = asyncio.Semaphore(BRANCHING)
    answered: list[float] = []  # when the requests answered were sent

    async def invoke(invocation: Invocation) -> None:
        waits = in_flight.locked()  # for the place of a request in flight
        async with in_flight:  # sent now: its hand-out time is the platform's, not the queue's
            sent = time.time()
            # The place it takes is the request answered last.
            request_s = sent - answered.pop() if waits and answered else None
            try:
                await workers.invoke(replace(invocation, sent=sent, request_s=request_s))
            finally:
                answered.append(sent)

    await asyncio.gather(*(invoke(i) for i in invocations))


def verify_for(url: str) -> ssl.SSLContext | bool:
    """What an HTTP client to ``url`` verifies: the shared TLS context for https, nothing
    for plain http (building a context costs a cold worker tens of milliseconds)."""
    return tls_context() if url.startswith("https") else False


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context for HTTP clients. httpx would build one per client,
    loading the CA bundle each time (about 40 ms a run), even for plain http://."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()
