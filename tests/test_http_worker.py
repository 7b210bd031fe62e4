"""``shoal worker`` (the HTTP service FaaS platforms host) and ``workers="http://…"``, with
a real service process and a real redis-server: graphs, hand-outs to the same service,
failures, one invocation at a time, warm reuse, signatures and tokens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import leftover_keys
from servers import free_port, worker_service
from signals import wait_for

import shoal
from shoal.backends import open_workers
from shoal.backends.http import HttpWorkers
from shoal.errors import ConfigError, WorkerLost


@pytest.fixture(scope="module")
def service(shared_secret: str) -> Iterator[str]:
    """One service for the module, as a platform would keep one warm instance."""
    with worker_service() as url:
        yield url


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_WORKER_TOKEN", raising=False)


@shoal.task
def inc(x: Any) -> Any:
    return x + 1


@shoal.task
def double(x: Any) -> Any:
    return 2 * x


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


@shoal.task
def seed(n: int) -> list[int]:
    return list(range(n))


@shoal.task
def pick(xs: Any, i: int) -> Any:
    return xs[i] * 3


@shoal.task
def total(values: Any) -> Any:
    return sum(values)


class Boom(Exception):
    """A task's own exception type (user code, travelling by value)."""


@shoal.task
def explode(x: int) -> int:
    raise Boom(f"no {x}")


def _run(node: shoal.Node, redis_url: str, workers: str) -> Any:
    return node.compute(storage=redis_url, workers=workers, progress=False, timeout=60)


def _diamond() -> shoal.Node:
    top = inc(1)
    return add(double(top), inc(top))


# --------------------------------------------------------------------------- graphs


def test_a_diamond_runs_cold_once_then_warm(redis_url: str, shared_secret: str) -> None:
    with worker_service() as url:
        assert _run(_diamond(), redis_url, url) == 7
        first = shoal.last_run()
        assert first is not None and first.ok and first.backend == url
        assert first.workers >= 1 and first.cold_starts == 1  # the process's first one only
        assert _run(_diamond(), redis_url, url) == 7
        second = shoal.last_run()
        assert second is not None and second.workers >= 1 and second.cold_starts == 0
    assert leftover_keys(redis_url) == []


def test_a_fan_out_hands_out_work_to_the_same_service(redis_url: str, service: str) -> None:
    """One root, so the client invokes one worker; the other workers are invocations it
    handed out to the service it runs on. That service runs one invocation at a time, so
    this finishes only if handing out does not wait for the invocation it starts."""
    xs = seed(20)
    expected = 3 * sum(range(20))
    assert _run(total([pick(xs, i) for i in range(20)]), redis_url, service) == expected
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == 22 and summary.workers > 1
    assert leftover_keys(redis_url) == []


def test_a_map_is_expanded_by_a_service_worker(redis_url: str, service: str) -> None:
    """The worker that made the list expands the map, and hands its elements out to the
    service it runs on (the elements' specs travel with their invocations)."""
    assert _run(total(inc.map(seed(20))), redis_url, service) == sum(range(1, 21))
    summary = shoal.last_run()
    assert summary is not None and summary.tasks_done == summary.tasks == 24
    assert summary.workers > 1
    assert leftover_keys(redis_url) == []


def test_a_failing_task_raises_its_own_exception(redis_url: str, service: str) -> None:
    with pytest.raises(Boom, match="no 3"):
        _run(add(inc(1), explode(3)), redis_url, service)
    assert leftover_keys(redis_url) == []


def test_invocations_run_one_at_a_time(redis_url: str, service: str, flags: Path) -> None:
    @shoal.task
    def span(i: int) -> tuple[float, float]:
        start = time.time()
        wait_for(flags / "never", timeout=0.3)  # stays busy a while
        return start, time.time()

    (a0, a1), (b0, b1) = shoal.compute(  # two roots: two invocations POSTed at once
        span(1), span(2), storage=redis_url, workers=service, progress=False, timeout=60
    )
    assert a1 <= b0 or b1 <= a0


def test_an_unreachable_endpoint_fails_the_invoke(redis_url: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/invoke"
    with pytest.raises(WorkerLost, match="cannot reach the shoal worker"):
        _run(inc(1), redis_url, url)
    assert leftover_keys(redis_url) == []


# --------------------------------------------------------------------------- the service


def test_health(service: str) -> None:
    reply = httpx.get(service.removesuffix("/invoke") + "/health")
    assert reply.status_code == 200 and reply.text == "ok"


def test_a_tampered_payload_is_refused(redis_url: str, service: str) -> None:
    from shoal.backends import Invocation
    from shoal.codec import Codec
    from shoal.security import Signer

    payload = Codec(Signer.from_env()).dump_invocation(Invocation("r", (0,), 1, None, redis_url))
    for body in (payload[:-1] + bytes([payload[-1] ^ 1]), payload[16:], b"", b"junk"):
        reply = httpx.post(service, content=body)
        assert reply.status_code == 403
        assert "signature does not match" in reply.json()["error"]


def test_a_service_with_another_secret_fails_the_run(redis_url: str, shared_secret: str) -> None:
    with (
        worker_service(env={"SHOAL_SECRET": "another-secret-of-32-characters!"}) as url,
        pytest.raises(WorkerLost, match="BadSignature: .*signature does not match"),
    ):
        _run(inc(1), redis_url, url)
    assert leftover_keys(redis_url) == []


def test_a_service_with_a_token_wants_it(
    redis_url: str, shared_secret: str, no_token_env: None
) -> None:
    with worker_service("--token", "let-me-in") as url:
        assert httpx.post(url, content=b"").status_code == 401
        assert httpx.get(url.removesuffix("/invoke") + "/health").status_code == 200
        with pytest.raises(WorkerLost, match="wants a token.*SHOAL_WORKER_TOKEN"):
            _run(inc(1), redis_url, url)
        # the workers hand out work with the token of the URL they were invoked with
        assert _run(_diamond(), redis_url, url + "?token=let-me-in") == 7


def test_the_service_refuses_to_listen_beyond_loopback_without_a_token(
    shared_secret: str, no_token_env: None
) -> None:
    from shoal.service import serve_worker

    with pytest.raises(ConfigError, match="without a token.*SHOAL_WORKER_TOKEN"):
        serve_worker("0.0.0.0", free_port(), None)
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "worker", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHOAL_WORKER_TOKEN": ""},
    )
    assert done.returncode != 0 and "without a token" in done.stderr


# --------------------------------------------------------------------------- the URL


def test_the_workers_url_sets_the_token_and_parallelism(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_WORKER_TOKEN", "from-env")
    workers = open_workers("https://fn.example.com/invoke?parallelism=3&token=t&code=k")
    assert isinstance(workers, HttpWorkers)
    assert (workers.parallelism, workers.token) == (3, "t")
    assert (workers.in_process, workers.private) == (False, False)
    assert workers.endpoint == "https://fn.example.com/invoke?code=k"  # ours stay here
    plain = HttpWorkers("http://127.0.0.1:8080")
    assert (plain.parallelism, plain.token, plain.endpoint) == (8, "from-env", plain.url + "/")
    for bad in ("http://", "ftp://host/x", "http://h:99999/", "http://h/?parallelism=0"):
        with pytest.raises(ConfigError):
            HttpWorkers(bad)


def test_prewarm_sends_a_warm_up_request_per_worker_wanted(shared_secret: str) -> None:
    """Pre-warm over HTTP: a GET of the worker's health check (or ``?warmup=PATH``) per
    worker wanted, at once; ``?warmup=off`` sends none."""
    with worker_service() as url:

        async def warm(target: str) -> int:
            workers = HttpWorkers(target)
            try:
                return await workers.prewarm(1.0, 2048, 3)
            finally:
                await workers.close()

        assert asyncio.run(warm(url)) == 3
        assert asyncio.run(warm(url + "?warmup=off")) == 0
        assert asyncio.run(warm(url + "?warmup=nowhere")) == 0  # 404s: none warmed
