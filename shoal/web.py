"""What Shoal's two HTTP services (``shoal gateway``, ``shoal worker``) share: they listen
on loopback unless given a token, and then want it on every request."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ConfigError


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
