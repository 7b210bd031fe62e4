"""Planning, pure: the planners (uniform, critical-path, deadline) and the optimizing
planner's choice of optimizations, checked in the simulator."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planning_cases import (
    backend_model,
    dags,
    free_backend,
    function_stats,
    problem_of,
    reduction_shape,
    run_of,
    shape_of,
    work_of,
)

from shoal.backends import Size
from shoal.history import StatsKey
from shoal.history.records import COLUMN
from shoal.optimizations import DEFAULT, Tuning
from shoal.planning import simulate as simulate_module
from shoal.planning.planners import (
    COST_TIE,
    Problem,
    _Costs,
    _OneSize,
    make_groups,
    plan_critical_path,
    plan_deadline,
    plan_optimizing,
    plan_uniform,
)
from shoal.planning.predict import Predictor
from shoal.planning.simulate import simulate

# --------------------------------------------------------------------------- planners


def _lambda_problem(deadline: float | None = None) -> Problem:
    """A root, a long parallel branch and a short serial one, then a join; on Lambda."""
    model = free_backend("lambda", cpu_per_mb=1 / 1769)
    model.price = model.price._replace(request=0.0)
    at = 1769
    stats = {
        StatsKey("m.root", 1.0, at, "lambda"): function_stats([1.0], [1.0], peak=100),
        StatsKey("m.long", 6.0, at * 6, "lambda"): function_stats([2.0], [11.0], peak=100),
        StatsKey("m.short", 1.0, at, "lambda"): function_stats([1.0], [1.0], peak=100),
        StatsKey("m.join", 1.0, at, "lambda"): function_stats([0.5], [0.5], peak=100),
    }
    deps = [(), (0,), (0,), (1, 2)]
    functions = ["m.root", "m.long", "m.short", "m.join"]
    return problem_of(deps, functions, stats, model, deadline)


def test_uniform_takes_the_cheapest_size_near_the_fastest() -> None:
    problem = _lambda_problem()
    decided = plan_uniform(problem)
    assert len(set(decided.sizes)) == 1
    one_size = _OneSize(problem, _Costs(problem))
    every = [one_size.plan(size) for size in one_size.sizes]  # one plan per size
    fastest = min(p.schedule.makespan_s for p in every)
    assert decided.schedule.makespan_s <= fastest * 1.1
    for other in every:
        if other.schedule.makespan_s <= fastest * 1.1:
            assert other.schedule.cost.usd * (1 + COST_TIE) >= decided.schedule.cost.usd


def test_of_sizes_alike_in_price_uniform_takes_the_fewest_cpus() -> None:
    """On a gateway (memory priced, CPUs not), tasks seen a hair faster on two CPUs than
    on one (noise) cost about the same on either: the plan takes one CPU."""
    model = free_backend("gateway", cap=2, capacity=2.0)
    stats = {
        StatsKey("m.step", 1.0, 512, "gateway"): function_stats([0.1] * 5, [0.1] * 5),
        StatsKey("m.step", 2.0, 512, "gateway"): function_stats([0.0998] * 5, [0.1] * 5),
    }
    deps = [(), *[(0,)] * 8, tuple(range(1, 9))]
    problem = problem_of(deps, ["m.step"] * len(deps), stats, model)
    one_size = _OneSize(problem, _Costs(problem))
    assert [s.cpus for s in one_size.sizes] == [1.0, 2.0]
    one, two = (one_size.plan(s) for s in one_size.sizes)
    assert two.schedule.cost.usd < one.schedule.cost.usd  # by a hair
    assert one.schedule.cost.usd == pytest.approx(two.schedule.cost.usd, rel=COST_TIE)
    assert {s.cpus for s in plan_uniform(problem).sizes} == {1.0}


def test_critical_path_shrinks_only_what_has_slack() -> None:
    problem = _lambda_problem()
    decided = plan_critical_path(problem)
    largest = max(problem.model.sizes(128), key=lambda s: s.memory_mb)
    sizes = dict(zip(problem.functions, decided.sizes, strict=True))
    assert sizes["m.long"] == largest  # on the critical path: kept large
    assert sizes["m.short"].memory_mb < largest.memory_mb  # slack: shrunk
    reference = plan_uniform(problem)
    assert decided.schedule.makespan_s <= reference.schedule.makespan_s * 1.02 + 1e-9


def test_deadline_meets_the_deadline_at_less_cost_than_one_large_size() -> None:
    loose = plan_deadline(_lambda_problem(deadline=6.0))
    assert loose.schedule.makespan_s <= 6.0
    tight = plan_deadline(_lambda_problem(deadline=3.6))
    assert tight.schedule.makespan_s <= 3.6
    assert loose.schedule.cost.gb_s < tight.schedule.cost.gb_s


def test_an_impossible_deadline_gives_the_fastest_plan_and_says_by_how_much(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="shoal.planning"):
        decided = plan_deadline(_lambda_problem(deadline=0.5))
    assert decided.schedule.makespan_s > 0.5
    assert "no plan meets the deadline of 0.500 s" in caplog.text and "over it" in caplog.text


@settings(max_examples=40, deadline=None)
@given(dags(), st.floats(1.0, 3.0))
def test_a_deadline_plan_meets_its_deadline_whenever_uniform_largest_does(
    dag: tuple[list[tuple[int, ...]], list[float]], slack: float
) -> None:
    deps, durations = dag
    model = backend_model("lambda", cpu_per_mb=1 / 1769, cap=8)
    functions = [f"m.f{t}" for t in range(len(deps))]
    stats = {
        StatsKey(f, 1.0, 1769, "lambda"): function_stats([d], [d], peak=200)
        for f, d in zip(functions, durations, strict=True)
    }
    problem = problem_of(deps, functions, stats, model)
    reference = _OneSize(problem, _Costs(problem)).largest  # every task on the largest size
    problem.deadline_s = reference.schedule.makespan_s * slack
    decided = plan_deadline(problem)
    assert decided.schedule.makespan_s <= problem.deadline_s * (1 + 1e-9)
    assert decided.schedule.cost.usd <= reference.schedule.cost.usd * (1 + 1e-9)


def test_groups_follow_chains_and_the_input_that_finishes_last() -> None:
    # 0 -> 1 -> 3 and 2 -> 3, where 2 ends last: 3 joins 2's group
    shape = shape_of([(), (0,), (), (1, 2)])
    finish = [1.0, 2.0, 5.0, 6.0]
    level = [3.0, 2.0, 2.0, 1.0]
    groups = make_groups(shape, finish, level, [Size()] * 4, fanout=4)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    # a different size starts a group of its own
    mixed = make_groups(shape, finish, level, [Size(), Size(2, 2048), Size(), Size()], 4)
    assert mixed[0] != mixed[1]


def test_equal_roots_are_dealt_in_runs_so_a_reduction_keeps_its_subtrees_together() -> None:
    shape = reduction_shape(8)  # leaves 0-7, merges 8-11 (pairs), 12-13, 14
    level = [3.0] * 8 + [2.0] * 4 + [1.0, 1.0, 0.5]
    finish = [1.0] * 8 + [2.0] * 4 + [3.0, 3.0, 4.0]
    groups = make_groups(shape, finish, level, None, fanout=2)
    assert len({groups[t] for t in range(4)}) == 1 and len({groups[t] for t in range(4, 8)}) == 1
    assert groups[0] != groups[4]
    # one task much longer than the others: dealt by load, the longest alone
    level[5] = 40.0
    groups = make_groups(shape, finish, level, None, fanout=2)
    assert [t for t in range(8) if groups[t] == groups[5]] == [5]


def test_the_simulator_plays_a_reduction_clustered_on_one_worker_storing_nothing() -> None:
    """One worker makes the whole tree: set aside (the default), each merge's first input
    waits unstored for the other, which its worker makes; without, the first input is
    stored for the merge still waiting, and the second is not written: the worker knows
    from its own marks that the merge it readies stays (shoal.decisions.settled_here)."""
    shape = reduction_shape(4)
    model = free_backend(cap=1)
    model.write_s_per_byte = 1e-9
    work = work_of([1.0] * 7)
    work.out_bytes = [1e8] * 7  # 0.1 s to write each
    plain = simulate(shape, work, model, tuning=Tuning())
    clustered = simulate(shape, work, model, tuning=Tuning(aside_above=1e8))
    assert simulate(shape, work, model).makespan_s == clustered.makespan_s
    assert plain.workers == clustered.workers == 1
    assert clustered.makespan_s == pytest.approx(7.0)  # nothing written
    assert plain.makespan_s == pytest.approx(7.0 + 3 * 0.1)  # stored: 0, 2, 4


# --------------------------------------------------------------------------- optimizations


def _fan_out_problem(output_bytes: float, forced: frozenset[str] | None = None) -> Problem:
    """A root whose output (``output_bytes``) 8 children of 10 ms each read, then a join,
    on a gateway of 2 shared CPUs moving 100 MB/s, starting a worker in 5 ms."""
    model = backend_model("gateway", cap=2, capacity=2.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.root", 1.0, 512, "gateway"): function_stats([0.01], output=output_bytes),
        StatsKey("m.child", 1.0, 512, "gateway"): function_stats([0.01], output=8.0),
        StatsKey("m.join", 1.0, 512, "gateway"): function_stats([0.001], output=8.0),
    }
    deps = [(), *[(0,)] * 8, tuple(range(1, 9))]
    functions = ["m.root", *["m.child"] * 8, "m.join"]
    problem = problem_of(deps, functions, stats, model)
    problem.forced = forced
    return problem


def test_the_optimizing_planner_clusters_a_fan_out_where_moving_its_input_costs_more() -> None:
    big = _fan_out_problem(100e6)  # 1 s up, 1 s down, against 80 ms of children
    decided = plan_optimizing(big)
    assert decided.optimized == {"cluster": [0]}
    assert len(set(decided.groups)) == 1 and decided.schedule.workers == 1
    assert decided.schedule.makespan_s < plan_critical_path(big).schedule.makespan_s / 2

    small = _fan_out_problem(1e3)  # moving it is free: the children spread out
    assert plan_optimizing(small).optimized == {}
    assert plan_optimizing(small).schedule.workers > 1
    # Forced on or off by the run, optimizations are not the planner's to choose.
    assert plan_optimizing(_fan_out_problem(100e6, frozenset())).optimized == {}


def _reduction_problem(output_bytes: float, tuning: Tuning = DEFAULT) -> Problem:
    """A tree sum of 8 leaves on a gateway of 2 CPUs, storing 100 MB/s."""
    model = backend_model("gateway", cap=2, capacity=2.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.leaf", 1.0, 512, "gateway"): function_stats([0.1], output=output_bytes),
        StatsKey("m.merge", 1.0, 512, "gateway"): function_stats([0.05], output=output_bytes),
    }
    shape = reduction_shape(8)
    functions = ["m.leaf"] * 8 + ["m.merge"] * 7
    problem = problem_of([tuple(d) for d in shape.deps], functions, stats, model)
    problem.tuning = tuning
    return problem


def test_the_optimizing_planner_clusters_a_reductions_fan_ins_where_storing_costs() -> None:
    unset = replace(DEFAULT, aside_above=None)  # a default that sets nothing aside
    big = plan_optimizing(_reduction_problem(20e6, unset))  # 0.2 s to store, 0.2 s to read
    assert big.tuning is not None and big.tuning.aside_above is not None
    assert set(range(8, 15)) <= set(big.optimized["cluster"])
    stored = plan_critical_path(_reduction_problem(20e6, unset)).schedule.makespan_s
    assert big.schedule.makespan_s < stored
    # The default sets such outputs aside already: nothing left for the planner to add.
    by_default = plan_optimizing(_reduction_problem(20e6))
    assert "cluster" not in by_default.optimized
    assert by_default.schedule.makespan_s == pytest.approx(big.schedule.makespan_s)
    small = plan_optimizing(_reduction_problem(1e3, unset))
    assert "cluster" not in small.optimized and (
        small.tuning is None or small.tuning.aside_above is None
    )


def _two_stage_problem(keep_warm_s: float, forced: frozenset[str] | None = None) -> Problem:
    """A 1 s root readying 8 children of 0.3 s that need 3 GB (its own worker is smaller:
    too many to cluster), on a platform starting a worker cold in 0.5 s, warm in 10 ms."""
    model = backend_model("lambda", cap=10, handout_cold_s=0.5, handout_warm_s=0.01)
    model.keep_warm_s = keep_warm_s
    stats = {
        StatsKey("m.root", 1.0, 512, "lambda"): function_stats([1.0], peak=100),
        StatsKey("m.child", 1.0, 3072, "lambda"): function_stats([0.3], peak=3000),
    }
    problem = problem_of([(), *[(0,)] * 8], ["m.root", *["m.child"] * 8], stats, model)
    problem.forced = forced
    return problem


def test_the_optimizing_planner_prewarms_a_later_size_timed_by_its_predicted_start() -> None:
    kept = plan_optimizing(_two_stage_problem(60.0))
    assert kept.optimized == {"prewarm": [0]} and kept.tuning is not None
    assert kept.tuning.prewarm and kept.tuning.warm_after == ((0, 0.0),)  # warm for long
    cold = plan_critical_path(_two_stage_problem(60.0)).schedule.makespan_s
    assert kept.schedule.makespan_s == pytest.approx(cold - 0.49, abs=0.02)
    # Kept warm 0.4 s only: warmed at once it would retire first; it is warmed so as to
    # be ready 0.2 s before the children start (1 s), a cold start (0.5 s) earlier.
    brief = plan_optimizing(_two_stage_problem(0.4))
    assert brief.tuning is not None and brief.tuning.warm_after == ((0, pytest.approx(0.3)),)
    assert brief.schedule.makespan_s == pytest.approx(kept.schedule.makespan_s)
    # Forced on, it is timed the same way; the planner chooses nothing without history.
    forced = plan_optimizing(_two_stage_problem(0.4, frozenset({"prewarm"})))
    assert forced.tuning is not None and forced.tuning.warm_after == brief.tuning.warm_after


def _unequal_fan_in(big_s: float) -> Problem:
    """Three 10 MB outputs of 50 ms and one of 40 MB of ``big_s``, summed, on a gateway
    storing 100 MB/s, delayed I/O forced on (a holder waits as long as its upload would
    take)."""
    model = backend_model("gateway", cap=4, capacity=4.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.big", 1.0, 512, "gateway"): function_stats([big_s], output=40e6),
        StatsKey("m.small", 1.0, 512, "gateway"): function_stats([0.05], output=10e6),
        StatsKey("m.sum", 1.0, 512, "gateway"): function_stats([0.001], output=8.0),
    }
    deps = [(), (), (), (), (0, 1, 2, 3)]
    functions = ["m.small", "m.small", "m.small", "m.big", "m.sum"]  # the big one last
    problem = problem_of(deps, functions, stats, model)
    problem.forced = frozenset({"delayed-io"})
    problem.tuning = Tuning(delay_above=1e6, delay_s_per_byte=1e-8)
    return problem


def test_forced_delayed_io_plans_a_fan_in_with_its_largest_input_whose_output_stays_home() -> None:
    decided = plan_optimizing(_unequal_fan_in(0.04))
    assert decided.groups[4] == decided.groups[3]  # the 40 MB producer holds back
    # (The critical path would have put it with a 10 MB input, which ends last.) It holds
    # until the 10 MB outputs are in (0.05 s + their 0.1 s uploads), then runs the sum
    # reading 30 MB (0.3 s), its own 40 MB never uploaded (0.4 s).
    assert decided.schedule.makespan_s == pytest.approx(0.05 + 0.1 + 0.3, abs=0.01)
    assert decided.schedule.worker[4] == decided.schedule.worker[3]
    # Ending after the others, it still holds: their steps, uploads first, land later.
    later = plan_optimizing(_unequal_fan_in(0.06))
    assert later.schedule.makespan_s == pytest.approx(0.05 + 0.1 + 0.3, abs=0.01)


def test_the_simulator_plays_forced_clustering_on_outputs_over_the_threshold() -> None:
    deps = [(), (0,), (0,), (0,), (0,)]
    model = free_backend(cap=4)
    model.handout_warm_s = model.handout_cold_s = 0.1
    work = work_of([1.0] * 5)
    work.out_bytes[0] = 5000.0
    spread = simulate(shape_of(deps), work, model)
    clustered = simulate(shape_of(deps), work, model, tuning=Tuning(cluster_above=5000.0))
    above = simulate(shape_of(deps), work, model, tuning=Tuning(cluster_above=5001.0))
    assert spread.workers == 4 and above.workers == 4
    assert clustered.workers == 1 and clustered.makespan_s == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("tree", "expected"), [(False, [1, 1, 1, 2, 2, 2, 3]), (True, [1, 1, 1, 2])]
)
def test_the_simulator_sends_a_wide_hand_out_in_rounds_or_as_a_tree(
    tree: bool, expected: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 children on a platform where an invoker has 3 invocations in flight and each takes
    1 s: flat, the last goes in the third round; as a tree, 3 heads send the other 3 on."""
    monkeypatch.setattr(simulate_module, "BRANCHING", 3)
    deps = [(), *[(0,)] * 8]  # the root's worker keeps one child, hands out 7
    model = free_backend(cap=100)
    model.invoke_s = 1.0
    schedule = simulate(shape_of(deps), work_of([0.0] * 9), model, tuning=Tuning(tree=tree))
    rounds = sorted({round(s) for s in schedule.start[1:]} - {0})
    assert rounds == sorted(set(expected))
    assert schedule.makespan_s == pytest.approx(max(expected))


def test_the_platform_takes_a_trees_burst_at_its_pace_and_answers_each_invoker_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """7 children as a tree of 3 heads on a platform that takes an invocation every 0.1 s
    after its 1 s invoke latency: the heads' shares, sent at once, wait their turn, and
    each invoker begins its own tasks once the platform has taken all it sent."""
    monkeypatch.setattr(simulate_module, "BRANCHING", 3)
    deps = [(), *[(0,)] * 8]  # the root's worker keeps one child, hands out 7
    model = free_backend(cap=100)
    model.invoke_s, model.start_spacing_s = 1.0, 0.1
    model.cold_spacing_s = 0.1
    schedule = simulate(shape_of(deps), work_of([0.0] * 9), model, tuning=Tuning(tree=True))
    # heads taken at 1.0, 1.1, 1.2 (the root goes on then); their shares of 2, 1 and 1
    # are due at 2.0, 2.1 and 2.2 and taken at 2.0, 2.1, 2.2, 2.3; each head's own task
    # starts as its last is taken
    expected = [1.2, 2.0, 2.1, 2.1, 2.2, 2.2, 2.3, 2.3]
    assert sorted(schedule.start[1:]) == pytest.approx(expected)


def test_an_invoker_sends_its_next_invocation_when_its_request_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """7 children, 3 in flight: the platform has each 1 s after it is sent, and its
    invoker is answered 0.5 s later (the request's way back, as the history times it)."""
    monkeypatch.setattr(simulate_module, "BRANCHING", 3)
    deps = [(), *[(0,)] * 8]  # the root's worker keeps one child, hands out 7
    model = free_backend(cap=100)
    model.invoke_s, model.request_s = 1.0, 1.5
    schedule = simulate(shape_of(deps), work_of([0.0] * 9), model, tuning=Tuning(tree=False))
    # rounds sent at 0, 1.5 and 3: their workers start 1 s later; the root's kept child
    # as its last request is answered
    assert sorted(schedule.start[1:]) == pytest.approx([1, 1, 1, 2.5, 2.5, 2.5, 4, 4.5])


def test_the_simulator_plays_prewarm_as_warm_workers_a_cold_start_after_the_parent_starts() -> None:
    deps = [(), (0,), (0,)]
    model = free_backend(cap=4)
    model.handout_cold_s, model.handout_warm_s = 0.5, 0.0
    work = work_of([1.0, 1.0, 1.0])
    work.size = [Size(), Size(1, 512), Size(1, 512)]
    cold = simulate(shape_of(deps), work, model, tuning=Tuning(prewarm=False))
    warm = simulate(shape_of(deps), work, model, tuning=Tuning(prewarm=True))
    # the root's worker keeps one child; the other is handed out: cold, or warmed meanwhile
    assert sorted(cold.start[1:]) == pytest.approx([1.0, 1.5])
    assert sorted(warm.start[1:]) == pytest.approx([1.0, 1.0])
    work.duration[0] = 0.2  # handed out before the warm-up is over: it waits for the rest
    early = simulate(shape_of(deps), work, model, tuning=Tuning(prewarm=True))
    assert sorted(early.start[1:]) == pytest.approx([0.2, 0.5])


def test_with_preload_forced_a_fan_in_is_planned_with_its_earliest_input() -> None:
    model = backend_model("gateway", cap=2, capacity=2.0)
    stats = {
        StatsKey("m.quick", 1.0, 512, "gateway"): function_stats([0.01]),
        StatsKey("m.slow", 1.0, 512, "gateway"): function_stats([1.0]),
        StatsKey("m.join", 1.0, 512, "gateway"): function_stats([0.01]),
    }
    problem = problem_of([(), (), (0, 1)], ["m.quick", "m.slow", "m.join"], stats, model)
    assert plan_critical_path(problem).groups[2] == plan_critical_path(problem).groups[1]
    problem.forced = frozenset({"preload"})
    decided = plan_optimizing(problem)
    assert decided.groups[2] == decided.groups[0] and decided.optimized == {"preload": [2]}


def test_the_simulator_plays_a_worker_holding_back_for_a_fan_in() -> None:
    """Four 100 MB inputs (1 s to write, 1 s to read each, through one store that
    shares its pace among them), ending at 0.1, 0.2, 0.3 and 1 s: without holding back,
    the store writes all four (the last one's too: its fan-in might have waited for more,
    so it goes to the store, which throws it away), busy from 0.1 s to 4.1 s, then the
    last one's worker reads the other three (3 s). With pre-load the first one's worker
    holds its own back: the store writes the other three by 3.2 s, the holder read them
    as they landed but the last; having seen them all finish, it knows its own output is
    no one's and does not write it, and reads the last one (1 s). Where transfers go side
    by side: 1 s + 1 s + 3 s without, and 1 s (the last one written) + 1 s with
    pre-load."""
    deps = [(), (), (), (), (0, 1, 2, 3)]
    model = free_backend(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    work = work_of([0.1, 0.2, 0.3, 1.0, 0.0])
    work.out_bytes = [100e6] * 4 + [8.0]
    preload_on = Tuning(preload=True, hold_idle_s=1)
    plain = simulate(shape_of(deps), work, model, tuning=Tuning())
    assert plain.start[4] == pytest.approx(7.1) and plain.worker[4] == plain.worker[3]
    preload = simulate(shape_of(deps), work, model, tuning=preload_on)
    assert preload.start[4] == pytest.approx(4.2) and preload.worker[4] == preload.worker[0]
    model.reads_shared = model.writes_shared = False
    assert simulate(shape_of(deps), work, model, tuning=Tuning()).start[4] == pytest.approx(5.0)
    assert simulate(shape_of(deps), work, model, tuning=preload_on).start[4] == pytest.approx(3.0)


def test_a_holder_that_ends_after_the_others_waits_for_their_steps_to_land() -> None:
    """Delayed I/O on a fan-in of a 400 MB input and two of 100 MB, through one store that
    shares its pace: the two end at 0.8 s, the holder at 1 s, while their writes are
    still under way (both land at 2.8 s). It is the last: it holds its own output back
    until they land, and reads them (2 s) with its own in memory. Taking them for landed
    already, it would write its 400 MB (4 s more) for a fan-in that runs with it anyway."""
    deps = [(), (), (), (0, 1, 2)]
    model = free_backend(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    work = work_of([1.0, 0.8, 0.8, 0.0])
    work.out_bytes = [400e6, 100e6, 100e6, 8.0]
    delayed = Tuning(delay_above=1e6, delay_s_per_byte=1e-8)
    schedule = simulate(shape_of(deps), work, model, tuning=delayed)
    assert schedule.start[3] == pytest.approx(4.8) and schedule.worker[3] == schedule.worker[0]


def test_transfers_at_once_share_the_stores_pace() -> None:
    """Two roots end together and write 100 MB each (1 s alone): the store shares its
    pace, both land at 2 s. A read's latency is its worker's own wait, not the store's:
    the fan-in reads one (1 s, and 0.5 s of latency) on the other's worker."""
    model = free_backend(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    model.read_latency_s = 0.5
    work = work_of([1.0, 1.0, 0.0])
    work.out_bytes = [100e6, 100e6, 8.0]
    schedule = simulate(shape_of([(), (), (0, 1)]), work, model, tuning=Tuning())
    # Without a plan both are written (the first stored, the second thrown away: its
    # worker keeps the fan-in): 1 s + 2 s (both at half pace) + 1.5 s (the read).
    assert schedule.start[2] == pytest.approx(4.5)
    alone = work_of([1.0, 2.0, 0.0])  # the second ends as the first lands: one after another
    alone.out_bytes = work.out_bytes
    schedule = simulate(shape_of([(), (), (0, 1)]), alone, model, tuning=Tuning())
    assert schedule.start[2] == pytest.approx(2.0 + 1.0 + 1.5)


def test_the_optimizing_planner_holds_back_for_fan_ins_where_that_pays() -> None:
    """Four 100 MB inputs ending 0.1, 0.2, 0.3 and 1 s into a run, at 100 MB/s each way:
    pre-load saves the last input's worker three reads; the plan turns it on, run-wide."""
    model = backend_model("gateway", cap=4, capacity=4.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.001
    stats = {
        StatsKey(f"m.p{i}", 1.0, 512, "gateway"): function_stats([d], output=100e6)
        for i, d in enumerate([0.1, 0.2, 0.3, 1.0])
    }
    stats[StatsKey("m.join", 1.0, 512, "gateway")] = function_stats([0.001], output=8.0)
    deps = [(), (), (), (), (0, 1, 2, 3)]
    problem = problem_of(deps, ["m.p0", "m.p1", "m.p2", "m.p3", "m.join"], stats, model)
    decided = plan_optimizing(problem)
    assert decided.optimized.get("preload") == [4]
    assert decided.tuning is not None and decided.tuning.preload
    assert decided.schedule.makespan_s < plan_critical_path(problem).schedule.makespan_s * 0.9


def test_a_task_that_read_its_inputs_from_the_store_ran_longer_by_their_bytes() -> None:
    # Task 1 ran 0.8 s where its worker held task 0's output, 1.5 s where it read its
    # 10 MB from the store (a blob mapped as read, faulted in as touched).
    runs = []
    for worker, seconds in [("a", 0.8), ("b", 1.5), ("a", 0.8), ("b", 1.5)]:
        run = run_of([("a", 0.0, 1.0, 0.0), (worker, 1.0, 1.0 + seconds, 0.0)], [[], [0]])
        run.rows[1][COLUMN["read_bytes"]] = 10e6 if worker == "b" else 0
        runs.append(run)
    p = Predictor({}, "mean", backend_model(), runs)
    assert p.task_base(1, "m.f") == pytest.approx(0.8)
    assert p.task_touch(1, "m.f") == pytest.approx(0.7 / 10e6)
    assert p.task_touch(0, "m.f") == 0.0  # it never read anything


def test_one_run_with_inputs_held_is_no_baseline_against_many_that_read_them() -> None:
    # Task 1 read its input in ten runs (2 ms), and held it in one, which stalled (40 ms).
    runs = []
    for seconds, nbytes in [(0.002, 10e6)] * 10 + [(0.040, 0)]:
        run = run_of([("a", 0.0, 1.0, 0.0), ("b", 1.0, 1.0 + seconds, 0.0)], [[], [0]])
        run.rows[1][COLUMN["read_bytes"]] = nbytes
        runs.append(run)
    p = Predictor({}, "mean", backend_model(), runs)
    assert p.task_base(1, "m.f") == pytest.approx(0.002)
    assert p.task_touch(1, "m.f") == 0.0


def test_a_task_runs_longer_by_the_bytes_it_reads_from_the_store() -> None:
    # Two roots on two workers feed a fan-in: it holds one input, reads the other's
    # 1 MB, and runs 1 s longer for it (1e-6 s a byte touched).
    model = free_backend(cap=2)
    work = work_of([1.0, 2.0, 1.0])
    work.out_bytes = [1e6, 1e6, 8.0]
    work.touch = [0.0, 0.0, 1e-6]
    schedule = simulate(shape_of([(), (), (0, 1)]), work, model)
    assert schedule.start[2] == pytest.approx(2.0) and schedule.end[2] == pytest.approx(4.0)
    work.touch = None
    assert simulate(shape_of([(), (), (0, 1)]), work, model).end[2] == pytest.approx(3.0)


def test_the_first_task_to_use_an_input_read_for_several_pays_its_touch() -> None:
    # A root's 1 MB is read once by the worker of its three children (planned on one
    # other worker): the first child to run faults its pages in (1 s), the others not.
    model = free_backend(cap=2)
    work = work_of([1.0, 1.0, 1.0, 1.0])
    work.out_bytes = [1e6, 8.0, 8.0, 8.0]
    work.touch = [0.0, 1e-6, 1e-6, 1e-6]
    schedule = simulate(shape_of([(), (0,), (0,), (0,)]), work, model, groups=[0, 1, 1, 1])
    runs = sorted(e - s for s, e in zip(schedule.start[1:], schedule.end[1:], strict=True))
    assert runs == pytest.approx([1.0, 1.0, 2.0])


def test_a_child_a_quick_completion_readies_waits_for_the_workers_next_task() -> None:
    # One worker has roots 0, 1 (quick) and 3 (1 s); 0 and 1 feed 2. The completion of 1
    # is batched with 3's (should_flush): 2 is the worker's only once 3 has run.
    model = free_backend(cap=1)
    shape = shape_of([(), (), (0, 1), ()])
    schedule = simulate(shape, work_of([0.001, 0.001, 1.0, 1.0]), model, groups=[0, 0, 0, 0])
    assert schedule.start[3] < schedule.start[2]
    assert schedule.start[2] == pytest.approx(schedule.end[3], abs=0.01)


def test_quick_tasks_share_one_round_trip_to_the_store() -> None:
    # Two roots on one worker store their outputs for a fan-in planned on another (a 0.1
    # s round trip each, no bytes to speak of). Quick (1 ms), the first one's completion
    # waits for the second's step, which takes both at once and hands the fan-in out.
    model = free_backend(cap=2)
    model.write_latency_s = 0.1
    shape, groups = shape_of([(), (), (0, 1)]), [0, 0, 1]
    quick = simulate(shape, work_of([0.001, 0.001, 1.0]), model, groups=groups)
    assert quick.start == pytest.approx([0.0, 0.001, 0.102])
    # Slow (10 ms), each takes a step of its own, unless the next task is another input of
    # every child: then nothing is ready before that one's step, which takes both.
    apart = simulate(shape_of([(), (), (), (0, 2)]), work_of([0.01] * 3 + [1.0]), model,
                     groups=[0, 0, 0, 1])  # fmt: skip
    assert apart.start == pytest.approx([0.0, 0.11, 0.22, 0.33])
    pair = simulate(shape, work_of([0.01, 0.01, 1.0]), model, groups=groups)
    assert pair.start == pytest.approx([0.0, 0.01, 0.12])
