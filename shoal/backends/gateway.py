"""``gateway`` and ``gateway+http://host:port``: workers on a ``shoal gateway``.

``gateway`` starts a private gateway for the run, on a socket this process binds first (so
no port is guessed and no readiness is polled), with a secret made for the run; it stops
with the run, or with this process however it ends. ``gateway+http://host:port`` uses a
running one (``shoal gateway --port N``), with ``$SHOAL_SECRET`` the same on both sides,
and the token in ``?token=…`` or ``$SHOAL_GATEWAY_TOKEN`` when the gateway asks for one.
``gateway+http://host1:port1,host2:port2`` spreads workers over several gateways (one per
machine, say), taking turns; give such a run a blob store every machine reaches
(``blobs="s3://…"``). Workers hand out work to the same gateways, so every invocation
carries the ``gateway+http://`` address.

Before a run whose tasks have requirements, each gateway makes their environments ready
(:meth:`GatewayWorkers.environments`): one that is missing is built once while the run
waits (a spinner on a terminal, and the log), or the run fails before any task runs with
:class:`~shoal.EnvironmentBuildError` and uv's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ..codec import Codec
from ..errors import BadSignature, ConfigError, EnvironmentBuildError, WorkerLost
from ..gateway import TOKEN_ENV
from ..gateway.private import PrivateGateway, private_gateway
from ..security import Signer
from ..stores import Store
from .base import Invocation, Platform, Size, is_loopback, tls_context

if TYPE_CHECKING:  # imported on first request (~15 ms): a gateway's template preloads it
    from .http11 import Client, Response

log = logging.getLogger(__name__)


class GatewayWorkers:
    """Invokes workers through a gateway's HTTP API."""

    kind = "gateway"
    in_process = False

    def __init__(self, url: str) -> None:
        self.private = url == "gateway"
        self.same_host = self.private
        self.url = url
        self.parallelism = os.cpu_count() or 1
        self.token = os.environ.get(TOKEN_ENV)
        self._bases: list[str] = []
        if not self.private:
            parts = urlsplit(url.removeprefix("gateway+"))
            hosts = [urlsplit(f"//{n}") for n in parts.netloc.split(",")]
            if parts.scheme not in ("http", "https") or not all(h.hostname for h in hosts):
                raise ConfigError(
                    f"workers {url!r}: expected gateway+http://host:port[,host:port...] "
                    "(or plain 'gateway')"
                )
            self.token = dict(parse_qsl(parts.query)).get("token", self.token)
            self._bases = [f"{parts.scheme}://{h.netloc}" for h in hosts]
            self.same_host = all(is_loopback(h.hostname) for h in hosts)
        self._turn = random.randrange(len(self._bases) or 1)  # workers start apart
        self._codec: Codec | None = None
        self._http: dict[str, Client] = {}
        self._private: PrivateGateway | None = None

    @classmethod
    def from_url(cls, url: str) -> GatewayWorkers:
        return cls(url)

    async def start(self, store: Store, signer: Signer | None = None) -> None:
        signer = signer or Signer.from_env()
        self._codec = Codec(signer)
        if self.private:  # its parallelism is this machine's CPUs: nothing to ask it
            await self._start_private(signer)
            return
        unknown = [b for b in self._bases if b not in _caps]  # asked once: see _caps
        infos = await asyncio.gather(*(self._request("GET", "/info", b) for b in unknown))
        _caps.update((b, int(info["parallelism"])) for b, info in zip(unknown, infos, strict=True))
        self.parallelism = sum(_caps[b] for b in self._bases)

    async def _start_private(self, signer: Signer) -> None:
        self._private = private_gateway(signer.secret)
        self._bases = [self._private.base]
        self.url = f"gateway+{self._private.base}"

    async def invoke(self, invocation: Invocation) -> None:
        if self._codec is None:  # inside a worker: hand out with the worker's own secret
            self._codec = Codec(Signer.from_env())
        content = self._codec.dump_invocation(invocation)
        if self._private is not None:  # this process's own gateway: through its stdin
            self._private.send(content)
            return
        self._turn = (self._turn + 1) % len(self._bases)
        base = self._bases[self._turn]
        reply = await self._request("POST", "/invoke", base, content=content)
        if "parallelism" in reply:  # a gateway restarted at this address with another cap
            _caps[base] = int(reply["parallelism"])

    async def platform(self) -> Platform:
        """The gateways' machines: their CPUs, keep-warm period and idle workers."""
        infos = await asyncio.gather(*(self._request("GET", "/info", b) for b in self._bases))
        idle: dict[Size, int] = {}
        for info in infos:
            for c, m, n in info.get("idle", ()):
                size = Size(float(c), int(m))
                idle[size] = idle.get(size, 0) + int(n)
        return Platform(
            sum(float(info["cpus"]) for info in infos),
            float(infos[0]["keep_warm_s"]),
            idle,
            cpu_per_mb=infos[0].get("cpu_per_mb"),
            alive=sum(int(info["limit"]) for info in infos),
            invoke_latency_s=float(infos[0].get("invoke_latency_s", 0.0)),
        )

    async def prewarm(self, cpus: float, memory_mb: int, count: int, after_s: float = 0.0) -> int:
        """Ask the (first) gateway to start ``count`` idle workers of a size ahead of need,
        ``after_s`` seconds from now (the gateway keeps the time)."""
        params = {"cpus": cpus, "memory_mb": memory_mb, "count": count, "after_s": after_s}
        reply = await self._request("POST", "/prewarm", self._bases[0], params=params)
        return int(reply["started"])

    async def environments(self, sets: list[tuple[str, ...]]) -> None:
        """Make the environment of each requirement set ready on every gateway, building
        the missing ones (once: later runs and restarts find them in the cache)."""
        for base in self._bases:
            for reqs in sets:
                if (base, reqs) in _ready:
                    continue
                await self._environment(base, reqs)
                _ready.add((base, reqs))

    async def _environment(self, base: str, requirements: tuple[str, ...]) -> None:
        what = ", ".join(requirements)
        status: Any = contextlib.nullcontext()
        if sys.stderr.isatty():
            from rich.console import Console

            status = Console(stderr=True).status(f"environment for {what} on {base}")
        with status:
            try:
                # No timeout: a first build downloads and installs packages.
                reply = await self._request(
                    "POST", "/environments", base, json={"requirements": list(requirements)},
                    patient=True,
                )  # fmt: skip
            except _Refused as exc:
                if exc.status == 422:
                    raise EnvironmentBuildError(
                        f"the gateway at {base} could not build the environment for "
                        f"{what}; nothing ran:\n{exc.message}"
                    ) from None
                raise ConfigError(f"the gateway at {base} refused {what}: {exc.message}") from None
        if reply.get("waited"):
            log.info(
                "gateway %s: environment %s for %s ready in %.1f s (kept for later runs)",
                base,
                reply["key"],
                what,
                reply["seconds"],
            )

    async def _request(self, method: str, path: str, base: str, **kwargs: Any) -> Any:
        from .http11 import Client, TransportError

        http = self._http.get(base)
        if http is None:
            headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
            tls = tls_context() if base.startswith("https") else None
            http = self._http[base] = Client(base, headers, 30, tls)
        try:
            response = await http.request(method, path, **kwargs)
        except TransportError as exc:
            raise WorkerLost(f"cannot reach the gateway at {base}: {exc}") from None
        if response.status_code == 403:
            raise BadSignature(f"the gateway at {base} refused: {_error(response)}")
        if response.status_code == 401:
            raise ConfigError(
                f"the gateway at {base} wants a token: pass ?token=… in the workers "
                f"URL or set {TOKEN_ENV} ({_error(response)})"
            )
        if path == "/environments" and response.status_code in (400, 422):
            raise _Refused(response.status_code, _error(response))
        if response.status_code >= 400:
            raise WorkerLost(
                f"the gateway at {base} answered {response.status_code}: {_error(response)}"
            )
        return response.json()

    async def close(self, ok: bool = True) -> None:
        try:
            clients, self._http = list(self._http.values()), {}
            for http in clients:
                await http.aclose()
        finally:
            private, self._private = self._private, None
            if private is not None:
                await asyncio.to_thread(private.release, ok)


#: The gateways' concurrency caps, by their addresses, as this process's first run on them
#: learned them (a round trip each run would cost a small run a fifth of its time), and
#: as each invocation's answer tells since: a gateway restarted at the same address with
#: another cap is seen from the next run on.
_caps: dict[str, int] = {}

#: Environments a gateway made ready for this process: later runs skip asking (a round
#: trip each). A gateway that lost one since builds it again for the invocations needing it.
_ready: set[tuple[str, tuple[str, ...]]] = set()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _error(response: Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
