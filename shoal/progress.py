"""A progress bar for long runs: shown on a terminal once a run has lasted about a second,
silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

SHOW_AFTER_S = 1.0


class Progress:
    """Tasks done of total and elapsed time, drawn with rich on stderr."""

    def __init__(
        self,
        total: int,
        enabled: bool | None = None,
        *,
        show_after: float = SHOW_AFTER_S,
        console: Any = None,
    ) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.show_after = show_after
        self.console = console  # a rich Console; None draws on stderr
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` tasks of ``total`` (which a map's expansion grows; None: as before)."""
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._started < self.show_after:
                return
            self._start()
        self._bar.update(self._task, completed=done, total=self.total)

    def _start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            "[bold]shoal[/]",
            BarColumn(),
            MofNCompleteColumn(),
            "tasks",
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._bar.add_task("run", total=self.total)
        self._bar.start()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
