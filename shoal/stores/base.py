"""The store protocol: what the worker loop and the client need from shared storage.

Operations are domain steps, not key-value calls, so that each store can make a step one
atomic round trip (the memory store under a lock, Redis in one script). Decisions inside a
step come from :mod:`shoal.decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..codec import Codec
    from ..decisions import Completion
    from ..events import Event
    from ..failures import TaskFailure
    from ..graph import EncodedGraph, ShippedGraph, TaskFunction, TaskSpec
    from ..leases import Invocations, Recovered
    from ..security import Signer


class UnstorableOutput(Exception):
    """A completion step could not encode a task's output (it does not pickle, or memory
    ran out): raised from the cause, before anything of the step was written."""

    def __init__(self, task: int) -> None:
        super().__init__(f"the output of task {task} cannot be stored")
        self.task = task


class Settled(NamedTuple):
    """What a completion step did: per completion of the batch, the children it made ready
    (its worker owns them) and the bytes of its output stored (0: kept on the worker; -1: a
    redelivered completion, ignored); the pages of the ready children's specs, if asked;
    and the run's live invocations (:meth:`Store.live_invocations`) as the step saw them,
    which tells the worker for free whether the platform has room to share its work."""

    readies: list[list[int]]
    stored: list[int]
    pages: dict[int, bytes]
    live: int


class Store(Protocol):
    """Everything the engine asks of a store; a new store is written from this alone and
    registered by URL scheme in :data:`shoal.stores.STORES`."""

    url: str
    #: True when values pass by reference: only workers in this process can use the store.
    in_process: bool
    #: An invocation carries the encoded graph when it is at most this many bytes.
    inline_bytes: int
    #: Signs and checks what the store pickles; None when values pass by reference.
    codec: Codec | None

    @classmethod
    def from_url(cls, url: str, signer: Signer | None = None) -> Store:
        """The store at ``url``; ``signer`` signs what it pickles (default: from
        ``$SHOAL_SECRET``, asked for only when needed). :class:`~shoal.ConfigError` for a
        URL it cannot use."""

    async def create_run(
        self,
        run_id: str,
        graph: ShippedGraph,
        sinks: Sequence[int],
        announce: dict[str, Any] | None = None,
    ) -> EncodedGraph | None:
        """Store the graph of a new run (specs, function table and its shape for the
        dashboard) and open its stream; with ``announce``, list the run (with that JSON
        information) among the live runs until it is deleted. Returns the graph as encoded
        for workers in other processes (None if in-process only). Raises before storing
        anything if some argument cannot travel."""

    async def live_runs(self) -> dict[str, dict[str, Any]]:
        """The runs that announced themselves and still exist, with their information."""

    async def run_shape(self, run_id: str) -> dict[str, Any] | None:
        """The run's graph as :meth:`ShippedGraph.shape` made it; None when it is gone."""

    async def load_pages(self, run_id: str, pages: Sequence[int]) -> dict[int, bytes]:
        """The signed pages of specs (:data:`shoal.graph.PAGE` tasks each) of those of
        ``pages`` that exist (a worker may ask beyond the graph's end). Raises RunNotFound
        when the run is gone."""

    async def load_functions(
        self, run_id: str, indices: Sequence[int]
    ) -> list[TaskFunction[Any, Any]]: ...

    async def load_constants(self, run_id: str, indices: Sequence[int]) -> list[Any]:
        """The big constant arguments ``indices`` that the run's encoded graph lifted out of
        its specs (:meth:`shoal.codec.Codec.encode_graph`); raises RunNotFound when the run
        is gone."""

    async def get_outputs(self, run_id: str, tasks: Sequence[int]) -> tuple[list[Any], int]:
        """Outputs of finished tasks, and the bytes read to get them (0 when they pass by
        reference); raises RunNotFound when the run is gone."""

    async def complete_tasks(
        self,
        run_id: str,
        batch: Sequence[Completion],
        fanout: int,
        want_pages: bool = False,
        extra: Sequence[Event] = (),
        owner: str = "",
        specs: Mapping[int, TaskSpec] | None = None,
    ) -> Settled | None:
        """In one atomic step, store ``specs`` (of the tasks a map's expansion made, at ids
        :meth:`reserve` gave), and for each completion of ``batch``: mark every child, make the
        invocation ``owner`` the owner of each child made ready (:mod:`shoal.leases`), store
        the output where :func:`~shoal.decisions.complete_batch` says so (for a worker that
        splits what it readied over ``fanout`` workers), append the finished
        event (with the bytes stored); and append the ``extra`` events. Returns what the
        step did (with the pages of the ready children's specs if ``want_pages``), or None
        when the run is gone (finished elsewhere, failed, cancelled): the worker then
        stops."""

    async def reserve(self, run_id: str, task: int, count: int) -> int:
        """The first of ``count`` new task ids (a multiple of :data:`shoal.graph.PAGE`)
        for the expansion of map ``task`` (:mod:`shoal.graph.maps`): the same every time
        it is asked for that task. Raises RunNotFound when the run is gone."""

    # Leases (shoal.leases), each one atomic step on the store's clock.
    async def hand_off(
        self,
        run_id: str,
        parent: str,
        handed: Sequence[tuple[str, Sequence[int]]],
        lease_s: float,
    ) -> None:
        """:func:`shoal.leases.hand_off`."""

    async def claim(
        self,
        run_id: str,
        invocation: str,
        parent: str,
        tasks: Sequence[int],
        started: Event | None,
        lease_s: float,
    ) -> bool:
        """:func:`shoal.leases.claim` for ``started.worker`` (None: the client's own lease,
        :data:`shoal.leases.CLIENT`), appending ``started`` when it may run. Raises
        RunNotFound when the run is gone."""

    async def renew(self, run_id: str, held: dict[str, int | None], lease_s: float) -> list[str]:
        """:func:`shoal.leases.renew` for each invocation of ``held`` (with the task its
        worker runs); the invocations whose lease is gone (all, when the run is gone)."""

    async def release(self, run_id: str, invocation: str, events: Sequence[Event]) -> None:
        """:func:`shoal.leases.release`, appending ``events``."""

    async def expired(self, run_id: str) -> list[str]:
        """Invocations whose lease ran out (:func:`shoal.leases.expired`)."""

    async def recover(
        self,
        run_id: str,
        candidates: Sequence[int],
        prefix: str,
        lease_s: float,
        dead: Sequence[str] = (),
    ) -> list[Recovered]:
        """:func:`shoal.leases.recover`, naming the new invocations ``prefix`` and a number;
        the ``finished`` test is the marks'. Raises RunNotFound when the run is gone."""

    async def stored(self, run_id: str, tasks: Sequence[int]) -> set[int]:
        """Those of ``tasks`` whose output is in the store."""

    async def fail_task(self, run_id: str, failure: TaskFailure, failed: Event) -> None:
        """Record the failure and append its ``failed`` event in one atomic step."""

    async def get_failure(self, run_id: str, task: int) -> TaskFailure | None: ...

    async def live_invocations(self, run_id: str) -> int:
        """:func:`shoal.leases.live`, in constant time (a worker asks it often); 0 when the
        run is gone."""

    async def count_invocations(self, run_id: str) -> Invocations:
        """How many of the run's invocations wait to be claimed, and how many run
        (:func:`shoal.leases.count`); none when the run is gone."""

    async def emit(self, run_id: str, events: Sequence[Event]) -> None: ...

    async def read_events(
        self, run_id: str, cursor: Any, timeout: float, waking: bool = False
    ) -> tuple[list[Event], Any]:
        """Events after ``cursor`` (None: from the start), waiting up to ``timeout`` seconds
        for the first one; returns them and the new cursor. ``waking``: wait only for an
        event the client must see at once (:func:`~shoal.decisions.wakes_client`), and
        return every event that came meanwhile (the cursor is then the waking kind's)."""

    async def delete_run(self, run_id: str) -> None:
        """Delete every key of the run, and its blobs. Later steps on it see the run as
        gone."""

    async def sweep_blobs(self) -> list[str]:
        """Delete the blobs of every run this store no longer has (finished, cancelled,
        abandoned, expired), and return those runs (:mod:`shoal.blobs`)."""

    def clone(self) -> Store:
        """This store for another thread's event loop (itself when that is safe)."""

    async def close(self) -> None: ...
