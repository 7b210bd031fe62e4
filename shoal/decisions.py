"""The protocol's decisions as pure functions over plain data.

No store, no I/O: each store applies these inside its own atomic step, and the worker loop
carries out what they return. Tested with exact-state asserts in tests/test_decisions.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

from .events import Event, EventKind


class Upload(IntEnum):
    """When a finished task's output must go to the store."""

    NEVER = 0
    IF_PENDING = 1  # only if some child is still waiting for other inputs after the marks
    ALWAYS = 2


NEVER, IF_PENDING, ALWAYS = Upload.NEVER, Upload.IF_PENDING, Upload.ALWAYS


@dataclass(slots=True)
class Marks:
    """A run's dependency marks.

    ``inputs[child]``: the finished upstream ids of a child with several inputs.
    ``owner[child]``: the upstream id whose completion readied the child (and owns it).
    ``finished``: the tasks whose completion was taken (a later one is a redelivery).
    """

    inputs: dict[int, set[int]] = field(default_factory=dict)
    owner: dict[int, int] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)


def mark_children(
    marks: Marks, parent: int, children: Sequence[int], child_deps: Sequence[int]
) -> list[int]:
    """Record that ``parent`` finished; return the children this completion makes ready.

    A mark is idempotent: delivering the same parent twice (FaaS invocations arrive at
    least once) readies nothing the second time, so exactly one completion owns each child.
    The owner is claimed with one ``dict.setdefault``, atomic in CPython, so threads of one
    process may mark concurrently without a lock: when the last two inputs of a child land
    at once, both see it complete and only one claim wins.
    """
    ready = []
    owner = marks.owner
    for child, need in zip(children, child_deps):  # noqa: B905 (hot path; equal lengths)
        if need == 1:
            if child not in owner:  # a single input has a single deliverer
                owner[child] = parent
                ready.append(child)
            continue
        done = marks.inputs.get(child)
        if done is None:
            done = marks.inputs.setdefault(child, set())
        elif parent in done:
            continue
        done.add(parent)
        if len(done) == need and owner.setdefault(child, parent) == parent:
            ready.append(child)
    return ready


def upload_mode(
    is_sink: bool,
    child_deps: Sequence[int],
    fanout: int,
    stay: Sequence[bool] | None = None,
) -> Upload:
    """Decide, before marking, when the output must be stored.

    A sink's output is downloaded by the client. With a plan (``stay``: whether each child
    is planned on this worker), a child planned elsewhere will read it: store it. Without
    one, with two or more children and room to hand work out, some child either stays
    pending (another worker will read the output) or is handed to another worker: store
    it. When this task is every child's only input, the marks ready them all and this
    worker keeps them: never store (nor send) it. Otherwise the output is needed elsewhere
    only if a child is still pending after the marks.
    """
    if is_sink:
        return ALWAYS
    if stay is not None:
        if not all(stay):
            return ALWAYS
    elif len(child_deps) >= 2 and fanout >= 2:
        return ALWAYS
    for need in child_deps:
        if need != 1:
            return IF_PENDING
    return NEVER


def floating(
    deps: Sequence[Sequence[int]], groups: Sequence[int], sizes: Sequence[Any]
) -> list[bool]:
    """With a plan: the fan-ins that run on whichever of their inputs' workers readies
    them, rather than in their group: those of inputs from several groups, planned in one
    of theirs, at the size of each. Whoever completes last has its own input in memory;
    a plan's guess at who that is (among inputs that finish together, a coin toss) would
    otherwise cost a hand-out, the platform's invoke latency, whenever it is wrong. A
    worker holding its output back for the fan-in (delayed I/O, pre-load) is still the
    last by its holding."""
    floats = []
    for t, inputs in enumerate(deps):
        theirs = {groups[i] for i in inputs}
        floats.append(
            len(theirs) > 1 and groups[t] in theirs and all(sizes[i] == sizes[t] for i in inputs)
        )
    return floats


def must_store(mode: Upload, children: Sequence[int], kept: Container[int]) -> bool:
    """Apply :func:`upload_mode` once a batch's marks are known: an ``IF_PENDING`` output is
    stored unless every child was readied by the batch and stays on this worker."""
    if mode is IF_PENDING:
        return any(child not in kept for child in children)
    return mode is ALWAYS


class Completion(NamedTuple):
    """A finished task as its worker hands it to the store, one of a batch. ``stay``:
    with a plan, whether each child is planned on this worker (see :func:`keeps`);
    ``sink``: the task's output is asked for."""

    task: int
    output: Any
    upload: Upload
    children: tuple[int, ...]
    child_deps: tuple[int, ...]
    finished: Event
    stay: tuple[bool, ...] | None = None
    sink: bool = False  # its output is asked for: its step wakes the client


def keeps(completion: Completion, ready: list[int], fanout: int) -> list[int]:
    """The children of ``ready`` (made ready by ``completion``) that its worker keeps:
    without a plan, :func:`split_ready`'s first group; with one, those planned on this
    worker."""
    if completion.stay is None:
        return split_ready(ready, fanout)[0]
    stays = {c for c, s in zip(completion.children, completion.stay, strict=True) if s}
    return [c for c in ready if c in stays]


def complete_batch(
    marks: Marks, batch: Sequence[Completion], fanout: int
) -> tuple[list[list[int]], list[bool | None]]:
    """Mark the children of every completion in ``batch``: the children each one readied,
    and whether each output must be stored, judged after the whole batch's marks. A child
    readied here stays on this worker if :func:`keeps` says so; then an input of it
    made in the same batch needs no store. A redelivered completion (of a task finished
    before) readies nothing and stores nothing: None, and its event is dropped."""
    readies: list[list[int]] = []
    again: list[bool] = []
    kept: set[int] = set()
    finished = marks.finished
    for c in batch:
        repeat = c.task in finished
        finished.add(c.task)
        again.append(repeat)
        ready = [] if repeat else mark_children(marks, c.task, c.children, c.child_deps)
        readies.append(ready)
        if ready:
            kept.update(keeps(c, ready, fanout))
    return readies, [
        None if repeat else c.upload is not NEVER and must_store(c.upload, c.children, kept)
        for c, repeat in zip(batch, again, strict=True)
    ]


def settled_here(
    batch: Sequence[Completion], fanout: int, marked: Mapping[int, set[int]]
) -> list[Upload]:
    """The uploads of ``batch``, with each ``IF_PENDING`` one that the batch settles on
    its own turned ``NEVER``: every child of it is readied by the batch's marks and those
    this worker knows are in the store (``marked``: child -> those of its inputs it
    completed before, or saw finish), and is kept on this worker. The worker can tell
    before the store step, and so need not encode (nor write to a blob store) an output
    the store would then throw away.

    Safe whatever else the store's marks hold: a child none of whose inputs is missing
    from these is readied by this batch (none was readied without the batch's own
    completion, which is new: a completion taken before is dropped by the store anyway).
    Marks it does not know of count as missing: their children as pending.
    """
    marks = Marks()
    for c in batch:
        for child in c.children:
            if child in marked:
                marks.inputs[child] = set(marked[child])
    _, stored = complete_batch(marks, batch, fanout)
    return [
        NEVER if c.upload is IF_PENDING and not needed else c.upload
        for c, needed in zip(batch, stored, strict=True)
    ]


def remember_marks(
    marked: dict[int, set[int]], batch: Sequence[Completion], readies: Sequence[Sequence[int]]
) -> None:
    """Record in ``marked`` the marks a stored ``batch`` made on children with several
    inputs, forgetting the children it readied (see :func:`settled_here`)."""
    for c in batch:
        for child, need in zip(c.children, c.child_deps, strict=True):
            if need > 1:
                marked.setdefault(child, set()).add(c.task)
    for ready in readies:
        for child in ready:
            marked.pop(child, None)


#: A worker buffers its completions and hands them to the store in one step (a batch)...
FLUSH_TASKS = 1000  # ... of at most this many tasks,
FLUSH_AFTER_S = 0.02  # ... the oldest finished at most this long ago,
SMALL_TASK_S = 0.002  # ... as long as its tasks are this quick (a store step costs more).
#: ... or this long ago, on a full platform, when no other task waits on the step.
LINKS_FLUSH_AFTER_S = 0.1


def should_flush(
    buffered: int,
    oldest_age_s: float,
    last_task_s: float,
    urgent: bool,
    full: bool = False,
    links: bool = False,
) -> bool:
    """Whether a worker must hand its buffered completions to the store before it runs its
    next task. ``urgent``: some completion readies children for other workers, or is a
    sink. Without work of its own left, a worker always flushes. ``full``: every slot of
    the platform is taken, so no worker idles for what the step would tell: tasks up to
    :data:`FLUSH_AFTER_S` long then share a step too (on a machine whose cores the workers
    fill, a step's CPU is a task's: ~1 ms of its worker's here, most of it the switches to
    the store and back). ``links``: no completion of the batch is an input of a task of
    several inputs, which another worker's step might ready with its mark, or (ranked)
    the worker's next task ranks at least as high as each such task, which would wait
    for it anyway: the batch then waits up to :data:`LINKS_FLUSH_AFTER_S`."""
    limit = LINKS_FLUSH_AFTER_S if full and links else FLUSH_AFTER_S
    return buffered > 0 and (
        urgent
        or buffered >= FLUSH_TASKS
        or oldest_age_s >= limit
        or last_task_s >= (limit if full else SMALL_TASK_S)
    )


def splits(batch: Sequence[Completion]) -> bool:
    """Whether the completion step for ``batch`` may split what a completion readies
    over new workers (by the worker's fan-out): only a completion without a plan, of two
    children or more, can ready more than one."""
    return any(len(c.children) > 1 and c.stay is None for c in batch)


def runs_on(batch: Sequence[Completion], fanout: int, full: bool) -> bool:
    """Whether a worker runs its next task while the store step for ``batch`` is on the
    wire, and reads the reply after, splitting what it readies over ``fanout`` groups:

    - when the reply can tell it nothing new: no output to store, so every child of every
      completion has it as its only input, and the worker owns them already;
    - or when the platform is ``full`` (every slot taken, so likely every core busy:
      waiting for the reply would idle one while the store gets to run) and the step can
      ready nothing for another worker (each completion readies one child at most, or
      keeps all it readies, or the worker keeps every group). What it readies, a fan-in
      here, then runs a task later than depth first would run it.
    """
    if all(c.upload is NEVER for c in batch):
        return True
    return full and (
        fanout == 1 or all(len(c.children) <= 1 if c.stay is None else all(c.stay) for c in batch)
    )


#: A worker ranks (:func:`most_urgent`) only this many of its newest ready tasks: older
#: ones (a long list of roots) wait their turn, at a constant cost per task.
RANK_WINDOW = 64


#: Depth first holds while the task it runs next has at least this part of the longest
#: path ahead of a ready task's (:func:`most_urgent`).
DEPTH_FIRST_WITHIN = 0.5


def most_urgent(ranks: Sequence[float]) -> int:
    """Which of a worker's ready tasks (their ranks, in the order of its stack: the last
    is the one depth first would run next) runs next: depth first's, unless its path
    ahead is much shorter than another's (less than :data:`DEPTH_FIRST_WITHIN` of it: a
    branch that leads to little, Cycles' fertilizer runs, waits for those that lead to
    the long last task); then the highest ranked, the newest of equals."""
    best = len(ranks) - 1
    for i in range(best - 1, -1, -1):
        if ranks[i] > ranks[best]:
            best = i
    if ranks[-1] >= DEPTH_FIRST_WITHIN * ranks[best]:
        return len(ranks) - 1
    return best


def waits_for_next(children_deps: Sequence[Sequence[int]], next_task: int | None) -> bool:
    """Whether a completion can ready nothing before the worker's next task completes
    too: that task is an input of each of its children (the sibling of a pair in a tree
    reduction). Its store step then waits for the next one's, which settles both at once:
    one round trip, and an output its child then reads from memory is not written."""
    return (
        next_task is not None
        and bool(children_deps)
        and all(next_task in deps for deps in children_deps)
    )


#: A worker asks for the inputs of at most this many of its next tasks in one read, sent
#: before the task ahead of them runs (the store answers meanwhile)...
READ_AHEAD_TASKS = 8
#: ... while the inputs it read from the store averaged at most this many bytes (read
#: ahead, they wait in its memory).
READ_AHEAD_BELOW = 256 << 10


def inputs_to_read_ahead(
    next_deps: Sequence[Sequence[int]], present: Callable[[int], bool]
) -> dict[int, int]:
    """The inputs to read ahead for a worker's next tasks (``next_deps``: each one's
    inputs), each with how many of those tasks read it: all but those ``present`` (in its
    memory, or asked for already)."""
    uses: dict[int, int] = {}
    for deps in next_deps:
        for dep in deps:
            if dep in uses:
                uses[dep] += 1
            elif not present(dep):
                uses[dep] = 1
    return uses


def split_ready(ready: list[int], fanout: int) -> tuple[list[int], list[list[int]]]:
    """Split the tasks a completion made ready: the first group stays on this worker
    (locality), each other group goes to a new worker. At most ``fanout`` groups, even sizes.
    """
    if len(ready) <= 1 or fanout <= 1:
        return ready, []
    groups = min(len(ready), fanout)
    size, extra = divmod(len(ready), groups)
    chunks, start = [], 0
    for g in range(groups):
        end = start + size + (g < extra)
        chunks.append(ready[start:end])
        start = end
    return chunks[0], chunks[1:]


def group_roots(roots: list[int], fanout: int) -> list[list[int]]:
    """The client's first invocations: the roots in at most ``fanout`` groups."""
    if not roots:
        return []
    keep, rest = split_ready(roots, fanout)
    return [keep, *rest]


def backoff_delays(
    retries: int, base: float, *, cap: float = 30.0, rng: random.Random | None = None
) -> list[float]:
    """Sleep before each retry: exponential backoff with full jitter,
    ``uniform(0, min(cap, base * 2**attempt))``."""
    rand = (rng or random).uniform
    return [rand(0.0, min(cap, base * 2**attempt)) for attempt in range(retries)]


def wakes_client(events: Iterable[Event], sinks: frozenset[int]) -> bool:
    """Whether the waiting client must wake now: a sink finished, something failed, or a
    worker stopped (after the sinks, the client waits for the workers' last metrics).
    Anything else it reads at its next tick, so a busy run costs it a few wake-ups a
    second, not one per event."""
    for ev in events:
        kind = ev.kind
        if kind is EventKind.TASK_FINISHED:
            if ev.task in sinks:
                return True
        elif kind in _WAKING:
            return True
    return False


_WAKING = frozenset({EventKind.TASK_FAILED, EventKind.WORKER_FAILED, EventKind.WORKER_STOPPED})
