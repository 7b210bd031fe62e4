"""A worker size as FaaS platforms mean it: a CPU share (fractions included) as a CPU quota,
and memory as a limit on what the process holds, both through the host's cgroups.

Each worker process gets a cgroup of its own under the gateway's: with cgroup v2
(``cpu.max``, ``memory.max``) where the host has it, else cgroup v1 (``cpu.cfs_quota_us``,
``memory.limit_in_bytes``). A quota lets the kernel run the worker on any CPU that is free,
where pinning (``sched_setaffinity``, what is left where no cgroup is writable) ties it to
CPUs something else may be using. The cgroup goes when its worker has ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
#: The CPU quota's period (the kernel's default): a share of ``cpus`` runs ``cpus`` times
#: this per period.
PERIOD_US = 100_000
#: A CPU share below this is raised to it (the kernel refuses quotas under 1 ms).
MIN_CPUS = 0.01


class Controller(NamedTuple):
    """Where one controller's cgroups for this gateway's workers go, and how it names its
    files."""

    base: Path  # the gateway's own cgroup for this controller, plus "shoal-<pid>"
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
            base = root / mine.get("", "/").lstrip("/") / f"shoal-{os.getpid()}"
            controllers = (root / "cgroup.controllers").read_text().split()
            limiter = cls(
                Controller(base, "cgroup.procs") if "cpu" in controllers else None,
                Controller(base, "cgroup.procs") if "memory" in controllers else None,
                v2=True,
            )
        else:
            cpu = root / "cpu" / mine.get("cpu", "/").lstrip("/") / f"shoal-{os.getpid()}"
            memory = root / "memory" / mine.get("memory", "/").lstrip("/") / f"shoal-{os.getpid()}"
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
                    _sweep(c.base.parent)
                    c.base.mkdir(exist_ok=True)
                    if limiter.v2:  # children of the gateway's cgroup may use the controllers
                        _enable_v2(c.base)
        except OSError as exc:
            log.warning("cannot write the cgroups that enforce worker sizes (%s): CPUs are "
                        "pinned, memory capped by RLIMIT_DATA only", exc)  # fmt: skip
            return None
        return limiter

    def apply(self, pid: int, name: str, cpus: float, memory_mb: int) -> None:
        """Give process ``pid`` (worker ``name``) its CPU quota and memory limit."""
        if self.cpu is not None:
            group = self.cpu.base / name
            group.mkdir(exist_ok=True)
            quota = max(int(PERIOD_US * max(cpus, MIN_CPUS)), 1000)
            if self.v2:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            (group / self.cpu.procs).write_text(str(pid))
        if self.memory is not None:
            group = self.memory.base / name
            group.mkdir(exist_ok=True)
            limit = str(memory_mb * 1024 * 1024)
            (group / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(limit)
            (group / self.memory.procs).write_text(str(pid))

    def release(self, name: str) -> None:
        """Remove worker ``name``'s cgroups (its process has ended)."""
        for c in (self.cpu, self.memory):
            if c is not None:
                with contextlib.suppress(OSError):
                    (c.base / name).rmdir()

    def close(self) -> None:
        for c in (self.cpu, self.memory):
            if c is not None:
                for group in c.base.glob("*/") if c.base.exists() else ():
                    with contextlib.suppress(OSError):
                        group.rmdir()
                with contextlib.suppress(OSError):
                    c.base.rmdir()


def _sweep(parent: Path) -> None:
    """Remove the cgroups a gateway that was killed left behind (empty ones only: the
    kernel refuses to remove a cgroup that still holds a process)."""
    for stale in parent.glob("shoal-*/"):
        pid = stale.name.removeprefix("shoal-")
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for group in stale.glob("*/"):
            with contextlib.suppress(OSError):
                group.rmdir()
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
