"""A client process's private gateway (``workers="gateway"``): started as early as the
process's first run knows it wants one (:func:`launch`, before the run's own imports, which
its start then overlaps), kept for its later runs, and handed their invocations through
its stdin (:meth:`PrivateGateway.send`); and the gateway process's own serving
(:func:`serve`). Imports nothing heavy."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

from ..errors import WorkerLost
from ..security import SECRET_ENV

#: Seconds a private gateway has to shut down before it is killed.
STOP_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)


class PrivateGateway:
    """A client process's own gateway: started by its first run on ``workers="gateway"``
    (with the process's secret), kept for its later runs while each ends well (a run then
    starts in milliseconds, on warm workers), and stopped in order after a run that did not
    (a task may still be stuck in a worker) and when the process exits. Its stdin is a pipe
    from this process, so it also stops when the process dies, even by SIGKILL. In a
    session of its own, it and its workers miss the signals sent to this process's group
    (a terminal's Ctrl-C, `timeout`): this process hears them and stops it in order."""

    def __init__(self, secret: str) -> None:
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            # Isolated (-I): a worker's path holds installed packages only, and so may the
            # gateway's, which then forks its workers' template from itself (.template).
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "shoal.gateway", "--private", str(listener.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=[listener.fileno()],
                env={**os.environ, SECRET_ENV: secret},
                start_new_session=True,
            )  # fmt: skip
        finally:
            listener.close()  # the gateway has its own copy; requests queue until it accepts
        self.secret = secret
        self._sending = threading.Lock()
        self.users = 0
        self.stale = False  # a run on it ended badly: no new run takes it

    def send(self, payload: bytes) -> None:
        """Hand the gateway a signed invocation through its stdin: no HTTP client, no
        request to wait for (its HTTP server may still be starting: see :func:`serve`).
        :class:`~shoal.WorkerLost` if it is gone."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            with self._sending:  # runs in several threads share it: one frame at a time
                stdin.write(frame(payload))
                stdin.flush()
        except (BrokenPipeError, ValueError) as exc:  # ValueError: closed by stop()
            raise WorkerLost(
                f"the private gateway (pid {self.process.pid}) is gone: {exc!r}"
            ) from None

    def usable(self, secret: str) -> bool:
        return not self.stale and self.secret == secret and self.process.poll() is None

    def release(self, ok: bool) -> None:
        with _private_lock:
            self.users -= 1
            self.stale = self.stale or not ok
            if not self.stale or self.users:
                return
        self.stop()

    def stop(self) -> None:
        """The end of its stdin tells it to shut down, its workers with it. One still there
        after :data:`STOP_TIMEOUT_S` is killed, workers and all: they are its group."""
        process = self.process
        if process.stdin is not None:
            process.stdin.close()
        try:
            _wait(process, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning(
                "the private gateway (pid %d) did not stop within %g s: killing it and its workers",
                process.pid,
                STOP_TIMEOUT_S,
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: still its group's id
            process.wait()


def _wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    """``process.wait(timeout)``, back as soon as the process ends: ``Popen.wait`` with a
    timeout polls, and notices an end up to 50 ms late. Linux tells through a pidfd."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, or already reaped
        process.wait(timeout)
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    process.wait(0)  # ended, else TimeoutExpired as after a timeout


_LENGTH = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """An invocation as the client writes it to its private gateway's stdin."""
    return _LENGTH.pack(len(payload)) + payload


def frames(buffer: bytearray) -> list[bytes]:
    """The whole frames at the start of ``buffer``, taken out of it."""
    out = []
    while len(buffer) >= _LENGTH.size:
        (n,) = _LENGTH.unpack_from(buffer)
        if len(buffer) < _LENGTH.size + n:
            break
        out.append(bytes(buffer[_LENGTH.size : _LENGTH.size + n]))
        del buffer[: _LENGTH.size + n]
    return out


_kept: PrivateGateway | None = None
_private_lock = threading.Lock()


def private_gateway(secret: str) -> PrivateGateway:
    """This process's private gateway for a new run: the kept one, else a new one."""
    global _kept
    with _private_lock:
        old = kept = _kept
        if kept is None or not kept.usable(secret):
            if old is None:
                atexit.register(_stop_private)
            kept = _kept = PrivateGateway(secret)
        kept.users += 1
    if old is not None and old is not kept and not old.users and old.process.poll() is None:
        old.stop()  # the secret changed ($SHOAL_SECRET): the old one serves no one now
    return kept


def _stop_private() -> None:
    """At exit: stop the kept private gateway in order."""
    with _private_lock:
        kept = _kept
    if kept is not None and kept.process.poll() is None:
        kept.stop()


#: The private gateway's HTTP server starts once the first invocations are placed and it
#: has been quiet this long (its imports then hold the process for ~45 ms),
QUIET_S = 0.01
#: or a connection waits for it (a worker's hand-out, a planner's question), or this long
#: after the gateway's start at the latest.
HTTP_AFTER_S = 1.0


def serve(fd: int, template: Any) -> None:
    """A private gateway's own process (``python -m shoal.gateway --private FD``): its
    core serves its client's invocations from its stdin at once, and its HTTP server
    (Starlette, uvicorn) starts on the listening socket ``fd`` only later (see
    :data:`QUIET_S`): their imports would otherwise hold up the first run of its client,
    whose process, the gateway and the gateway's template start together on a few cores.
    Until then connections wait in the socket's queue."""
    import asyncio

    asyncio.run(_serve(fd, template))


async def _serve(fd: int, template: Any) -> None:
    import asyncio

    from ..security import Signer
    from .core import Gateway

    loop = asyncio.get_running_loop()
    gateway = Gateway(Signer.from_env(), exit_with_stdin=True, template=template)
    await gateway.start()
    wanted: asyncio.Future[None] = loop.create_future()
    stopped: asyncio.Future[signal.Signals] = loop.create_future()

    def want() -> None:
        if not wanted.done():
            wanted.set_result(None)

    def stop(sig: signal.Signals) -> None:
        if not stopped.done():
            stopped.set_result(sig)

    loop.add_reader(fd, want)  # a connection waits
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    settled = asyncio.ensure_future(gateway.settled(QUIET_S))
    waits: list[asyncio.Future[Any]] = [wanted, stopped, settled]
    await asyncio.wait(waits, timeout=HTTP_AFTER_S, return_when=asyncio.FIRST_COMPLETED)
    settled.cancel()
    loop.remove_reader(fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    if stopped.done():  # stopped in order, then ended by the signal, as uvicorn would
        await gateway.close()
        signal.raise_signal(stopped.result())
        return
    from ..web import make_server, tcp_socket
    from .server import create_app

    server = make_server(create_app(gateway, start=False), host="127.0.0.1", port=0)
    await server.serve(sockets=[tcp_socket(fd)])


def launch(secret: str) -> None:
    """Have this process's private gateway for ``secret`` starting (the kept one, else a
    new one) without taking it: the run takes it later (:func:`private_gateway`)."""
    private_gateway(secret).release(True)
