"""A worker's reads ahead: the inputs of its next tasks, asked of the store in one read
before the task ahead of them runs.

A store across a network answers while the task's code holds the worker's event loop, so
the next tasks find their inputs waiting instead of each taking a round trip of its own
between tasks (what the worker's CPU, shared with the tasks of others, would spend on
them). Outputs never change once stored, so a value read ahead is never stale; a task
handed to another worker meanwhile leaves its inputs unread here until the invocation
ends. Only small inputs are read ahead (:data:`~shoal.decisions.READ_AHEAD_BELOW`): they
wait in the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..decisions import READ_AHEAD_BELOW, inputs_to_read_ahead
from ..stores import Store

#: Turns of the event loop that let a read go out before the task after it holds the loop
#: (redis-py's pool awaits a check of the connection first).
SEND_TURNS = 4


class InputsAhead:
    """Inputs read ahead for a worker's next tasks, by upstream task."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        #: Tasks whose inputs were asked for (or found in memory) already.
        self.asked: set[int] = set()
        #: Upstream task -> [the read (None: the value is at hand), its place in the read
        #: (or the value), how many asked-for tasks still read it].
        self._coming: dict[int, list[Any]] = {}
        #: Bytes per input of the worker's last store read (None before the first).
        self.per_input: float | None = None

    def __contains__(self, dep: int) -> bool:
        return dep in self._coming

    def learn(self, nbytes: int, inputs: int) -> None:
        """The worker read ``inputs`` inputs of ``nbytes`` bytes from the store."""
        if inputs:
            self.per_input = nbytes / inputs

    def worth(self, task: int) -> bool:
        """Whether to read ahead for ``task`` (the worker's next) and those after it:
        not asked for yet, and the inputs read so far were small."""
        return (
            task not in self.asked
            and self.per_input is not None
            and self.per_input <= READ_AHEAD_BELOW
        )

    async def ask(
        self,
        tasks: Mapping[int, Sequence[int]],
        in_memory: Callable[[int], bool],
        at_hand: Mapping[int, Any],
    ) -> None:
        """Read ahead the inputs of ``tasks`` (each one's inputs) but those ``in_memory``;
        those of the task about to run (``at_hand``, by upstream task) are taken from it.
        Returns once the read is on its way."""
        self.asked.update(tasks)
        uses = inputs_to_read_ahead(
            list(tasks.values()), lambda d: d in self._coming or in_memory(d)
        )
        wanted = []
        for dep, n in uses.items():
            if dep in at_hand:
                self._coming[dep] = [None, at_hand[dep], n]
            else:
                wanted.append(dep)
        if not wanted:
            return
        read = asyncio.ensure_future(self.store.get_outputs(self.run_id, wanted))
        for i, dep in enumerate(wanted):
            self._coming[dep] = [read, i, uses[dep]]
        for _ in range(SEND_TURNS):
            await asyncio.sleep(0)

    async def take(self, dep: int) -> Any:
        """The value of ``dep``, read ahead (``dep in self``); raises what its read
        raised."""
        entry = self._coming[dep]
        read, at = entry[0], entry[1]
        entry[2] -= 1
        if entry[2] <= 0:
            del self._coming[dep]
        if read is None:
            return at
        values, nbytes = await read
        self.learn(nbytes, len(values))
        return values[at]

    def close(self) -> None:
        """Drop what no task took (handed to other workers, or the run ended)."""
        for entry in self._coming.values():
            read = entry[0]
            if read is None:
                continue
            if read.done():
                with contextlib.suppress(BaseException):  # nobody waits for its error
                    read.exception()
            else:
                read.cancel()
        self._coming.clear()
