"""A gateway worker process: ``python -m shoal.gateway.process --cpus C --memory-mb M
--cpu-list 0,1``.

It applies its size before anything else (CPU affinity, and a data-size limit of
``memory_mb``), then serves invocations one at a time from the gateway over its stdin,
answering over the stdout it had at birth; whatever user code prints goes to stderr, so it
cannot corrupt those frames. A frame is a 4-byte length and a JSON header, then a 4-byte
length and a payload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import resource
import select
import signal
import struct
import sys
import traceback
from typing import Any, BinaryIO

log = logging.getLogger("shoal.gateway.process")

_LENGTH = struct.Struct(">I")
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
#: What ``ps`` and ``top`` show for a gateway worker process.
WORKER_NAME = "shoal-worker"


def write_frame(out: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    out.write(_LENGTH.pack(len(data)) + data + _LENGTH.pack(len(payload)) + payload)
    out.flush()


def _read_exactly(inp: BinaryIO, n: int) -> bytes:
    data = inp.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def read_frame(inp: BinaryIO) -> tuple[dict[str, Any], bytes]:
    (n,) = _LENGTH.unpack(_read_exactly(inp, 4))
    header = json.loads(_read_exactly(inp, n))
    (n,) = _LENGTH.unpack(_read_exactly(inp, 4))
    return header, _read_exactly(inp, n) if n else b""


async def write_frame_async(
    out: asyncio.StreamWriter, header: dict[str, Any], payload: bytes = b""
) -> None:
    data = json.dumps(header).encode()
    out.write(_LENGTH.pack(len(data)) + data + _LENGTH.pack(len(payload)) + payload)
    await out.drain()


async def read_frame_async(inp: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    (n,) = _LENGTH.unpack(await inp.readexactly(4))
    header = json.loads(await inp.readexactly(n))
    (n,) = _LENGTH.unpack(await inp.readexactly(4))
    return header, await inp.readexactly(n) if n else b""


def become(name: str) -> None:
    """Linux: go by ``name`` in ``ps`` and ``top`` (a fork would show its parent's
    command line), and be killed when the gateway dies, even by SIGKILL (else a worker
    would run its task to the end for nobody)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_NAME, name.encode()[:15])
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def apply_size(memory_mb: int, cpu_list: list[int]) -> None:
    """Enforce the worker's size on this process: pinned to ``cpu_list``, and at most
    ``memory_mb`` of data (heap and private mappings: RLIMIT_DATA); beyond it, allocations
    fail with MemoryError in the task."""
    if cpu_list and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpu_list)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def main(argv: list[str] | None = None) -> None:
    """A worker process started on its own (without the template of :mod:`.template`):
    its frames on the stdin and stdout it was born with."""
    p = argparse.ArgumentParser(prog="python -m shoal.gateway.process")
    p.add_argument("--memory-mb", type=int, required=True)
    p.add_argument("--cpu-list", default="")
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    become(WORKER_NAME)
    apply_size(args.memory_mb, [int(c) for c in args.cpu_list.split(",") if c])
    frames = os.fdopen(os.dup(1), "wb")  # our answers; user prints go to stderr
    os.dup2(2, 1)
    # After the limits, imports count against them: part of its cold start, not of its
    # first task's.
    preload()
    gc.freeze()  # its imports stay for good: no full collection need walk them
    serve(sys.stdin.buffer, frames, args.name)


def serve_forked(channel: int, memory_mb: int, cpu_list: list[int], name: str) -> None:
    """A worker forked from the template (:mod:`.template`): its frames on ``channel``,
    a socket to the gateway; what it prints goes to stderr."""
    become(WORKER_NAME)
    apply_size(memory_mb, cpu_list)
    os.dup2(2, 1)
    serve(os.fdopen(os.dup(channel), "rb"), os.fdopen(channel, "wb"), name)


def preload() -> None:
    """Import what a gateway worker uses on its first invocation (its runtime, a Redis
    store, hand-outs to the gateway): part of its cold start, not of its first task."""
    from ..backends import gateway as _gateway  # noqa: F401
    from ..blobs import files as _files  # noqa: F401  # the same host's blob store
    from ..runtime import WorkerRuntime  # noqa: F401
    from ..stores import redis as _redis  # noqa: F401


#: Imported by the template once it serves, while no fork is asked of it: a worker forked
#: before then imports what it needs itself (the HTTP client, for its first hand-out).
#: Otherwise a worker's first hand-out pays it: ~15 ms, more on a busy machine (a tree
#: head's, all its share).
PRELOAD_WHEN_IDLE = ("shoal.backends.http11",)
#: Quiet this long before each such import: an import holds the process for tens of ms,
#: and a burst of invocations (the template's forks, a warm worker's next run) goes first.
IDLE_AFTER_S = 0.05


def idle_import(name: str) -> None:
    """Import ``name`` ahead of need; a library's private module that moved is no error."""
    with contextlib.suppress(ImportError):
        importlib.import_module(name)


def serve(inp: BinaryIO, frames: BinaryIO, name: str | None) -> None:
    """Run the invocations the gateway sends until it closes ``inp``."""
    from ..heartbeat import HEARTBEAT
    from ..runtime import WorkerRuntime

    logging.basicConfig(level=os.environ.get("SHOAL_LOG_LEVEL", "WARNING"))
    HEARTBEAT.exit_when_abandoned = True  # this process is the worker's own
    with WorkerRuntime(name=name) as runtime:
        write_frame(frames, {"ready": True})
        idle_imports: list[str] = []
        while True:
            if idle_imports and not select.select([inp], [], [], IDLE_AFTER_S)[0]:
                idle_import(idle_imports.pop(0))
                continue
            try:
                header, payload = read_frame(inp)
            except EOFError:
                return  # the gateway retired us (or went away)
            error = None
            try:
                invocation = runtime.load(payload)
                runtime.run(
                    invocation,
                    received=header.get("received"),
                    dispatched=header.get("dispatched"),
                    cold=header.get("cold"),
                )
            except Exception as exc:  # before or around the worker loop: the gateway reports it
                log.warning("invocation failed before its worker loop ran: %r", exc)
                error = "".join(traceback.format_exception(exc))
            write_frame(frames, {"done": True, "error": error})
            # Warm now, it imports while it waits what a hand-out will need (one forked
            # before its template had, or started afresh, would pay it in its next run).
            idle_imports = [m for m in PRELOAD_WHEN_IDLE if m not in sys.modules]


if __name__ == "__main__":
    main()
