"""A run's requirements, before any task runs: merged into its functions' options, checked
against this interpreter (the embedded engine), or made ready by the backend (a gateway
builds each missing environment once); and a worker's refusal of an invocation whose
requirements its environment lacks."""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import RequirementsUnsatisfied
from .requirements import RequirementSet, merge, missing_here

if TYPE_CHECKING:
    from ..backends import Workers
    from ..graph import Graph, TaskFunction

log = logging.getLogger(__name__)


def with_run_requirements(
    functions: Sequence[TaskFunction[Any, Any]], run: RequirementSet
) -> list[TaskFunction[Any, Any]]:
    """The function table with the run's requirements added to every function's own (as
    copies: the user's decorated functions are left as they are). Workers read a task's
    requirement set from its function's options only."""
    if not run:
        return list(functions)
    merged = []
    for fn in functions:
        twin = copy.copy(fn)
        reqs = merge(fn.options.requirements, run)
        twin.options = dataclasses.replace(fn.options, requirements=reqs)
        merged.append(twin)
    return merged


def requirement_sets(graph: Graph) -> dict[RequirementSet, list[str]]:
    """Each requirement set of the graph's functions (none aside) with the names of the
    functions that need it."""
    sets: dict[RequirementSet, list[str]] = {}
    for fn in graph.functions:
        if fn.options.requirements:
            sets.setdefault(fn.options.requirements, []).append(fn.name)
    return sets


def unmet_here(sets: dict[RequirementSet, list[str]]) -> list[str]:
    """One line per function whose requirements this interpreter does not meet."""
    lines: list[str] = []
    for reqs, names in sets.items():
        missing = missing_here(reqs)
        if missing:
            what = "; ".join(f"{r} ({why})" for r, why in missing)
            lines.extend(f"task {name}: {what}" for name in names)
    return lines


def check_here(sets: dict[RequirementSet, list[str]], where: str = "this interpreter") -> None:
    """:class:`~shoal.RequirementsUnsatisfied` listing each task and requirement that
    this interpreter lacks, if any."""
    lines = unmet_here(sets)
    if lines:
        raise RequirementsUnsatisfied(
            f"{where} ({sys.executable}, Python {sys.version.split()[0]}) does not meet the "
            "requirements of the run's tasks; nothing ran:\n  " + "\n  ".join(lines)
        )


async def prepare(backend: Workers, graph: Graph) -> None:
    """Make sure every task of ``graph`` can run where ``backend`` runs it, before any
    does: workers in this process need this interpreter to have the requirements; a
    backend with ``environments(sets)`` (the gateway) makes one ready per set; others
    (HTTP, Lambda) run images built with them, whose workers refuse what they lack."""
    sets = requirement_sets(graph)
    if not sets:
        return
    if backend.in_process:
        check_here(sets)
        return
    environments = getattr(backend, "environments", None)
    if environments is not None:
        await environments(list(sets))


def refusal(requirements: Iterable[str]) -> str | None:
    """Why this worker refuses an invocation of ``requirements`` (what its environment
    lacks), or None when it has them all."""
    reqs = tuple(requirements)
    missing = missing_here(reqs) if reqs else ()
    if not missing:
        return None
    return (
        f"this worker's environment ({sys.executable}) lacks requirements of its tasks: "
        + "; ".join(f"{r} ({why})" for r, why in missing)
    )
