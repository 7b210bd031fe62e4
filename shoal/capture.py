"""The tail of what a task printed, kept for its error record (:mod:`shoal.failures`).

``sys.stdout`` and ``sys.stderr`` are wrapped once per process by a tee that passes every
write on unchanged and, on a thread that runs a task, also keeps the last
:data:`TAIL_CHARS` characters. Output written below Python (by C code to file descriptor 1
or 2) is not seen.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

#: How much of a task's output its error record keeps.
TAIL_CHARS = 4096

_local = threading.local()


class _Tee:
    """A text stream that writes through to ``stream`` and keeps a tail per task."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        tail: list[str] | None = getattr(_local, "tail", None)
        if tail is not None:
            tail.append(text)
            if len(tail) > 64:  # keep it short: join and cut
                joined = "".join(tail)[-TAIL_CHARS:]
                tail[:] = [joined]
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty, ...
        return getattr(self._stream, name)


def start() -> None:
    """Keep what this thread prints from now on (the tee is installed if it is not)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]
    _local.tail = []


def stop() -> str:
    """Stop keeping this thread's output; its last :data:`TAIL_CHARS` characters."""
    tail: list[str] | None = getattr(_local, "tail", None)
    _local.tail = None
    return "".join(tail or ())[-TAIL_CHARS:]
