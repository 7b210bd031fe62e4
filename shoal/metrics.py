"""Task metrics: what a worker measures of every task it runs, and when it sends them.

A worker measures, per task: how long gathering its inputs took and how many bytes it
read from the store (inputs it held in memory cost nothing), how long the function ran
and how much CPU time its process used meanwhile, the process's peak resident memory
while it ran, the size of its output, and how long the store step that uploaded it
took (a batch's round trip, shared among the outputs it stored by their bytes). Its
``worker-started`` event tells the rest: the size it runs on, the backend kind, a cold
or warm start and how long that took, and the delay from the hand-out to its start.

Records travel in the run's event stream (``task-metrics`` events), so the client, which
writes the history, gets them without any store of their own. When they are sent is the
upload policy (origin-todo's ``MetricsStorage``), ``compute(metrics=…)`` or
``$SHOAL_METRICS``:

    batch        with the worker's next completion step, in the same round trip (default)
    task         one event per task, after the step that completed it
    periodic:N   every N seconds at most
    buffer:N     once N records are waiting
    shutdown     all at once when the worker stops
    off          none are recorded

Whatever is still waiting when a worker stops goes with its ``worker-stopped`` event.
CPU time and peak memory are measured only where a worker has its process to itself
(gateway, HTTP, Lambda): threads of the embedded engine share one, so there they are None.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from typing import Any, NamedTuple

from .errors import ConfigError
from .graph.template import _SCALARS

log = logging.getLogger(__name__)

MODES = ("batch", "task", "periodic", "buffer", "shutdown", "off")
DEFAULT_POLICY = "batch"


class Policy(NamedTuple):
    """An upload policy: a mode and its number (seconds for periodic, records for buffer)."""

    mode: str
    every: float = 0.0

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def __str__(self) -> str:
        return f"{self.mode}:{self.every:g}" if self.mode in ("periodic", "buffer") else self.mode


def parse_policy(text: str) -> Policy:
    """The policy named by ``text`` (see the module docstring); a clear error otherwise."""
    mode, _, number = text.strip().partition(":")
    if mode not in MODES:
        raise ConfigError(
            f"unknown metrics policy {text!r}: expected one of batch, task, periodic:SECONDS, "
            "buffer:RECORDS, shutdown, off"
        )
    if mode not in ("periodic", "buffer"):
        if number:
            raise ConfigError(f"metrics policy {mode!r} takes no number, got {text!r}")
        return Policy(mode)
    try:
        every = float(number)
    except ValueError:
        every = 0.0
    if every <= 0 or (mode == "buffer" and every != int(every)):
        kind = "seconds" if mode == "periodic" else "a whole number of records"
        raise ConfigError(f"metrics policy {text!r}: expected {mode}:N with N {kind} > 0")
    return Policy(mode, every)


def send_now(policy: Policy, waiting: int, since_sent_s: float) -> bool:
    """Whether a worker sends its waiting records in an event of their own now. The batch
    and shutdown policies never do: their records ride on a step the worker takes anyway."""
    if waiting == 0:
        return False
    mode = policy.mode
    if mode == "task":
        return True
    if mode == "buffer":
        return waiting >= policy.every
    if mode == "periodic":
        return since_sent_s >= policy.every
    return False


class TaskMetrics(NamedTuple):
    """One task as its worker measured it (seconds and bytes). ``out_bytes`` is exact when
    the output was serialized for the store, else an estimate of its size in memory."""

    task: int
    read_s: float
    read_bytes: int
    run_s: float
    cpu_s: float | None
    peak_mb: float | None
    out_bytes: int
    upload_s: float = 0.0


class Flush(NamedTuple):
    """One completion step: how many tasks, how many output bytes it stored, how long."""

    tasks: int
    stored_bytes: int
    seconds: float


def approx_nbytes(value: Any) -> int:
    """A cheap size estimate of a value that was not serialized."""
    if type(value) in _SCALARS:  # (no failing attribute lookup for the common case)
        return sys.getsizeof(value)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return sys.getsizeof(value)


class ProcessProbe:
    """CPU time and peak resident memory of a task, in this process.

    Linux keeps a process's resident high-water mark and lets the process reset it
    (``/proc/self/clear_refs``, value 5); ``getrusage`` then reads the peak since the
    reset, which right after it is the resident size. A task's peak is what a fresh worker
    would need for it: the worker's own size when it first ran a task, plus how far the
    task took the process above where it started (memory an earlier task left resident is
    not charged to it). About 2 µs per task. Where the reset is not allowed, the peak is
    not measured (a lifetime high-water mark would charge a task for its predecessors).
    """

    def __init__(self) -> None:
        self._clear: int | None = None
        self._baseline: float | None = None  # resident MB before the first task
        self._at_start = 0.0
        try:
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError as exc:
            log.debug("peak memory per task is not measured here: %s", exc)

    def start(self) -> float:
        """Reset the peak; returns the process CPU time to pass to :meth:`stop`."""
        if self._clear is not None:
            try:
                os.write(self._clear, b"5")
            except OSError:
                self._clear = None
            else:
                self._at_start = _resident_peak_mb()
                if self._baseline is None:
                    self._baseline = self._at_start
        return time.process_time()

    def stop(self, cpu_started: float) -> tuple[float, float | None]:
        """CPU seconds since :meth:`start`, and the task's peak resident MB."""
        cpu = time.process_time() - cpu_started
        if self._clear is None or self._baseline is None:
            return cpu, None
        return cpu, self._baseline + max(0.0, _resident_peak_mb() - self._at_start)


def _resident_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_busy_s() -> float | None:
    """CPU seconds this machine's CPUs have been busy since it booted, all processes
    together (Linux's ``/proc/stat``, in clock ticks: 10 ms); None elsewhere."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # user, nice, system, (idle, iowait,) irq, softirq: another VM's steal is not ours.
    busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
    return busy / os.sysconf("SC_CLK_TCK")


_probe: ProcessProbe | None = None


def process_probe() -> ProcessProbe:
    """This process's probe (one file descriptor, opened on first use)."""
    global _probe
    if _probe is None:
        _probe = ProcessProbe()
    return _probe


class MetricsBuffer:
    """A worker's records on their way to the event stream: measured per task, completed
    by the store step that took the task's batch, then sent as its policy says."""

    __slots__ = ("policy", "measured", "waiting", "flushes", "sent_at")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # Plain tuples in TaskMetrics' field order: a named tuple costs a task a microsecond.
        self.measured: list[tuple[Any, ...]] = []  # of the batch not yet in the store
        self.waiting: list[tuple[Any, ...]] = []  # complete, not yet sent
        self.flushes: list[Flush] = []  # steps not yet sent
        self.sent_at = time.monotonic()

    def take_measured(self) -> list[tuple[Any, ...]]:
        """The records of the tasks run since the last step, as that step takes them."""
        measured, self.measured = self.measured, []
        return measured

    def stored(
        self, stored: list[int], seconds: float | None, measured: list[tuple[Any, ...]]
    ) -> None:
        """The batch of ``measured`` (:meth:`take_measured`) went to the store in one
        step of ``seconds`` (None: not known apart from a task's that overlapped it), which
        stored ``stored[i]`` bytes of output ``i``: share the step's time among the stored
        outputs by their bytes, and take their exact sizes."""
        total = sum(b for b in stored if b > 0)
        if seconds is None:
            self.waiting += measured
            return
        self.flushes.append(Flush(len(stored), total, seconds))
        if total:
            per_byte = seconds / total
            self.waiting += [
                m if nbytes <= 0 else (*m[:6], nbytes, per_byte * nbytes)
                for m, nbytes in zip(measured, stored)  # noqa: B905 (equal lengths)
            ]
        else:
            self.waiting += measured

    def due(self) -> bool:
        return send_now(self.policy, len(self.waiting), time.monotonic() - self.sent_at)

    def take(self, count: int | None = None) -> dict[str, Any] | None:
        """The waiting records (the first ``count`` of them) and steps as a
        ``task-metrics`` event's data; None if nothing waits."""
        if not self.waiting and not self.flushes:
            return None
        taken = self.waiting if count is None else self.waiting[:count]
        data = {"tasks": taken, "flushes": self.flushes}
        self.waiting = [] if count is None else self.waiting[count:]
        self.flushes = []
        self.sent_at = time.monotonic()
        return data
