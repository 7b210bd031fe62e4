"""Running a task: one attempt, and after a failure the retries its options allow, with
exponential backoff and jitter, each failed attempt recorded (its error, traceback and
output) for the run's events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from traceback import format_exception
from typing import Any

from .. import capture
from ..decisions import backoff_delays
from ..graph import TaskFunction, TaskSpec

#: (whether it succeeded, its result or the exception it raised, when it started, what
#: it printed)
Attempt = tuple[bool, Any, float, str]


def attempt(fn: TaskFunction[Any, Any], spec: TaskSpec, values: list[Any]) -> Attempt:
    """Run a task once, on this thread."""
    started = time.time()
    capture.start()
    try:
        args, kwargs = spec.arguments(values)
        return True, fn.func(*args, **kwargs), started, capture.stop()
    except Exception as exc:
        return False, exc, started, capture.stop()


async def retry(
    fn: TaskFunction[Any, Any],
    spec: TaskSpec,
    values: list[Any],
    error: Exception,
    output: str,
    name: str,
    record: Callable[[dict[str, Any]], Awaitable[None]],
) -> Attempt:
    """After a first failure (``error``, having printed ``output``), retry as the task's
    options allow, passing each failed attempt's record to ``record``. The last attempt:
    its result, or the last exception."""
    started = time.time()
    for n, delay in enumerate(backoff_delays(fn.options.retries, fn.options.retry_delay), 1):
        await record(attempt_record(name, n, error, output))
        await asyncio.sleep(delay)
        ok, result, started, output = attempt(fn, spec, values)
        if ok:
            return True, result, started, output
        error = result
    return False, error, started, output


def attempt_record(name: str, attempt: int, error: BaseException, output: str) -> dict[str, Any]:
    """A failed attempt as its event carries it (see :class:`shoal.summary.Attempt`)."""
    return {
        "name": name,
        "attempt": attempt,
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(format_exception(error)),
        "output": output,
    }
