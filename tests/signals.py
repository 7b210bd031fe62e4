"""Signals between a test and its tasks that work on every backend, threads or worker
processes alike: files in a directory both can see."""

from __future__ import annotations

import os
import time
from pathlib import Path


def mark(path: Path, line: str = "") -> None:
    """Append a line to ``path`` (one per call: a count that survives process boundaries)."""
    with open(path, "a") as f:
        f.write(line + "\n")


def publish(path: Path, text: str) -> None:
    """Write ``path`` whole at once (a reader polling for it never sees it half written)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(*paths: Path, timeout: float = 30.0) -> bool:
    """Wait until every one of ``paths`` exists, at most ``timeout`` seconds; whether they
    do. Polls the condition every few milliseconds (there is no cross-process event to
    block on that every backend shares)."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def refused_before_running(flags: Path, **options: object) -> str:
    """Compute a task that marks ``flags / 'ran'`` with ``options``, which must be refused
    with :class:`shoal.ConfigError` before anything runs; the error's message."""
    import pytest

    import shoal

    ran = flags / "ran"

    @shoal.task
    def touch() -> None:
        mark(ran)

    with pytest.raises(shoal.ConfigError) as refused:
        touch().compute(**options)
    assert not ran.exists(), "the task ran although its options were refused"
    return str(refused.value)
