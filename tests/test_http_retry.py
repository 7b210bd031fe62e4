"""``workers="http://…"`` sends an invocation again when it is answered 429 or 503: the wait
decision as a pure function (``Retry-After`` in seconds or as an HTTP date, else jittered
exponential backoff, capped), and a real run through a real refusing proxy in front of a
real ``shoal worker``, which completes, or fails naming the status and the retries."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import leftover_keys
from servers import worker_service
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import shoal
from shoal.backends.http import (
    BACKOFF_BASE,
    DEFAULT_ATTEMPTS,
    MAX_WAIT,
    HttpWorkers,
    retry_wait,
)
from shoal.errors import ConfigError, WorkerLost

NOW = 1_700_000_000.0  # a fixed Unix time for HTTP dates


def _bound(attempt: int) -> float:
    """The largest backoff after the ``attempt``-th send."""
    return min(MAX_WAIT, BACKOFF_BASE * 2 ** (attempt - 1))


# --------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_the_wait(status: int) -> None:
    assert retry_wait(status, "3", 1, now=NOW) == 3.0
    assert retry_wait(status, "0", 1, now=NOW) == 0.0
    assert retry_wait(status, "2.5", 6, now=NOW) == 2.5  # whatever the attempt


def test_retry_after_as_an_http_date_waits_until_then() -> None:
    assert retry_wait(503, formatdate(NOW + 10, usegmt=True), 1, now=NOW) == 10.0
    assert retry_wait(429, formatdate(NOW + 10), 1, now=NOW) == 10.0  # "-0000", no zone
    assert retry_wait(503, formatdate(NOW - 60, usegmt=True), 1, now=NOW) == 0.0  # past


def test_retry_after_is_capped() -> None:
    assert retry_wait(429, "3600", 1, now=NOW) == MAX_WAIT
    assert retry_wait(503, formatdate(NOW + 3600, usegmt=True), 1, now=NOW) == MAX_WAIT


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "nan", "inf", "Thu, 99 Foo"])
def test_without_a_readable_retry_after_the_wait_is_jittered_backoff(header: str | None) -> None:
    rng = random.Random(7)
    for attempt in range(1, DEFAULT_ATTEMPTS):
        waits = [retry_wait(503, header, attempt, now=NOW, rng=rng) for _ in range(200)]
        assert all(w is not None and 0.0 <= w <= _bound(attempt) for w in waits)
        spread = max(w for w in waits if w is not None) - min(w for w in waits if w is not None)
        assert spread > _bound(attempt) / 2  # full jitter, not a fixed wait


def test_the_backoff_grows_then_is_capped() -> None:
    rng = random.Random(3)
    late = [retry_wait(429, None, 40, 50, now=NOW, rng=rng) for _ in range(200)]
    assert all(w is not None and 0.0 <= w <= MAX_WAIT for w in late)
    assert max(w for w in late if w is not None) > MAX_WAIT / 2  # capped, not stuck small
    assert retry_wait(429, None, 1, now=NOW, rng=random.Random(3)) == pytest.approx(
        retry_wait(429, "junk", 1, now=NOW, rng=random.Random(3))
    )


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 500, 502, 504])
def test_other_answers_are_not_retried(status: int) -> None:
    assert retry_wait(status, "0", 1, now=NOW) is None
    assert retry_wait(status, None, 1, now=NOW) is None


def test_the_last_attempt_is_not_retried() -> None:
    assert retry_wait(503, "0", DEFAULT_ATTEMPTS - 1, now=NOW) == 0.0
    assert retry_wait(503, "0", DEFAULT_ATTEMPTS, now=NOW) is None
    assert retry_wait(429, "0", 3, 3, now=NOW) is None
    assert retry_wait(429, "0", 1, 1, now=NOW) is None  # attempts=1: never again


def test_the_workers_url_sets_the_attempts() -> None:
    workers = HttpWorkers("https://fn.example.com/invoke?attempts=3&code=k")
    assert workers.attempts == 3
    assert workers.endpoint == "https://fn.example.com/invoke?code=k"  # ours stay here
    assert HttpWorkers("http://127.0.0.1:8080/invoke").attempts == DEFAULT_ATTEMPTS
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ConfigError, match="attempts must be a whole number"):
            HttpWorkers(f"http://127.0.0.1/invoke?attempts={bad}")


# --------------------------------------------------------------------------- a real run


class RefusingProxy:
    """An endpoint that answers each POST with the next refusal of ``refusals`` (status,
    headers), and once there are none left, forwards the POST to ``target``. ``answered``:
    the statuses it answered, in order."""

    def __init__(self, refusals: Iterator[tuple[int, dict[str, str]]], target: str | None):
        self.refusals = refusals
        self.target = target
        self.answered: list[int] = []
        self.app = Starlette(routes=[Route("/invoke", self.invoke, methods=["POST"])])

    async def invoke(self, request: Request) -> Response:
        body = await request.body()
        refusal = next(self.refusals, None)
        if refusal is not None or self.target is None:
            status, headers = refusal or (503, {})
            self.answered.append(status)
            return JSONResponse({"error": "busy, try later"}, status_code=status, headers=headers)
        async with httpx.AsyncClient(timeout=None) as client:
            reply = await client.post(self.target, content=body)
        self.answered.append(reply.status_code)
        kept = {"content-type": reply.headers.get("content-type", "application/json")}
        return Response(reply.content, status_code=reply.status_code, headers=kept)


@contextlib.contextmanager
def serving(proxy: RefusingProxy) -> Iterator[str]:
    """``proxy`` served by uvicorn on a thread, on a socket bound first (requests queue until
    it accepts, so nothing waits for readiness); yields its ``/invoke`` URL."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    config = uvicorn.Config(proxy.app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/invoke"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@shoal.task
def inc(x: Any) -> Any:
    return x + 1


@shoal.task
def double(x: Any) -> Any:
    return 2 * x


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


def _run(node: shoal.Node, redis_url: str, workers: str) -> Any:
    return node.compute(storage=redis_url, workers=workers, progress=False, timeout=60)


def test_refused_invocations_are_sent_again_and_the_run_completes(
    redis_url: str, shared_secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One root, so the first POSTs are all its invocation: refused three ways (no
    ``Retry-After``: backoff; ``Retry-After: 0``; an HTTP date past), then run."""
    past = formatdate(time.time() - 60, usegmt=True)
    refusals = iter([(503, {}), (429, {"Retry-After": "0"}), (503, {"Retry-After": past})])
    caplog.set_level(logging.INFO, logger="shoal.backends.http")
    with worker_service() as service:
        proxy = RefusingProxy(refusals, service)
        with serving(proxy) as url:
            top = inc(1)
            assert _run(add(double(top), inc(top)), redis_url, url) == 7
    assert proxy.answered[:4] == [503, 429, 503, 200]
    assert all(status == 200 for status in proxy.answered[3:])  # hand-outs went through
    records = [r for r in caplog.records if r.name == "shoal.backends.http"]
    retried = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert [m.split(" answered ")[1].split(";")[0] for m in retried] == [
        "503 to attempt 1 of 8",
        "429 to attempt 2 of 8",
        "503 to attempt 3 of 8",
    ]
    assert not [r for r in records if r.levelno >= logging.ERROR]
    assert leftover_keys(redis_url) == []


def test_an_endpoint_that_stays_unavailable_fails_the_run_naming_status_and_retries(
    redis_url: str, shared_secret: str
) -> None:
    proxy = RefusingProxy(itertools.repeat((503, {})), None)  # no Retry-After: backoff
    started = time.monotonic()
    with serving(proxy) as url, pytest.raises(WorkerLost, match="answered 503 after 2 retries"):
        _run(inc(1), redis_url, url + "?attempts=3")
    assert proxy.answered == [503, 503, 503]
    assert time.monotonic() - started < 30  # two backoffs of at most 1 s and 2 s
    assert leftover_keys(redis_url) == []
