"""``redis://``, ``rediss://`` and Redis Cluster (``redis+cluster://``, ``rediss+cluster://``):
the store shared by workers in other processes and on other machines.

Password, TLS and database come from the URL, as redis-py reads them; Shoal's own options
are query parameters that are taken out before: ``ttl`` (seconds every key of a run lives
at most, a day by default), ``inline_bytes`` (an invocation carries the encoded graph
when it is at most this big, 64 KiB by default), ``blobs`` (the URL of a blob store for
big outputs, :mod:`shoal.blobs`) and ``blob_above`` (the size from which an output goes
there, 1 MiB by default). Each protocol step is one round trip: a Lua script from
:mod:`shoal.stores.scripts` on the keys of :mod:`shoal.stores.keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, InvalidResponse, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..blobs import DEFAULT_ABOVE, BlobStore, open_blobs, parse_size
from ..codec import BlobRef, Codec
from ..decisions import Completion, Upload, wakes_client
from ..errors import BadSignature, ConfigError, RunNotFound, StoreUnavailable
from ..events import Event, EventKind, decode_events, encode_events
from ..failures import TaskFailure
from ..graph import PAGE, EncodedGraph, ShippedGraph, TaskFunction, TaskSpec
from ..graph.template import _SCALARS
from ..leases import CLIENT, Invocations, Recovered
from ..security import TAG_BYTES, Signer
from . import scripts
from .base import Settled, UnstorableOutput
from .keys import BIRTH_FIELD, LIVE, run_keys
from .sending import cluster_sends_directly, send_directly

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TTL_S = 24 * 3600
#: A lost connection is retried this many times, backing off up to the cap: about six
#: seconds in all, enough for a Redis restart (AOF on), before the run fails.
OUTAGE_RETRIES = 14
OUTAGE_BACKOFF_CAP_S = 0.5
DEFAULT_INLINE_BYTES = 64 * 1024
_FIELDS_PER_HSET = 1_000  # pages per HSET when a run is created
_OPTIONS = {"ttl", "inline_bytes", "blobs", "blob_above"}
#: Fields of a run's leases hash that are no invocation's.
_NOT_INVOCATIONS = {BIRTH_FIELD.encode(), CLIENT.encode()}
#: No CLIENT SETINFO: a round trip per connection, and redis-py reads its own version from
#: the package metadata (~1 ms) each time it makes one. (redis-py 8 says it with
#: ``driver_info``; earlier ones with ``lib_name`` and ``lib_version``.)
_NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)
#: The most one Redis value (and one script argument) holds.
VALUE_LIMIT = 512 << 20


class RedisStore:
    """A store in Redis or Redis Cluster, through redis-py's asyncio client."""

    in_process = False

    def __init__(self, url: str, signer: Signer) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        ours = {k: options.pop(k) for k in list(options) if k in _OPTIONS}
        try:
            self.ttl = int(ours.get("ttl", DEFAULT_TTL_S))
            self.inline_bytes = int(ours.get("inline_bytes", DEFAULT_INLINE_BYTES))
        except ValueError as exc:
            raise ConfigError(f"storage URL {_redact(url)}: {exc}") from None
        if self.ttl <= 0:
            raise ConfigError(f"storage URL {_redact(url)}: ttl must be > 0 seconds")
        self.url = url
        self.address = parts.hostname or "localhost"
        if parts.port:
            self.address += f":{parts.port}"
        self.cluster = parts.scheme.endswith("+cluster")
        scheme = parts.scheme.removesuffix("+cluster")
        redis_url = urlunsplit((scheme, parts.netloc, parts.path, urlencode(options), ""))
        self.blob_above = parse_size(ours.get("blob_above", DEFAULT_ABOVE), "blob_above")
        blobs = ours.get("blobs", "off")
        # Blobs are kept per Redis (its address and database): a sweep then only deletes
        # blobs of runs that this Redis no longer has.
        namespace = hashlib.sha256(f"{self.address}{parts.path}".encode()).hexdigest()[:16]
        self.blobs: BlobStore | None = None if blobs == "off" else open_blobs(blobs, namespace)
        # Retries are the store's own (see _guarded): redis-py's would retry a first
        # contact too, so that a wrong URL took seconds to say so.
        common: dict[str, Any] = {
            # RESP2: redis-py 8 speaks RESP3 by default, a HELLO round trip on every new
            # connection (a run's client makes two) and its replies turned back into
            # RESP2's shapes in Python; nothing here needs RESP3.
            "protocol": 2,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
            "retry": Retry(NoBackoff(), 0),
            **_NO_CLIENT_SETINFO,
        }
        if self.cluster:
            self.client: Any = RedisCluster.from_url(redis_url, **common)
            cluster_sends_directly(self.client)
        else:
            self.client = aioredis.Redis.from_url(redis_url, **common)
            send_directly(self.client.connection_pool)
        self.codec = Codec(signer)
        self.reached = False  # once Redis answered, a lost connection is waited out
        self._retry = Retry(ExponentialBackoff(cap=OUTAGE_BACKOFF_CAP_S), OUTAGE_RETRIES)
        self._complete = self.client.register_script(scripts.COMPLETE)
        self._reserve = self.client.register_script(scripts.RESERVE)
        self._fail = self.client.register_script(scripts.FAIL)
        self._hand_off = self.client.register_script(scripts.HAND_OFF)
        self._claim = self.client.register_script(scripts.CLAIM)
        self._renew = self.client.register_script(scripts.RENEW)
        self._release = self.client.register_script(scripts.RELEASE)
        self._expired = self.client.register_script(scripts.EXPIRED)
        self._recover = self.client.register_script(scripts.RECOVER)
        self._stored = self.client.register_script(scripts.STORED)
        self._live = self.client.register_script(scripts.LIVE)

    @classmethod
    def from_url(cls, url: str, signer: Signer | None = None) -> RedisStore:
        return cls(url, signer or Signer.from_env())

    def clone(self) -> RedisStore:
        """The same store for another thread's event loop (a client belongs to one loop)."""
        return RedisStore(self.url, self.codec.signer)

    # ----------------------------------------------------------------- client side
    async def create_run(
        self,
        run_id: str,
        graph: ShippedGraph,
        sinks: Sequence[int],
        announce: dict[str, Any] | None = None,
    ) -> EncodedGraph:
        encoded = self.codec.encode_graph(graph)  # raises before any write
        shape = zlib.compress(json.dumps(graph.shape(), separators=(",", ":")).encode(), 1)
        keys = run_keys(run_id)
        started = Event(EventKind.RUN_STARTED, "client", None, 0.0, {"tasks": len(graph.specs)})
        # One round trip, no MULTI: no worker runs before this returns, and the stream, which
        # tells the scripts that the run exists, comes last. (redis-py's cluster transactions
        # also mix up event loops when clients live in several threads.)
        pages = encoded.pages

        async def write() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for lo in range(0, len(pages), _FIELDS_PER_HSET):
                chunk = dict(enumerate(pages[lo : lo + _FIELDS_PER_HSET], lo))
                pipe.hset(keys.specs, mapping=chunk)
            pipe.hset(keys.functions, mapping=dict(enumerate(encoded.functions)))
            if encoded.constants:
                pipe.hset(keys.constants, mapping=dict(enumerate(encoded.constants)))
            for key in (keys.outputs, keys.leases, keys.owners):
                pipe.hset(key, BIRTH_FIELD, b"")
            pipe.setbit(keys.marks, max(1, len(graph.specs)) * 32 - 1, 0)  # one word per task
            pipe.hset(keys.specs, "n", len(pages) * PAGE)  # the next id a map may reserve
            pipe.set(keys.shape, shape)
            pipe.xadd(keys.wake, {"w": b""})
            for key in keys:
                if key not in (keys.failures, keys.events):  # made by their first write
                    pipe.expire(key, self.ttl)
            pipe.xadd(keys.events, {"e": encode_events([started])})
            pipe.expire(keys.events, self.ttl)
            if announce is not None:
                pipe.hset(LIVE, run_id, json.dumps(announce))
            return await pipe.execute()

        await self._call(write)
        return encoded

    async def read_events(
        self, run_id: str, cursor: Any, timeout: float, waking: bool = False
    ) -> tuple[list[Event], Any]:
        keys = run_keys(run_id)
        if waking:  # block on the wake stream, then read whatever came meanwhile
            cursor, woken = cursor or (None, None)
            wakes = await self._xread(keys.wake, woken, timeout)
            woken = wakes[-1][0] if wakes else woken
            read, cursor = await self.read_events(run_id, cursor, 0)
            return read, (cursor, woken)
        events: list[Event] = []
        for entry_id, fields in await self._xread(keys.events, cursor, timeout):
            cursor = entry_id
            events += decode_events(fields[b"e"], fields.get(b"b"))
            if b"x" in fields:
                events += decode_events(fields[b"x"])
        return events, cursor

    async def _xread(
        self, key: str, cursor: bytes | None, timeout: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The entries of stream ``key`` after ``cursor`` (None: all), waiting up to
        ``timeout`` seconds for the first (0: not at all)."""
        block = max(1, int(timeout * 1000)) if timeout > 0 else None
        args: list[Any] = ["XREAD", "COUNT", 50_000]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", key, cursor or b"0-0"]
        # On a cluster, name the node: redis-py would ask the server for XREAD's keys first.
        where = {"target_nodes": self.client.get_node_from_key(key)} if self.cluster else {}
        reply = await self._call(lambda: self.client.execute_command(*args, **where))
        return [entry for _, entries in reply or () for entry in entries]

    async def live_invocations(self, run_id: str) -> int:
        live = await self._call(lambda: self._live(keys=(run_keys(run_id).leases,)))
        return int(live)

    async def count_invocations(self, run_id: str) -> Invocations:
        leases = await self._call(lambda: self.client.hgetall(run_keys(run_id).leases))
        waiting = running = 0
        for invocation, lease in leases.items():
            if invocation in _NOT_INVOCATIONS:  # the client's lease, the run's birth mark
                continue
            if json.loads(lease).get("c"):
                running += 1
            else:
                waiting += 1
        return Invocations(waiting, running)

    async def get_failure(self, run_id: str, task: int) -> TaskFailure | None:
        blob = await self._call(lambda: self.client.hget(run_keys(run_id).failures, task))
        return None if blob is None else self.codec.load_failure(blob)

    async def delete_run(self, run_id: str) -> None:
        try:
            await self._delete_run_keys(run_id)
        finally:  # even if that was interrupted (redis-py 8, cancelled mid-command, can
            # cancel the next connection attempt): the workers delete the keys anyway
            if self.blobs is not None:
                await self.blobs.delete_run(run_id)
        if self.blobs is not None:
            await self.sweep_blobs()

    async def sweep_blobs(self) -> list[str]:
        """Delete the blobs of every run this Redis no longer has (finished, cancelled,
        abandoned, expired), and return those runs. Best effort: a blob store that fails
        is logged, not raised, as the runs themselves are done."""
        if self.blobs is None:
            return []
        try:
            runs = await self.blobs.runs()
            if not runs:
                return []

            async def exist() -> Any:
                pipe = self.client.pipeline(transaction=False)
                for run_id in runs:
                    pipe.exists(run_keys(run_id).events)
                return await pipe.execute()

            there = await self._call(exist)
            gone = [r for r, alive in zip(runs, there, strict=True) if not alive]
            for run_id in gone:
                await self.blobs.delete_run(run_id)
            return gone
        except Exception as exc:  # noqa: BLE001 - logged: the runs themselves are done
            log.warning("could not sweep the blob store %s: %s", self.blobs.url, exc)
            return []

    async def _delete_run_keys(self, run_id: str) -> None:
        # Two commands at once (a cluster pipeline takes no multi-key command).
        await asyncio.gather(
            self._call(lambda: self.client.unlink(*run_keys(run_id))),
            self._call(lambda: self.client.hdel(LIVE, run_id)),
        )

    async def live_runs(self) -> dict[str, dict[str, Any]]:
        listed = await self._call(lambda: self.client.hgetall(LIVE))
        runs = {k.decode(): json.loads(v) for k, v in listed.items()}
        ids = list(runs)

        async def exist() -> Any:  # a run whose client was killed is listed until one looks
            pipe = self.client.pipeline(transaction=False)
            for run_id in ids:
                pipe.exists(run_keys(run_id).events)
            return await pipe.execute()

        gone = [r for r, there in zip(ids, await self._call(exist), strict=True) if not there]
        if gone:
            await self._call(lambda: self.client.hdel(LIVE, *gone))
        return {k: v for k, v in runs.items() if k not in gone}

    async def run_shape(self, run_id: str) -> dict[str, Any] | None:
        blob = await self._call(lambda: self.client.get(run_keys(run_id).shape))
        return None if blob is None else json.loads(zlib.decompress(blob))

    # ----------------------------------------------------------------- worker side
    async def load_pages(self, run_id: str, pages: Sequence[int]) -> dict[int, bytes]:
        blobs = await self._call(lambda: self.client.hmget(run_keys(run_id).specs, list(pages)))
        if blobs and blobs[0] is None:
            await self._present(run_id, pages[:1], blobs[:1])
        return {p: b for p, b in zip(pages, blobs, strict=True) if b is not None}

    async def load_functions(
        self, run_id: str, indices: Sequence[int]
    ) -> list[TaskFunction[Any, Any]]:
        blobs = await self._call(
            lambda: self.client.hmget(run_keys(run_id).functions, list(indices))
        )
        return [self.codec.decode_function(b) for b in await self._present(run_id, indices, blobs)]

    async def load_constants(self, run_id: str, indices: Sequence[int]) -> list[Any]:
        blobs = await self._call(
            lambda: self.client.hmget(run_keys(run_id).constants, list(indices))
        )
        return [self.codec.load_constant(b) for b in await self._present(run_id, indices, blobs)]

    async def get_outputs(self, run_id: str, tasks: Sequence[int]) -> tuple[list[Any], int]:
        blobs = await self._call(lambda: self.client.hmget(run_keys(run_id).outputs, list(tasks)))
        blobs = await self._present(run_id, tasks, blobs)
        values = [self.codec.load_value(b) for b in blobs]
        read = sum(map(len, blobs))
        kept = [i for i, v in enumerate(values) if type(v) is BlobRef]
        if kept:
            found = await asyncio.gather(
                *(self._get_blob(run_id, tasks[i], values[i]) for i in kept)
            )
            for i, value in zip(kept, found, strict=True):
                read += values[i].size
                values[i] = value
        return values, read

    async def _get_blob(self, run_id: str, task: int, ref: BlobRef) -> Any:
        """The output of ``task`` kept in a blob: checked against its tag, or read where
        only this user can write (the reference, signed, says which)."""
        if self.blobs is None:
            raise ConfigError(
                f"the output of task {task} of run {run_id} is in a blob store, but the "
                f"storage URL {_redact(self.url)} names none (blobs=...)"
            )
        try:
            blob = await self.blobs.get(run_id, task)
        except LookupError:
            await self._present(run_id, [task], [None])  # RunNotFound when the run is gone
            raise
        if ref.signed:
            return self.codec.unframe_value(self.codec.signer.verify(blob, "a task output"))
        if not self.blobs.private:
            raise BadSignature(
                f"refusing the output of task {task}: its blob is unsigned, and others can "
                f"write where it is ({self.blobs.url})"
            )
        return self.codec.unframe_value(memoryview(blob))

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
        keys = run_keys(run_id)
        events = encode_events([c.finished for c in batch])
        others = encode_events(extra) if extra else ""
        new_pages = self.codec.encode_pages(specs) if specs else {}
        args: list[Any] = [PAGE if want_pages else 0, fanout, events, others, owner]
        args += (len(new_pages), *(x for pair in new_pages.items() for x in pair))
        put: list[int] = []  # tasks whose output went to the blob store
        for c in batch:
            blob, size = b"", 0
            if c.upload is not Upload.NEVER:
                blob, size = await self._encode_output(run_id, c.task, c.output)
                if size:
                    put.append(c.task)
            mask = "" if c.stay is None else "".join("1" if s else "0" for s in c.stay)
            args += (c.task, int(c.upload), blob, size, len(c.children), mask)
            args += (*c.children, *c.child_deps)
        step_keys = [keys.outputs, keys.marks, keys.events, keys.specs, keys.owners, keys.leases]
        if any(c.sink for c in batch):
            step_keys.append(keys.wake)
        reply = await self._call(lambda: self._complete(keys=step_keys, args=args))
        if reply is None:
            if put and self.blobs is not None:
                await self.blobs.delete(run_id, put)
            return None
        *readies, flat, stored, live = reply
        if put and self.blobs is not None:  # the outputs the store judged no one else needs
            unused = {c.task for c, n in zip(batch, stored, strict=True) if n == 0}
            await self.blobs.delete(run_id, [t for t in put if t in unused])
        pages = {int(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        pages.update(new_pages)  # to send along with the tasks handed out
        return Settled([[int(c) for c in ready] for ready in readies], stored, pages, live)

    async def reserve(self, run_id: str, task: int, count: int) -> int:
        keys = run_keys(run_id)
        first = await self._call(
            lambda: self._reserve(keys=(keys.specs, keys.events), args=(task, count))
        )
        if first is None:
            raise RunNotFound(f"run {run_id} is gone (finished, failed or cancelled)")
        return int(first)

    async def _encode_output(self, run_id: str, task: int, output: Any) -> tuple[bytes, int]:
        """What the store keeps for ``task``'s output, and the bytes put in the blob store
        for it (0: none). UnstorableOutput, before anything is written, if it cannot be."""
        try:
            if self.blobs is None or type(output) in _SCALARS:  # no buffers to leave out
                data = self.codec.pickle_value(output)
                if self.blobs is None or len(data) <= self.blob_above:
                    return self._as_value(data), 0
                parts = self.codec.frame_pickled(data)
            else:
                parts, out_of_band = self.codec.frame_value(output)
                if sum(map(len, parts)) <= self.blob_above:  # the pickle, buffers in it
                    pickled = self.codec.pickle_value(output) if out_of_band else parts[1]
                    return self._as_value(bytes(pickled)), 0
            size = sum(map(len, parts))
            signed = not self.blobs.private
            if signed:
                parts.insert(0, self.codec.signer.tag_parts(parts))
                size += TAG_BYTES
            await self.blobs.put(run_id, task, parts)
        except Exception as exc:
            raise UnstorableOutput(task) from exc
        return self.codec.dump_reference(size, signed), size

    def _as_value(self, data: bytes) -> bytes:
        """``data`` signed, to keep as a Redis value (which holds at most 512 MiB)."""
        if len(data) >= VALUE_LIMIT:
            raise ValueError(
                f"the output is {len(data) / (1 << 20):.0f} MiB, more than the "
                f"{VALUE_LIMIT >> 20} MiB a Redis value holds: give the run a blob "
                "store (compute(blobs=...) or $SHOAL_BLOBS)"
            )
        return self.codec.signer.sign(data)

    async def fail_task(self, run_id: str, failure: TaskFailure, failed: Event) -> None:
        keys = run_keys(run_id)
        blob = self.codec.dump_failure(failure)
        await self._call(
            lambda: self._fail(
                keys=(keys.failures, keys.events, keys.wake),
                args=(failure.task, blob, encode_events([failed]), self.ttl),
            )
        )

    async def emit(self, run_id: str, events: Sequence[Event]) -> None:
        keys, entry = run_keys(run_id), {"e": encode_events(events)}
        await self._call(lambda: self.client.xadd(keys.events, entry, nomkstream=True))
        if wakes_client(events, frozenset()):  # a worker failed, or stopped
            wake = {"w": b""}  # the stream kept to about 64 entries, never made anew
            await self._call(lambda: self.client.xadd(keys.wake, wake, maxlen=64, nomkstream=True))

    # ----------------------------------------------------------------- leases
    async def hand_off(
        self,
        run_id: str,
        parent: str,
        handed: Sequence[tuple[str, Sequence[int]]],
        lease_s: float,
    ) -> None:
        keys = run_keys(run_id)
        args: list[Any] = [parent, lease_s]
        for invocation, tasks in handed:
            args += (invocation, len(tasks), *tasks)
        await self._call(
            lambda: self._hand_off(keys=(keys.leases, keys.owners, keys.events), args=args)
        )

    async def claim(
        self,
        run_id: str,
        invocation: str,
        parent: str,
        tasks: Sequence[int],
        started: Event | None,
        lease_s: float,
    ) -> bool:
        keys = run_keys(run_id)
        worker = started.worker if started else CLIENT
        events = encode_events([started]) if started else ""
        answer = await self._call(
            lambda: self._claim(
                keys=(keys.leases, keys.owners, keys.events),
                args=(invocation, parent, worker, lease_s, events, *tasks),
            )
        )
        if answer == -1:
            raise RunNotFound(f"run {run_id} is not in Redis at {self.address}")
        return bool(answer)

    async def renew(self, run_id: str, held: dict[str, int | None], lease_s: float) -> list[str]:
        keys = run_keys(run_id)
        args: list[Any] = [lease_s]
        for invocation, task in held.items():
            args += (invocation, -1 if task is None else task)
        others = [k for k in keys if k not in (keys.leases, keys.events)]
        order = (keys.leases, keys.events, *others)
        lost = await self._call(lambda: self._renew(keys=order, args=args))
        if lost is None:  # the run is gone; if it was abandoned, this step deleted it
            if self.blobs is not None:
                await self.blobs.delete_run(run_id)
            return list(held)
        return [x.decode() for x in lost]

    async def release(self, run_id: str, invocation: str, events: Sequence[Event]) -> None:
        keys = run_keys(run_id)
        await self._call(
            lambda: self._release(
                keys=(keys.leases, keys.events, keys.wake),
                args=(invocation, encode_events(events)),
            )
        )

    async def expired(self, run_id: str) -> list[str]:
        expired = await self._call(lambda: self._expired(keys=(run_keys(run_id).leases,)))
        return [x.decode() for x in expired]

    async def recover(
        self,
        run_id: str,
        candidates: Sequence[int],
        prefix: str,
        lease_s: float,
        dead: Sequence[str] = (),
    ) -> list[Recovered]:
        keys = run_keys(run_id)
        reply = await self._call(
            lambda: self._recover(
                keys=(keys.leases, keys.owners, keys.marks, keys.events),
                args=(prefix, lease_s, len(dead), *dead, *candidates),
            )
        )
        if reply is None:
            raise RunNotFound(f"run {run_id} is not in Redis at {self.address}")
        return [
            Recovered(
                lost.decode(),
                worker.decode(),
                None if running < 0 else running,
                invocation.decode(),
                tuple(int(t) for t in tasks),
                tuple(losses),
            )
            for lost, worker, running, invocation, tasks, losses in reply
        ]

    async def stored(self, run_id: str, tasks: Sequence[int]) -> set[int]:
        if not tasks:
            return set()
        flags = await self._call(lambda: self._stored(keys=(run_keys(run_id).outputs,), args=tasks))
        return {t for t, flag in zip(tasks, flags.decode(), strict=True) if flag == "1"}

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            await self.client.aclose()

    # ----------------------------------------------------------------- helpers
    async def _present(self, run_id: str, wanted: Sequence[int], blobs: list[Any]) -> list[bytes]:
        """``blobs`` if none is missing; else RunNotFound (the run is gone) or LookupError."""
        if None not in blobs:
            return blobs
        if not await self._call(lambda: self.client.exists(run_keys(run_id).events)):
            raise RunNotFound(
                f"run {run_id} is not in Redis at {self.address} (finished, failed or cancelled)"
            )
        missing = [w for w, b in zip(wanted, blobs, strict=True) if b is None]
        raise LookupError(f"run {run_id} has nothing stored for {missing[:10]}")

    async def _call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run one protocol step; once Redis answered, wait out a lost connection (a
        restart) with backoff. Errors name the store, never its password: a connection
        that stays lost, or a server that is not Redis, is StoreUnavailable; a refused
        password or database, ConfigError. Every step is safe to repeat (see
        :mod:`shoal.stores.scripts`)."""
        try:
            if not self.reached:
                result = await step()
                self.reached = True
                return result
            return await self._retry.call_with_retry(step, _waiting)
        except (AuthenticationError, AuthorizationError) as exc:
            raise ConfigError(
                f"Redis at {self.address} refused the storage URL {_redact(self.url)}: {exc}"
            ) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            verb = "lost" if self.reached else "cannot reach"
            raise StoreUnavailable(
                f"{verb} Redis at {self.address} (storage {_redact(self.url)}): {exc}"
            ) from None
        except InvalidResponse as exc:
            raise StoreUnavailable(
                f"{self.address} does not answer as Redis (storage {_redact(self.url)}): {exc}"
            ) from None
        except RedisError as exc:
            if "DB index" in str(exc) or "AUTH" in str(exc).upper() or "NOAUTH" in str(exc):
                raise ConfigError(
                    f"Redis at {self.address} refused the storage URL {_redact(self.url)}: {exc}"
                ) from None
            raise


async def _waiting(error: Exception) -> None:
    log.info("Redis connection lost (%s); retrying", error)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
