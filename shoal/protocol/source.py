"""Where a worker finds the specs and functions of the tasks it runs: in its invocation (as
objects for workers in the client's process, as signed pages for others), else in the
store, a few pages at a time; each fetched or decoded once per worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ..backends import Invocation, Size
from ..graph import PAGE, EncodedGraph, ShippedGraph, TaskFunction, TaskSpec, pages_of
from ..graph.maps import Element
from ..graph.template import Lifted
from ..stores import Store

#: A worker that must read a page of specs reads this many (task ids are topological: a
#: chain's next tasks follow it).
PAGES_READ = 4


class TaskSource:
    """The specs and functions this worker needs: from the invocation (as objects or as
    signed pages), else from the store; each fetched or decoded once per worker."""

    def __init__(self, invocation: Invocation, store: Store) -> None:
        self.run_id = invocation.run_id
        self.store = store
        graph = invocation.graph
        self.in_hand = graph if isinstance(graph, ShippedGraph) else None
        self.encoded = graph if isinstance(graph, EncodedGraph) else None
        self.pages: dict[int, bytes] = dict(invocation.pages or {})
        self.codec = store.codec
        self.specs: dict[int, TaskSpec] = {}
        self.functions: dict[int, TaskFunction[Any, Any]] = {}
        #: Tasks whose specs name big constants kept apart (shoal.graph.template.Lifted).
        self.lifted: set[int] = set()
        self.constants: dict[int, Any] = {}
        #: Reads of constants asked for ahead (:meth:`read_ahead`), by constant.
        self.coming: dict[int, asyncio.Task[list[Any]]] = {}
        #: Requirement sets of tasks looked up ahead (learn_requirements), for decisions
        #: that cannot wait (which children a worker runs early).
        self.sets: dict[int, tuple[str, ...]] = {}

    @property
    def complete(self) -> bool:
        """Whether every spec is at hand (no need to have the store send them)."""
        return self.encoded is not None or self.in_hand is not None

    async def spec(self, task: int) -> TaskSpec:
        if self.in_hand is not None:
            return self.in_hand.specs[task]
        spec = self.specs.get(task)
        if spec is None:
            page = task // PAGE
            static = self.encoded is not None and page < len(self.encoded.pages)
            blob = self.encoded.pages[page] if static else self.pages.get(page)  # type: ignore[union-attr]
            if blob is None:  # read it and the next ones: nearby tasks are likely next
                wanted = [p for p in range(page, page + PAGES_READ) if p not in self.pages]
                self.pages.update(await self.store.load_pages(self.run_id, wanted))
                blob = self.pages.get(page)
                if blob is None:
                    raise LookupError(f"run {self.run_id} has no spec for task {task}")
            assert self.codec is not None, "signed specs need the store's codec"
            decoded, lifted = self.codec.decode_page(blob)
            first = page * PAGE
            self.specs.update(enumerate(decoded, first))
            self.lifted.update(first + offset for offset in lifted)
            spec = self.specs[task]
        return spec

    def add(self, specs: dict[int, TaskSpec]) -> None:
        """The specs of tasks a map's expansion made here (at ids the store reserved)."""
        if self.in_hand is not None:  # the run's own list, which the reservation grew
            for task, spec in specs.items():
                self.in_hand.specs[task] = spec
        else:
            self.specs.update(specs)

    async def with_constants(self, spec: TaskSpec) -> TaskSpec:
        """``spec`` with its lifted constants in place (read once per worker)."""
        wanted = self._missing(spec)
        for index in [i for i in wanted if i in self.coming]:
            with contextlib.suppress(Exception):  # (read again below)
                self.constants[index] = (await self.coming.pop(index))[0]
        wanted = [i for i in wanted if i not in self.constants]
        if wanted:
            read = await self.store.load_constants(self.run_id, wanted)
            self.constants.update(zip(wanted, read, strict=True))

        def value(a: Any) -> Any:
            return self.constants[a.i] if type(a) is Lifted else a

        return spec._replace(
            args=tuple(map(value, spec.args)),
            kwargs={k: value(v) for k, v in spec.kwargs.items()},
        )

    async def read_ahead(self, task: int) -> None:
        """Ask now for the constants of ``task``, which this worker runs next, and let the
        request go out: the store sends them while the task before it runs (its code holds
        the event loop), so they are waiting when ``task`` starts."""
        if task not in self.lifted:
            return
        for index in self._missing(self.specs[task]):
            if index not in self.coming:
                read = self.store.load_constants(self.run_id, [index])
                self.coming[index] = asyncio.ensure_future(read)
        await asyncio.sleep(0)

    def close(self) -> None:
        """Drop reads ahead that no task took (the run ended or moved on)."""
        for read in self.coming.values():
            read.cancel()
        self.coming.clear()

    def _missing(self, spec: TaskSpec) -> list[int]:
        return [
            a.i
            for a in (*spec.args, *spec.kwargs.values())
            if type(a) is Lifted and a.i not in self.constants
        ]

    async def function(self, index: int) -> TaskFunction[Any, Any]:
        if self.in_hand is not None:
            return self.in_hand.functions[index]
        fn = self.functions.get(index)
        if fn is None:
            if self.encoded is not None and self.codec is not None:
                fn = self.codec.decode_function(self.encoded.functions[index])
            else:
                (fn,) = await self.store.load_functions(self.run_id, [index])
            self.functions[index] = fn
        return fn

    def pages_for(self, tasks: Sequence[int]) -> dict[int, bytes] | None:
        """The signed pages of ``tasks`` to send along when handing them out."""
        # With the whole graph travelling, only the pages of a map's elements are here.
        return {p: self.pages[p] for p in pages_of(tasks) if p in self.pages} or None

    async def size(self, tasks: Sequence[int]) -> Size:
        """The worker size for ``tasks``: the plan's, else the smallest that fits their
        options."""
        first = await self.spec(tasks[0])
        if first.size is not None:
            return Size(*first.size)
        funcs = {(await self.spec(t)).func for t in tasks}
        return Size.fitting([(await self.function(f)).options for f in funcs])

    async def requirements(self, task: int) -> tuple[str, ...]:
        """The requirement set ``task`` runs with (its function's, the run's included)."""
        return (await self.function((await self.spec(task)).func)).options.requirements

    async def learn_requirements(self, tasks: Sequence[int]) -> None:
        """Look up the requirement sets of ``tasks`` now, for :meth:`foreign`."""
        for task in tasks:
            if task not in self.sets:
                self.sets[task] = await self.requirements(task)

    def foreign(self, tasks: Sequence[int], own: tuple[str, ...]) -> set[int]:
        """Those of ``tasks`` (learnt ahead) whose requirement set is not ``own``."""
        sets = self.sets
        return {t for t in tasks if sets.get(t, own) != own}

    async def by_requirements(
        self, keep: list[int], hand_out: list[list[int]], own: tuple[str, ...]
    ) -> tuple[list[int], list[tuple[list[int], tuple[str, ...] | None]]]:
        """``keep`` and ``hand_out`` split by environment: a task whose requirement set is
        not this worker's (``own``) cannot run here and is handed out, and a hand-out goes
        out as one invocation per requirement set. Each hand-out comes with its set (None:
        ``own``), for the invocation to carry."""
        sets: dict[tuple[str, ...], list[int]] = {}
        kept = []
        for task in keep:
            reqs = await self.requirements(task)
            if reqs == own:
                kept.append(task)
            else:
                sets.setdefault(reqs, []).append(task)
        out: list[tuple[list[int], tuple[str, ...] | None]] = [
            (group, reqs) for reqs, group in sets.items()
        ]
        for group in hand_out:
            split: dict[tuple[str, ...], list[int]] = {}
            for task in group:
                split.setdefault(await self.requirements(task), []).append(task)
            out.extend((tasks, None if reqs == own else reqs) for reqs, tasks in split.items())
        return kept, out

    async def planned_groups(self, tasks: Sequence[int]) -> list[list[int]]:
        """``tasks`` by their planned group, one invocation each."""
        groups: dict[int | None, list[int]] = {}
        for task in tasks:
            groups.setdefault((await self.spec(task)).group, []).append(task)
        return list(groups.values())

    async def name(self, task: int) -> str:
        spec = await self.spec(task)
        fn = await self.function(spec.func)
        if type(spec.dynamic) is Element:  # its place in the mapped input tells it
            return f"{fn.name}[{spec.dynamic.at}]-{task}"
        return f"{fn.name}-{task}"
