"""A backend as the simulator sees it: how fast workers start (cold and warm) and how many
may run at once, what the store costs per round trip and per byte, which sizes a worker
may have, what CPU a size gets, and the price. Learned from the history's statistics of
the backend kind (at the run's SLA), with stated defaults where it has none yet, and from
what the backend says of its platform now (shared CPUs, keep-warm, idle workers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..backends import Platform, Size
from ..history.records import BackendStats
from ..history.stats import Fit, Summary
from .cost import Price, price_of

#: Memory sizes a planner picks from (MB). Lambda sells any MB from 128 to 10 240; these
#: steps include the sizes where it gives whole vCPUs (1 769 MB each).
MEMORY_STEPS = (128, 256, 512, 768, 1024, 1536, 1769, 2048, 3008, 3538, 4096,
                5307, 6144, 7076, 8192, 8845, 10240)  # fmt: skip
#: Memory a worker process needs beyond what its task's peak shows (MB, with 20 % more).
MEMORY_HEADROOM_MB = 32
MEMORY_MARGIN = 1.2

#: The least memory a planner gives a worker, per backend kind: the gateway limits a
#: worker's virtual data size (RLIMIT_DATA), which runs ahead of its resident memory.
MIN_MEMORY_MB = {"gateway": 512}

#: A fit of store seconds against bytes is used when it explains this much of them.
FIT_R2 = 0.6

#: Defaults per backend kind before the history knows better: (cold hand-out, warm
#: hand-out, gap between tasks, store latency, store bytes per second).
DEFAULTS: dict[str, tuple[float, float, float, float, float]] = {
    "local": (0.0005, 0.0002, 0.00002, 0.0, math.inf),
    "gateway": (0.45, 0.004, 0.0005, 0.0004, 400e6),
    "http": (0.5, 0.01, 0.0005, 0.0005, 200e6),
    "lambda": (0.3, 0.05, 0.001, 0.001, 80e6),
}


@dataclass
class BackendModel:
    kind: str
    cap: int  # workers busy at once
    capacity: float | None  # CPUs the busy workers share (None: each has its own)
    keep_warm_s: float
    idle: dict[Size, int]  # warm idle workers when the run starts
    alive: int | None  # workers alive at most, idle ones included (None: no limit)
    handout_cold_s: float  # a hand-out to the worker's start, when it starts cold
    handout_warm_s: float
    gap_s: float  # the worker loop's own time between two tasks
    read_latency_s: float
    read_s_per_byte: float
    write_latency_s: float
    write_s_per_byte: float
    cpu_per_mb: float | None = None  # Lambda: a size's CPUs follow its memory
    invoke_s: float = 0.0  # one invocation request, as the invoker waits for it
    price: Price = field(default_factory=lambda: price_of("lambda"))
    max_cpus: float = 1.0  # the largest CPU count a planner may ask for
    min_memory_mb: int = MEMORY_STEPS[0]  # the smallest memory a planner may ask for

    def cpus_of(self, size: Size) -> float:
        """The CPUs a worker of ``size`` gets."""
        if self.cpu_per_mb is not None:
            return size.memory_mb * self.cpu_per_mb
        return size.cpus

    def sizes(self, memory_mb: int) -> list[Size]:
        """The sizes a planner picks from for a task that needs ``memory_mb``: on Lambda,
        every memory step from there up; elsewhere every whole CPU count up to the
        machine's (or 8), with that memory."""
        memory_mb = max(memory_mb, self.min_memory_mb)
        if self.cpu_per_mb is not None:
            return [Size(m * self.cpu_per_mb, m) for m in MEMORY_STEPS if m >= memory_mb]
        return [Size(float(c), memory_mb) for c in range(1, int(self.max_cpus) + 1)]

    def read_s(self, nbytes: float) -> float:
        return self.read_latency_s + nbytes * self.read_s_per_byte if nbytes else 0.0

    def write_s(self, nbytes: float) -> float:
        return nbytes * self.write_s_per_byte

    @classmethod
    def learn(
        cls,
        kind: str,
        stats: BackendStats,
        sla: str,
        platform: Platform,
        cap: int,
    ) -> BackendModel:
        """The model of backend ``kind`` from its history ``stats`` (at ``sla``), the
        ``platform`` as it is now, and ``cap`` workers at once."""
        cold, warm, gap, latency, bandwidth = DEFAULTS.get(kind, DEFAULTS["http"])
        read_latency, read_spb = _line(stats.read_fit, latency, 1 / bandwidth)
        write_latency, write_spb = _line(stats.write_fit, latency, 1 / bandwidth)
        capacity = platform.cpus
        return cls(
            kind=kind,
            cap=cap,
            capacity=capacity,
            keep_warm_s=platform.keep_warm_s,
            idle=dict(platform.idle),
            alive=platform.alive,
            handout_cold_s=_at(stats.handout_cold, sla, cold),
            handout_warm_s=_at(stats.handout_warm, sla, warm),
            gap_s=_at(stats.gap, sla, gap),
            read_latency_s=read_latency,
            read_s_per_byte=read_spb,
            write_latency_s=write_latency,
            write_s_per_byte=write_spb,
            cpu_per_mb=platform.cpu_per_mb,
            invoke_s=platform.invoke_latency_s,
            price=price_of(kind),
            max_cpus=min(capacity, 8.0) if capacity else 8.0,
            min_memory_mb=MIN_MEMORY_MB.get(kind, MEMORY_STEPS[0]),
        )


def memory_for(peak_mb: float | None, declared_mb: int | None) -> int:
    """The memory step a task needs: its predicted peak with headroom, at least what it
    declares; the default size's when nothing is known."""
    if peak_mb is None:
        return declared_mb or Size().memory_mb
    need = max(peak_mb * MEMORY_MARGIN + MEMORY_HEADROOM_MB, declared_mb or 0)
    return next((m for m in MEMORY_STEPS if m >= need), MEMORY_STEPS[-1])


def _at(summary: Summary, sla: str, default: float) -> float:
    return summary.at(sla) if summary.n else default


def _line(fit: Fit, latency: float, per_byte: float) -> tuple[float, float]:
    """(latency, seconds per byte) from a fit of seconds against bytes; the defaults where
    the fit has no line or a meaningless one: one that explains little of the times (reads
    of a few hundred bytes each, whose times vary by their round trips, would give any
    slope at all)."""
    line = fit.line()
    if line is None or fit.r2() < FIT_R2:
        if fit.n:  # one size only: its mean time is the latency
            return max(0.0, fit.sy / fit.n), per_byte
        return latency, per_byte
    intercept, slope = line
    return max(0.0, intercept), slope if slope > 0 else per_byte
