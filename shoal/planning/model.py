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

#: Bytes per second below which a fitted store cost is taken for noise, not bandwidth.
SLOWEST_STORE = 1e6
#: Bytes from which a transfer's time is mostly its bytes' (not its round trips').
LARGE_TRANSFER = 1 << 20

#: Defaults per backend kind before the history knows better: (cold hand-out, warm
#: hand-out, gap between tasks, store latency, store read and write bytes per second).
#: The gateway forks its workers from a preloaded template (tens of milliseconds cold), and
#: its workers share the machine's Redis and /dev/shm: an output over 1 MiB is a file
#: there, which a reader maps lazily (~1 ms for 50 MB, then a page fault per page its task
#: touches: ~5 GB/s), and which a writer pickles and copies there (a few GB/s; HMAC-signed
#: where the folder is shared: ~1 GB/s).
DEFAULTS: dict[str, tuple[float, float, float, float, float, float]] = {
    "local": (0.0005, 0.0002, 0.00002, 0.0, math.inf, math.inf),
    "gateway": (0.03, 0.004, 0.0005, 0.0004, 5e9, 1e9),
    "http": (0.5, 0.01, 0.0005, 0.0005, 200e6, 200e6),
    "lambda": (0.3, 0.05, 0.001, 0.001, 80e6, 80e6),
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
    lead_s: float  # a worker's start to its first task (claiming it, loading its specs)
    #: Between two invocations the platform takes in a burst, and so between their starts
    #: (one after another on one machine, whoever sent them; 0: no limit), with the
    #: machine's CPUs its own: the simulator stretches it where they are shared.
    start_spacing_s: float
    cold_spacing_s: float  # the same after a cold start
    read_latency_s: float
    read_s_per_byte: float
    write_latency_s: float
    write_s_per_byte: float
    #: Whether reads (writes) at once share the store's pace, as one Redis thread serves
    #: them, or each goes at its own (files on several CPUs): see :func:`_shares`.
    reads_shared: bool = False
    writes_shared: bool = False
    cpu_per_mb: float | None = None  # Lambda: a size's CPUs follow its memory
    invoke_s: float = 0.0  # one invocation request, until the platform has it
    #: The same as its invoker waits for it: until answered, and it goes on (>= invoke_s).
    request_s: float = 0.0
    #: CPU seconds each worker costs the machine (``capacity``) besides its tasks' code:
    #: its start, loop and stop, and the client, store and platform serving it (0: unknown).
    worker_cpu_s: float = 0.0
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
        return self.write_latency_s + nbytes * self.write_s_per_byte if nbytes else 0.0

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
        cold, warm, gap, latency, read_bps, write_bps = DEFAULTS.get(kind, DEFAULTS["http"])
        reads_shared = _shares(stats.read_fit, stats.read_shared_fit)
        writes_shared = _shares(stats.write_fit, stats.write_shared_fit)
        read_fit = stats.read_shared_fit if reads_shared else stats.read_fit
        write_fit = stats.write_shared_fit if writes_shared else stats.write_fit
        read_latency, read_spb = _line(read_fit, latency, 1 / read_bps)
        write_latency, write_spb = _line(write_fit, latency, 1 / write_bps)
        capacity = platform.cpus
        # The median: a burst's pace as the platform takes it, not the stalls of bursts
        # whose workers held the machine's CPUs (the simulator plays those itself).
        spacing = _at(stats.start_spacing, "p50", 0.0)
        return cls(
            kind=kind,
            cap=cap,
            capacity=capacity,
            keep_warm_s=platform.keep_warm_s,
            idle=dict(platform.idle),
            alive=platform.alive,
            handout_cold_s=_handout(stats.handout_cold, sla, cold, platform.invoke_latency_s),
            handout_warm_s=_handout(stats.handout_warm, sla, warm, platform.invoke_latency_s),
            gap_s=_at(stats.gap, sla, gap),
            lead_s=_at(stats.lead, sla, 0.0),  # unmeasured: within the hand-out
            start_spacing_s=spacing,
            cold_spacing_s=_at(stats.cold_spacing, "p50", spacing),  # none seen: as warm
            # The median too: a platform's cost, not a task's time to plan for at the SLA.
            worker_cpu_s=_at(stats.worker_cpu, "p50", 0.0),
            read_latency_s=read_latency,
            read_s_per_byte=read_spb,
            write_latency_s=write_latency,
            write_s_per_byte=write_spb,
            reads_shared=reads_shared,
            writes_shared=writes_shared,
            cpu_per_mb=platform.cpu_per_mb,
            invoke_s=platform.invoke_latency_s,
            request_s=max(platform.invoke_latency_s, _at(stats.request_wait, sla, 0.0)),
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


def _handout(summary: Summary, sla: str, default: float, invoke_s: float) -> float:
    """The delay from an invocation to its worker's start, without the invoke request: a
    hand-out is measured from its sending, and the simulator charges the request itself
    (the platform's invoke latency, per round of invocations in flight)."""
    return max(0.0, summary.at(sla) - invoke_s) if summary.n else default


def _shares(own: Fit, meanwhile: Fit) -> bool:
    """Whether transfers at once share the store's pace: where their times follow the
    bytes the store moved meanwhile (theirs and the others' at once) more closely than
    their own bytes, each at one pace (least squares through the origin: the smaller sum
    of squared residuals). A store that serves one at a time (one Redis thread) shows
    so; files written side by side on several CPUs do not."""
    if not own.n or own.sxx <= 0 or meanwhile.sxx <= 0 or own.sx == meanwhile.sx:
        return False
    return meanwhile.syy - meanwhile.sxy**2 / meanwhile.sxx < own.syy - own.sxy**2 / own.sxx


def _line(fit: Fit, latency: float, per_byte: float) -> tuple[float, float]:
    """(latency, seconds per byte) from a fit of seconds against bytes. Its slope is used
    where the bytes seen pin it more tightly than the default does, however little they
    explain of the times (large reads may cost little more than small ones): its
    standard error is below the default per-byte cost, so that extrapolated to larger
    bytes it is no worse a guess; a slope below zero so pinned is a cost too small to
    show. Elsewhere (no line, or bytes too alike for their cost to show through the
    scatter of the times, as reads of a few hundred bytes each) the default per-byte
    cost, with the line through the mean time at the mean bytes. A slope three times its
    standard error is used too: it shows, whatever the default says. A slope whose line
    would cross zero seconds above zero bytes (a latency below zero: bytes all alike but
    for a few, whose scatter tilts the line) is no store's cost: the line is then the one
    through the origin that fits best, the time per byte the times show on average. So
    too where large transfers (:data:`LARGE_TRANSFER` on average) are too alike to show
    a slope: their time is their bytes' (140 MB read in 0.3 s is no 0.3 s round trip)."""
    if not fit.n:
        return latency, per_byte
    line, error = fit.line(), fit.slope_error()
    slope = per_byte
    # Pinned: more tightly than the default, or to within a third of itself where it is a
    # store's cost at all (faster than SLOWEST_STORE: a store several times slower than the
    # default shows so; a steeper slope is the scatter of round trips).
    if line is not None and error is not None:
        clear = error < abs(line[1]) / 3 and line[1] < 1 / SLOWEST_STORE
        if error < per_byte or clear:
            slope = max(0.0, line[1])
            if line[0] < 0 and fit.sxx > 0:  # least squares with no latency at all
                return 0.0, max(0.0, fit.sxy / fit.sxx)
    if slope == per_byte and fit.sx >= LARGE_TRANSFER * fit.n and fit.sxx > 0:
        return 0.0, max(0.0, fit.sxy / fit.sxx)
    return max(0.0, (fit.sy - slope * fit.sx) / fit.n), slope
