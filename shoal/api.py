"""``shoal.compute``: read the run's options and check them, then run (:mod:`.run`).

Light to import: a private gateway starts (``workers="gateway"``) before the run's
machinery is imported, which its start then overlaps."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .metrics import DEFAULT_POLICY, parse_policy
from .optimizations import check_optimizations
from .planning import check_options
from .security import client_signer

if TYPE_CHECKING:
    from .graph import Node

DEFAULT_STORAGE = "memory://"
DEFAULT_WORKERS = "local"


def compute(
    *nodes: Node,
    storage: str | None = None,
    workers: str | None = None,
    blobs: str | None = None,
    progress: bool | None = None,
    timeout: float | None = None,
    history: str | None = None,
    metrics: str | None = None,
    planner: str | None = None,
    sla: str | None = None,
    deadline: float | None = None,
    optimizations: Iterable[str] | None = None,
    requirements: str | os.PathLike[str] | Iterable[str] | None = None,
) -> tuple[Any, ...]:
    """Run the graph ending in ``nodes`` (one run) and return their values as a tuple.

    ``storage``: store URL (``memory://`` by default, or ``$SHOAL_STORAGE``).
    ``workers``: worker backend (``local`` by default, or ``$SHOAL_WORKERS``).
    ``blobs``: where outputs bigger than the store's ``blob_above`` (1 MiB) go, with only a
    reference in a shared store: a ``file:///dir`` or ``s3://bucket/prefix`` URL, ``off``,
    or ``auto`` (the default, or ``$SHOAL_BLOBS``: files in ``/dev/shm`` when every worker
    is on this host, else off); see :mod:`shoal.blobs`.
    ``progress``: progress bar; None shows it on a terminal for runs longer than a second.
    ``timeout``: seconds before the run is abandoned with :class:`shoal.RunTimeout`.
    ``history``: where the run is recorded and plans learn from (``$SHOAL_HISTORY``, else
    a SQLite file in the user's data directory; ``"none"`` for nowhere; see
    :mod:`shoal.history`).
    ``metrics``: when workers send their task metrics (``batch`` by default, or
    ``$SHOAL_METRICS``; see :mod:`shoal.metrics`); ``off`` for never (the default
    without a history).
    ``planner``: how each task's worker size and group are chosen from the history:
    ``none`` (the default, or ``$SHOAL_PLANNER``: workers split work as they go),
    ``uniform``, ``critical-path``, ``deadline`` or ``optimizing`` (critical-path's plan
    with Wukong's optimizations where they pay; see :mod:`shoal.planning.planners`);
    without an earlier run of the workflow on this backend, a planner says so in the log
    and runs ``none``.
    ``sla``: the statistic predictions use, ``mean`` (the default, or ``$SHOAL_SLA``) or a
    percentile ``p1``…``p99``.
    ``deadline``: seconds the run's makespan must meet (only with ``planner="deadline"``;
    or ``$SHOAL_DEADLINE``).
    ``optimizations``: Wukong's optimizations (:mod:`shoal.optimizations`): None (the
    default, or ``$SHOAL_OPTIMIZATIONS``) leaves them to the planner; a list such as
    ``["cluster"]`` forces exactly those on wherever they apply; ``[]`` turns all off.
    ``requirements``: Python requirements of every task of the run, added to each task's
    own (``@task(requirements=...)``): a requirements file's path (or
    ``$SHOAL_REQUIREMENTS``) or a list of requirement strings. Checked before anything
    runs: the embedded engine's interpreter must have them
    (:class:`~shoal.RequirementsUnsatisfied`); a gateway builds a missing environment once
    (:class:`~shoal.EnvironmentBuildError` when it cannot); see :mod:`shoal.envs`.

    A task that raises makes this raise the task's own exception. The run's summary is
    then available from :func:`shoal.last_run`, and its record from the history.

    SIGTERM cancels the run (its keys are deleted, a private gateway stops) and makes this
    raise :class:`shoal.RunCancelled`; SIGINT does the same and raises KeyboardInterrupt.
    Only when called in the main thread outside an event loop: only then are signals ours.
    """
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    planner = planner or os.environ.get("SHOAL_PLANNER") or "none"
    sla = sla or os.environ.get("SHOAL_SLA") or "mean"
    if deadline is None and os.environ.get("SHOAL_DEADLINE"):
        deadline = _seconds("SHOAL_DEADLINE", os.environ["SHOAL_DEADLINE"])
    check_options(planner, sla, deadline)
    forced = check_optimizations(optimizations)
    if requirements is None and os.environ.get("SHOAL_REQUIREMENTS"):
        requirements = os.environ["SHOAL_REQUIREMENTS"]
    run_requirements: tuple[str, ...] = ()
    if requirements is not None:
        from .envs import requirements_arg

        run_requirements = requirements_arg(requirements)
    workers = workers or os.environ.get("SHOAL_WORKERS") or DEFAULT_WORKERS
    if workers == "gateway":  # its start overlaps the imports of what follows
        from .gateway.private import launch

        launch(client_signer(private=True).secret)  # type: ignore[union-attr]
    # Imported now, not with this module: a private gateway's start overlaps them.
    from .history import open_history, started, starting, write_behind
    from .run import RunOptions, run

    kept = open_history(history, wait=False)  # the previous run's record may be on its way
    starting()  # ... and waits until this run's workers run
    try:
        policy = metrics or os.environ.get("SHOAL_METRICS")
        if policy is None:
            policy = DEFAULT_POLICY if kept.url != "none" else "off"
        options = RunOptions(
            storage=storage or os.environ.get("SHOAL_STORAGE") or DEFAULT_STORAGE,
            workers=workers,
            blobs=blobs or os.environ.get("SHOAL_BLOBS") or "auto",
            progress=progress,
            timeout=timeout,
            metrics=str(parse_policy(policy)),
            history=kept,
            planner=planner,
            sla=sla,
            deadline=deadline,
            optimizations=forced,
            requirements=run_requirements,
        )
        return run(nodes, options)
    finally:
        started()
        if kept.url == "none":
            kept.close()
        else:
            write_behind(kept.close)  # after the run's record


def _seconds(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"${name} must be a number of seconds, got {text!r}") from None
