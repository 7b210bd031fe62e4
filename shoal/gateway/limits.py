"""A worker size as FaaS platforms mean it: memory as a limit on what the process holds,
and a fraction of a CPU as a CPU quota, through the host's cgroups.

Whole CPUs stay pinned (``sched_setaffinity``, by the gateway): beside a competing busy
process on a 2-core machine, a Montage-shaped run took 4.8 s with workers pinned and 6.0 s
with quotas instead (5.3 s with both: ``python -m bench.busy``), the scheduler balancing
a worker's own cgroup worse than a pinned process.

Each worker process gets a cgroup of its own beside the gateway's (``shoal-<gateway
pid>-<worker>``): with cgroup v2 (``cpu.max``, ``memory.max``) where the host has it, else
cgroup v1 (``cpu.cfs_quota_us``, ``memory.limit_in_bytes``). Beside, not under one group of
the gateway's: the scheduler shares CPUs between sibling groups, and one group holding
every worker would weigh as much as a single competing process. The cgroup goes when its
worker has ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
#: The CPU quota's period (the kernel's default): a share of ``cpus`` runs ``cpus`` times
#: this per period.
PERIOD_US = 100_000
#: A CPU share below this is raised to it (the kernel refuses quotas under 1 ms).
MIN_CPUS = 0.01
#: How often :meth:`Limiter.attach_warm` moves the gateway into its own cgroup: well
#: within a grace period.
WARM_EVERY_S = 0.002


class Controller(NamedTuple):
    """Where one controller's cgroups for this gateway's workers go, and how it names its
    files."""

    base: Path  # the gateway's own cgroup for this controller: workers' go beside it
    procs: str  # the file a pid is written to


class Limiter:
    """Puts worker processes in cgroups that enforce their size."""

    def __init__(self, cpu: Controller | None, memory: Controller | None, v2: bool) -> None:
        self.cpu, self.memory, self.v2 = cpu, memory, v2

    @classmethod
    def detect(cls, root: Path = ROOT) -> Limiter | None:
        """A limiter for the cgroups this process may write, or None (with a warning)."""
        mine = _own_cgroups()
        if (root / "cgroup.controllers").exists():  # cgroup v2: one tree
            base = (root / mine.get("", "/").lstrip("/")).parent
            controllers = (root / "cgroup.controllers").read_text().split()
            limiter = cls(
                Controller(base, "cgroup.procs") if "cpu" in controllers else None,
                Controller(base, "cgroup.procs") if "memory" in controllers else None,
                v2=True,
            )
        else:
            cpu = root / "cpu" / mine.get("cpu", "/").lstrip("/")
            memory = root / "memory" / mine.get("memory", "/").lstrip("/")
            limiter = cls(
                Controller(cpu, "cgroup.procs") if (root / "cpu" / "cpu.cfs_period_us").exists()
                else None,
                Controller(memory, "cgroup.procs") if (root / "memory").is_dir() else None,
                v2=False,
            )  # fmt: skip
        if limiter.cpu is None and limiter.memory is None:
            log.warning("no cgroup to enforce worker sizes: CPUs are pinned, memory capped "
                        "by RLIMIT_DATA only")  # fmt: skip
            return None
        try:
            for c in (limiter.cpu, limiter.memory):
                if c is not None:
                    _sweep(c.base)
                    if limiter.v2:  # the workers' cgroups may use the controllers
                        _enable_v2(c.base)
                    probe = c.base / f"shoal-{os.getpid()}-probe"
                    probe.mkdir(exist_ok=True)
                    probe.rmdir()
        except OSError as exc:
            log.warning("cannot write the cgroups that enforce worker sizes (%s): CPUs are "
                        "pinned, memory capped by RLIMIT_DATA only", exc)  # fmt: skip
            return None
        return limiter

    def apply(self, pid: int, name: str, cpus: float | None, memory_mb: int) -> None:
        """Give process ``pid`` (worker ``name``) its memory limit and, unless ``cpus`` is
        None, its CPU quota."""
        if self.cpu is not None and cpus is not None:
            group = self.cpu.base / _group(name)
            group.mkdir(exist_ok=True)
            quota = max(int(PERIOD_US * max(cpus, MIN_CPUS)), 1000)
            if self.v2:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            (group / self.cpu.procs).write_text(str(pid))
        if self.memory is not None:
            group = self.memory.base / _group(name)
            group.mkdir(exist_ok=True)
            limit = str(memory_mb * 1024 * 1024)
            (group / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(limit)
            (group / self.memory.procs).write_text(str(pid))

    @contextlib.contextmanager
    def attach_warm(self) -> Iterator[None]:
        """Meanwhile, keep the kernel ready to move a process into a cgroup at once: the
        first move after a quiet while waits for an RCU grace period (7 to 13 ms here,
        cgroup v1 or v2 alike, on a new worker's critical path), a move within one of the
        last takes ~0.05 ms. A thread moves this process into the cgroup it is in (no
        change) every :data:`WARM_EVERY_S`, blocked in the kernel, not on a CPU, while
        the gateway waits for its template to fork the worker."""
        own = self._own_procs()
        if own is None:
            yield
            return
        stop = threading.Event()

        def keep_warm() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    own.write_text("0")
                stop.wait(WARM_EVERY_S)

        thread = threading.Thread(target=keep_warm, name="shoal-cgroup-warm", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()

    def _own_procs(self) -> Path | None:
        """The procs file of this process's own cgroup of a controller it limits with."""
        mine = _own_cgroups()
        if self.v2:
            own = ROOT / mine.get("", "/").lstrip("/") / "cgroup.procs"
        elif self.memory is not None:
            own = ROOT / "memory" / mine.get("memory", "/").lstrip("/") / "cgroup.procs"
        else:
            own = ROOT / "cpu" / mine.get("cpu", "/").lstrip("/") / "cgroup.procs"
        return own if os.access(own, os.W_OK) else None

    def release(self, name: str) -> None:
        """Remove worker ``name``'s cgroups (its process has ended)."""
        for c in (self.cpu, self.memory):
            if c is not None:
                with contextlib.suppress(OSError):
                    (c.base / _group(name)).rmdir()

    def close(self) -> None:
        for c in (self.cpu, self.memory):
            if c is not None:
                for group in c.base.glob(f"shoal-{os.getpid()}-*/"):
                    with contextlib.suppress(OSError):
                        group.rmdir()


def _group(worker: str) -> str:
    return f"shoal-{os.getpid()}-{worker}"


def _sweep(parent: Path) -> None:
    """Remove the cgroups a gateway that was killed left behind (empty ones only: the
    kernel refuses to remove a cgroup that still holds a process)."""
    for stale in parent.glob("shoal-*-*/"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                stale.rmdir()


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per controller (``""``: cgroup v2's), from /proc."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _enable_v2(base: Path) -> None:
    """cgroup v2: let the children of ``base`` use the cpu and memory controllers."""
    with contextlib.suppress(OSError):
        (base / "cgroup.subtree_control").write_text("+cpu +memory")
