"""Shoal's exceptions: one root, a shallow tree.

    ShoalError
     ├── ConfigError      (also ValueError)     bad option, URL or environment variable
     ├── TaskFailed       (also RuntimeError)   a task failed and its own exception could
     │                                          not be rebuilt on the client
     ├── WorkerLost       (also RuntimeError)   a worker died or crashed outside user code
     ├── RunTimeout       (also TimeoutError)   compute(timeout=...) ran out
     ├── RunNotFound      (also LookupError)    the run's keys are gone (finished or cancelled)
     ├── RunCancelled                           SIGTERM cancelled the run (SIGINT raises
     │                                          KeyboardInterrupt, as Python does)
     ├── StoreUnavailable (also ConnectionError) the store cannot be reached
     └── BadSignature     (also ValueError)     a payload's signature is missing or wrong

A task that raises makes ``compute()`` raise *the task's own exception*, not a ShoalError;
when it crossed a process boundary the remote traceback is attached as its ``__cause__``
(a :class:`RemoteTraceback`), the way ``concurrent.futures`` does.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "ConfigError",
    "EnvironmentBuildError",
    "RemoteTraceback",
    "RequirementsUnsatisfied",
    "RunCancelled",
    "RunNotFound",
    "RunTimeout",
    "ShoalError",
    "StoreUnavailable",
    "TaskFailed",
    "WorkerLost",
]


class ShoalError(Exception):
    """Root of every error Shoal raises itself."""


class ConfigError(ShoalError, ValueError):
    """An option, URL or environment variable is wrong; nothing has run."""


class TaskFailed(ShoalError, RuntimeError):
    """A task failed and its exception could not be rebuilt here (e.g. it did not unpickle)."""


class WorkerLost(ShoalError, RuntimeError):
    """A worker crashed or disappeared outside user code (more often than its task's
    ``retries`` allow), so the run cannot finish."""


class RunTimeout(ShoalError, TimeoutError):
    """The run did not finish within ``compute(timeout=...)``."""


class RunNotFound(ShoalError, LookupError):
    """The run no longer exists in the store: it finished, failed or was cancelled."""


class RunCancelled(ShoalError):
    """The run was cancelled by a signal (SIGTERM) before it finished; its keys are gone."""


class StoreUnavailable(ShoalError, ConnectionError):
    """The store cannot be reached (or is not what its URL says): the run cannot go on."""


class RequirementsUnsatisfied(ShoalError, RuntimeError):
    """A task's requirements (``@task(requirements=...)``, ``compute(requirements=...)``)
    are not met where it would run (the embedded engine's interpreter, a worker's image);
    the message names each task and requirement. Nothing of the run has run."""


class EnvironmentBuildError(ShoalError, RuntimeError):
    """An environment for a requirement set could not be built (uv's output attached in
    the message); nothing of the run has run."""


class RemoteTraceback(Exception):
    """Carries a traceback formatted on a worker; shown as the cause of the task's error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class BadSignature(ShoalError, ValueError):
    """A signed payload (an invocation, a spec, an output) is unsigned or was tampered with;
    nothing of it was unpickled."""
