"""The template process that gateway workers are forked from (``python -I -m
shoal.gateway.template FD``, or a fork of the gateway itself): it has imported the worker
runtime once, so a cold start costs a fork, not a Python start and its imports. Imports
nothing heavy itself, so that the gateway forks it first thing (its asyncio side is
:mod:`.forkserver`).

The gateway and the template talk over a Unix socket: for each worker the gateway sends
its size and name with one end of a fresh socket pair (the worker's channel for frames,
:mod:`.process`), the template forks, and the child applies its size and serves frames on
that channel. The template reaps its children and tells the gateway each one's pid and
exit status (so a killed worker is still reported as killed). It has no threads (a fork
would copy them half-way), and dies with the gateway, and its children with it.
"""

from __future__ import annotations

import array
import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from typing import Any

#: A message: its length, then JSON (a request from the gateway, an answer from the
#: template); a request carries one file descriptor alongside.
_LENGTH = struct.Struct(">I")
#: What ``ps`` and ``top`` show for the template process.
TEMPLATE_NAME = "shoal-template"


# --------------------------------------------------------------------------- the template


def _serve(control: socket.socket) -> None:
    """Fork a worker per request until the gateway goes away; report each one's end as
    soon as it ends (SIGCHLD wakes the loop)."""
    from . import process

    # What the template holds is its imports, for good: no collection in it, and none in a
    # worker walks them (frozen before each fork). A worker's full collection then takes
    # under 1 ms instead of ~40, and writes to none of the template's pages, which stay
    # shared (each worker's private memory grew by 7 MB at its first one).
    gc.disable()
    process.become(TEMPLATE_NAME)
    process.preload()
    idle_imports = list(process.PRELOAD_WHEN_IDLE)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    while True:
        quiet = process.IDLE_AFTER_S if idle_imports else None
        ready, _, _ = select.select([control.fileno(), wake_r], [], [], quiet)
        if not ready and idle_imports:
            process.idle_import(idle_imports.pop(0))
            continue
        if wake_r in ready:
            os.read(wake_r, 512)
            _reap(control)
        if control.fileno() not in ready:
            continue
        try:
            request, fds = _receive(control)
        except (EOFError, OSError):
            return
        channel = fds[0]
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the worker: none of the template's plumbing
            gc.enable()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w):
                os.close(fd)
            control.close()
            try:
                process.serve_forked(
                    channel, request["memory_mb"], request["cpu_list"], request["name"]
                )
            finally:
                os._exit(0)
        os.close(channel)
        _send(control, {"pid": pid, "name": request["name"]})


def _reap(control: socket.socket) -> None:
    """Tell the gateway of every worker that ended, with its exit status."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _send(sock: socket.socket, message: dict[str, Any], fd: int | None = None) -> None:
    """One message (with ``fd`` passed alongside); messages are small: one send each."""
    data = json.dumps(message).encode()
    blob = _LENGTH.pack(len(data)) + data
    ancillary = (
        [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    )
    sent = sock.sendmsg([blob], ancillary)
    if sent < len(blob):
        sock.sendall(blob[sent:])


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, 1)
    if len(head) < _LENGTH.size:
        raise EOFError
    (n,) = _LENGTH.unpack(head)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return json.loads(data), list(fds)


def main() -> None:
    fd = int(sys.argv[1])
    _serve(socket.socket(fileno=fd))


# --------------------------------------------------------------------------- launching it


class ForkedTemplate:
    """A template forked from the gateway itself (:func:`fork_template`), as
    :class:`ForkServer` stops it: the two things it uses of a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


Template = tuple[subprocess.Popen[bytes] | ForkedTemplate, socket.socket]


def launch_template(python: str | None = None) -> Template:
    """Start the template process (on interpreter ``python``: an environment's, else this
    one), and the socket to it. Cheap to call early (the gateway does, before its own
    imports): the template imports the worker runtime meanwhile."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [
                python or sys.executable,
                "-I",
                "-m",
                "shoal.gateway.template",
                str(theirs.fileno()),
            ],  # fmt: skip
            pass_fds=[theirs.fileno()],
        )
    finally:
        theirs.close()
    return proc, ours


def fork_template() -> Template:
    """The template as a fork of this process, which must have no thread yet: it starts
    with Python itself and Shoal's package imported, and imports the worker runtime while
    the gateway imports its own (asyncio, its core), a Python start earlier than a
    template started anew. Of an isolated Python (``-I``) only: its path is then the one a
    worker must have (installed packages only)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            keep = theirs.fileno()  # and none of the gateway's (its listening socket)
            os.closerange(3, keep)
            os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
            _serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return ForkedTemplate(pid), ours


_early: Template | None = None


def launch_template_early() -> None:
    """Have the template starting before anything else is imported (``python -m
    shoal.gateway``): a private gateway's first run waits on it, not on the gateway's
    imports. Forked from this process when it is isolated, else started anew."""
    global _early
    _early = fork_template() if sys.flags.isolated else launch_template()


def take_template() -> Template:
    """The template launched early, or a new one."""
    global _early
    template, _early = _early, None
    return template if template is not None else launch_template()


if __name__ == "__main__":
    main()
