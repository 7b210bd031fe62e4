"""Shared fixtures. ``engine`` runs a test once per backend: every graph-shape and
semantics test in the shared suite takes it, so a new backend is added here only.

    embedded   memory:// store, local workers (threads of this process)
    optimized  the same, with every optimization forced on at thresholds of zero (a
               fan-out clusters on its producer whatever its output's size)
    gateway    a real redis-server, a real ``shoal gateway`` with worker processes (the
               data plane on its default: outputs over 1 MiB in files in /dev/shm)
    cluster    a three-master Redis Cluster, the same gateway, and every output in a blob
               (files in a temporary directory): the cluster holds references only
    blobs      the gateway engine with every output in a blob (files in a temporary
               directory); S3 blobs have tests of their own (test_blobs.py: moto's
               emulator of S3 takes tens of milliseconds a request)

``cluster`` and ``blobs`` force every optimization on too, as ``optimized`` does: each
backend runs the suite with them, and the gateway runs it without.

After every test on a Redis engine, no key of any run may be left (checked with SCAN), and
no blob.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import S3_ENV, gateway, redis_cluster, redis_server, s3_emulator

from shoal.optimizations import CLUSTER_ABOVE_ENV
from shoal.optimizations import NAMES as OPTIMIZATION_NAMES

ENGINES = ["embedded", "optimized", "gateway", "cluster", "blobs"]
#: Engines that force every optimization on, at thresholds that make them act.
OPTIMIZED = {"optimized", "cluster", "blobs"}


@pytest.fixture(scope="session", autouse=True)
def shared_secret() -> Iterator[str]:
    """The secret the client and every gateway of the session share."""
    secret = os.environ.get("SHOAL_SECRET") or secrets.token_hex(32)
    old = os.environ.get("SHOAL_SECRET")
    os.environ["SHOAL_SECRET"] = secret
    yield secret
    if old is None:
        del os.environ["SHOAL_SECRET"]


@pytest.fixture(scope="session", autouse=True)
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every run of the session is recorded here, not in the user's data directory."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite3"
    old = os.environ.get("SHOAL_HISTORY")
    os.environ["SHOAL_HISTORY"] = str(path)
    yield path
    if old is None:
        del os.environ["SHOAL_HISTORY"]
    else:
        os.environ["SHOAL_HISTORY"] = old


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        yield f"redis+cluster://127.0.0.1:{ports[0]}"


@pytest.fixture(scope="session")
def gateway_url(shared_secret: str) -> Iterator[str]:
    with gateway(env=S3_ENV) as url:  # its workers may use the S3 emulator
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The S3 emulator's endpoint; this process has its credentials meanwhile."""
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        with s3_emulator() as endpoint:
            yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def redis_client(url: str) -> Iterator[Any]:
    """A plain redis-py client for ``url`` (Redis or Redis Cluster), every connection it
    opened closed at the end (a cluster client's close leaves its nodes' sockets to the
    garbage collector, which then warns in whatever test runs)."""
    if "+cluster://" not in url:
        with redis.Redis.from_url(url) as client:
            yield client
        return
    cluster = redis.RedisCluster.from_url(url.replace("+cluster://", "://"))
    try:
        yield cluster
    finally:
        for node in cluster.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
        cluster.close()


def leftover_keys(url: str, pattern: str = "shoal:{*") -> list[bytes]:
    """Keys of runs (or of ``pattern``) still in the Redis (or Redis Cluster) at ``url``."""
    with redis_client(url) as client:
        every = {"target_nodes": redis.RedisCluster.ALL_NODES} if "+cluster" in url else {}
        return list(client.scan_iter(match=pattern, **every))


@pytest.fixture(params=ENGINES)
def engine(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Keyword options for ``shoal.compute`` selecting one backend."""
    optimized: dict[str, Any] = {}
    if request.param in OPTIMIZED:
        optimized = {"optimizations": list(OPTIMIZATION_NAMES)}
        monkeypatch.setenv(CLUSTER_ABOVE_ENV, "0")
    if request.param in ("embedded", "optimized"):
        yield {"storage": "memory://", "workers": "local", "progress": False, **optimized}
        return
    storage = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    options = {"storage": storage, "workers": request.getfixturevalue("gateway_url")}
    blobs = request.getfixturevalue("tmp_path") / "blobs"
    if request.param in ("cluster", "blobs"):
        options.update(storage=storage + "?blob_above=0", blobs=blobs.as_uri())
    yield {**options, "progress": False, **optimized}
    assert leftover_keys(storage) == [], "a run left keys behind"
    assert blobs_left(blobs) == [], "a run left blobs behind"


def blob_files(root: Path) -> list[Path]:
    """Files under a blob store's directory (its namespace and run folders aside); a folder
    deleted meanwhile (by a deletion thread) is skipped."""
    return [Path(folder, name) for folder, _, names in os.walk(root) for name in names]


def blobs_left(root: Path, within_s: float = 10.0) -> list[Path]:
    """The blob files still under ``root`` once they had ``within_s`` seconds to go: a
    deleted run's blobs are freed by a thread, and a worker still finishing a task of a
    run that is gone (timed out, failed) writes its blob before its completion step finds
    the run gone, then deletes it."""
    deadline = time.monotonic() + within_s
    while (left := blob_files(root)) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the directory, with a deadline
    return left


def folders_left(root: Path, within_s: float = 10.0) -> list[Path]:
    """The folders still under ``root`` once they had ``within_s`` seconds to go: a
    deleted run's folder is freed, and its namespace's folder then removed, by a
    thread."""
    deadline = time.monotonic() + within_s
    while (left := _folders(root)) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the directory, with a deadline
    return left


def _folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.rglob("*") if p.is_dir())
    except FileNotFoundError:  # a folder went while the scan walked it: look again
        return [root]


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    """A directory for signals between a test and its tasks, on any backend."""
    return tmp_path
