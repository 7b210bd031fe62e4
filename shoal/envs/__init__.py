"""Per-task and per-run Python requirements: requirement sets as values
(:mod:`.requirements`), the check of a run's tasks against where they run (:mod:`.check`)
and environments built once with uv and cached (:mod:`.build`)."""

from .requirements import (
    RequirementSet,
    environment_id,
    key,
    merge,
    missing_here,
    normalise,
    python_tag,
    read_requirements,
    requirements_arg,
    unsatisfied,
)

__all__ = [
    "RequirementSet",
    "environment_id",
    "key",
    "merge",
    "missing_here",
    "normalise",
    "python_tag",
    "read_requirements",
    "requirements_arg",
    "unsatisfied",
]
