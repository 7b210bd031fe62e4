"""Faults on Redis + gateway, with real processes: a worker killed or frozen mid-task, a
worker that fails before its loop starts, the gateway killed with queued work, replayed and
duplicated invocations. Each run recovers or fails with a named error within a bound,
records each task's result once, and leaves no key and no process behind."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import blob_files, leftover_keys
from servers import gateway, redis_server, worker_service
from signals import count, mark, publish, wait_for

import shoal
from shoal.backends import Invocation
from shoal.backends.gateway import GatewayWorkers
from shoal.codec import Codec
from shoal.protocol.worker import _Worker
from shoal.security import Signer
from shoal.summary import record

LEASE_S = 1.0


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_LEASE_S", str(LEASE_S))


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=["redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Redis, then Redis Cluster: the lease scripts run on both."""
    url: str = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    return url


@shoal.task
def inc(x: int) -> int:
    return x + 1


def _run(node: shoal.Node, redis_url: str, workers: str) -> Any:
    return node.compute(storage=redis_url, workers=workers, progress=False)


class _InThread:
    """A run on another thread (the test injects faults meanwhile); taking its result makes
    its summary the calling thread's :func:`shoal.last_run` too."""

    def __init__(self, node: shoal.Node, redis_url: str, workers: str) -> None:
        self.summary: Any = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.future = self.pool.submit(self._run, node, redis_url, workers)

    def _run(self, node: shoal.Node, redis_url: str, workers: str) -> Any:
        try:
            return _run(node, redis_url, workers)
        finally:
            self.summary = shoal.last_run()

    def result(self, timeout: float) -> Any:
        try:
            return self.future.result(timeout)
        finally:
            self.pool.shutdown(wait=False)
            if self.summary is not None:
                record(self.summary)


def _in_thread(node: shoal.Node, redis_url: str, workers: str) -> _InThread:
    return _InThread(node, redis_url, workers)


def _no_keys(url: str) -> None:
    assert leftover_keys(url) == []


def _gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.01)  # polling the process table, with a deadline
    return False


# --------------------------------------------------------------------------- lost workers


def test_a_killed_worker_is_recovered_within_its_retries(
    store_url: str, gateway_url: str, flags: Path
) -> None:
    attempts, pid_file = flags / "attempts", flags / "pid"

    @shoal.task(retries=1)
    def victim() -> int:
        mark(attempts)
        if count(attempts) == 1:  # the first attempt hangs until it is killed
            publish(pid_file, str(os.getpid()))
            wait_for(flags / "never", timeout=60)
        return 41

    run = _in_thread(inc(victim()), store_url, gateway_url)
    assert wait_for(pid_file, timeout=30)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert run.result(timeout=30) == 42
    assert count(attempts) == 2
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == 2  # each result recorded once
    (lost,) = summary.errors
    assert lost.name == "victim-0" and "SIGKILL" in lost.error
    _no_keys(store_url)


@shoal.task
def upto(n: int) -> list[int]:
    return list(range(n))


@shoal.task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_a_killed_worker_running_a_maps_element_is_recovered(
    store_url: str, gateway_url: str, flags: Path
) -> None:
    """The client learns a map's tasks from its expansion's event, and takes them back."""
    attempts, pid_file = flags / "attempts", flags / "pid"

    @shoal.task(retries=1)
    def victim(i: int) -> int:
        if i == 2:
            mark(attempts)
            if count(attempts) == 1:  # the first attempt hangs until it is killed
                publish(pid_file, str(os.getpid()))
                wait_for(flags / "never", timeout=60)
        return i * 10

    run = _in_thread(total(victim.map(upto(4))), store_url, gateway_url)
    assert wait_for(pid_file, timeout=30)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert run.result(timeout=30) == 60
    assert count(attempts) == 2
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == summary.tasks == 8
    (lost,) = summary.errors
    assert lost.name.startswith("victim[2]-") and "SIGKILL" in lost.error
    _no_keys(store_url)


def test_a_lost_worker_beyond_its_retries_names_the_task(
    redis_url: str, gateway_url: str, flags: Path
) -> None:
    pid_file = flags / "pid"

    @shoal.task
    def victim() -> int:
        publish(pid_file, str(os.getpid()))
        wait_for(flags / "never", timeout=60)
        return 1

    run = _in_thread(inc(victim()), redis_url, gateway_url)
    assert wait_for(pid_file, timeout=30)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    with pytest.raises(
        shoal.WorkerLost, match=r"task victim-0 was lost with worker gw[\d-]+: .*SIGKILL"
    ):
        run.result(timeout=30)
    _no_keys(redis_url)


def test_a_frozen_worker_loses_its_lease_and_its_task_runs_elsewhere(
    store_url: str, gateway_url: str, flags: Path
) -> None:
    """Nobody reports a frozen worker (SIGSTOP): its lease runs out, the client gives its
    task to a new worker within two lease periods; thawed, the old one stops."""
    attempts, pid_file = flags / "attempts", flags / "pid"

    @shoal.task(retries=1)
    def victim() -> int:
        mark(attempts)
        if count(attempts) == 1:
            publish(pid_file, str(os.getpid()))
            wait_for(flags / "never", timeout=60)
        return 41

    run = _in_thread(inc(victim()), store_url, gateway_url)
    assert wait_for(pid_file, timeout=30)
    frozen = int(pid_file.read_text())
    os.kill(frozen, signal.SIGSTOP)
    try:
        assert run.result(timeout=30) == 42
    finally:
        os.kill(frozen, signal.SIGKILL)
    assert count(attempts) == 2
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == 2
    _no_keys(store_url)


def test_a_worker_that_fails_before_its_loop_fails_the_run(
    redis_url: str, gateway_url: str
) -> None:
    """16 MB is too little for a worker process to import its store: the gateway reports it
    to the run, which fails naming the task instead of waiting forever."""

    @shoal.task(memory_mb=16)
    def tiny() -> int:
        return 1

    run = _in_thread(tiny(), redis_url, gateway_url)
    with pytest.raises(shoal.WorkerLost, match="task tiny-0 was lost"):
        run.result(timeout=30)
    _no_keys(redis_url)


@pytest.fixture
def forgetful_workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Injects the bug that once hung runs (a worker of a work-stealing draft stopped while
    it still owned ready tasks): the first task that leaves its worker owning tasks
    drops them, so the worker stops and releases its lease with them still its own.
    Patched in this process: for runs on local workers. Returns the tasks dropped."""
    dropped: list[int] = []
    finish = _Worker.finish

    def forgetting(self: _Worker, *args: Any) -> None:
        finish(self, *args)
        if not dropped and self.owned:
            dropped.extend(self.owned)
            self.owned.clear()

    monkeypatch.setattr(_Worker, "finish", forgetting)
    return dropped


@pytest.fixture(params=["memory", "redis", "cluster"])
def any_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each store; on Redis, no key of the test's runs may be left."""
    if request.param == "memory":
        yield "memory://"
        return
    url: str = request.getfixturevalue(f"{request.param}_url")
    yield url
    _no_keys(url)


def test_a_task_left_by_a_worker_that_stopped_owning_it_is_recovered(
    any_store: str, forgetful_workers: list[int]
) -> None:
    """A ready task whose owner released its lease would wait forever (only an *expired*
    lease was recovered): a run with no live invocation left is recovered as stalled."""

    @shoal.task(retries=1)
    def step(x: int) -> int:
        return x + 1

    result = step(step(step(0))).compute(
        storage=any_store, workers="local", progress=False, timeout=30
    )
    assert result == 3 and forgetful_workers
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == 3  # each result recorded once
    (lost,) = summary.errors
    assert "no worker was left to run it" in lost.error


def test_a_task_left_beyond_its_retries_fails_the_run_naming_it(
    any_store: str, forgetful_workers: list[int]
) -> None:
    with pytest.raises(shoal.WorkerLost, match=r"task inc-1 was lost .*a bug in Shoal"):
        inc(inc(0)).compute(storage=any_store, workers="local", progress=False, timeout=30)
    assert forgetful_workers == [1]


def test_a_task_left_while_another_worker_runs_is_recovered_without_waiting_for_it(
    any_store: str, forgetful_workers: list[int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ready task whose owner released its lease is recovered once no task finished for a
    quarter lease, though another worker is live: that worker here waits for the left task
    to have run (up to its guard of 20 s), so waiting for every worker to end first, as
    the check did when it asked for no live invocation, would hold the run until then."""
    monkeypatch.setenv("SHOAL_LEASE_S", "2")  # a check every 0.5 s
    ran = tmp_path / "ran"

    @shoal.task(retries=1)
    def step(x: int) -> int:
        if x == 1:  # the task its worker leaves
            mark(ran)
        return x + 1

    @shoal.task
    def waiter() -> bool:
        return wait_for(ran, timeout=20)

    chain, waited = shoal.compute(
        step(step(0)), waiter(), storage=any_store, workers="local", progress=False, timeout=30
    )
    assert chain == 2 and forgetful_workers
    assert waited, "the left task ran only after the other worker gave up waiting for it"
    summary = shoal.last_run()
    assert summary is not None
    (lost,) = summary.errors
    assert "no worker was left to run it" in lost.error


def test_a_run_queued_behind_long_tasks_recovers_nothing(
    redis_url: str,
    shared_secret: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While no task of a run finishes (its invocations wait in the gateway's queue behind
    another run's long tasks) the client looks for left tasks every quarter lease: it
    finds none, since the gateway keeps a queued invocation's lease alive, and each task
    runs once."""
    monkeypatch.setenv("SHOAL_LEASE_S", "1")  # a check every 0.25 s, for ~1.5 s

    @shoal.task
    def long(i: int) -> int:
        mark(tmp_path / f"long-{i}")
        time.sleep(1.5)  # the work that holds the slot
        return i

    @shoal.task
    def quick(i: int) -> int:
        mark(tmp_path / "quick")
        return i

    with gateway("--max-workers", "2") as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        options = {"storage": redis_url, "workers": url, "progress": False, "timeout": 30}
        first = pool.submit(shoal.compute, long(0), long(1), **options)
        assert wait_for(tmp_path / "long-0", tmp_path / "long-1")  # both slots taken
        assert shoal.compute(quick(0), quick(1), **options) == (0, 1)
        assert first.result() == (0, 1)
    assert count(tmp_path / "quick") == 2
    assert count(tmp_path / "long-0") == count(tmp_path / "long-1") == 1
    assert not [r for r in caplog.records if "was lost" in r.getMessage()]
    assert leftover_keys(redis_url) == []


KILLED_GATEWAY_CLIENT = """
import sys, time
from pathlib import Path
import shoal

flags = Path(sys.argv[3])

@shoal.task
def root(i):
    return i

@shoal.task
def slow(i, j):
    import os
    (flags / f"pid-{os.getpid()}").write_text("")
    time.sleep(5)
    return i + j

@shoal.task
def total(*xs):
    return sum(xs)

nodes = [slow(root(i), j) for i in range(2) for j in range(4)]
try:
    total(*nodes).compute(storage=sys.argv[1], workers=sys.argv[2], progress=False)
except shoal.WorkerLost as exc:
    print("WorkerLost:", exc)
    sys.exit(3)
"""


def test_a_killed_gateway_with_queued_work_ends_the_run(
    redis_url: str, shared_secret: str, tmp_path: Path
) -> None:
    """Two roots fanning out to four five-second tasks each, on a gateway killed while
    tasks run and others wait in its queue: the client ends within a few lease periods
    with WorkerLost (nobody can run the queued work), and its workers die with it."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(KILLED_GATEWAY_CLIENT))
    with gateway() as url:
        client = subprocess.Popen(
            [sys.executable, str(script), redis_url, url, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SHOAL_LEASE_S": str(LEASE_S)},
        )
        try:
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob("pid-*")):  # a slow task is under way
                assert time.monotonic() < deadline and client.poll() is None
                time.sleep(0.01)
            port = int(url.rsplit(":", 1)[1])
            gateway_pid = _listening_pid(port)
            started = time.monotonic()
            os.kill(gateway_pid, signal.SIGKILL)
            out, err = client.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            if client.poll() is None:
                client.kill()
    assert client.returncode == 3, err
    # The usual end: a task's lease expires with its worker. When the client is handing
    # the lost tasks out again just as the gateway dies, that hand-out fails first.
    lost = "was lost with worker" in out and "lease expired" in out
    assert lost or "cannot reach the gateway" in out, out
    assert took < 10 * LEASE_S + 5
    for pid_file in tmp_path.glob("pid-*"):
        assert _gone(int(pid_file.name.split("-")[1]), within=10), "a gateway worker outlived it"
    _no_keys(redis_url)


def _listening_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the gateway), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return int(proc.name)
        except OSError:
            continue
    raise LookupError(f"nothing listens on port {port}")


# --------------------------------------------------------------------------- replays


def _capture(backend: type, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The signed payloads this process sends through ``backend``, as an attacker on the
    wire would capture them."""
    payloads: list[bytes] = []
    original = backend.invoke

    async def capture(self: Any, invocation: Invocation) -> None:
        payloads.append(Codec(Signer.from_env()).dump_invocation(invocation))
        await original(self, invocation)

    monkeypatch.setattr(backend, "invoke", capture)
    return payloads


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    yield _capture(GatewayWorkers, monkeypatch)


def _settled(url: str, started: int, busy: int = 0) -> None:
    """Wait until the gateway started ``started`` invocations in all, ``busy`` of them
    are still busy (the others ended, or were refused) and none is queued."""
    deadline = time.monotonic() + 30
    while True:
        info = httpx.get(url.removeprefix("gateway+") + "/info").json()
        now_busy = sum(p.get("busy", 0) for p in info["pools"].values())
        if sum(info["started"].values()) >= started and now_busy == busy and not info["queued"]:
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.01)  # polling the gateway's own state, with a deadline


def test_a_replayed_payload_runs_nothing(
    redis_url: str, captured: list[bytes], flags: Path
) -> None:
    ran = flags / "ran"

    @shoal.task
    def once() -> int:
        mark(ran)
        return 1

    with gateway() as url:
        assert _run(once(), redis_url, url) == 1
        (payload,) = captured
        before = sum(httpx.get(url.removeprefix("gateway+") + "/info").json()["started"].values())
        reply = httpx.post(url.removeprefix("gateway+") + "/invoke", content=payload)
        assert reply.status_code == 202
        _settled(url, before + 1)
    assert count(ran) == 1
    _no_keys(redis_url)


def test_a_duplicated_invocation_runs_once(
    redis_url: str, captured: list[bytes], flags: Path
) -> None:
    """An invocation delivered twice while its run is under way (FaaS platforms deliver at
    least once): the second delivery is refused before any user code."""
    ran, go = flags / "ran", flags / "go"

    @shoal.task
    def once() -> int:
        mark(ran)
        wait_for(go, timeout=30)
        return 1

    with gateway() as url:
        run = _in_thread(once(), redis_url, url)
        assert wait_for(ran, timeout=30)
        (payload,) = captured
        reply = httpx.post(url.removeprefix("gateway+") + "/invoke", content=payload)
        assert reply.status_code == 202
        _settled(url, started=2, busy=1)  # the duplicate was refused; the first runs
        go.touch()
        assert run.result(timeout=30) == 1
    assert count(ran) == 1
    _no_keys(redis_url)


def test_a_replayed_payload_to_a_worker_service_runs_nothing(
    redis_url: str, flags: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.backends.http import HttpWorkers

    ran = flags / "ran"
    payloads = _capture(HttpWorkers, monkeypatch)

    @shoal.task
    def once() -> int:
        mark(ran)
        return 1

    with worker_service() as url:
        assert _run(once(), redis_url, url) == 1
        reply = httpx.post(url, content=payloads[0], timeout=30)  # answers when done
        assert reply.status_code < 300
    assert count(ran) == 1


def test_an_expired_payload_is_refused(redis_url: str, gateway_url: str) -> None:
    codec = Codec(Signer.from_env())
    old = Invocation("r", (0,), 1, None, redis_url, id="x", expires=time.time() - 1)
    reply = httpx.post(
        gateway_url.removeprefix("gateway+") + "/invoke", content=codec.dump_invocation(old)
    )
    assert reply.status_code == 403 and "expired" in reply.json()["error"]


def test_a_killed_worker_service_fails_the_run_naming_the_task(redis_url: str, flags: Path) -> None:
    pid_file = flags / "pid"

    @shoal.task
    def victim() -> int:
        publish(pid_file, str(os.getpid()))
        wait_for(flags / "never", timeout=60)
        return 1

    with worker_service() as url:
        run = _in_thread(victim(), redis_url, url)
        assert wait_for(pid_file, timeout=30)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(shoal.WorkerLost, match="task victim-0 was lost with worker"):
            run.result(timeout=30)
    _no_keys(redis_url)


# --------------------------------------------------------------------------- Redis outages


def test_a_redis_restart_does_not_fail_the_run(tmp_path: Path, flags: Path) -> None:
    """Redis stops (its data in its append-only file) and comes back on the same port
    while a task runs: the workers and the client wait it out."""
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    under_way, go = flags / "under-way", flags / "go"

    @shoal.task
    def pause(x: int) -> int:
        under_way.touch()
        wait_for(go, timeout=30)
        return x

    with redis_server(tmp_path / "redis", *aof) as port:
        url = f"redis://127.0.0.1:{port}/0"
        run = _in_thread(inc(pause(inc(1))), url, "local")
        assert wait_for(under_way, timeout=30)
    # stopped (SIGTERM: it writes its file); now back, with the run's keys
    with redis_server(tmp_path / "redis", *aof, port=port):
        go.touch()
        assert run.result(timeout=30) == 3
        _no_keys(url)


def test_redis_gone_for_good_fails_the_run_naming_the_store(tmp_path: Path, flags: Path) -> None:
    under_way, go = flags / "under-way", flags / "go"

    @shoal.task
    def pause(x: int) -> int:
        under_way.touch()
        wait_for(go, timeout=30)
        return x

    with redis_server(tmp_path / "redis") as port:
        run = _in_thread(inc(pause(1)), f"redis://127.0.0.1:{port}/0", "local")
        assert wait_for(under_way, timeout=30)
    go.touch()
    with pytest.raises(shoal.StoreUnavailable, match=f"lost Redis at 127.0.0.1:{port}"):
        run.result(timeout=60)


ABANDONING_CLIENT = """
import sys
from pathlib import Path
import shoal

flags = Path(sys.argv[3])

@shoal.task
def wait(data):
    (flags / "under-way").touch()
    import time
    deadline = time.monotonic() + 60
    while not (flags / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return 1

@shoal.task
def big():
    return b"x" * 4096

data = big()  # two consumers: stored, as a blob (the storage URL has blob_above=0)
shoal.compute(wait(data), wait(data), storage=sys.argv[1], workers=sys.argv[2], progress=False)
"""


def test_a_killed_clients_run_is_deleted_by_its_workers(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    """The client holds a lease too: SIGKILLed, it cannot clean up, so the next heartbeat
    of its worker deletes the run, blobs and all (not the keys' TTL, a day later)."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(ABANDONING_CLIENT))
    blobs = tmp_path / "blobs"
    client = subprocess.Popen(
        [sys.executable, str(script), redis_url + "?blob_above=0", gateway_url, str(tmp_path)],
        env={**os.environ, "SHOAL_LEASE_S": str(LEASE_S), "SHOAL_BLOBS": blobs.as_uri()},
    )
    try:
        assert wait_for(tmp_path / "under-way", timeout=30)
        assert leftover_keys(redis_url) != [] and blob_files(blobs) != []
        client.kill()
        client.wait(10)
        deadline = time.monotonic() + 10 * LEASE_S
        while leftover_keys(redis_url) or blob_files(blobs):
            assert time.monotonic() < deadline, "the abandoned run's keys or blobs stayed"
            time.sleep(0.01)  # polling the store, with a deadline
    finally:
        (tmp_path / "go").touch()  # the worker's task ends; the worker finds the run gone
        if client.poll() is None:
            client.kill()


def test_a_task_stuck_after_its_run_ended_gives_its_gateway_worker_back(
    redis_url: str, shared_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timed-out run's task stuck in user code: a lease after its lease was lost, its
    worker process exits and the gateway has the slot again (no worker stays busy)."""
    monkeypatch.setenv("SHOAL_LEASE_S", "1")

    @shoal.task
    def stuck() -> None:
        import threading

        threading.Event().wait()  # never returns, and ignores its lease

    with gateway("--max-workers", "1") as url:
        with pytest.raises(shoal.RunTimeout):
            stuck().compute(storage=redis_url, workers=url, progress=False, timeout=0.5)
        base = url.removeprefix("gateway+")
        deadline = time.monotonic() + 10  # the lease (1 s), its grace (1 s), heartbeats
        while _busy(base):
            assert time.monotonic() < deadline, "the stuck worker still holds its slot"
            time.sleep(0.05)  # polling the gateway, with a deadline
        assert inc(1).compute(storage=redis_url, workers=url, progress=False) == 2
    assert leftover_keys(redis_url) == []


def _busy(base: str) -> int:
    pools = httpx.get(base + "/info").json()["pools"].values()
    return sum(pool.get("busy", 0) for pool in pools)
