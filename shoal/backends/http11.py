"""A small HTTP/1.1 client for the gateway's API: h11 over asyncio streams.

Every hand-out is a request to a gateway, on the path from a finished task to its child's
start. httpx spends ~0.8 ms of CPU on a request to a gateway on this machine, whose server
answers in ~0.15 ms; this client, about as much as the server (h11 frames the messages, as
it does inside httpx and uvicorn), and its import is a fifth of httpx's.

Connections are kept for reuse while idle for less than :data:`IDLE_S` (the gateway keeps
them far longer); a request that finds its reused connection closed before any answer
goes again once on a new one (the gateway had not read it: nothing is sent twice).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import ssl
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11

#: An idle connection older than this is closed rather than reused (httpx's default).
IDLE_S = 5.0
_READ = 1 << 16


class TransportError(Exception):
    """The request got no answer: no connection, a connection lost, or a timeout."""


class _Unanswered(Exception):
    """The connection ended before any byte of the answer came."""


class Response:
    """A status and a body, read whole."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class _Connection:
    __slots__ = ("h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Send ``request`` (its bytes, framed already); the answer, and whether the
        connection may carry another request."""
        conn, status, body, answered = self.h11, 0, [], False
        try:
            self.writer.write(request)
            await self.writer.drain()
            data = await self.reader.read(_READ)
            conn.receive_data(data)  # b"": the end
            answered = bool(data)
        except (OSError, h11.ProtocolError) as exc:
            raise _Unanswered() from exc
        if not answered:
            raise _Unanswered()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(_READ))
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                body.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise ConnectionResetError("the server closed the connection")
        reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        if reusable:
            conn.start_next_cycle()
        return Response(status, b"".join(body)), reusable

    def close(self) -> None:
        self.writer.close()


class Client:
    """Requests to one base URL (``http://host:port`` or ``https://…``), each with
    ``headers``; ``tls``: the context for https."""

    def __init__(
        self,
        base: str,
        headers: dict[str, str] | None = None,
        timeout: float | None = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base)
        self.base = base
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self.timeout = timeout
        self.headers = [("host", parts.netloc), *(headers or {}).items()]
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        json: Any = None,
        params: dict[str, Any] | None = None,
        patient: bool = False,
    ) -> Response:
        """One request; :class:`TransportError` if it got no answer (in the client's
        timeout, unless ``patient``)."""
        headers = list(self.headers)
        if json is not None:
            content = jsonlib.dumps(json).encode()
            headers.append(("content-type", "application/json"))
        headers.append(("content-length", str(len(content))))
        target = f"{path}?{urlencode(params)}" if params else path
        limit = None if patient else self.timeout
        try:
            async with asyncio.timeout(limit):
                return await self._send(method, target, headers, content)
        except TimeoutError:
            raise TransportError(f"{method} {self.base}{path}: no answer in {limit} s") from None
        except (OSError, h11.ProtocolError, _Unanswered) as exc:
            cause = exc.__cause__ or exc
            raise TransportError(f"{method} {self.base}{path}: {cause!r}") from None

    async def _send(
        self, method: str, target: str, headers: list[tuple[str, str]], content: bytes
    ) -> Response:
        while True:
            conn, reused = self._reuse(), True
            if conn is None:
                conn, reused = await self._connect(), False
            framing = conn.h11
            request = framing.send(h11.Request(method=method, target=target, headers=headers))
            request += framing.send(h11.Data(data=content)) if content else b""
            request += framing.send(h11.EndOfMessage())
            try:
                response, reusable = await conn.exchange(request)
            except _Unanswered:
                conn.close()
                if reused:  # closed while idle: the gateway never read the request
                    continue
                raise
            except BaseException:  # a timeout, a cancellation: the answer is not coming
                conn.close()
                raise
            if reusable:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return response

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
        )
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
