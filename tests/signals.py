"""Signals between a test and its tasks that work on every backend, threads or worker
processes alike: files in a directory both can see."""

from __future__ import annotations

import time
from pathlib import Path


def mark(path: Path, line: str = "") -> None:
    """Append a line to ``path`` (one per call: a count that survives process boundaries)."""
    with open(path, "a") as f:
        f.write(line + "\n")


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
