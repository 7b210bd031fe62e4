"""How fast a lost worker's tasks run again: ``python -m bench.faults``.

On Redis + gateway (servers started here), a task's first attempt writes its pid and
waits; the bench then either freezes its worker process (SIGSTOP: nobody reports it, its
lease must expire) or kills it (SIGKILL: the gateway reports it at once), and times how
long until the task's second attempt starts on a new worker. Each lease length is tried
``--repeat`` times; the figure is the median, also in lease periods.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import shoal

from .live import _Live


def _victim(flags: str) -> float:
    """First attempt: write the pid, wait to be stopped or killed. Second: note when it
    started."""
    folder = Path(flags)
    if not (folder / "pid").exists():  # whole or not at all: the bench polls for it
        (folder / "pid.new").write_text(str(os.getpid()))
        (folder / "pid.new").rename(folder / "pid")
        time.sleep(120)
    (folder / "again").write_text(repr(time.time()))
    return 1.0


def recovery(lease_s: float, how: signal.Signals, live: _Live) -> float:
    """Seconds from the fault to the start of the task's second attempt."""
    with tempfile.TemporaryDirectory() as flags:
        victim = shoal.task(retries=1)(_victim)
        os.environ["SHOAL_LEASE_S"] = str(lease_s)
        done: list[Any] = []
        run = threading.Thread(target=lambda: done.append(live.compute(victim(flags))))
        run.start()
        pid_file, again = Path(flags) / "pid", Path(flags) / "again"
        while not pid_file.exists():
            time.sleep(0.001)
        pid = int(pid_file.read_text())
        struck = time.time()
        os.kill(pid, how)
        run.join(60)
        if how is signal.SIGSTOP:
            os.kill(pid, signal.SIGKILL)
        return float(again.read_text()) - struck


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("--leases", default="1,2,4", help="lease lengths (s), comma list")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'lease s':>7} {'fault':8} {'to re-run (median)':>19} {'in leases':>10}")
    with _Live() as live:
        for lease_s in [float(x) for x in args.leases.split(",")]:
            for how in (signal.SIGSTOP, signal.SIGKILL):
                times = [recovery(lease_s, how, live) for _ in range(args.repeat)]
                median = statistics.median(times)
                print(f"{lease_s:7.1f} {how.name:8} {median:17.3f} s {median / lease_s:10.2f}")
                live.servers.wait_idle()


if __name__ == "__main__":
    main()
