"""The gateway's HTTP/1.1 client (shoal.backends.http11) against real servers on loopback:
answers, reused connections, a connection the server closed while idle, no answer, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from servers import make_certificates

from shoal.backends.http11 import Client, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        (int(v) for k, _, v in (h.partition(": ") for h in lines) if k.lower() == "content-length"),
        0,
    )
    return lines[0], await reader.readexactly(length)


def _answer(body: Any, status: int = 200, close: bool = False) -> bytes:
    data = json.dumps(body).encode()
    extra = "connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(data)}\r\n\r\n"
    ).encode() + data


def _serve(handler: Handler, tls: ssl.SSLContext | None = None) -> Any:
    """Run ``scenario(base, connections)`` beside a server of ``handler`` on loopback."""

    def run(scenario: Callable[[str, list[int]], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            connections: list[int] = []

            async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                connections.append(len(connections))
                try:
                    await handler(reader, writer)
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()

            server = await asyncio.start_server(counted, "127.0.0.1", 0, ssl=tls)
            port = server.sockets[0].getsockname()[1]
            scheme = "https" if tls else "http"
            async with server:
                return await scenario(f"{scheme}://127.0.0.1:{port}", connections)

        return asyncio.run(main())

    return run


async def _echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line, body = await _read_request(reader)
        writer.write(_answer({"line": line, "body": body.decode()}))
        await writer.drain()


def test_requests_get_their_answers_over_one_kept_connection() -> None:
    async def scenario(base: str, connections: list[int]) -> list[Any]:
        client = Client(base, {"authorization": "Bearer t"})
        try:
            first = await client.request("POST", "/invoke", content=b"payload")
            second = await client.request("GET", "/info", params={"a": 1})
            third = await client.request("POST", "/environments", json={"r": ["x"]}, patient=True)
            return [first.json(), second.json(), third.json(), len(connections)]
        finally:
            await client.aclose()

    first, second, third, connections = _serve(_echo_forever)(scenario)
    assert first == {"line": "POST /invoke HTTP/1.1", "body": "payload"}
    assert second["line"] == "GET /info?a=1 HTTP/1.1"
    assert json.loads(third["body"]) == {"r": ["x"]}
    assert connections == 1


def test_a_request_on_a_kept_connection_that_ends_unanswered_goes_again_on_a_new_one() -> None:
    """As when the server closed the connection while it was idle: the request on it was
    never answered, so it goes again (once) on a new connection."""

    async def one_per_connection(reader: asyncio.StreamReader, writer: Any) -> None:
        await _read_request(reader)
        writer.write(_answer({"n": 1}))
        await writer.drain()
        await _read_request(reader)  # the next one on this connection: closed, unanswered

    async def scenario(base: str, connections: list[int]) -> tuple[Any, Any, int]:
        client = Client(base)
        try:
            first = await client.request("GET", "/info")
            second = await client.request("GET", "/info")
            return first.json(), second.json(), len(connections)
        finally:
            await client.aclose()

    assert _serve(one_per_connection)(scenario) == ({"n": 1}, {"n": 1}, 2)


def test_no_answer_is_a_transport_error_naming_the_request() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)  # and close, answering nothing

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    async def ask(base: str, connections: list[int]) -> None:
        await Client(base, timeout=0.2).request("POST", "/invoke", content=b"x")

    with pytest.raises(TransportError, match=r"POST http://127\.0\.0\.1:\d+/invoke"):
        _serve(hang_up)(ask)
    with pytest.raises(TransportError, match=r"/invoke: no answer in 0.2 s"):
        _serve(silent)(ask)

    async def refused() -> None:
        await Client("http://127.0.0.1:9").request("GET", "/info")

    with pytest.raises(TransportError, match="127.0.0.1:9/info"):
        asyncio.run(refused())


def test_https_speaks_tls_verified_by_the_given_context(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs / "server.crt", certs / "server.key")
    trusting = ssl.create_default_context(cafile=str(certs / "ca.crt"))

    async def scenario(base: str, connections: list[int]) -> Any:
        assert base.startswith("https://")
        client = Client(base, tls=trusting)
        try:
            answer = (await client.request("GET", "/info")).json()
        finally:
            await client.aclose()
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await Client(base, tls=ssl.create_default_context()).request("GET", "/info")
        return answer

    assert _serve(_echo_forever, server)(scenario)["line"] == "GET /info HTTP/1.1"
