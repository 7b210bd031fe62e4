"""A client process's private gateway (``workers="gateway"``): started as early as the
process's first run knows it wants one (:func:`launch`, before the run's own imports, which
its start then overlaps), and kept for its later runs. Imports nothing heavy."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading

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
            # gateway's, which then forks its workers' template from itself (forkserver).
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
        self.users = 0
        self.stale = False  # a run on it ended badly: no new run takes it

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


def launch(secret: str) -> None:
    """Have this process's private gateway for ``secret`` starting (the kept one, else a
    new one) without taking it: the run takes it later (:func:`private_gateway`)."""
    private_gateway(secret).release(True)
