"""What Shoal's two HTTP services (``shoal gateway``, ``shoal worker``) share: they listen
on loopback unless given a token, and then want it on every request."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import socket
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ConfigError

log = logging.getLogger(__name__)


def check_exposure(host: str, token: str | None, token_env: str) -> None:
    """Refuse to listen beyond this machine without a token: whoever reaches the service
    can run code on it."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone who reaches it could run "
            f"code. Pass --token or set {token_env}, or listen on 127.0.0.1"
        )


def token_refusal(request: Request, token: str | None, what: str) -> Response | None:
    """None when ``request`` may pass (no ``token`` is set, or it carries
    ``Authorization: Bearer <token>``); else the 401 answer to give it."""
    if token is None:
        return None
    given = request.headers.get("authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    return JSONResponse({"error": f"missing or wrong {what} token"}, status_code=401)


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    fd: int | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` with uvicorn on ``host:port``, or on the listening socket ``fd``, until
    SIGTERM or SIGINT; then shut down in order, quietly (after SIGTERM, uvicorn ends the
    process by it, as the signal asks)."""
    server = make_server(app, host=host, port=port, **options)
    # After shutting down for a SIGINT, uvicorn raises it again: the shutdown is done.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=None if fd is None else [tcp_socket(fd)])


def make_server(app: Any, *, host: str, port: int, **options: Any) -> Any:
    """A uvicorn server of ``app``, quiet, to run (or ``await server.serve(sockets)``)."""
    import uvicorn

    # Idle connections outlive the clients' keep-alive (5 s: httpx's, Shoal's http11's), so
    # a client never sends a request on a connection this side is closing. No WebSockets:
    # no import of their library at start (~10 ms).
    options = {
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": 75,
        "ws": "none",
        **options,
    }
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))


def tcp_socket(fd: int) -> socket.socket:
    """The listening TCP socket ``fd``, as uvicorn must be given it: given the bare fd, it
    would take it for a Unix socket, and its connections, without TCP_NODELAY, would wait
    out Nagle's algorithm against delayed ACKs (about 40 ms a request)."""
    return socket.socket(fileno=fd)
