"""The Redis store on a real redis-server: its scripts against the pure decisions, the key
schema and TTLs, graph shipping, signatures, and clear errors for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import SSLConnection
from servers import free_port, make_certificates, redis_server

import shoal
from shoal.decisions import Completion, Marks, Upload, complete_batch
from shoal.errors import BadSignature, ConfigError
from shoal.events import Event, EventKind
from shoal.graph import build
from shoal.security import Signer
from shoal.stores.keys import run_keys
from shoal.stores.memory import MemoryStore
from shoal.stores.redis import RedisStore
from shoal.stores.sending import DirectSend


@shoal.task
def inc(x: int) -> int:
    return x + 1


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as c:
        yield c


def _store(url: str, secret: str) -> RedisStore:
    return RedisStore(url, Signer(secret))


# --------------------------------------------------------------------------- the script


def _finished(task: int) -> Event:
    return Event(EventKind.TASK_FINISHED, "w", task, 1.0, None, 0.5)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[list[Completion]], int]:
    """Batches of completions over a random DAG of 8 tasks, some delivered twice."""
    n = 8
    parents: dict[int, set[int]] = {
        c: draw(st.sets(st.integers(0, c - 1), max_size=3)) if c else set() for c in range(n)
    }
    children = {t: tuple(c for c in range(n) if t in parents[c]) for t in range(n)}
    order = draw(st.permutations(range(n)))
    again = draw(st.lists(st.sampled_from(range(n)), max_size=3))
    deliveries = list(order) + again
    completions = [
        Completion(
            t,
            f"out{t}",
            draw(st.sampled_from(list(Upload))),
            children[t],
            tuple(len(parents[c]) for c in children[t]),
            _finished(t),
        )
        for t in deliveries
    ]
    cuts = sorted(draw(st.sets(st.integers(1, len(completions) - 1), max_size=4)))
    edges = [0, *cuts, len(completions)]
    fanout = draw(st.integers(1, 3))
    return [completions[a:b] for a, b in zip(edges, edges[1:], strict=False)], fanout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches())
def test_the_completion_script_decides_like_the_pure_function(
    redis_url: str, shared_secret: str, case: tuple[list[list[Completion]], int]
) -> None:
    """The Lua script and shoal.decisions.complete_batch: the same children ready, the same
    outputs stored, redeliveries ignored."""
    batch_list, fanout = case
    store = _store(redis_url, shared_secret)
    marks = Marks()
    should_store: set[bytes] = set()

    async def run() -> None:
        graph = build([inc(1)])
        await store.create_run("lua", graph.ship(), graph.sinks)
        try:
            for batch in batch_list:
                settled = await store.complete_tasks("lua", batch, fanout)
                assert settled is not None
                readies, stored = complete_batch(marks, batch, fanout)
                assert settled[0] == readies
                should_store.update(
                    str(c.task).encode() for c, keep in zip(batch, stored, strict=True) if keep
                )
            outputs = set(await store.client.hkeys(run_keys("lua").outputs)) - {b"~"}
            assert outputs == should_store
            events, _ = await store.read_events("lua", None, 0)
            finished = [e.task for e in events if e.kind is EventKind.TASK_FINISHED]
            assert sorted(finished) == list(range(8))  # redeliveries leave no event
        finally:
            await store.delete_run("lua")
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_repeated_expansion_reserves_the_same_ids_and_readies_nothing_new(
    redis_url: str, shared_secret: str, kind: str
) -> None:
    """A map's worker redelivered (or repeating a step whose reply it lost) reserves the
    same ids, stores the same specs, and readies its elements once."""
    from shoal.graph.maps import Expansion, expand, reserved

    @shoal.task
    def upto(n: int) -> list[int]:
        return list(range(n))

    graph = build([inc.map(upto(3))])
    shipped = graph.ship()
    store: Any = MemoryStore() if kind == "memory" else _store(redis_url, shared_secret)

    async def run() -> None:
        await store.create_run("again", shipped, graph.sinks)
        try:
            firsts = [await store.reserve("again", 1, reserved(3, 1)) for _ in range(2)]
            assert firsts[0] == firsts[1] and firsts[0] % 64 == 0 and firsts[0] >= len(graph)
            other = await store.reserve("again", 7, 64)  # another map: other pages
            assert other == firsts[0] + 64
            spec = shipped.specs[1]
            made = expand(spec, spec.dynamic, [0, 1, 2], firsts[0])
            done = Completion(
                1, Expansion(firsts[0], 3, 1), Upload.ALWAYS, made.children,
                made.child_deps, _finished(1),
            )  # fmt: skip
            settled = [
                await store.complete_tasks("again", [done], 1, specs=made.specs) for _ in range(2)
            ]
            assert settled[0] is not None and settled[1] is not None
            assert settled[0].readies == [list(made.children)]
            assert settled[1].stored == [-1]  # a redelivery: ignored
            if kind == "redis":  # the elements' specs are in the store, signed, once
                pages = await store.load_pages("again", [firsts[0] // 64])
                specs, _ = store.codec.decode_page(pages[firsts[0] // 64])
                assert [s.args for s in specs] == [(0,), (1,), (2,)]
        finally:
            await store.delete_run("again")
            await store.close()

    asyncio.run(run())


def test_a_completion_for_a_run_that_is_gone_writes_nothing(
    redis_url: str, shared_secret: str, client: redis.Redis
) -> None:
    store = _store(redis_url, shared_secret)
    done = Completion(0, 1, Upload.ALWAYS, (1,), (2,), _finished(0))
    assert asyncio.run(_complete_on_a_deleted_run(store, done)) is None
    assert client.keys("shoal:{gone}*") == []


async def _complete_on_a_deleted_run(store: RedisStore, done: Completion) -> Any:
    graph = build([inc(1)])
    await store.create_run("gone", graph.ship(), graph.sinks)
    await store.delete_run("gone")
    try:
        return await store.complete_tasks("gone", [done], 2)
    finally:
        await store.close()


@pytest.mark.parametrize("which", ["memory", "redis"])
def test_invocations_handed_out_wait_until_claimed(
    which: str, redis_url: str, shared_secret: str
) -> None:
    """What a worker holding back for a fan-in asks (is any invocation waiting to start?)
    and one sharing its tasks (how many run?): the client's lease is none of them. Each
    completion step tells its worker the live count too."""
    store = MemoryStore() if which == "memory" else _store(redis_url, shared_secret)
    steps_told: list[int] = []

    async def counts() -> tuple[int, int, int]:  # waiting, running; and live, in O(1)
        waiting, running = await store.count_invocations("waits")
        live = await store.live_invocations("waits")
        done = Event(EventKind.TASK_FINISHED, "w", 0, 1.0)  # a redelivery after the first
        step = Completion(0, 1, Upload.ALWAYS, (), (), done)
        settled = await store.complete_tasks("waits", [step], 1)
        assert settled is not None
        steps_told.append(settled.live)
        return waiting, running, live

    async def steps() -> list[tuple[int, ...]]:
        graph = build([add(inc(1), inc(2))])
        await store.create_run("waits", graph.ship(), graph.sinks)
        try:
            seen = [await counts()]
            await store.claim("waits", "client", "", (), None, 10.0)
            await store.hand_off("waits", "", [("a", (0,)), ("b", (1,))], 10.0)
            seen.append(await counts())
            await store.claim("waits", "a", "", (0,), None, 10.0)
            seen.append(await counts())
            await store.release("waits", "b", [])
            seen.append(await counts())
            return seen
        finally:
            await store.delete_run("waits")
            await store.close()

    assert asyncio.run(steps()) == [(0, 0, 0), (2, 0, 2), (1, 1, 2), (0, 1, 1)]
    assert steps_told == [0, 2, 2, 1]


# --------------------------------------------------------------------------- keys


def test_the_store_speaks_resp2_and_sends_nothing_before_its_first_command(
    redis_url: str, client: redis.Redis
) -> None:
    """RESP2: no HELLO (redis-py 8 speaks RESP3 unless told, a round trip on every new
    connection), nor CLIENT SETINFO: a connection's first command is the store's own."""
    client.config_resetstat()
    store = _store(redis_url, "s" * 64)

    async def first_contact() -> dict[str, Any]:
        try:
            await store.client.ping()
            return await store.client.client_info()
        finally:
            await store.close()

    assert int(asyncio.run(first_contact())["resp"]) == 2
    seen = client.info("commandstats")
    assert "cmdstat_hello" not in seen and not any("setinfo" in k for k in seen)


def test_every_key_of_a_run_carries_the_ttl(
    redis_url: str, shared_secret: str, client: redis.Redis
) -> None:
    store = _store(redis_url + "?ttl=600", shared_secret)
    graph = build([add(inc(1), inc(2))])

    async def create() -> None:
        await store.create_run("ttl", graph.ship(), graph.sinks)
        await store.close()

    asyncio.run(create())
    try:
        keys = client.keys("shoal:{ttl}:*")
        assert len(keys) == 9  # specs, functions, outputs, marks, events, leases, owners,
        # shape, wake
        for key in keys:
            assert 0 < client.ttl(key) <= 600, key
    finally:
        client.delete(*run_keys("ttl"))


def test_two_runs_at_once_on_one_redis(engine: dict[str, Any]) -> None:
    results: dict[int, Any] = {}

    def run(k: int) -> None:
        xs = [inc(i * k) for i in range(50)]
        while len(xs) > 1:
            xs = [add(xs[i], xs[i + 1]) for i in range(0, len(xs) - 1, 2)] + xs[len(xs) & ~1 :]
        results[k] = xs[0].compute(**engine)

    threads = [threading.Thread(target=run, args=(k,)) for k in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: sum(i * k + 1 for i in range(50)) for k in (1, 3)}


# --------------------------------------------------------------------------- shipping


def _hmget_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def test_a_small_graph_travels_with_the_invocation(
    redis_url: str, gateway_url: str, client: redis.Redis
) -> None:
    """Inline, the worker reads no spec and no function: the HMGETs are the client's
    download of the sink and the owners the hand-off and the claim look up in their
    scripts. Without inlining, the worker reads them."""
    chain = inc(inc(inc(0)))
    client.config_resetstat()
    assert chain.compute(storage=redis_url, workers=gateway_url, progress=False) == 3
    assert _hmget_calls(client) == 3
    client.config_resetstat()
    chain = inc(inc(inc(0)))
    no_inline = redis_url + "?inline_bytes=0"
    assert chain.compute(storage=no_inline, workers=gateway_url, progress=False) == 3
    assert _hmget_calls(client) >= 4


# --------------------------------------------------------------------------- signatures


def test_a_tampered_spec_is_refused(
    redis_url: str, shared_secret: str, client: redis.Redis
) -> None:
    store = _store(redis_url, shared_secret)
    graph = build([inc(1)])

    async def run() -> None:
        await store.create_run("tamper", graph.ship(), graph.sinks)
        blob = client.hget(run_keys("tamper").specs, 0)
        assert blob is not None
        client.hset(run_keys("tamper").specs, 0, blob[:-1] + bytes([blob[-1] ^ 1]))
        try:
            pages = await store.load_pages("tamper", [0])
            with pytest.raises(BadSignature, match="page of task specs"):
                store.codec.decode_page(pages[0])[0]
        finally:
            await store.delete_run("tamper")
            await store.close()

    asyncio.run(run())


def test_a_store_with_another_secret_cannot_read_the_run(
    redis_url: str, shared_secret: str
) -> None:
    graph = build([inc(1)])
    ours, theirs = _store(redis_url, shared_secret), _store(redis_url, "another secret, 16+")

    async def run() -> None:
        await ours.create_run("other", graph.ship(), graph.sinks)
        try:
            pages = await theirs.load_pages("other", [0])
            with pytest.raises(BadSignature):
                theirs.codec.decode_page(pages[0])[0]
        finally:
            await ours.delete_run("other")
            await ours.close()
            await theirs.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- bad input


def test_an_unreachable_redis_fails_naming_the_address(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    caplog.set_level("INFO", logger="shoal.stores.redis")
    with pytest.raises(shoal.StoreUnavailable, match=f"cannot reach Redis at 127.0.0.1:{port}"):
        inc(1).compute(storage=f"redis://127.0.0.1:{port}/0", workers="local", progress=False)
    assert "retrying" not in caplog.text  # a first contact is not waited out: a typo says so


def test_a_server_that_is_not_redis_is_named() -> None:
    """A URL that points at some other service: it answers, but not in Redis's protocol."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_like_http() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_like_http, daemon=True).start()
    try:
        with pytest.raises(shoal.StoreUnavailable, match=f"127.0.0.1:{port} does not answer as"):
            inc(1).compute(storage=f"redis://127.0.0.1:{port}/0", workers="local", progress=False)
    finally:
        listener.close()


FILL_THE_SOCKET = """
import asyncio, os, signal, sys, time
from shoal.security import Signer
from shoal.stores.redis import RedisStore
from shoal.stores.sending import DirectSend

async def main():
    store = RedisStore(sys.argv[1] + "?socket_timeout=1", Signer("s" * 32))
    client = store.client
    pid = (await client.info("server"))["process_id"]
    connection = await client.connection_pool.get_connection()
    assert isinstance(connection, DirectSend)
    await client.connection_pool.release(connection)
    os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    try:
        await client.set("big", b"x" * (64 << 20))  # more than the socket's buffers hold
    except Exception as exc:
        named = type(exc).__module__ + "." + type(exc).__name__
        print(named, round(time.monotonic() - began, 1), flush=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(await client.get("small"), await client.exists("big"), flush=True)

asyncio.run(main())
"""


def test_a_command_a_frozen_redis_does_not_read_times_out_and_the_next_is_answered(
    tmp_path: Path,
) -> None:
    """Commands are written without a task of their own (:mod:`shoal.stores.sending`); one
    that fills the socket while Redis is frozen still times out (the client in a process of
    its own, with a timeout), writes nothing half, and the next command is answered."""
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        with redis.Redis.from_url(url) as c:
            c.set("small", b"answered")
        done = subprocess.run(
            [sys.executable, "-c", FILL_THE_SOCKET, url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        timed_out, answered = done.stdout.splitlines()
        name, seconds = timed_out.split()
        assert name == "redis.exceptions.TimeoutError"
        assert float(seconds) < 10  # the socket timeout is 1 s
        assert answered == "b'answered' 0"


def test_a_wrong_database_fails_naming_the_address(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    with pytest.raises(ConfigError, match=f"Redis at {base[8:]} refused the storage URL"):
        inc(1).compute(storage=base + "/99999", workers="local", progress=False)


def test_the_password_comes_from_the_url_and_a_wrong_one_is_named_not_shown(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path, "--requirepass", "right-password") as port:
        right = f"redis://:right-password@127.0.0.1:{port}/0"
        assert inc(1).compute(storage=right, workers="local", progress=False) == 2
        wrong = f"redis://:s3cret@127.0.0.1:{port}/0"
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}") as info:
            inc(1).compute(storage=wrong, workers="local", progress=False)
        assert "s3cret" not in str(info.value) and ":***@" in str(info.value)


def test_rediss_speaks_tls_to_the_store_from_the_client_and_the_workers(
    tmp_path: Path, gateway_url: str
) -> None:
    certs = make_certificates(tmp_path / "certs")
    with redis_server(tmp_path / "redis", tls=certs) as port:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.crt'}"
        graph = add(inc(1), inc(2))
        assert graph.compute(storage=url, workers=gateway_url, progress=False) == 5
        pool = _store(url, "s" * 32).client.connection_pool
        assert issubclass(pool.connection_class, SSLConnection)
        assert issubclass(pool.connection_class, DirectSend)  # TLS, sending directly
        with pytest.raises(shoal.StoreUnavailable, match=f"127.0.0.1:{port}"):  # not TLS
            inc(1).compute(storage=f"redis://127.0.0.1:{port}/0", workers="local")


def test_a_cluster_store_sends_to_every_node_directly(cluster_url: str) -> None:
    """Redis Cluster's node connections, the startup node's and those of the nodes it
    finds, send without a task each too (:func:`shoal.stores.sending.cluster_sends_directly`)."""

    async def check() -> None:
        store = _store(cluster_url, "s" * 32)
        try:
            for n in range(32):  # keys on every node's slots
                await store.client.set(f"k{n}", n)
            nodes = store.client.get_nodes()
            assert len(nodes) == 3
            for node in nodes:
                assert issubclass(node.connection_class, DirectSend), node.name
                assert node._connections and all(
                    isinstance(c, DirectSend) for c in node._connections
                ), node.name
        finally:
            await store.client.delete(*(f"k{n}" for n in range(32)))  # the cluster is shared
            await store.close()

    asyncio.run(check())


def test_a_bad_storage_option_is_an_error(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        inc(1).compute(storage=redis_url + "?ttl=-1", workers="local", progress=False)


def test_an_argument_that_cannot_be_pickled_is_rejected_before_anything_runs(
    redis_url: str, gateway_url: str, client: redis.Redis
) -> None:
    client.config_resetstat()
    with pytest.raises(TypeError, match=r"argument 0 \(lock\) of task add-0 cannot be pickled"):
        add(threading.Lock(), 1).compute(storage=redis_url, workers=gateway_url, progress=False)
    assert client.keys("shoal:{*") == []
    assert "cmdstat_evalsha" not in client.info("commandstats")  # no task ran


def test_the_memory_store_cannot_serve_workers_in_other_processes(gateway_url: str) -> None:
    with pytest.raises(ConfigError, match="use a shared store"):
        inc(1).compute(storage="memory://", workers=gateway_url, progress=False)


def test_remote_workers_need_the_shared_secret(
    redis_url: str, gateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_SECRET")
    with pytest.raises(ConfigError, match="SHOAL_SECRET is not set"):
        inc(1).compute(storage=redis_url, workers=gateway_url, progress=False)


@shoal.task
def leaf(x: int) -> int:
    time.sleep(0.005)  # above SMALL_TASK_S: its completion is not batched for being quick
    return x


@shoal.task
def source() -> int:
    return 0


def test_a_pairs_first_leaf_waits_for_its_sibling_and_is_never_stored(redis_url: str) -> None:
    # 0 -> four leaves, two per worker -> merged pairwise -> the sum. Each worker runs its
    # pair back to back: the first leaf's store step waits for the second's, which settles
    # both, and the merge reads both from memory. Stored: the source (half its children go
    # to the other worker), one pair's merge (read by the other's worker) and the sum.
    s = source()
    leaves = [leaf(s) for _ in range(4)]
    top = add(add(leaves[0], leaves[1]), add(leaves[2], leaves[3]))
    assert shoal.compute(top, storage=redis_url, workers="local", progress=False) == (0,)
    summary = shoal.last_run()
    assert summary is not None and summary.workers == 2
    assert summary.outputs_stored == 3


# --------------------------------------------------------------------------- constants


@shoal.task
def length(text: str) -> int:
    return len(text)


def test_a_worker_asks_for_its_next_tasks_constant_before_the_task_before_it_runs(
    redis_url: str, shared_secret: str
) -> None:
    """A task's big constant (lifted out of its page) is asked for while the task before
    it runs: the request is out when read_ahead returns, and the task takes its answer."""
    from shoal.backends import Invocation
    from shoal.protocol.source import TaskSource

    texts = [str(i) * 200_000 for i in range(2)]
    graph = build([length(t) for t in texts]).ship()
    store = _store(redis_url, shared_secret)
    asked: list[list[int]] = []
    load = store.load_constants

    async def recording(run_id: str, indices: Any) -> list[Any]:
        asked.append(list(indices))  # runs up to its first wait: the request goes out
        return await load(run_id, indices)

    store.load_constants = recording  # type: ignore[method-assign]

    async def main() -> tuple[list[str], list[list[int]]]:
        await store.create_run("ahead", graph, [0, 1])
        source = TaskSource(Invocation("ahead", (0, 1), 1), store)
        try:
            specs = [await source.spec(t) for t in (0, 1)]
            await source.read_ahead(1)
            sent = [list(a) for a in asked]
            filled = [(await source.with_constants(s)).args[0] for s in specs]
            return filled, sent
        finally:
            source.close()
            await store.delete_run("ahead")
            await store.close()

    filled, sent = asyncio.run(main())
    assert filled == texts
    assert sent == [[1]]  # task 1's, before task 0's own read
    assert asked == [[1], [0]]  # and task 1 took the answer: no second read


@shoal.task
def busy_ms(ms: float, *inputs: Any) -> float:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass
    return ms


def test_the_client_wakes_for_what_it_must_see_not_for_every_event(redis_url: str) -> None:
    """A chain of 40 tasks of 5 ms, each its own store step (its event): the waiting
    client reads the stream when a sink finished, a worker stopped, and at its ticks, a
    few times in all, not once per event (two XREADs a read: the wake stream, then the
    events)."""
    node = busy_ms(5)
    for _ in range(39):
        node = busy_ms(5, node)
    with redis.Redis.from_url(redis_url) as client:
        client.config_resetstat()
        assert node.compute(storage=redis_url, workers="local", progress=False) == 5
        reads = client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
        steps = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert steps >= 40  # every task's completion was a step of its own
    assert 2 <= reads <= 16
