"""The gateway's handle on its template process (:mod:`.template`), on asyncio: it asks
for a worker of a size and gets the worker's channel and, later, its exit status."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
from typing import Any

from .template import _LENGTH, Template, _send, launch_template


class ForkedWorker:
    """A worker process forked by the template, as the gateway drives it: the same few
    things it uses of an asyncio subprocess (its frames in and out, its pid, its end)."""

    def __init__(
        self,
        pid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ended: asyncio.Future[int],
    ) -> None:
        self.pid, self.stdout, self.stdin, self._ended = pid, reader, writer, ended
        self.returncode: int | None = None

    async def wait(self) -> int:
        self.returncode = await self._ended
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The gateway's handle on its template process (one it launched, or ``template``)."""

    def __init__(self, template: Template | None = None) -> None:
        self._template = template
        self._control: socket.socket | None = None
        self._ended: dict[int, asyncio.Future[int]] = {}
        #: The spawns asked for and not answered yet: the template answers in order.
        self._asked: collections.deque[asyncio.Future[dict[str, Any]]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._template is None:
            self._template = launch_template()
        control = self._template[1]
        control.setblocking(False)
        self._control = control
        self._reader = asyncio.create_task(self._read())

    async def spawn(self, memory_mb: int, cpu_list: list[int], name: str) -> ForkedWorker:
        assert self._control is not None, "start() first"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        # Asked at once, however many are waiting (the template forks them back to back);
        # sent and queued with no await between, so the answers match the order.
        request = {"memory_mb": memory_mb, "cpu_list": cpu_list, "name": name}
        _send(self._control, request, theirs.fileno())
        theirs.close()
        asked = loop.create_future()
        self._asked.append(asked)
        answer = await asked
        pid = int(answer["pid"])
        ended = self._ended.setdefault(pid, loop.create_future())
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return ForkedWorker(pid, reader, writer, ended)

    async def _read(self) -> None:
        """Answers to spawns, and the exit statuses of workers, as they come."""
        assert self._control is not None
        loop = asyncio.get_running_loop()
        buffer = b""
        while True:
            try:
                chunk = await loop.sock_recv(self._control, 65536)
            except OSError:
                chunk = b""
            if not chunk:  # the template is gone: so are its workers
                for future in self._ended.values():
                    if not future.done():
                        future.set_result(-signal.SIGKILL)
                while self._asked:
                    asked = self._asked.popleft()
                    if not asked.done():
                        asked.set_exception(ConnectionError("the template process is gone"))
                return
            buffer += chunk
            while len(buffer) >= _LENGTH.size:
                (n,) = _LENGTH.unpack(buffer[: _LENGTH.size])
                if len(buffer) < _LENGTH.size + n:
                    break
                message = json.loads(buffer[_LENGTH.size : _LENGTH.size + n])
                buffer = buffer[_LENGTH.size + n :]
                if "exited" in message:
                    future = self._ended.setdefault(int(message["exited"]), loop.create_future())
                    if not future.done():
                        future.set_result(int(message["returncode"]))
                elif self._asked:
                    asked = self._asked.popleft()
                    if not asked.done():
                        asked.set_result(message)

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._reader is not None:
            self._reader.cancel()
        if self._template is not None:
            proc = self._template[0]
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            self._template = None
