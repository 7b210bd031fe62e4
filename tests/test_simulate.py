"""Planning, pure: the simulator, on hand-checked timelines and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planning_cases import backend_model, dags, free_backend, shape_of, work_of

from shoal.backends import Size
from shoal.decisions import floating
from shoal.planning.simulate import simulate
from shoal.planning.work import Work

# --------------------------------------------------------------------------- simulator


def test_a_chain_runs_on_one_worker_with_its_gaps() -> None:
    model = free_backend(cap=4)
    model.gap_s, model.handout_cold_s = 0.01, 0.5
    schedule = simulate(shape_of([(), (0,), (1,)]), work_of([1.0, 2.0, 3.0]), model)
    assert schedule.workers == 1 and len(set(schedule.worker)) == 1
    assert schedule.start == pytest.approx([0.0, 1.01, 3.02])
    assert schedule.makespan_s == pytest.approx(6.02)  # from the first start: no cold start
    assert schedule.cost.requests == 1
    assert schedule.cost.gb_s == pytest.approx(6.03 * 2)  # 2048 MB until its last step


def test_a_fan_out_is_shared_over_the_cap_and_waits_for_it() -> None:
    # one root, four children of 1 s, a fan-in; two workers at most
    deps = [(), (0,), (0,), (0,), (0,), (1, 2, 3, 4)]
    model = free_backend(cap=2)
    model.handout_cold_s = 0.1
    schedule = simulate(shape_of(deps), work_of([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), model)
    # the root's worker keeps two children; the other two go to one new worker, 0.1 s later
    assert sorted(schedule.start[1:5]) == pytest.approx([1.0, 1.1, 2.0, 2.1])
    assert schedule.start[5] == pytest.approx(3.1) and schedule.workers == 2


def test_workers_the_platform_has_idle_now_start_warm() -> None:
    deps = [(), (0,), (0,)]  # the root's worker keeps one child, hands out the other
    model = free_backend(cap=2)
    model.handout_cold_s, model.handout_warm_s, model.keep_warm_s = 0.5, 0.01, 60.0
    cold = simulate(shape_of(deps), work_of([1.0, 1.0, 1.0]), model)
    model.idle = {Size(): 2}
    warm = simulate(shape_of(deps), work_of([1.0, 1.0, 1.0]), model)
    assert cold.makespan_s == pytest.approx(2.5) and warm.makespan_s == pytest.approx(2.01)


def test_a_burst_of_workers_starts_at_the_platforms_pace_each_taking_its_lead() -> None:
    model = free_backend(cap=4)
    model.start_spacing_s = model.cold_spacing_s = 0.1
    schedule = simulate(shape_of([(), (), ()]), work_of([1.0, 1.0, 1.0]), model)  # 3 roots
    assert sorted(schedule.start) == pytest.approx([0.0, 0.1, 0.2])
    model.start_spacing_s, model.cold_spacing_s, model.lead_s = 0.0, 0.0, 0.05
    schedule = simulate(shape_of([(), (0,), (0,)]), work_of([1.0, 1.0, 1.0]), model)
    assert sorted(schedule.start[1:]) == pytest.approx([1.0, 1.05])  # kept, handed out


def test_the_platform_takes_the_next_invocation_later_after_a_cold_start() -> None:
    model = free_backend(cap=4)
    model.start_spacing_s, model.cold_spacing_s, model.idle = 0.1, 0.3, {Size(): 1}
    schedule = simulate(shape_of([(), (), ()]), work_of([1.0, 1.0, 1.0]), model)  # 3 roots
    assert sorted(schedule.start) == pytest.approx([0.0, 0.1, 0.4])  # warm, cold, cold


def test_a_burst_goes_no_faster_than_the_shared_cpus_run_the_workers_it_starts() -> None:
    """20 roots on 2 CPUs, each worker costing 0.1 s of CPU besides its (instant) task,
    and a platform that alone takes an invocation every 10 ms: its loop shares the CPUs
    with the workers it started, so the burst stretches towards the time the CPUs take
    to run them (20 x 0.1 s / 2), far past its own pace."""
    model = free_backend(cap=20, capacity=2.0)
    model.start_spacing_s = model.cold_spacing_s = 0.01
    roots = shape_of([()] * 20)
    alone = max(simulate(roots, work_of([0.0] * 20), model).start)
    assert alone == pytest.approx(0.11)  # as a tree: a head's task starts with its share's
    model.worker_cpu_s = 0.1
    burst = max(simulate(roots, work_of([0.0] * 20), model).start)
    assert 4 * alone < burst < 20 * 0.1 / 2
    model.capacity = None  # each worker has CPUs of its own
    assert max(simulate(roots, work_of([0.0] * 20), model).start) == pytest.approx(alone)


def test_a_workers_own_cpu_work_slows_the_tasks_beside_it_in_a_burst() -> None:
    """Workers started together run their own CPU work on the machine's CPUs beside the
    tasks; a worker started alone charges none, as the history's times were measured with
    such starts beside them (charged, Montage and Cycles were predicted 5-7 % long)."""
    model = free_backend(cap=2, capacity=1.0)
    model.worker_cpu_s = 0.5
    # two roots of 1 s on one CPU: 2 s of tasks and 1 s of the workers' own work
    assert simulate(shape_of([(), ()]), work_of([1.0, 1.0]), model).makespan_s == pytest.approx(3.0)
    assert simulate(shape_of([()]), work_of([1.0]), model).makespan_s == pytest.approx(1.0)
    # a root, then its child planned on a worker of its own: each starts alone
    chain = simulate(shape_of([(), (0,)]), work_of([1.0, 1.0]), model, [0, 1])
    assert chain.worker[0] != chain.worker[1] and chain.makespan_s == pytest.approx(2.0)


def test_shared_cpus_slow_tasks_down_alike() -> None:
    deps = [(), ()]
    alone = simulate(
        shape_of(deps), work_of([2.0, 2.0]), free_backend("gateway", cap=2, capacity=2.0)
    )
    shared = simulate(
        shape_of(deps), work_of([2.0, 2.0]), free_backend("gateway", cap=2, capacity=1.0)
    )
    assert alone.makespan_s == pytest.approx(2.0) and shared.makespan_s == pytest.approx(4.0)


def test_a_plan_runs_each_group_on_its_own_worker_and_size() -> None:
    deps = [(), (0,), (0,), (1, 2)]
    groups = [0, 0, 1, 0]
    big, small = Size(2, 4096), Size(1, 1024)
    work = Work([1.0, 1.0, 0.5, 1.0], [1.0] * 4, [10.0] * 4, [big, big, small, big])
    schedule = simulate(shape_of(deps), work, free_backend(), groups)
    assert schedule.worker[0] == schedule.worker[1] == schedule.worker[3] != schedule.worker[2]
    assert schedule.cost.requests == 2
    assert schedule.cost.gb_s == pytest.approx(3 * 4 + 0.5 * 1)
    # when the other group's task ends last, it readies the join and hands it out
    work.duration[2] = 1.5
    late = simulate(shape_of(deps), work, free_backend(), groups)
    assert len({late.worker[0], late.worker[2], late.worker[3]}) == 3


def test_a_fan_in_of_several_groups_runs_where_it_is_readied_at_their_size() -> None:
    deps = [(), (0,), (0,), (1, 2)]
    groups = [0, 0, 1, 0]
    work = Work([1.0, 1.0, 1.5, 1.0], [1.0] * 4, [10.0] * 4, [Size()] * 4)
    assert floating(deps, groups, work.size) == [False, False, False, True]
    # the other group's task ends last: its worker runs the join, no third invocation
    schedule = simulate(shape_of(deps), work, free_backend(), groups)
    assert schedule.worker[3] == schedule.worker[2] != schedule.worker[0]
    assert schedule.cost.requests == 2
    # planned apart from both inputs, or at another size: it goes where the plan says
    assert floating(deps, [0, 0, 1, 2], work.size)[3] is False
    assert floating(deps, groups, [Size()] * 3 + [Size(2, 4096)])[3] is False


def _critical_path(deps: list[tuple[int, ...]], durations: list[float]) -> float:
    finish = [0.0] * len(deps)
    for t, ds in enumerate(deps):
        finish[t] = max((finish[d] for d in ds), default=0.0) + durations[t]
    return max(finish)


@settings(max_examples=150, deadline=None)
@given(dags(), st.integers(1, 8), st.sampled_from([None, 1.0, 2.0]))
def test_a_makespan_lies_between_the_critical_path_and_the_serial_sum(
    dag: tuple[list[tuple[int, ...]], list[float]], cap: int, capacity: float | None
) -> None:
    deps, durations = dag
    schedule = simulate(shape_of(deps), work_of(durations), free_backend("gateway", cap, capacity))
    assert schedule.makespan_s >= _critical_path(deps, durations) - 1e-9
    assert schedule.makespan_s <= sum(durations) + 1e-9
    assert all(not math.isnan(s) for s in schedule.start)  # every task ran


@settings(max_examples=60, deadline=None)
@given(dags(), st.integers(1, 8))
def test_overheads_only_lengthen_a_schedule(
    dag: tuple[list[tuple[int, ...]], list[float]], cap: int
) -> None:
    deps, durations = dag
    slow = simulate(shape_of(deps), work_of(durations), backend_model("gateway", cap=cap))
    assert slow.makespan_s >= _critical_path(deps, durations) - 1e-9
