"""A task's failure as a record that can travel, and its rebuilding on the client."""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass, replace

import cloudpickle

from .errors import RemoteTraceback, TaskFailed


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Why a task failed: its exception (when it can travel), type, message and traceback."""

    task: int
    name: str
    worker: str
    attempts: int
    exc_type: str
    message: str
    traceback: str
    exc: BaseException | None = None
    local: bool = True  # exc is the very object raised in this process, traceback and all
    output: str = ""  # the tail of what its last attempt printed

    @classmethod
    def from_exception(
        cls, task: int, name: str, worker: str, attempts: int, exc: BaseException, output: str = ""
    ) -> TaskFailure:
        t = type(exc)
        return cls(
            output=output,
            task=task,
            name=name,
            worker=worker,
            attempts=attempts,
            exc_type=f"{t.__module__}.{t.__qualname__}",
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            exc=exc,
        )

    def to_bytes(self) -> bytes:
        """Pickled for another process; an exception that cannot be pickled is left out.
        cloudpickle keeps the identity of exception classes the client sent by value, so
        ``except`` clauses on the client still match."""
        moved = replace(self, local=False)
        try:
            return cloudpickle.dumps(moved)
        except Exception:
            return cloudpickle.dumps(replace(moved, exc=None))

    @staticmethod
    def from_bytes(data: bytes) -> TaskFailure:
        failure: TaskFailure = pickle.loads(data)
        return failure

    def exception(self) -> BaseException:
        """The exception ``compute()`` raises: the task's own type, with the worker's
        traceback attached when the original traceback object did not come along."""
        note = (
            f"[shoal] task {self.name} failed on worker {self.worker} "
            f"after {self.attempts} attempt(s)"
        )
        if self.exc is not None and self.local:
            exc = self.exc
        elif self.exc is not None:
            exc = self.exc
            exc.__cause__ = RemoteTraceback(self.traceback)
        else:
            exc = TaskFailed(f"{self.exc_type}: {self.message}")
            exc.__cause__ = RemoteTraceback(self.traceback)
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        return exc
