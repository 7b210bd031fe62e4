"""A worker runs a map's parts (:mod:`shoal.graph.maps`): its expander, which makes a
task per element at run time, and its collector."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..events import Event, EventKind
from ..graph import TaskSpec
from ..graph.maps import Collect, Expansion, expand, reserved
from ..metrics import approx_nbytes

if TYPE_CHECKING:
    from .worker import _Worker


async def run_map_part(state: _Worker, task: int, spec: TaskSpec, values: list[Any]) -> bool:
    """Run a map's expander or collector (:mod:`shoal.graph.maps`). False if the
    expander failed (its input is not iterable: the run fails)."""
    started = time.time()
    part, data = spec.dynamic, None
    if type(part) is Collect:
        (expansion,) = values
        result: Any = await state.gather(expansion.elements(part.stage))
    else:
        mapped = values[part.slot]
        try:
            items = mapped if type(mapped) is list else list(mapped)
        except TypeError:
            producer = await state.source.name(spec.deps[part.slot])
            error = TypeError(
                f"{part.name} maps the output of task {producer}, a "
                f"{type(mapped).__name__}, which is not iterable"
            )
            await state.fail(task, await state.source.function(spec.func), error, "")
            return False
        stages = len(part.funcs)
        first = 0
        if items:
            count = reserved(len(items), stages)
            first = await state.store.reserve(state.run_id, task, count)
        made = expand(spec, part, items, first)
        state.source.add(made.specs)
        state.new_specs.update(made.specs)
        result = Expansion(first, len(items), stages)
        spec = spec._replace(children=made.children, child_deps=made.child_deps, stay=None)
        if state.invocation.mixed:  # elements of another environment run elsewhere
            await state.source.learn_requirements(made.children)
        # The client's count of tasks grows; it can take lost elements back.
        data = {"expanded": len(made.specs), "first": first, "n": len(items)}
    ended = time.time()
    if state.metrics:  # its history: a quick task, not an unknown one
        state.metrics.measured.append(
            (task, 0.0, 0, ended - started, None, None, approx_nbytes(result), 0.0)
        )
    finished = Event(EventKind.TASK_FINISHED, state.name, task, ended, data, started)
    state.finish(task, spec, result, finished)
    return True
