"""``gateway`` and ``gateway+http://host:port``: workers on a ``shoal gateway``.

``gateway`` starts a private gateway for the run, on a socket this process binds first (so
no port is guessed and no readiness is polled), with a secret made for the run; it stops
with the run, or with this process however it ends. ``gateway+http://host:port`` uses a
running one (``shoal gateway --port N``), with ``$SHOAL_SECRET`` the same on both sides,
and the token in ``?token=…`` or ``$SHOAL_GATEWAY_TOKEN`` when the gateway asks for one.
Workers hand out work to the same gateway, so every invocation carries its
``gateway+http://`` address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from ..codec import Codec
from ..errors import BadSignature, ConfigError, WorkerLost
from ..security import SECRET_ENV, Signer
from ..stores import Store
from .base import Invocation, Platform, Size, verify_for

TOKEN_ENV = "SHOAL_GATEWAY_TOKEN"
#: Seconds a private gateway has to shut down before it is killed.
STOP_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)


class GatewayWorkers:
    """Invokes workers through a gateway's HTTP API."""

    kind = "gateway"
    in_process = False

    def __init__(self, url: str) -> None:
        self.private = url == "gateway"
        self.url = url
        self.parallelism = os.cpu_count() or 1
        self.token = os.environ.get(TOKEN_ENV)
        self._base = ""
        if not self.private:
            parts = urlsplit(url.removeprefix("gateway+"))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"workers {url!r}: expected gateway+http://host:port (or plain 'gateway')"
                )
            self.token = dict(parse_qsl(parts.query)).get("token", self.token)
            self._base = f"{parts.scheme}://{parts.netloc}"
        self._codec: Codec | None = None
        self._http: httpx.AsyncClient | None = None
        self._process: asyncio.subprocess.Process | None = None

    @classmethod
    def from_url(cls, url: str) -> GatewayWorkers:
        return cls(url)

    async def start(self, store: Store, signer: Signer | None = None) -> None:
        signer = signer or Signer.from_env()
        self._codec = Codec(signer)
        if self.private:
            await self._start_private(signer)
        info = await self._request("GET", "/info")
        self.parallelism = int(info["parallelism"])

    async def _start_private(self, signer: Signer) -> None:
        listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        port = listener.getsockname()[1]
        env = {**os.environ, SECRET_ENV: signer.secret}
        try:
            # Its stdin is a pipe from this process: the gateway stops at its end, when
            # close() closes it or this process dies, even by SIGKILL. In a session of its
            # own, it and its workers miss the signals sent to this process's group (a
            # terminal's Ctrl-C, `timeout`): this process hears them and stops it in order.
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "shoal",
                "gateway",
                "--fd",
                str(listener.fileno()),
                "--exit-with-stdin",
                stdin=asyncio.subprocess.PIPE,
                pass_fds=[listener.fileno()],
                env=env,
                start_new_session=True,
            )
        finally:
            listener.close()  # the gateway has its own copy; requests queue until it accepts
        self._base = f"http://127.0.0.1:{port}"
        self.url = f"gateway+{self._base}"

    async def invoke(self, invocation: Invocation) -> None:
        if self._codec is None:  # inside a worker: hand out with the worker's own secret
            self._codec = Codec(Signer.from_env())
        await self._request("POST", "/invoke", content=self._codec.dump_invocation(invocation))

    async def platform(self) -> Platform:
        """The gateway's machine: its CPUs, its keep-warm period and its idle workers."""
        info = await self._request("GET", "/info")
        idle = {Size(float(c), int(m)): int(n) for c, m, n in info.get("idle", ())}
        return Platform(
            float(info["cpus"]),
            float(info["keep_warm_s"]),
            idle,
            cpu_per_mb=info.get("cpu_per_mb"),
            alive=int(info["limit"]),
        )

    async def prewarm(self, cpus: float, memory_mb: int, count: int) -> int:
        """Ask the gateway to start ``count`` idle workers of a size ahead of need."""
        params = {"cpus": cpus, "memory_mb": memory_mb, "count": count}
        reply = await self._request("POST", "/prewarm", params=params)
        return int(reply["started"])

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._http is None:
            headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.AsyncClient(
                base_url=self._base, headers=headers, timeout=30, verify=verify_for(self._base)
            )
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise WorkerLost(f"cannot reach the gateway at {self._base}: {exc!r}") from None
        if response.status_code == 403:
            raise BadSignature(f"the gateway at {self._base} refused: {_error(response)}")
        if response.status_code == 401:
            raise ConfigError(
                f"the gateway at {self._base} wants a token: pass ?token=… in the workers "
                f"URL or set {TOKEN_ENV} ({_error(response)})"
            )
        if response.status_code >= 400:
            raise WorkerLost(
                f"the gateway at {self._base} answered {response.status_code}: {_error(response)}"
            )
        return response.json()

    async def close(self) -> None:
        try:
            if self._http is not None:
                await self._http.aclose()
                self._http = None
        finally:
            process, self._process = self._process, None
            if process is not None:
                await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop a private gateway: the end of its stdin tells it to shut down (its workers with
    it). One still there after :data:`STOP_TIMEOUT_S` is killed, workers and all: they are
    its process group."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning(
            "the private gateway (pid %d) did not stop within %g s: killing it and its workers",
            process.pid,
            STOP_TIMEOUT_S,
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: still its group's id
        await process.wait()


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
