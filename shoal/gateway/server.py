"""The gateway's HTTP front (Starlette on uvicorn) over its core (:mod:`.core`).

``POST /invoke`` takes a signed invocation payload and answers 202 at once (an asynchronous
invoke, as FaaS platforms do); the invocation then runs on a warm worker process of its
size, or a cold one, or waits for the concurrency cap. ``POST /prewarm`` starts idle
workers of a size ahead of need; ``GET /info`` tells the cap and the pools.
``POST /environments`` makes the environment of a requirement set ready (built once with
uv in the gateway's cache directory, :mod:`shoal.envs.build`, then reused by every run and
across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..backends import Size
from ..errors import BadSignature, ConfigError, EnvironmentBuildError
from ..security import Signer
from ..web import check_exposure, run_server, token_refusal
from . import TOKEN_ENV
from .core import DEFAULT_KEEP_WARM_S, DEFAULT_PORT, Gateway
from .template import Template


def create_app(gateway: Gateway, token: str | None = None, *, start: bool = True) -> Starlette:
    """The gateway's HTTP API, which starts the gateway (unless ``start`` is false: it
    serves already) and closes it. With a ``token``, every request must carry
    ``Authorization: Bearer <token>``."""

    def refused(request: Request) -> Response | None:
        return token_refusal(request, token, "gateway")

    async def invoke(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if gateway.invoke_latency_s:  # a FaaS platform's invoke API, e.g. Lambda's ~50 ms
            await asyncio.sleep(gateway.invoke_latency_s)
        try:
            invocation = await gateway.submit(await request.body())
        except BadSignature as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        except Exception as exc:  # a payload that is signed but broken
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        reply = {"run": invocation.run_id, "queued": len(gateway.queue), "parallelism": gateway.cap}
        return JSONResponse(reply, 202)

    async def prewarm(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        q = request.query_params
        try:
            size = Size(float(q.get("cpus", 1)), int(q.get("memory_mb", Size().memory_mb)))
            count = int(q.get("count", 1))
            after_s = float(q.get("after_s", 0.0))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"started": await gateway.prewarm(size, count, after_s)}, 202)

    async def environments(request: Request) -> Response:
        """Make the environment of ``{"requirements": [...]}`` ready (building it if it is
        missing, while the request waits): its key and path, and whether it was built."""
        if (denied := refused(request)) is not None:
            return denied
        try:
            body = await request.json()
            requirements = body["requirements"]
            started = time.perf_counter()
            env, waited = await gateway.environment(requirements)
        except EnvironmentBuildError as exc:
            return JSONResponse({"error": str(exc), "kind": "build"}, status_code=422)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        return JSONResponse(
            {
                "key": env.key,
                "id": env.id,
                "path": str(env.path),
                "waited": waited,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    async def info(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        return JSONResponse(gateway.info())

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start:
            await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    return Starlette(
        routes=[
            Route("/invoke", invoke, methods=["POST"]),
            Route("/prewarm", prewarm, methods=["POST"]),
            Route("/environments", environments, methods=["POST"]),
            Route("/info", info),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    fd: int | None = None,
    max_workers: int | None = None,
    keep_warm_s: float = DEFAULT_KEEP_WARM_S,
    token: str | None = None,
    fork: bool = True,
    cgroups: bool = True,
    lambda_cpu: bool = False,
    exit_with_stdin: bool = False,
    template: Template | None = None,
    invoke_latency_s: float = 0.0,
    cache_dir: str | None = None,
    requirements: Sequence[str] = (),
) -> None:
    """Run a gateway until SIGTERM or SIGINT, or with ``exit_with_stdin`` (a private
    gateway) until its stdin ends: its client closed it, or died. ``fd``: an already
    listening socket to serve on; ``fork``: fork workers from a template process;
    ``cache_dir``: where environments are built (default: the user's cache directory);
    ``requirements``: an environment built before the gateway serves."""
    check_exposure(host, token, TOKEN_ENV)
    gateway = Gateway(
        Signer.from_env(),
        max_workers=max_workers,
        keep_warm_s=keep_warm_s,
        fork=fork,
        cgroups=cgroups,
        lambda_cpu=lambda_cpu,
        template=template,
        invoke_latency_s=invoke_latency_s,
        cache_dir=cache_dir,
        requirements=requirements,
        exit_with_stdin=exit_with_stdin,
    )
    app = create_app(gateway, token)
    # Requests answer at once (an invoke is queued): one still running after a few seconds
    # of shutdown is stuck, and must not keep the gateway up.
    run_server(
        app,
        host=host,
        port=port,
        fd=fd,
        timeout_graceful_shutdown=5,
    )
