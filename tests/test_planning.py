"""Planning, pure: the scaling law, predictions at an SLA, the backend model, the simulator
(hand-checked timelines and hypothesis properties) and the planners."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal
from shoal.backends import Platform, Size
from shoal.decisions import floating
from shoal.history import BackendStats, FunctionStats, RunRecord, StatsKey, open_history
from shoal.history import settle as settle_history
from shoal.history.records import COLUMN, TaskRecord, unneeded_writes
from shoal.history.stats import Fit, Summary
from shoal.optimizations import Tuning
from shoal.planning import rank_tasks
from shoal.planning import simulate as simulate_module
from shoal.planning.model import BackendModel, memory_for
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
from shoal.planning.predict import UNSEEN, Law, Predictor
from shoal.planning.simulate import simulate
from shoal.planning.work import Shape, Work

# --------------------------------------------------------------------------- the law


def test_a_serial_task_gains_nothing_from_more_cpus_and_slows_on_a_fraction() -> None:
    law = Law.measured(run_s=2.0, cpu_s=2.0, cpus=1.0)
    assert (law.idle, law.serial, law.parallel) == (0.0, 2.0, 0.0)
    assert law.time(4.0) == 2.0 and law.time(0.5) == 4.0
    assert law.demand(4.0) == pytest.approx(1.0)


def test_waiting_does_not_shrink_with_cpus() -> None:
    law = Law.measured(run_s=3.0, cpu_s=1.0, cpus=1.0)  # 2 s of I/O
    assert law.idle == pytest.approx(2.0) and law.time(0.5) == pytest.approx(4.0)


def test_a_parallel_task_is_split_into_its_serial_and_parallel_work() -> None:
    # 1 s serial + 4 s parallel on 2 CPUs: 3 s of wall time, 5 s of CPU time
    law = Law.measured(run_s=3.0, cpu_s=5.0, cpus=2.0)
    assert (law.serial, law.parallel) == pytest.approx((1.0, 4.0))
    assert law.time(1.0) == pytest.approx(5.0) and law.time(4.0) == pytest.approx(2.0)


def test_without_cpu_time_a_task_counts_as_serial() -> None:
    assert Law.measured(run_s=1.0, cpu_s=None, cpus=1.0).time(2.0) == 1.0


# --------------------------------------------------------------------------- predictions


def _model(kind: str = "gateway", **changes: Any) -> BackendModel:
    platform = Platform(changes.pop("capacity", None), 60.0, {}, changes.pop("cpu_per_mb", None))
    model = BackendModel.learn(kind, BackendStats(), "mean", platform, changes.pop("cap", 4))
    for name, value in changes.items():
        setattr(model, name, value)
    return model


def _stats(
    durations: list[float],
    cpu: list[float] | None = None,
    output: float = 100.0,
    peak: float | None = None,
) -> FunctionStats:
    return FunctionStats(
        duration=Summary.of(durations),
        cpu=Summary.of(cpu or []),
        output=Summary.of([output] * len(durations)),
        peak_mb=Summary.of([] if peak is None else [peak]),
    )


def test_predictions_read_the_sla_and_scale_to_sizes_never_seen() -> None:
    durations = [1.0] * 90 + [3.0] * 10
    stats = {
        StatsKey("m.serial", 1.0, 2048, "gateway"): _stats(durations, durations),
        StatsKey("m.numpy", 2.0, 2048, "gateway"): _stats([3.0] * 5, [5.0] * 5),
    }
    mean = Predictor(stats, "mean", _model())
    p95 = Predictor(stats, "p95", _model())
    assert mean.duration("m.serial", Size(1, 2048)) == pytest.approx(1.2)
    assert p95.duration("m.serial", Size(1, 2048)) == pytest.approx(3.0, rel=0.03)
    assert mean.duration("m.serial", Size(4, 2048)) == pytest.approx(1.2)  # serial
    assert mean.duration("m.numpy", Size(1, 2048)) == pytest.approx(5.0)  # the law
    assert mean.demand("m.numpy", Size(2, 2048)) == pytest.approx(5 / 3)
    assert mean.output("m.serial") == 100.0 and mean.peak_mb("m.serial") is None
    assert not mean.known("m.other")
    assert mean.duration("m.other", Size()) == UNSEEN.duration_s


def test_run_times_seen_on_two_sizes_set_the_law() -> None:
    same = {
        StatsKey("m.f", 1.0, 2048, "gateway"): _stats([1.0] * 4, [1.0] * 4),
        # CPU time says parallel, but on a shared machine the second CPU bought nothing
        StatsKey("m.f", 2.0, 2048, "gateway"): _stats([1.0] * 4, [1.6] * 4),
    }
    p = Predictor(same, "mean", _model())
    assert p.duration("m.f", Size(4, 2048)) == pytest.approx(1.0)
    halves = {
        StatsKey("m.g", 1.0, 2048, "gateway"): _stats([2.0] * 4, [2.0] * 4),
        StatsKey("m.g", 2.0, 2048, "gateway"): _stats([1.0] * 4, [2.0] * 4),
    }
    assert Predictor(halves, "mean", _model()).duration("m.g", Size(4, 2048)) == pytest.approx(0.5)
    # A task that sleeps: what no CPU sped up is waiting, not work that crowds out others.
    sleeper = {
        StatsKey("m.s", 1.0, 512, "gateway"): _stats([0.05] * 4, [0.001] * 4),
        StatsKey("m.s", 2.0, 512, "gateway"): _stats([0.05] * 4, [0.001] * 4),
    }
    p = Predictor(sleeper, "mean", _model())
    assert p.duration("m.s", Size(1, 512)) == pytest.approx(0.05)
    assert p.demand("m.s", Size(1, 512)) == pytest.approx(0.02)


def test_on_lambda_cpu_follows_memory() -> None:
    model = _model("lambda", cpu_per_mb=1 / 1769)
    stats = {StatsKey("m.f", 1.0, 1769, "lambda"): _stats([2.0], [2.0])}
    p = Predictor(stats, "mean", model)
    assert p.duration("m.f", Size(0.5, 1769 // 2)) == pytest.approx(4.0, rel=0.01)
    assert p.duration("m.f", Size(2, 3538)) == pytest.approx(2.0)


def test_a_fit_on_input_bytes_predicts_runs_on_other_inputs() -> None:
    xs, ys = [1e6, 2e6, 3e6, 4e6], [1.0, 2.0, 3.0, 4.0]
    stats = FunctionStats(
        duration=Summary.of(ys),
        cpu=Summary.of(ys),
        output=Summary.of([y * 10 for y in ys]),
        duration_fit=Fit.of(xs, ys),
        output_fit=Fit.of(xs, [y * 10 for y in ys]),
    )
    p = Predictor({StatsKey("m.f", 1.0, 2048, "gateway"): stats}, "mean", _model())
    assert p.duration("m.f", Size(), in_bytes=8e6) == pytest.approx(8.0)
    assert p.output("m.f", in_bytes=8e6) == pytest.approx(80.0)


def test_memory_steps_cover_the_peak_with_headroom() -> None:
    assert memory_for(None, None) == 2048 and memory_for(None, 512) == 512
    assert memory_for(100.0, None) == 256  # 100 * 1.2 + 32 = 152 -> 256
    assert memory_for(100.0, 1024) == 1024


def test_the_model_learns_from_history_and_falls_back_on_defaults() -> None:
    stats = BackendStats(
        handout_cold=Summary.of([0.2, 0.2]),
        read_fit=Fit.of([0.0, 1e6], [0.001, 0.011]),
    )
    model = BackendModel.learn("gateway", stats, "mean", Platform(2.0, 60.0, {}), 2)
    assert model.handout_cold_s == pytest.approx(0.2)
    assert model.handout_warm_s == 0.004  # a default: never measured
    assert model.read_s(2e6) == pytest.approx(0.021)
    assert model.capacity == 2.0 and [s.cpus for s in model.sizes(512)] == [1.0, 2.0]


def test_a_bursts_pace_is_learned_without_the_stalls_its_workers_caused() -> None:
    # Starts 1 ms apart, but a few waited while the workers started before held the CPUs:
    # those the simulator plays from each worker's CPU, so the pace is the median.
    stats = BackendStats(
        start_spacing=Summary.of([0.001] * 7 + [0.02] * 3),
        worker_cpu=Summary.of([0.004, 0.005, 0.2]),  # and a run whose worker ran long
    )
    model = BackendModel.learn("gateway", stats, "mean", Platform(2.0, 60.0, {}), 2)
    assert model.start_spacing_s == pytest.approx(0.001, rel=0.03)
    assert model.cold_spacing_s == model.start_spacing_s  # none seen: as warm
    assert model.worker_cpu_s == pytest.approx(0.005, rel=0.03)  # the median, as the pace's
    assert (
        BackendModel.learn("gateway", BackendStats(), "mean", Platform(2.0, 60, {}), 2).worker_cpu_s
        == 0
    )


def test_a_read_fit_is_used_where_its_bytes_pin_the_slope_however_little_they_explain() -> None:
    # Reads of 50 MB cost little more than reads of 500 B, and their times scatter: the
    # bytes explain little of the times (r2 ~ 0.1), but they spread far enough to show that
    # a byte costs ~0.013 ns, not the default's.
    big, small = [0.001, 0.004, 0.0015, 0.0005], [0.0003, 0.0035, 0.0002, 0.0004]
    fit = Fit.of([50e6] * 4 + [500.0] * 4, big + small)
    assert fit.r2() < 0.6
    model = BackendModel.learn(
        "gateway", BackendStats(read_fit=fit), "mean", Platform(2.0, 60, {}), 2
    )
    assert model.read_s_per_byte == pytest.approx(0.00065 / 50e6, rel=0.01)
    assert model.read_s(50e6) == pytest.approx(sum(big) / 4, rel=0.01)


def test_a_read_fit_of_bytes_too_alike_falls_back_on_the_default_per_byte_cost() -> None:
    # Reads of a few hundred bytes whose times vary by their round trips: any slope at all.
    fit = Fit.of([300.0, 320.0, 310.0, 305.0], [0.0002, 0.0009, 0.0003, 0.0004])
    model = BackendModel.learn(
        "gateway", BackendStats(read_fit=fit), "mean", Platform(2.0, 60, {}), 2
    )
    default = BackendModel.learn("gateway", BackendStats(), "mean", Platform(2.0, 60, {}), 2)
    assert model.read_s_per_byte == default.read_s_per_byte
    assert model.read_s(308.75) == pytest.approx(0.00045)  # the mean time at the mean bytes


def test_large_reads_too_alike_to_show_a_slope_are_their_bytes_time() -> None:
    fit = Fit.of([140e6] * 4, [0.25, 0.3, 0.35, 0.3])
    model = BackendModel.learn(
        "gateway", BackendStats(read_fit=fit), "mean", Platform(2.0, 60, {}), 2
    )
    assert model.read_latency_s == 0.0 and model.read_s(20e6) == pytest.approx(0.3 / 7, rel=0.01)


def test_a_store_clearly_slower_than_the_default_is_learned_as_it_is() -> None:
    # Writes through Redis at ~100 MB/s, tens of ms of scatter: ten times the default cost.
    sizes = [1e6, 5e6, 10e6, 20e6, 20e6, 2e6]
    scatter = [0.0, 30e-3, -20e-3, 40e-3, -30e-3, 10e-3]
    times = [1e-8 * b + 0.002 + j for b, j in zip(sizes, scatter, strict=True)]
    fit = Fit.of(sizes, times)
    default = BackendModel.learn("gateway", BackendStats(), "mean", Platform(2.0, 60, {}), 2)
    assert fit.slope_error() > default.write_s_per_byte  # not pinned tighter than it
    model = BackendModel.learn(
        "gateway", BackendStats(write_fit=fit), "mean", Platform(2.0, 60, {}), 2
    )
    assert model.write_s_per_byte == pytest.approx(1e-8, rel=0.2)


def test_a_store_fit_whose_line_would_start_below_zero_seconds_goes_through_the_origin() -> None:
    # Reads of 140 MB that scatter widely, and one of 160 MB (slow) that tilts the line:
    # it would cross zero seconds at ~125 MB, and put 4 s on a 140 MB read.
    xs, ys = [140e6] * 5 + [160e6], [0.24, 0.38, 0.42, 0.59, 0.67, 1.08]
    fit = Fit.of(xs, ys)
    assert fit.line()[0] < 0  # type: ignore[index]
    model = BackendModel.learn(
        "gateway", BackendStats(read_fit=fit), "mean", Platform(2.0, 60, {}), 2
    )
    per_byte = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    assert model.read_latency_s == 0.0 and model.read_s_per_byte == pytest.approx(per_byte)
    assert model.read_s(140e6) == pytest.approx(0.560, abs=0.001)


def test_a_store_that_serves_one_transfer_at_a_time_is_learned_so() -> None:
    # Writes of 20 MB whose times follow the bytes the store moved meanwhile (one Redis
    # thread: 0.2 s alone, 0.4 s beside another, 0.6 s beside two), and files written
    # side by side, whose times follow their own bytes whatever moved meanwhile.
    own, meanwhile = [20e6] * 6, [20e6, 40e6, 60e6, 20e6, 40e6, 60e6]
    times = [0.2, 0.41, 0.6, 0.21, 0.4, 0.59]
    stats = BackendStats(write_fit=Fit.of(own, times), write_shared_fit=Fit.of(meanwhile, times))
    model = BackendModel.learn("gateway", stats, "mean", Platform(2.0, 60, {}), 2)
    assert model.writes_shared and not model.reads_shared
    assert model.write_s_per_byte == pytest.approx(1e-8, rel=0.05)
    own, meanwhile = [10e6, 20e6, 10e6, 20e6], [30e6, 20e6, 10e6, 40e6]
    times = [0.01, 0.02, 0.0101, 0.0199]
    stats = BackendStats(write_fit=Fit.of(own, times), write_shared_fit=Fit.of(meanwhile, times))
    model = BackendModel.learn("gateway", stats, "mean", Platform(2.0, 60, {}), 2)
    assert not model.writes_shared and model.write_s(10e6) == pytest.approx(0.01, rel=0.02)


def _ran(tasks: list[tuple[str, float, float, float]], deps: list[list[int]]) -> RunRecord:
    """A run of ``tasks`` (worker, start, end, upload seconds), each of function m.f."""
    run = RunRecord("r", "wf", "f", 0.0, "gateway", "redis", ok=True)
    run.set_tasks([
        TaskRecord(t, f"f-{t}", "m.f", 1.0, 2048, w, start=s, end=e, run_s=e - s, read_s=0.0,
                   upload_s=u)
        for t, (w, s, e, u) in enumerate(tasks)
    ])  # fmt: skip
    run.deps = deps
    return run


def test_a_tasks_gap_is_its_workers_time_to_the_next_task_less_its_upload() -> None:
    run = _ran([("a", 0.0, 1.0, 0.5), ("a", 2.0, 3.0, 0.0)], [[], [0]])  # a chain
    p = Predictor({}, "mean", _model(), [run])
    assert p.task_gap(0, "m.f") == pytest.approx(0.5)


def test_a_tasks_gap_is_learned_apart_where_its_output_stayed_home() -> None:
    # Task 0 of a chain: in one run its output was stored (0.1 s besides its upload), in
    # another it stayed home, its step another's (0.6 s, as a clustered merge's input):
    # a plan that keeps it home is charged the latter, one that stores it the former.
    stored = _ran([("a", 0.0, 1.0, 0.5), ("a", 1.6, 2.0, 0.0)], [[], [0]])
    stored.rows[0][COLUMN["stored_bytes"]] = 1000
    home = _ran([("a", 0.0, 1.0, 0.0), ("a", 1.6, 2.0, 0.0)], [[], [0]])
    home.rows[0][COLUMN["stored_bytes"]] = 0
    p = Predictor({}, "mean", _model(), [stored, home])
    assert p.task_gap(0, "m.f") == pytest.approx(0.1)
    assert p.task_gap(0, "m.f", home=True) == pytest.approx(0.6)
    once = Predictor({}, "mean", _model(), [stored])
    assert once.task_gap(0, "m.f", home=True) == pytest.approx(0.1)  # never home: as stored
    # The simulator charges each where it happens: a chain's output stays home.
    work = _work([1.0, 1.0])
    work.gap, work.home_gap = [0.1, 0.1], [0.6, 0.6]
    assert simulate(_shape([(), (0,)]), work, _free()).start[1] == pytest.approx(1.6)


def test_waiting_for_the_next_tasks_other_inputs_is_no_gap() -> None:
    # Worker a ran task 0 (ends at 1 s), then the fan-in 2, whose other input 1 ended at
    # 2.5 s on worker b: a held back for it; its loop's own gap is from 2.5 s to 3 s.
    run = _ran([("a", 0.0, 1.0, 0.0), ("b", 0.0, 2.5, 0.0), ("a", 3.0, 3.5, 0.0)], [[], [], [0, 1]])
    assert Predictor({}, "mean", _model(), [run]).task_gap(0, "m.f") == pytest.approx(0.5)


def test_a_holders_gap_runs_from_its_inputs_landing_less_its_thrown_away_write() -> None:
    # Tasks 1 and 2 (workers b, c) upload 1 MB each for 0.5 s; worker a held task 0 back
    # for the fan-in 3, and went on once both landed (2.5 s): it wrote its own 1 MB (0.01
    # s at the model's 1e-8 s/B), which the store threw away, and read the other two.
    run = _ran(
        [("a", 0.0, 1.0, 0.0), ("b", 0.0, 1.5, 0.5), ("c", 0.0, 2.0, 0.5), ("a", 3.0, 3.5, 0.0)],
        [[], [], [], [0, 1, 2]],
    )
    for t, row in enumerate(run.rows):
        row[COLUMN["out_bytes"]] = 1e6 if t < 3 else 8
        row[COLUMN["stored_bytes"]] = 1e6 if t in (1, 2) else 0
        row[COLUMN["read_bytes"]] = 2e6 if t == 3 else 0
        row[COLUMN["read_s"]] = 200_000 if t == 3 else 0  # 0.2 s
    model = _model(write_latency_s=0.0, write_s_per_byte=1e-8)
    # 3.0 - 2.5 (landed) - 0.2 (read) - 0.01 (the write thrown away)
    assert Predictor({}, "mean", model, [run]).task_gap(0, "m.f") == pytest.approx(0.29)
    # With pre-load it had read both as they landed (its task read nothing): the read of
    # the last one is the simulator's to charge.
    run.rows[3][COLUMN["read_bytes"]] = run.rows[3][COLUMN["read_s"]] = 0
    model.read_latency_s, model.read_s_per_byte = 0.0, 1e-7  # 0.1 s
    assert Predictor({}, "mean", model, [run]).task_gap(0, "m.f") == pytest.approx(0.39)


def test_a_quick_tasks_upload_counts_in_the_gap_of_the_step_that_took_it() -> None:
    # A chain on worker a: 0 ran 1 ms (quick: its completion waited for the next step),
    # 1 ran 10 ms; the step after 1 stored both outputs, 0.3 s each, and took 0.7 s.
    run = _ran(
        [("a", 0.0, 0.001, 0.3), ("a", 0.001, 0.011, 0.3), ("a", 0.711, 0.8, 0.0)],
        [[], [0], [1]],
    )
    p = Predictor({}, "mean", _model(), [run])
    assert p.task_gap(0, "m.f") == 0.0  # its write is charged after it, as if alone
    assert p.task_gap(1, "m.f") == pytest.approx(0.1)  # 0.7 s less both writes
    # Quick tasks 0 and 1 feed task 2: the step that readied it took both writes.
    run = _ran(
        [("a", 0.0, 0.001, 0.3), ("a", 0.001, 0.002, 0.3), ("a", 0.702, 0.8, 0.0)],
        [[], [], [0, 1]],
    )
    p = Predictor({}, "mean", _model(), [run])
    assert p.task_gap(0, "m.f") == 0.0 and p.task_gap(1, "m.f") == pytest.approx(0.1)


def test_the_one_unstored_input_made_where_its_fan_in_ran_was_written_for_nothing() -> None:
    # 2 = f(0, 1), 5 = f(3, 4), 6 = f(2, 5): all on worker a except 4 (b). 0 was stored
    # (2 waited for 1), 1 readied 2 and was written, then dropped; 4 was stored, 3 held
    # back for it and was written, then dropped; 2 and 5 both went unstored (2 waited
    # aside for 5): one step, which they settle: neither written.
    deps = [[], [], [0, 1], [], [], [3, 4], [2, 5]]
    worker = ["a", "a", "a", "a", "b", "a", "a"]
    stored = [10, 0, 0, 0, 10, 0, None]
    assert unneeded_writes(deps, worker, stored) == {1, 3}


def test_a_run_far_outside_the_spread_of_a_tasks_others_is_held_to_it() -> None:
    # Two first runs in fresh processes (importing numpy) among eight alike.
    runs = [_ran([("a", 0.0, d, 0.0)], [[]]) for d in [0.120, 0.102] + [0.0133] * 7 + [0.0135]]
    p = Predictor({}, "mean", _model(), runs)
    assert p.task_base(0, "m.f") == pytest.approx(0.0133, abs=0.0001)
    noisy = [_ran([("a", 0.0, d, 0.0)], [[]]) for d in [1.0, 1.2, 0.8, 1.4, 1.1]]
    assert Predictor({}, "mean", _model(), noisy).task_base(0, "m.f") == pytest.approx(1.1)


def test_of_two_runs_one_over_twice_the_other_is_no_guide() -> None:
    first_then_warm = [_ran([("a", 0.0, d, 0.0)], [[]]) for d in [0.0129, 0.0024]]
    assert Predictor({}, "mean", _model(), first_then_warm).task_base(0, "m.f") == 0.0024
    alike = [_ran([("a", 0.0, d, 0.0)], [[]]) for d in [0.004, 0.003]]
    assert Predictor({}, "mean", _model(), alike).task_base(0, "m.f") == pytest.approx(0.0035)
    assert Predictor({}, "p95", _model(), first_then_warm).task_base(0, "m.f") == 0.0129


def test_a_completion_that_handed_work_out_teaches_no_gap() -> None:
    # Task 0 readied 1 and 2 and handed 2 out to worker b: its worker's second until task
    # 1 held the hand-out, which the simulator plays itself.
    run = _ran([("a", 0.0, 1.0, 0.0), ("a", 2.0, 3.0, 0.0), ("b", 2.5, 3.0, 0.0)], [[], [0], [0]])
    model = _model()
    assert Predictor({}, "mean", model, [run]).task_gap(0, "m.f") == model.gap_s


def test_a_hand_out_is_learned_without_the_invoke_request_the_simulator_charges() -> None:
    stats = BackendStats(handout_warm=Summary.of([0.06, 0.06]))
    platform = Platform(2.0, 60.0, {}, invoke_latency_s=0.05)
    model = BackendModel.learn("gateway", stats, "mean", platform, 2)
    assert model.handout_warm_s == pytest.approx(0.01) and model.invoke_s == 0.05


# --------------------------------------------------------------------------- simulator


def _free(
    kind: str = "lambda",
    cap: int = 100,
    capacity: float | None = None,
    cpu_per_mb: float | None = None,
) -> BackendModel:
    """A backend where nothing but the tasks takes time."""
    return _model(
        kind,
        cap=cap,
        capacity=capacity,
        cpu_per_mb=cpu_per_mb,
        handout_cold_s=0.0,
        handout_warm_s=0.0,
        gap_s=0.0,
        read_latency_s=0.0,
        read_s_per_byte=0.0,
        write_latency_s=0.0,
        write_s_per_byte=0.0,
    )


def _shape(deps: list[tuple[int, ...]]) -> Shape:
    children: list[list[int]] = [[] for _ in deps]
    for t, ds in enumerate(deps):
        for d in ds:
            children[d].append(t)
    sinks = frozenset(t for t in range(len(deps)) if not children[t])
    return Shape(deps, children, sinks)


def _work(durations: list[float], demand: float = 1.0) -> Work:
    n = len(durations)
    return Work(list(durations), [demand] * n, [1000.0] * n, [Size()] * n)


def test_a_chain_runs_on_one_worker_with_its_gaps() -> None:
    model = _free(cap=4)
    model.gap_s, model.handout_cold_s = 0.01, 0.5
    schedule = simulate(_shape([(), (0,), (1,)]), _work([1.0, 2.0, 3.0]), model)
    assert schedule.workers == 1 and len(set(schedule.worker)) == 1
    assert schedule.start == pytest.approx([0.0, 1.01, 3.02])
    assert schedule.makespan_s == pytest.approx(6.02)  # from the first start: no cold start
    assert schedule.cost.requests == 1
    assert schedule.cost.gb_s == pytest.approx(6.03 * 2)  # 2048 MB until its last step


def test_a_fan_out_is_shared_over_the_cap_and_waits_for_it() -> None:
    # one root, four children of 1 s, a fan-in; two workers at most
    deps = [(), (0,), (0,), (0,), (0,), (1, 2, 3, 4)]
    model = _free(cap=2)
    model.handout_cold_s = 0.1
    schedule = simulate(_shape(deps), _work([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), model)
    # the root's worker keeps two children; the other two go to one new worker, 0.1 s later
    assert sorted(schedule.start[1:5]) == pytest.approx([1.0, 1.1, 2.0, 2.1])
    assert schedule.start[5] == pytest.approx(3.1) and schedule.workers == 2


def test_workers_the_platform_has_idle_now_start_warm() -> None:
    deps = [(), (0,), (0,)]  # the root's worker keeps one child, hands out the other
    model = _free(cap=2)
    model.handout_cold_s, model.handout_warm_s, model.keep_warm_s = 0.5, 0.01, 60.0
    cold = simulate(_shape(deps), _work([1.0, 1.0, 1.0]), model)
    model.idle = {Size(): 2}
    warm = simulate(_shape(deps), _work([1.0, 1.0, 1.0]), model)
    assert cold.makespan_s == pytest.approx(2.5) and warm.makespan_s == pytest.approx(2.01)


def test_a_burst_of_workers_starts_at_the_platforms_pace_each_taking_its_lead() -> None:
    model = _free(cap=4)
    model.start_spacing_s = model.cold_spacing_s = 0.1
    schedule = simulate(_shape([(), (), ()]), _work([1.0, 1.0, 1.0]), model)  # 3 roots
    assert sorted(schedule.start) == pytest.approx([0.0, 0.1, 0.2])
    model.start_spacing_s, model.cold_spacing_s, model.lead_s = 0.0, 0.0, 0.05
    schedule = simulate(_shape([(), (0,), (0,)]), _work([1.0, 1.0, 1.0]), model)
    assert sorted(schedule.start[1:]) == pytest.approx([1.0, 1.05])  # kept, handed out


def test_the_platform_takes_the_next_invocation_later_after_a_cold_start() -> None:
    model = _free(cap=4)
    model.start_spacing_s, model.cold_spacing_s, model.idle = 0.1, 0.3, {Size(): 1}
    schedule = simulate(_shape([(), (), ()]), _work([1.0, 1.0, 1.0]), model)  # 3 roots
    assert sorted(schedule.start) == pytest.approx([0.0, 0.1, 0.4])  # warm, cold, cold


def test_a_burst_goes_no_faster_than_the_shared_cpus_run_the_workers_it_starts() -> None:
    """20 roots on 2 CPUs, each worker costing 0.1 s of CPU besides its (instant) task,
    and a platform that alone takes an invocation every 10 ms: its loop shares the CPUs
    with the workers it started, so the burst stretches towards the time the CPUs take
    to run them (20 x 0.1 s / 2), far past its own pace."""
    model = _free(cap=20, capacity=2.0)
    model.start_spacing_s = model.cold_spacing_s = 0.01
    roots = _shape([()] * 20)
    alone = max(simulate(roots, _work([0.0] * 20), model).start)
    assert alone == pytest.approx(0.11)  # as a tree: a head's task starts with its share's
    model.worker_cpu_s = 0.1
    burst = max(simulate(roots, _work([0.0] * 20), model).start)
    assert 4 * alone < burst < 20 * 0.1 / 2
    model.capacity = None  # each worker has CPUs of its own
    assert max(simulate(roots, _work([0.0] * 20), model).start) == pytest.approx(alone)


def test_a_workers_own_cpu_work_slows_the_tasks_beside_it_in_a_burst() -> None:
    """Workers started together run their own CPU work on the machine's CPUs beside the
    tasks; a worker started alone charges none, as the history's times were measured with
    such starts beside them (charged, Montage and Cycles were predicted 5-7 % long)."""
    model = _free(cap=2, capacity=1.0)
    model.worker_cpu_s = 0.5
    # two roots of 1 s on one CPU: 2 s of tasks and 1 s of the workers' own work
    assert simulate(_shape([(), ()]), _work([1.0, 1.0]), model).makespan_s == pytest.approx(3.0)
    assert simulate(_shape([()]), _work([1.0]), model).makespan_s == pytest.approx(1.0)
    # a root, then its child planned on a worker of its own: each starts alone
    chain = simulate(_shape([(), (0,)]), _work([1.0, 1.0]), model, [0, 1])
    assert chain.worker[0] != chain.worker[1] and chain.makespan_s == pytest.approx(2.0)


def test_shared_cpus_slow_tasks_down_alike() -> None:
    deps = [(), ()]
    alone = simulate(_shape(deps), _work([2.0, 2.0]), _free("gateway", cap=2, capacity=2.0))
    shared = simulate(_shape(deps), _work([2.0, 2.0]), _free("gateway", cap=2, capacity=1.0))
    assert alone.makespan_s == pytest.approx(2.0) and shared.makespan_s == pytest.approx(4.0)


def test_a_plan_runs_each_group_on_its_own_worker_and_size() -> None:
    deps = [(), (0,), (0,), (1, 2)]
    groups = [0, 0, 1, 0]
    big, small = Size(2, 4096), Size(1, 1024)
    work = Work([1.0, 1.0, 0.5, 1.0], [1.0] * 4, [10.0] * 4, [big, big, small, big])
    schedule = simulate(_shape(deps), work, _free(), groups)
    assert schedule.worker[0] == schedule.worker[1] == schedule.worker[3] != schedule.worker[2]
    assert schedule.cost.requests == 2
    assert schedule.cost.gb_s == pytest.approx(3 * 4 + 0.5 * 1)
    # when the other group's task ends last, it readies the join and hands it out
    work.duration[2] = 1.5
    late = simulate(_shape(deps), work, _free(), groups)
    assert len({late.worker[0], late.worker[2], late.worker[3]}) == 3


def test_a_fan_in_of_several_groups_runs_where_it_is_readied_at_their_size() -> None:
    deps = [(), (0,), (0,), (1, 2)]
    groups = [0, 0, 1, 0]
    work = Work([1.0, 1.0, 1.5, 1.0], [1.0] * 4, [10.0] * 4, [Size()] * 4)
    assert floating(deps, groups, work.size) == [False, False, False, True]
    # the other group's task ends last: its worker runs the join, no third invocation
    schedule = simulate(_shape(deps), work, _free(), groups)
    assert schedule.worker[3] == schedule.worker[2] != schedule.worker[0]
    assert schedule.cost.requests == 2
    # planned apart from both inputs, or at another size: it goes where the plan says
    assert floating(deps, [0, 0, 1, 2], work.size)[3] is False
    assert floating(deps, groups, [Size()] * 3 + [Size(2, 4096)])[3] is False


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[float]]:
    n = draw(st.integers(1, 25))
    deps = [
        tuple(sorted(set(draw(st.lists(st.integers(0, t - 1), max_size=3))))) if t else ()
        for t in range(n)
    ]
    durations = draw(st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n))
    return deps, durations


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
    schedule = simulate(_shape(deps), _work(durations), _free("gateway", cap, capacity))
    assert schedule.makespan_s >= _critical_path(deps, durations) - 1e-9
    assert schedule.makespan_s <= sum(durations) + 1e-9
    assert all(not math.isnan(s) for s in schedule.start)  # every task ran


@settings(max_examples=60, deadline=None)
@given(dags(), st.integers(1, 8))
def test_overheads_only_lengthen_a_schedule(
    dag: tuple[list[tuple[int, ...]], list[float]], cap: int
) -> None:
    deps, durations = dag
    slow = simulate(_shape(deps), _work(durations), _model("gateway", cap=cap))
    assert slow.makespan_s >= _critical_path(deps, durations) - 1e-9


# --------------------------------------------------------------------------- planners


def _problem(
    deps: list[tuple[int, ...]],
    functions: list[str],
    stats: dict[StatsKey, FunctionStats],
    model: BackendModel,
    deadline: float | None = None,
) -> Problem:
    predictor = Predictor(stats, "mean", model)
    return Problem(_shape(deps), functions, [None] * len(deps), predictor, model, "mean", deadline)


def _lambda_problem(deadline: float | None = None) -> Problem:
    """A root, a long parallel branch and a short serial one, then a join; on Lambda."""
    model = _free("lambda", cpu_per_mb=1 / 1769)
    model.price = model.price._replace(request=0.0)
    at = 1769
    stats = {
        StatsKey("m.root", 1.0, at, "lambda"): _stats([1.0], [1.0], peak=100),
        StatsKey("m.long", 6.0, at * 6, "lambda"): _stats([2.0], [11.0], peak=100),
        StatsKey("m.short", 1.0, at, "lambda"): _stats([1.0], [1.0], peak=100),
        StatsKey("m.join", 1.0, at, "lambda"): _stats([0.5], [0.5], peak=100),
    }
    deps = [(), (0,), (0,), (1, 2)]
    functions = ["m.root", "m.long", "m.short", "m.join"]
    return _problem(deps, functions, stats, model, deadline)


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
    model = _free("gateway", cap=2, capacity=2.0)
    stats = {
        StatsKey("m.step", 1.0, 512, "gateway"): _stats([0.1] * 5, [0.1] * 5),
        StatsKey("m.step", 2.0, 512, "gateway"): _stats([0.0998] * 5, [0.1] * 5),
    }
    deps = [(), *[(0,)] * 8, tuple(range(1, 9))]
    problem = _problem(deps, ["m.step"] * len(deps), stats, model)
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
    model = _model("lambda", cpu_per_mb=1 / 1769, cap=8)
    functions = [f"m.f{t}" for t in range(len(deps))]
    stats = {
        StatsKey(f, 1.0, 1769, "lambda"): _stats([d], [d], peak=200)
        for f, d in zip(functions, durations, strict=True)
    }
    problem = _problem(deps, functions, stats, model)
    reference = _OneSize(problem, _Costs(problem)).largest  # every task on the largest size
    problem.deadline_s = reference.schedule.makespan_s * slack
    decided = plan_deadline(problem)
    assert decided.schedule.makespan_s <= problem.deadline_s * (1 + 1e-9)
    assert decided.schedule.cost.usd <= reference.schedule.cost.usd * (1 + 1e-9)


def test_groups_follow_chains_and_the_input_that_finishes_last() -> None:
    # 0 -> 1 -> 3 and 2 -> 3, where 2 ends last: 3 joins 2's group
    shape = _shape([(), (0,), (), (1, 2)])
    finish = [1.0, 2.0, 5.0, 6.0]
    level = [3.0, 2.0, 2.0, 1.0]
    groups = make_groups(shape, finish, level, [Size()] * 4, fanout=4)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    # a different size starts a group of its own
    mixed = make_groups(shape, finish, level, [Size(), Size(2, 2048), Size(), Size()], 4)
    assert mixed[0] != mixed[1]


def _reduction_shape(leaves: int) -> Shape:
    deps: list[tuple[int, ...]] = [()] * leaves
    level = list(range(leaves))
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            deps.append((level[i], level[i + 1]))
            nxt.append(len(deps) - 1)
        level = nxt
    return _shape(deps)


def test_equal_roots_are_dealt_in_runs_so_a_reduction_keeps_its_subtrees_together() -> None:
    shape = _reduction_shape(8)  # leaves 0-7, merges 8-11 (pairs), 12-13, 14
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
    """One worker makes the whole tree: clustered, each merge's first input waits
    unstored for the other, which its worker makes; without, the first input is stored
    for the merge still waiting, and the second is not written: the worker knows from its
    own marks that the merge it readies stays (shoal.decisions.settled_here)."""
    shape = _reduction_shape(4)
    model = _free(cap=1)
    model.write_s_per_byte = 1e-9
    work = _work([1.0] * 7)
    work.out_bytes = [1e8] * 7  # 0.1 s to write each
    plain = simulate(shape, work, model)
    clustered = simulate(shape, work, model, tuning=Tuning(aside_above=1e8))
    assert plain.workers == clustered.workers == 1
    assert clustered.makespan_s == pytest.approx(7.0)  # nothing written
    assert plain.makespan_s == pytest.approx(7.0 + 3 * 0.1)  # stored: 0, 2, 4


# --------------------------------------------------------------------------- optimizations


def _fan_out_problem(output_bytes: float, forced: frozenset[str] | None = None) -> Problem:
    """A root whose output (``output_bytes``) 8 children of 10 ms each read, then a join,
    on a gateway of 2 shared CPUs moving 100 MB/s, starting a worker in 5 ms."""
    model = _model("gateway", cap=2, capacity=2.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.root", 1.0, 512, "gateway"): _stats([0.01], output=output_bytes),
        StatsKey("m.child", 1.0, 512, "gateway"): _stats([0.01], output=8.0),
        StatsKey("m.join", 1.0, 512, "gateway"): _stats([0.001], output=8.0),
    }
    deps = [(), *[(0,)] * 8, tuple(range(1, 9))]
    functions = ["m.root", *["m.child"] * 8, "m.join"]
    problem = _problem(deps, functions, stats, model)
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


def _reduction_problem(output_bytes: float) -> Problem:
    """A tree sum of 8 leaves on a gateway of 2 CPUs, storing 100 MB/s."""
    model = _model("gateway", cap=2, capacity=2.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.leaf", 1.0, 512, "gateway"): _stats([0.1], output=output_bytes),
        StatsKey("m.merge", 1.0, 512, "gateway"): _stats([0.05], output=output_bytes),
    }
    shape = _reduction_shape(8)
    functions = ["m.leaf"] * 8 + ["m.merge"] * 7
    return _problem([tuple(d) for d in shape.deps], functions, stats, model)


def test_the_optimizing_planner_clusters_a_reductions_fan_ins_where_storing_costs() -> None:
    big = plan_optimizing(_reduction_problem(20e6))  # 0.2 s to store each, 0.2 s to read
    assert big.tuning is not None and big.tuning.aside_above is not None
    assert set(range(8, 15)) <= set(big.optimized["cluster"])
    assert (
        big.schedule.makespan_s < plan_critical_path(_reduction_problem(20e6)).schedule.makespan_s
    )
    small = plan_optimizing(_reduction_problem(1e3))
    assert "cluster" not in small.optimized and (
        small.tuning is None or small.tuning.aside_above is None
    )


def _two_stage_problem(keep_warm_s: float, forced: frozenset[str] | None = None) -> Problem:
    """A 1 s root readying 8 children of 0.3 s that need 3 GB (its own worker is smaller:
    too many to cluster), on a platform starting a worker cold in 0.5 s, warm in 10 ms."""
    model = _model("lambda", cap=10, handout_cold_s=0.5, handout_warm_s=0.01)
    model.keep_warm_s = keep_warm_s
    stats = {
        StatsKey("m.root", 1.0, 512, "lambda"): _stats([1.0], peak=100),
        StatsKey("m.child", 1.0, 3072, "lambda"): _stats([0.3], peak=3000),
    }
    problem = _problem([(), *[(0,)] * 8], ["m.root", *["m.child"] * 8], stats, model)
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
    model = _model("gateway", cap=4, capacity=4.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.005
    stats = {
        StatsKey("m.big", 1.0, 512, "gateway"): _stats([big_s], output=40e6),
        StatsKey("m.small", 1.0, 512, "gateway"): _stats([0.05], output=10e6),
        StatsKey("m.sum", 1.0, 512, "gateway"): _stats([0.001], output=8.0),
    }
    deps = [(), (), (), (), (0, 1, 2, 3)]
    functions = ["m.small", "m.small", "m.small", "m.big", "m.sum"]  # the big one last
    problem = _problem(deps, functions, stats, model)
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
    model = _free(cap=4)
    model.handout_warm_s = model.handout_cold_s = 0.1
    work = _work([1.0] * 5)
    work.out_bytes[0] = 5000.0
    spread = simulate(_shape(deps), work, model)
    clustered = simulate(_shape(deps), work, model, tuning=Tuning(cluster_above=5000.0))
    above = simulate(_shape(deps), work, model, tuning=Tuning(cluster_above=5001.0))
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
    model = _free(cap=100)
    model.invoke_s = 1.0
    schedule = simulate(_shape(deps), _work([0.0] * 9), model, tuning=Tuning(tree=tree))
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
    model = _free(cap=100)
    model.invoke_s, model.start_spacing_s = 1.0, 0.1
    model.cold_spacing_s = 0.1
    schedule = simulate(_shape(deps), _work([0.0] * 9), model, tuning=Tuning(tree=True))
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
    model = _free(cap=100)
    model.invoke_s, model.request_s = 1.0, 1.5
    schedule = simulate(_shape(deps), _work([0.0] * 9), model, tuning=Tuning(tree=False))
    # rounds sent at 0, 1.5 and 3: their workers start 1 s later; the root's kept child
    # as its last request is answered
    assert sorted(schedule.start[1:]) == pytest.approx([1, 1, 1, 2.5, 2.5, 2.5, 4, 4.5])


def test_the_simulator_plays_prewarm_as_warm_workers_a_cold_start_after_the_parent_starts() -> None:
    deps = [(), (0,), (0,)]
    model = _free(cap=4)
    model.handout_cold_s, model.handout_warm_s = 0.5, 0.0
    work = _work([1.0, 1.0, 1.0])
    work.size = [Size(), Size(1, 512), Size(1, 512)]
    cold = simulate(_shape(deps), work, model, tuning=Tuning(prewarm=False))
    warm = simulate(_shape(deps), work, model, tuning=Tuning(prewarm=True))
    # the root's worker keeps one child; the other is handed out: cold, or warmed meanwhile
    assert sorted(cold.start[1:]) == pytest.approx([1.0, 1.5])
    assert sorted(warm.start[1:]) == pytest.approx([1.0, 1.0])
    work.duration[0] = 0.2  # handed out before the warm-up is over: it waits for the rest
    early = simulate(_shape(deps), work, model, tuning=Tuning(prewarm=True))
    assert sorted(early.start[1:]) == pytest.approx([0.2, 0.5])


def test_with_preload_forced_a_fan_in_is_planned_with_its_earliest_input() -> None:
    model = _model("gateway", cap=2, capacity=2.0)
    stats = {
        StatsKey("m.quick", 1.0, 512, "gateway"): _stats([0.01]),
        StatsKey("m.slow", 1.0, 512, "gateway"): _stats([1.0]),
        StatsKey("m.join", 1.0, 512, "gateway"): _stats([0.01]),
    }
    problem = _problem([(), (), (0, 1)], ["m.quick", "m.slow", "m.join"], stats, model)
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
    model = _free(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    work = _work([0.1, 0.2, 0.3, 1.0, 0.0])
    work.out_bytes = [100e6] * 4 + [8.0]
    preload_on = Tuning(preload=True, hold_idle_s=1)
    plain = simulate(_shape(deps), work, model, tuning=Tuning())
    assert plain.start[4] == pytest.approx(7.1) and plain.worker[4] == plain.worker[3]
    preload = simulate(_shape(deps), work, model, tuning=preload_on)
    assert preload.start[4] == pytest.approx(4.2) and preload.worker[4] == preload.worker[0]
    model.reads_shared = model.writes_shared = False
    assert simulate(_shape(deps), work, model, tuning=Tuning()).start[4] == pytest.approx(5.0)
    assert simulate(_shape(deps), work, model, tuning=preload_on).start[4] == pytest.approx(3.0)


def test_a_holder_that_ends_after_the_others_waits_for_their_steps_to_land() -> None:
    """Delayed I/O on a fan-in of a 400 MB input and two of 100 MB, through one store that
    shares its pace: the two end at 0.8 s, the holder at 1 s, while their writes are
    still under way (both land at 2.8 s). It is the last: it holds its own output back
    until they land, and reads them (2 s) with its own in memory. Taking them for landed
    already, it would write its 400 MB (4 s more) for a fan-in that runs with it anyway."""
    deps = [(), (), (), (0, 1, 2)]
    model = _free(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    work = _work([1.0, 0.8, 0.8, 0.0])
    work.out_bytes = [400e6, 100e6, 100e6, 8.0]
    delayed = Tuning(delay_above=1e6, delay_s_per_byte=1e-8)
    schedule = simulate(_shape(deps), work, model, tuning=delayed)
    assert schedule.start[3] == pytest.approx(4.8) and schedule.worker[3] == schedule.worker[0]


def test_transfers_at_once_share_the_stores_pace() -> None:
    """Two roots end together and write 100 MB each (1 s alone): the store shares its
    pace, both land at 2 s. A read's latency is its worker's own wait, not the store's:
    the fan-in reads one (1 s, and 0.5 s of latency) on the other's worker."""
    model = _free(cap=4)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.reads_shared = model.writes_shared = True
    model.read_latency_s = 0.5
    work = _work([1.0, 1.0, 0.0])
    work.out_bytes = [100e6, 100e6, 8.0]
    schedule = simulate(_shape([(), (), (0, 1)]), work, model, tuning=Tuning())
    # Without a plan both are written (the first stored, the second thrown away: its
    # worker keeps the fan-in): 1 s + 2 s (both at half pace) + 1.5 s (the read).
    assert schedule.start[2] == pytest.approx(4.5)
    alone = _work([1.0, 2.0, 0.0])  # the second ends as the first lands: one after another
    alone.out_bytes = work.out_bytes
    schedule = simulate(_shape([(), (), (0, 1)]), alone, model, tuning=Tuning())
    assert schedule.start[2] == pytest.approx(2.0 + 1.0 + 1.5)


def test_the_optimizing_planner_holds_back_for_fan_ins_where_that_pays() -> None:
    """Four 100 MB inputs ending 0.1, 0.2, 0.3 and 1 s into a run, at 100 MB/s each way:
    pre-load saves the last input's worker three reads; the plan turns it on, run-wide."""
    model = _model("gateway", cap=4, capacity=4.0)
    model.read_s_per_byte = model.write_s_per_byte = 1e-8
    model.handout_cold_s = model.handout_warm_s = 0.001
    stats = {
        StatsKey(f"m.p{i}", 1.0, 512, "gateway"): _stats([d], output=100e6)
        for i, d in enumerate([0.1, 0.2, 0.3, 1.0])
    }
    stats[StatsKey("m.join", 1.0, 512, "gateway")] = _stats([0.001], output=8.0)
    deps = [(), (), (), (), (0, 1, 2, 3)]
    problem = _problem(deps, ["m.p0", "m.p1", "m.p2", "m.p3", "m.join"], stats, model)
    decided = plan_optimizing(problem)
    assert decided.optimized.get("preload") == [4]
    assert decided.tuning is not None and decided.tuning.preload
    assert decided.schedule.makespan_s < plan_critical_path(problem).schedule.makespan_s * 0.9


def test_a_task_that_read_its_inputs_from_the_store_ran_longer_by_their_bytes() -> None:
    # Task 1 ran 0.8 s where its worker held task 0's output, 1.5 s where it read its
    # 10 MB from the store (a blob mapped as read, faulted in as touched).
    runs = []
    for worker, seconds in [("a", 0.8), ("b", 1.5), ("a", 0.8), ("b", 1.5)]:
        run = _ran([("a", 0.0, 1.0, 0.0), (worker, 1.0, 1.0 + seconds, 0.0)], [[], [0]])
        run.rows[1][COLUMN["read_bytes"]] = 10e6 if worker == "b" else 0
        runs.append(run)
    p = Predictor({}, "mean", _model(), runs)
    assert p.task_base(1, "m.f") == pytest.approx(0.8)
    assert p.task_touch(1, "m.f") == pytest.approx(0.7 / 10e6)
    assert p.task_touch(0, "m.f") == 0.0  # it never read anything


def test_one_run_with_inputs_held_is_no_baseline_against_many_that_read_them() -> None:
    # Task 1 read its input in ten runs (2 ms), and held it in one, which stalled (40 ms).
    runs = []
    for seconds, nbytes in [(0.002, 10e6)] * 10 + [(0.040, 0)]:
        run = _ran([("a", 0.0, 1.0, 0.0), ("b", 1.0, 1.0 + seconds, 0.0)], [[], [0]])
        run.rows[1][COLUMN["read_bytes"]] = nbytes
        runs.append(run)
    p = Predictor({}, "mean", _model(), runs)
    assert p.task_base(1, "m.f") == pytest.approx(0.002)
    assert p.task_touch(1, "m.f") == 0.0


def test_a_task_runs_longer_by_the_bytes_it_reads_from_the_store() -> None:
    # Two roots on two workers feed a fan-in: it holds one input, reads the other's
    # 1 MB, and runs 1 s longer for it (1e-6 s a byte touched).
    model = _free(cap=2)
    work = _work([1.0, 2.0, 1.0])
    work.out_bytes = [1e6, 1e6, 8.0]
    work.touch = [0.0, 0.0, 1e-6]
    schedule = simulate(_shape([(), (), (0, 1)]), work, model)
    assert schedule.start[2] == pytest.approx(2.0) and schedule.end[2] == pytest.approx(4.0)
    work.touch = None
    assert simulate(_shape([(), (), (0, 1)]), work, model).end[2] == pytest.approx(3.0)


def test_the_first_task_to_use_an_input_read_for_several_pays_its_touch() -> None:
    # A root's 1 MB is read once by the worker of its three children (planned on one
    # other worker): the first child to run faults its pages in (1 s), the others not.
    model = _free(cap=2)
    work = _work([1.0, 1.0, 1.0, 1.0])
    work.out_bytes = [1e6, 8.0, 8.0, 8.0]
    work.touch = [0.0, 1e-6, 1e-6, 1e-6]
    schedule = simulate(_shape([(), (0,), (0,), (0,)]), work, model, groups=[0, 1, 1, 1])
    runs = sorted(e - s for s, e in zip(schedule.start[1:], schedule.end[1:], strict=True))
    assert runs == pytest.approx([1.0, 1.0, 2.0])


def test_a_child_a_quick_completion_readies_waits_for_the_workers_next_task() -> None:
    # One worker has roots 0, 1 (quick) and 3 (1 s); 0 and 1 feed 2. The completion of 1
    # is batched with 3's (should_flush): 2 is the worker's only once 3 has run.
    model = _free(cap=1)
    shape = _shape([(), (), (0, 1), ()])
    schedule = simulate(shape, _work([0.001, 0.001, 1.0, 1.0]), model, groups=[0, 0, 0, 0])
    assert schedule.start[3] < schedule.start[2]
    assert schedule.start[2] == pytest.approx(schedule.end[3], abs=0.01)


def test_quick_tasks_share_one_round_trip_to_the_store() -> None:
    # Two roots on one worker store their outputs for a fan-in planned on another (a 0.1
    # s round trip each, no bytes to speak of). Quick (1 ms), the first one's completion
    # waits for the second's step, which takes both at once and hands the fan-in out.
    model = _free(cap=2)
    model.write_latency_s = 0.1
    shape, groups = _shape([(), (), (0, 1)]), [0, 0, 1]
    quick = simulate(shape, _work([0.001, 0.001, 1.0]), model, groups=groups)
    assert quick.start == pytest.approx([0.0, 0.001, 0.102])
    # Slow (10 ms), each takes a step of its own, unless the next task is another input of
    # every child: then nothing is ready before that one's step, which takes both.
    apart = simulate(_shape([(), (), (), (0, 2)]), _work([0.01] * 3 + [1.0]), model,
                     groups=[0, 0, 0, 1])  # fmt: skip
    assert apart.start == pytest.approx([0.0, 0.11, 0.22, 0.33])
    pair = simulate(shape, _work([0.01, 0.01, 1.0]), model, groups=groups)
    assert pair.start == pytest.approx([0.0, 0.01, 0.12])


# --------------------------------------------------------------------------- ranks


@shoal.task
def rank_root() -> int:
    return 1


@shoal.task
def rank_quick(x: int) -> int:
    return x


@shoal.task
def rank_slow(x: int) -> int:
    time.sleep(0.05)
    return x


def test_ranks_are_the_paths_ahead_of_each_task_in_the_newest_run(tmp_path: Path) -> None:
    """A workflow's first run teaches its ranks: each task's longest path to the end, by
    how long each task ran; none before."""
    from shoal.graph import build

    root = rank_root()
    sinks = [rank_quick(root), rank_quick(rank_slow(root))]
    history = open_history(str(tmp_path / "h.db"))
    graph = build(sinks)
    assert rank_tasks(graph, history, "local") is None  # nothing learnt yet
    shoal.compute(*sinks, history=str(tmp_path / "h.db"))
    settle_history()  # the run's record is written behind it
    ranks = rank_tasks(graph, history, "local")
    assert ranks is not None
    by_name = {graph.nodes[t].fn.name: t for t in range(len(graph)) if graph.children[t]}
    slow, root_rank = ranks[by_name["rank_slow"]], ranks[by_name["rank_root"]]
    quick_leaf = min(ranks[t] for t in range(len(graph)) if not graph.children[t])
    assert slow >= 0.05 > quick_leaf  # the slow task's path holds its own 50 ms
    assert root_rank >= slow  # and its parent's holds it

    quick = [rank_quick(rank_root()) for _ in range(3)]  # nothing as long as a store step
    shoal.compute(*quick, history=str(tmp_path / "h.db"))
    settle_history()
    assert rank_tasks(build(quick), history, "local") is None  # their order is noise


def test_compute_ships_the_ranks_a_history_teaches_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``compute()``: no ranks on a workflow's first run; the next ships each
    task's rank (the slow task's path the longest) and ranks its workers; none with a list
    of optimizations that leaves ``rank`` out, nor under a plan."""
    import shoal.run

    shipped: list[tuple[list[float] | None, bool]] = []
    real_run_graph = shoal.run.run_graph

    async def spy(graph: Any, *args: Any, **kwargs: Any) -> Any:
        shipped.append((kwargs["ranks"], kwargs["tuning"].ranked))
        return await real_run_graph(graph, *args, **kwargs)

    monkeypatch.setattr(shoal.run, "run_graph", spy)
    where = str(tmp_path / "h.db")

    def run(**options: Any) -> tuple[list[float] | None, bool]:
        root = rank_root()
        shoal.compute(rank_quick(root), rank_quick(rank_slow(root)), history=where, **options)
        settle_history()
        return shipped[-1]

    assert run() == (None, False)  # nothing learnt yet
    ranks, ranked = run()
    assert ranked and ranks is not None
    slow = ranks[2]  # rank_root, rank_quick, rank_slow, rank_quick: numbered as called
    assert slow >= 0.05 > ranks[1] and ranks[0] >= slow
    assert run(optimizations=["cluster"]) == (None, False)
    assert run(planner="uniform") == (None, False)


class HeldRecords:
    """Spies on the ranks each run ships; once :meth:`hold` is called, the records runs
    leave behind wait until :meth:`release` (at most 10 s, then ``timed_out`` is set)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import shoal.run

        self.monkeypatch = monkeypatch
        self.shipped: list[list[float] | None] = []
        self.released, self.timed_out = threading.Event(), threading.Event()
        real_run_graph, self.real_keep = shoal.run.run_graph, shoal.run._keep

        async def spy(graph: Any, *args: Any, **kwargs: Any) -> Any:
            self.shipped.append(kwargs["ranks"])
            return await real_run_graph(graph, *args, **kwargs)

        monkeypatch.setattr(shoal.run, "run_graph", spy)

    def hold(self) -> None:
        import shoal.run

        def held_keep(*args: Any) -> None:
            if not self.released.wait(10):
                self.timed_out.set()
            self.real_keep(*args)

        self.monkeypatch.setattr(shoal.run, "_keep", held_keep)

    def release(self) -> None:
        self.released.set()
        settle_history()


def test_a_run_ranks_by_an_older_run_rather_than_wait_for_the_last_ones_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of the run just before is written behind it; the next run does not wait
    for it when the history holds an older run of the workflow to rank by. (Waiting, it
    would hang here: that record is held until the next run has ended, or 10 s.)"""
    records = HeldRecords(monkeypatch)
    where = str(tmp_path / "h.db")

    def run() -> None:
        root = rank_root()
        shoal.compute(rank_quick(root), rank_quick(rank_slow(root)), history=where)

    run()
    settle_history()  # the first run's record: what the third run ranks by
    records.hold()
    try:
        run()  # its record is held
        run()
    finally:
        records.release()
    assert not records.timed_out.is_set()  # the third run ended while the second's waited
    shipped = records.shipped
    assert shipped[0] is None and shipped[1] is not None and shipped[2] is not None
    assert len(open_history(where).runs(limit=10)) == 3  # and no record is lost


def test_a_workflows_second_run_ranks_by_the_first_before_its_record_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history holds no run of the workflow yet while the first run's record is on
    its way: the second run ranks by the first run's task times, kept in the process, and
    does not wait for the record (waiting, it would hang here: the record is held until
    the second run has ended, or 10 s)."""
    from shoal.graph import build

    records = HeldRecords(monkeypatch)
    records.hold()
    where = str(tmp_path / "h.db")
    root = rank_root()
    sinks = [rank_quick(root), rank_quick(rank_slow(root))]
    try:
        for _ in range(2):
            shoal.compute(*sinks, history=where)
    finally:
        records.release()
    assert not records.timed_out.is_set()
    first, second = records.shipped
    assert first is None and second is not None
    graph = build(sinks)
    slow = next(t for t in range(len(graph)) if graph.nodes[t].fn.name == "rank_slow")
    quick_leaf = min(second[t] for t in range(len(graph)) if not graph.children[t])
    assert second[slow] >= 0.05 > quick_leaf  # as the first run's record will say
    assert len(open_history(where).runs(limit=10)) == 2
