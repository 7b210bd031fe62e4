"""Real servers for the tests: redis-server (alone or as a three-master cluster) and a
``shoal gateway``, each on a free loopback port in a temporary directory, stopped at the end.

Readiness is waited for by reading what the server says (redis-server's "Ready to accept
connections"), or made unnecessary (the gateway serves on a socket bound before it starts).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    """Read the process's output until a line holds ``marker``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"server did not get ready: {seen.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            seen += os.read(proc.stdout.fileno(), 65536)


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Keep reading the server's output in the background, so it never blocks on a full
    pipe."""
    assert proc.stdout is not None
    threading.Thread(target=proc.stdout.read, daemon=True).start()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def redis_server(
    workdir: Path, *extra: str, tls: Path | None = None, port: int | None = None
) -> Iterator[int]:
    """A redis-server on a free port (or ``port``), its files in ``workdir``; yields the
    port. With ``tls`` (a folder holding ca.crt, server.crt and server.key), it speaks TLS
    only. Options in ``extra`` come last (they win)."""
    if REDIS_SERVER is None:
        raise RuntimeError("redis-server is not installed (bash scripts/test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    wanted = port
    for _ in range(5):  # another process may take the free port first
        port = wanted or free_port()
        listen = ["--port", str(port)]
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            for option, name in (
                ("cert", "server.crt"),
                ("key", "server.key"),
                ("ca-cert", "ca.crt"),
            ):
                listen += [f"--tls-{option}-file", str(tls / name)]
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [REDIS_SERVER, *listen, *common, "--dir", str(workdir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_line(proc, b"Ready to accept connections", 20)
        except RuntimeError:
            _stop(proc)
            continue
        _drain(proc)
        try:
            yield port
        finally:
            _stop(proc)
        return
    raise RuntimeError("could not start redis-server")


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[list[int]]:
    """A Redis Cluster of ``masters`` masters (no replicas); yields their ports."""
    with contextlib.ExitStack() as stack:
        ports = [
            stack.enter_context(
                redis_server(
                    workdir / f"node{i}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes{i}.conf",
                )
            )
            for i in range(masters)
        ]
        assert REDIS_CLI is not None
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        for port in ports:  # every node must agree the cluster is whole before use
            deadline = time.monotonic() + 30
            while (
                b"cluster_state:ok"
                not in subprocess.run(
                    [REDIS_CLI, "-p", str(port), "cluster", "info"], capture_output=True
                ).stdout
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} never reported cluster_state:ok")
                time.sleep(0.05)  # polling the cluster's own state, with a deadline
        yield ports


@contextlib.contextmanager
def _on_bound_socket(*command: str, env: dict[str, str] | None) -> Iterator[int]:
    """Run ``python ... --fd N``, serving on a socket bound here first: requests queue until
    it accepts, so nothing polls for readiness. Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, *command, "--fd", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        env={**os.environ, **(env or {})},
    )
    listener.close()
    try:
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def gateway(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A ``shoal gateway``; yields its workers URL."""
    from shoal.backends import gateway as backend

    with _on_bound_socket("-m", "shoal", "gateway", *args, env=env) as port:
        # A client process asks a gateway's cap once per address (and learns a new one
        # from the next run on); a test's gateway may get the port of an earlier one with
        # another cap (--max-workers), and its first run must know its own.
        backend._caps.pop(f"http://127.0.0.1:{port}", None)
        yield f"gateway+http://127.0.0.1:{port}"


@contextlib.contextmanager
def worker_service(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A ``shoal worker`` service; yields its ``/invoke`` URL. -I: its Python path holds
    installed packages only, as in a container."""
    with _on_bound_socket("-I", "-m", "shoal", "worker", *args, env=env) as port:
        yield f"http://127.0.0.1:{port}/invoke"


def make_certificates(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 it signed (openssl), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(command: str, *quoted: str) -> None:
        args = ["openssl", *command.split(), *quoted]
        subprocess.run(args, cwd=folder, check=True, capture_output=True)

    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.crt",
            "-subj", "/CN=shoal test CA")  # fmt: skip
    openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
            "-extfile san.cnf -out server.crt")  # fmt: skip
    return folder


#: Credentials the S3 emulator accepts (any); pass them to every process that uses it.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "shoal-test",
    "AWS_SECRET_ACCESS_KEY": "shoal-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_emulator(bucket: str = "shoal-test") -> Iterator[str]:
    """An S3-compatible server on a free port: moto's server, an **emulator** of S3 (no
    S3-compatible server is packaged for this machine's registries), with ``bucket`` made;
    yields its endpoint URL."""
    import boto3

    for _ in range(5):  # another process may take the free port first
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **S3_ENV},
        )
        try:
            _wait_for_line(proc, b"Running on", 30)
        except RuntimeError:
            _stop(proc)
            continue
        _drain(proc)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            s3 = boto3.session.Session(**_session_args()).client("s3", endpoint_url=endpoint)
            s3.create_bucket(Bucket=bucket)
            yield endpoint
        finally:
            _stop(proc)
        return
    raise RuntimeError("could not start the S3 emulator")


def _session_args() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def s3_keys(endpoint: str, bucket: str = "shoal-test") -> list[str]:
    """Every object key in the emulator's ``bucket``."""
    import boto3

    s3 = boto3.session.Session(**_session_args()).client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]
