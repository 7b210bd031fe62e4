"""``shoal worker``: Shoal workers as an HTTP service (Starlette on uvicorn), so that any
FaaS or container platform (Knative, OpenFaaS, Cloud Run, a plain container) can host them.
Clients use it with ``workers="http(s)://host:port/invoke"`` (:mod:`shoal.backends.http`).

``POST /invoke`` (also ``POST /``, where platforms route a service's root) takes one signed
invocation payload and answers 200 ``{"ok": true}`` once the invocation is done: one
request per invocation, in flight for as long as it runs, which is what these platforms
scale on. The signature is checked as soon as the body is in, before anything of it is
unpickled and before waiting for the worker: a bad one answers 403. ``GET /health``
answers ``ok`` (for the platform's probes; it needs no token).

One process-wide :class:`~shoal.runtime.WorkerRuntime` stays warm across requests (its
event loop, store and backend connections), and runs one invocation at a time: the
platform scales by starting instances, so give it a per-instance concurrency of 1 (Cloud
Run ``--concurrency 1``, Knative ``containerConcurrency: 1``, OpenFaaS ``max_inflight: 1``)
or requests queue here. The runtime owns an :class:`asyncio.Runner`, whose loop and
connections belong to the thread that runs it, so every runtime call goes to one dedicated
thread; uvicorn's loop stays free to take requests and answer probes meanwhile.

It listens on 127.0.0.1 unless given a token; with one, ``/invoke`` wants
``Authorization: Bearer <token>`` (see :func:`token_refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .backends import Invocation
from .backends.http import TOKEN_ENV
from .errors import BadSignature
from .runtime import WorkerRuntime
from .web import check_exposure, run_server, token_refusal

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # what Cloud Run and Knative expect unless told otherwise


class WorkerService:
    """A warm :class:`~shoal.runtime.WorkerRuntime` that runs one invocation at a time, on a
    thread of its own."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shoal-worker")
        self._lock = asyncio.Lock()

    def load(self, payload: bytes) -> Invocation:
        """The invocation in ``payload``; :class:`~shoal.errors.BadSignature` before
        unpickling anything if its signature is missing or wrong."""
        return self.runtime.load(payload)

    async def run(self, invocation: Invocation, received: float) -> None:
        """Run ``invocation`` to its end, after any running one. ``received``: when its
        request arrived (wall clock), for the start time its worker reports."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            run = functools.partial(
                self.runtime.run, invocation, received=received, dispatched=time.time()
            )
            await loop.run_in_executor(self._thread, run)

    async def close(self) -> None:
        """Close the runtime (its stores and backends) once no invocation runs."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            await loop.run_in_executor(self._thread, self.runtime.close)
        self._thread.shutdown()


def create_app(service: WorkerService, token: str | None = None) -> Starlette:
    """The worker's HTTP API. With a ``token``, ``/invoke`` wants
    ``Authorization: Bearer <token>``."""

    async def invoke(request: Request) -> Response:
        received = time.time()  # before any wait: the worker reports its start time from it
        if (denied := token_refusal(request, token, "worker")) is not None:
            return denied
        payload = await request.body()
        try:
            invocation = service.load(payload)
        except BadSignature as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        except Exception as exc:  # signed, yet broken
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        try:
            await service.run(invocation, received)
        except Exception as exc:  # outside the worker loop, which reports its own failures
            log.exception("invocation of run %s failed", invocation.run_id)
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.close()

    return Starlette(
        routes=[
            Route("/invoke", invoke, methods=["POST"]),
            Route("/", invoke, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def serve_worker(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    fd: int | None = None,
) -> None:
    """Serve workers over HTTP until interrupted. Listening beyond loopback needs a
    ``token``; ``$SHOAL_SECRET`` must be set (checked before listening). ``fd``: an already
    listening socket to serve on."""
    token = token or None
    check_exposure(host, token, TOKEN_ENV)
    # In a container the pid is often 1 on every instance; the host name tells them apart.
    runtime = WorkerRuntime(name=f"{socket.gethostname()}-{os.getpid()}")
    run_server(create_app(WorkerService(runtime), token), host=host, port=port, fd=fd)
