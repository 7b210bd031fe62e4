"""The servers the distributed engines need, started and stopped by the harness itself.

:class:`ShoalServers` starts a ``redis-server`` (temporary directory, free loopback port, no
persistence) and a ``shoal gateway`` process (by default on a socket bound here first and
passed with ``--fd``, so no port is guessed; or with ``--port``, see ``LISTEN``) sharing a
freshly generated ``SHOAL_SECRET``, and stops both on ``close()``; call
it from a ``finally`` (``bench/__main__.py`` turns SIGTERM into an exception so that Ctrl-C
and kill both end up there). The children run in their own session, so a Ctrl-C on the
terminal reaches the harness only and the servers stop in order.

It also reads Redis's ``INFO commandstats`` (calls per command; commands run inside Lua
scripts count, and so does the ``EVALSHA`` that ran them) and waits for the gateway to be
idle, so that a run's count holds the commands of that run only.
"""

import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

#: How the gateway listens: "fd" (a socket bound by the harness and passed as ``--fd``) or
#: "port" (``--port N``). ``python -m bench --gateway-listen`` sets it.
LISTEN = "fd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc, timeout=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_for(proc, marker, timeout):
    """Read ``proc``'s output until it says ``marker``; then keep draining it."""
    deadline, seen = time.monotonic() + timeout, b""
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"redis-server did not start: {seen.decode(errors='replace')}")
        if select.select([proc.stdout], [], [], left)[0]:
            seen += os.read(proc.stdout.fileno(), 65536)
    threading.Thread(target=proc.stdout.read, daemon=True).start()


class ShoalServers:
    """A redis-server and a ``shoal gateway`` for the ``shoal-gateway`` engine."""

    def __init__(self, max_workers=None, listen=None, gateway_args=()):
        self.max_workers = max_workers or os.cpu_count() or 1
        self.listen = listen or LISTEN
        self.gateway_args = list(gateway_args)  # e.g. ["--invoke-latency", "0.05"]
        self.procs, self.tmp, self.redis, self.http = [], None, None, None

    def start(self):
        """Start both; if either fails, stop what started (no server outlives a failed
        benchmark)."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not on PATH")
        import httpx
        import redis

        self.tmp = tempfile.TemporaryDirectory(prefix="shoal-bench-")
        self.secret = secrets.token_hex(32)
        self._old_secret = os.environ.get("SHOAL_SECRET")
        os.environ["SHOAL_SECRET"] = self.secret  # the client signs with it too
        port = self._start_redis()
        self.storage = f"redis://127.0.0.1:{port}/0"
        self.redis = redis.Redis(port=port)
        gport = self._start_gateway()
        self.workers = f"gateway+http://127.0.0.1:{gport}"
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{gport}", timeout=30)
        if self.listen == "port":
            self._wait_for_gateway()
        return self

    def _start_gateway(self):
        """``shoal gateway`` on a socket bound here (``--fd``, as tests/servers.py does), or
        on a free port it binds itself (``--port``, as a user starts it); its port."""
        cmd = [sys.executable, "-m", "shoal", "gateway", "--max-workers", str(self.max_workers)]
        cmd += ["--keep-warm", "3600", *self.gateway_args]  # none retires during the benchmark
        env = {**os.environ, "SHOAL_SECRET": self.secret}
        if self.listen == "port":
            port = free_port()
            self.procs.append(
                subprocess.Popen(cmd + ["--port", str(port)], env=env, start_new_session=True)
            )
            return port
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        try:
            self.procs.append(
                subprocess.Popen(
                    cmd + ["--fd", str(listener.fileno())],
                    pass_fds=[listener.fileno()],
                    env=env,
                    start_new_session=True,
                )
            )
            return listener.getsockname()[1]
        finally:
            listener.close()  # the gateway has its copy; requests queue until it accepts

    def _wait_for_gateway(self, timeout=30.0):
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.procs[-1].poll() is None:
            try:
                return self.http.get("/health")
            except httpx.TransportError:
                time.sleep(0.05)  # polling its readiness, with a deadline
        raise RuntimeError("the gateway did not start listening (port taken?)")

    def _start_redis(self):
        for _ in range(5):  # another process may take the free port first
            port = free_port()
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            cmd += ["--save", "", "--appendonly", "no", "--dir", self.tmp.name]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                _wait_for(proc, b"Ready to accept connections", 20)
            except RuntimeError:
                _stop(proc)
                continue
            self.procs.append(proc)
            return port
        raise RuntimeError("could not start redis-server")

    def prewarm(self, count):
        """Start ``count`` idle worker processes (default size); how many started."""
        reply = self.http.post("/prewarm", params={"count": count})
        reply.raise_for_status()
        return reply.json()["started"]

    def wait_idle(self, timeout=30.0):
        """Wait until no gateway worker is busy and nothing is queued (the end of a run's
        stragglers, e.g. workers still emitting their stopped events)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.http.get("/info").json()
            if not info["queued"] and not any(p.get("busy") for p in info["pools"].values()):
                return info
            time.sleep(0.005)
        raise TimeoutError(f"the gateway stayed busy for {timeout} s: {info}")

    def command_stats(self):
        """``{command: calls}`` from ``INFO commandstats`` (``info`` itself left out)."""
        stats = self.redis.info("commandstats")
        return {
            k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items() if k != "cmdstat_info"
        }

    def close(self):
        if self.http is not None:
            self.http.close()
        if self.redis is not None:
            self.redis.close()
        for proc in reversed(self.procs):  # the gateway first: its workers talk to redis
            _stop(proc)
        self.procs.clear()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None
            if self._old_secret is None:
                os.environ.pop("SHOAL_SECRET", None)
            else:
                os.environ["SHOAL_SECRET"] = self._old_secret


def diff_stats(before, after):
    """Calls per command between two :meth:`ShoalServers.command_stats` snapshots."""
    calls = {k: n - before.get(k, 0) for k, n in after.items()}
    return {k: n for k, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n}
