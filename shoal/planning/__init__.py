"""Planning: from the history of a workflow, a size and a worker group per task, with the
predicted start and finish of every task, the makespan and the cost."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Size
from ..history.records import Cost


@dataclass
class Plan:
    """What a planner decided, and what the simulator predicts of it. Times are seconds
    from the run's first task start, as the run's record measures them."""

    planner: str
    sla: str
    sizes: list[Size]  # per task
    groups: list[int]  # per task: tasks of one group run on one worker
    times: list[tuple[float, float]]  # per task: predicted start and end
    makespan_s: float
    cost: Cost
    deadline_s: float | None = None
