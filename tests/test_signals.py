"""A client whose run is on a private gateway (``workers="gateway"``), stopped with real
processes: SIGTERM (what ``timeout``, Docker and Kubernetes send), SIGINT (Ctrl-C) and a
timeout end the run in order: its keys are deleted, the gateway and its workers stop, and
nothing is logged. A SIGKILLed client leaves its keys (their TTL ends them), never its
gateway.

Every process of a test carries a mark in its environment (the client's, which the gateway
and its workers inherit), so the test finds them wherever they are in the process tree."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import leftover_keys, redis_client

import shoal

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="finds processes in /proc"
)

MARK = "SHOAL_TEST_SIGNALS"

CLIENT = """
import os, sys, time
import shoal

flags = sys.argv[1]
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else None

@shoal.task
def block():
    open(os.path.join(flags, "started"), "w").close()
    time.sleep(60)  # until the test stops the run

try:
    shoal.compute(block(), workers="gateway", progress=False, timeout=timeout)
except shoal.RunCancelled:
    print("RunCancelled")
    sys.exit(3)
except shoal.RunTimeout:
    print("RunTimeout")
    sys.exit(4)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
    sys.exit(130)
"""


def _marked(mark: str) -> dict[int, str]:
    """Living processes that carry ``mark``: their pid, and their name and command line
    (``[name] command``)."""
    needle = f"{MARK}={mark}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue  # a zombie's environment reads empty too
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            name = (entry / "comm").read_text().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = f"[{name}] {command}"
    return found


class Client:
    """The client script in its own session (as a shell runs a command), with a run on a
    private gateway."""

    def __init__(self, folder: Path, redis_url: str, *args: str) -> None:
        self.folder = folder
        self.redis_url = redis_url
        self.mark = secrets.token_hex(8)
        self.keys = ""  # the SCAN pattern of the run's keys, once it is under way
        script = folder / "client.py"
        script.write_text(CLIENT)
        self.before = set(leftover_keys(redis_url))
        env = {**os.environ, "SHOAL_STORAGE": redis_url, MARK: self.mark}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def under_way(self) -> None:
        """Wait until the task runs, on a worker process of the private gateway."""
        deadline = time.monotonic() + 60
        while not (self.folder / "started").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"the run never got under way:\n{out}\n{err}")
            time.sleep(0.01)  # polls the task's flag file, with a deadline
        runs = {k.split(b"}")[0] + b"}" for k in set(leftover_keys(self.redis_url)) - self.before}
        assert len(runs) == 1, runs
        self.keys = runs.pop().decode() + "*"
        commands = [c for pid, c in _marked(self.mark).items() if pid != self.proc.pid]
        names = [c[1 : c.index("]")] for c in commands]
        gateway = [c for c in commands if not c.startswith("[shoal-")]
        assert len(gateway) == 1 and " -m shoal.gateway " in gateway[0], commands
        # The worker, forked from the gateway's template or a Python of its own.
        assert names.count("shoal-worker") == 1, commands
        assert names.count("shoal-template") <= 1, commands

    def stopped(self) -> tuple[int, str, str]:
        """Wait for the client to end: its return code, stdout and stderr."""
        out, err = self.proc.communicate(timeout=15)
        return self.proc.returncode, out, err

    def cleanup(self) -> None:
        """Nothing of the test stays behind: a failed test's processes, a killed client's
        keys (later tests check that runs leave none)."""
        for pid in _marked(self.mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        if self.keys:
            with redis_client(self.redis_url) as client:
                for key in client.scan_iter(match=self.keys):
                    client.delete(key)


@pytest.fixture
def start(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Client]]:
    """Starts a client; whatever it left is cleaned up after the test."""
    started: list[Client] = []

    def make(*args: str) -> Client:
        client = Client(tmp_path, redis_url, *args)
        started.append(client)
        return client

    yield make
    for client in started:
        client.cleanup()


def _ended_in_order(client: Client, code: int, said: str) -> None:
    returncode, out, err = client.stopped()
    assert (returncode, out.strip()) == (code, said), err
    assert err == "", "an orderly stop must be quiet"
    assert leftover_keys(client.redis_url, client.keys) == [], "the run left keys behind"
    # The client waited for its gateway, which waited for its workers: all are gone.
    assert _marked(client.mark) == {}


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_cancels_the_run(start: Callable[..., Client], to: str) -> None:
    """Docker and Kubernetes signal the process; ``timeout`` signals its whole group,
    where the private gateway and its workers must not be: the client stops them."""
    client = start()
    client.under_way()
    if to == "group":
        os.killpg(client.proc.pid, signal.SIGTERM)
    else:
        client.proc.send_signal(signal.SIGTERM)
    _ended_in_order(client, 3, "RunCancelled")


def test_ctrl_c_cancels_the_run_with_keyboard_interrupt(start: Callable[..., Client]) -> None:
    client = start()
    client.under_way()
    os.killpg(client.proc.pid, signal.SIGINT)  # a terminal signals the foreground group
    _ended_in_order(client, 130, "KeyboardInterrupt")


def test_a_timeout_stops_the_private_gateway_quietly(start: Callable[..., Client]) -> None:
    client = start("5")
    client.under_way()
    _ended_in_order(client, 4, "RunTimeout")


def test_a_private_gateway_does_not_outlive_a_killed_client(start: Callable[..., Client]) -> None:
    client = start()
    client.under_way()
    client.proc.kill()
    deadline = time.monotonic() + 15
    while left := _marked(client.mark):
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.01)  # polls the process table, with a deadline
    _, _, err = client.stopped()
    assert err == "", "the gateway's shutdown must be quiet"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_gateway_stops_quietly(sig: signal.Signals, shared_secret: str) -> None:
    """``shoal gateway`` stopped by Ctrl-C or SIGTERM: its workers stop, nothing is said."""
    mark = secrets.token_hex(8)
    listener = socket.create_server(("127.0.0.1", 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "gateway", "--fd", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        env={**os.environ, MARK: mark},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    try:
        assert httpx.post(url + "/prewarm", params={"count": 1}).json() == {"started": 1}
        assert len(_marked(mark)) == 3  # the gateway, its template and the worker forked
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        for pid in _marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
    assert err == "", "an orderly stop must be quiet"
    # After SIGTERM, the gateway ends by it, as the signal asks.
    assert proc.returncode == (0 if sig is signal.SIGINT else -signal.SIGTERM)
    assert _marked(mark) == {}


def test_sigterm_in_process_raises_run_cancelled() -> None:
    """However late in the run it comes, a signal is not lost."""

    @shoal.task
    def terminated() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(shoal.RunCancelled, match="SIGTERM"):
        terminated().compute(storage="memory://", workers="local", progress=False)


def test_compute_gives_back_the_signal_handlers_it_found() -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not while compute runs")

    @shoal.task
    def one() -> int:
        return 1

    old = signal.signal(signal.SIGTERM, mine)
    try:
        assert one().compute(storage="memory://", workers="local", progress=False) == 1
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigterm_ends_a_run_whose_redis_froze_within_a_bound(tmp_path: Path) -> None:
    """Redis stops answering (SIGSTOP) while a run is under way; SIGTERM still ends the
    client in order, within a bound: it gives up deleting the run's keys (their TTL ends
    them) rather than wait for an answer that may never come."""
    import redis
    from servers import redis_server

    with redis_server(tmp_path / "redis") as port:
        url = f"redis://127.0.0.1:{port}/0"
        with redis.Redis(port=port) as admin:
            frozen = int(admin.info("server")["process_id"])
        client = Client(tmp_path, url)
        try:
            client.under_way()
            os.kill(frozen, signal.SIGSTOP)
            try:
                client.proc.send_signal(signal.SIGTERM)
                returncode, out, err = client.stopped()
            finally:
                os.kill(frozen, signal.SIGCONT)
            assert (returncode, out.strip()) == (3, "RunCancelled"), err
            assert _marked(client.mark) == {}  # its gateway and workers are gone too
            with redis.Redis(port=port) as admin:
                left = list(admin.scan_iter(match=client.keys))
                assert all(admin.ttl(key) > 0 for key in left), left  # they expire
        finally:
            client.cleanup()
