"""Planning, pure: the scaling law, the backend model and the predictions it learns from
history (run times, reads, gaps, hand-outs)."""

from __future__ import annotations

import pytest
from planning_cases import backend_model, free_backend, function_stats, run_of, shape_of, work_of

from shoal.backends import Platform, Size
from shoal.history import BackendStats, FunctionStats, StatsKey
from shoal.history.records import COLUMN, unneeded_writes
from shoal.history.stats import Fit, Summary
from shoal.planning.model import BackendModel, memory_for
from shoal.planning.predict import UNSEEN, Law, Predictor
from shoal.planning.simulate import simulate

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


def test_predictions_read_the_sla_and_scale_to_sizes_never_seen() -> None:
    durations = [1.0] * 90 + [3.0] * 10
    stats = {
        StatsKey("m.serial", 1.0, 2048, "gateway"): function_stats(durations, durations),
        StatsKey("m.numpy", 2.0, 2048, "gateway"): function_stats([3.0] * 5, [5.0] * 5),
    }
    mean = Predictor(stats, "mean", backend_model())
    p95 = Predictor(stats, "p95", backend_model())
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
        StatsKey("m.f", 1.0, 2048, "gateway"): function_stats([1.0] * 4, [1.0] * 4),
        # CPU time says parallel, but on a shared machine the second CPU bought nothing
        StatsKey("m.f", 2.0, 2048, "gateway"): function_stats([1.0] * 4, [1.6] * 4),
    }
    p = Predictor(same, "mean", backend_model())
    assert p.duration("m.f", Size(4, 2048)) == pytest.approx(1.0)
    halves = {
        StatsKey("m.g", 1.0, 2048, "gateway"): function_stats([2.0] * 4, [2.0] * 4),
        StatsKey("m.g", 2.0, 2048, "gateway"): function_stats([1.0] * 4, [2.0] * 4),
    }
    assert Predictor(halves, "mean", backend_model()).duration(
        "m.g", Size(4, 2048)
    ) == pytest.approx(0.5)
    # A task that sleeps: what no CPU sped up is waiting, not work that crowds out others.
    sleeper = {
        StatsKey("m.s", 1.0, 512, "gateway"): function_stats([0.05] * 4, [0.001] * 4),
        StatsKey("m.s", 2.0, 512, "gateway"): function_stats([0.05] * 4, [0.001] * 4),
    }
    p = Predictor(sleeper, "mean", backend_model())
    assert p.duration("m.s", Size(1, 512)) == pytest.approx(0.05)
    assert p.demand("m.s", Size(1, 512)) == pytest.approx(0.02)


def test_on_lambda_cpu_follows_memory() -> None:
    model = backend_model("lambda", cpu_per_mb=1 / 1769)
    stats = {StatsKey("m.f", 1.0, 1769, "lambda"): function_stats([2.0], [2.0])}
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
    p = Predictor({StatsKey("m.f", 1.0, 2048, "gateway"): stats}, "mean", backend_model())
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


def test_a_tasks_gap_is_its_workers_time_to_the_next_task_less_its_upload() -> None:
    run = run_of([("a", 0.0, 1.0, 0.5), ("a", 2.0, 3.0, 0.0)], [[], [0]])  # a chain
    p = Predictor({}, "mean", backend_model(), [run])
    assert p.task_gap(0, "m.f") == pytest.approx(0.5)


def test_a_tasks_gap_is_learned_apart_where_its_output_stayed_home() -> None:
    # Task 0 of a chain: in one run its output was stored (0.1 s besides its upload), in
    # another it stayed home, its step another's (0.6 s, as a clustered merge's input):
    # a plan that keeps it home is charged the latter, one that stores it the former.
    stored = run_of([("a", 0.0, 1.0, 0.5), ("a", 1.6, 2.0, 0.0)], [[], [0]])
    stored.rows[0][COLUMN["stored_bytes"]] = 1000
    home = run_of([("a", 0.0, 1.0, 0.0), ("a", 1.6, 2.0, 0.0)], [[], [0]])
    home.rows[0][COLUMN["stored_bytes"]] = 0
    p = Predictor({}, "mean", backend_model(), [stored, home])
    assert p.task_gap(0, "m.f") == pytest.approx(0.1)
    assert p.task_gap(0, "m.f", home=True) == pytest.approx(0.6)
    once = Predictor({}, "mean", backend_model(), [stored])
    assert once.task_gap(0, "m.f", home=True) == pytest.approx(0.1)  # never home: as stored
    # The simulator charges each where it happens: a chain's output stays home.
    work = work_of([1.0, 1.0])
    work.gap, work.home_gap = [0.1, 0.1], [0.6, 0.6]
    assert simulate(shape_of([(), (0,)]), work, free_backend()).start[1] == pytest.approx(1.6)


def test_waiting_for_the_next_tasks_other_inputs_is_no_gap() -> None:
    # Worker a ran task 0 (ends at 1 s), then the fan-in 2, whose other input 1 ended at
    # 2.5 s on worker b: a held back for it; its loop's own gap is from 2.5 s to 3 s.
    run = run_of(
        [("a", 0.0, 1.0, 0.0), ("b", 0.0, 2.5, 0.0), ("a", 3.0, 3.5, 0.0)], [[], [], [0, 1]]
    )
    assert Predictor({}, "mean", backend_model(), [run]).task_gap(0, "m.f") == pytest.approx(0.5)


def test_a_holders_gap_runs_from_its_inputs_landing_less_its_thrown_away_write() -> None:
    # Tasks 1 and 2 (workers b, c) upload 1 MB each for 0.5 s; worker a held task 0 back
    # for the fan-in 3, and went on once both landed (2.5 s): it wrote its own 1 MB (0.01
    # s at the model's 1e-8 s/B), which the store threw away, and read the other two.
    run = run_of(
        [("a", 0.0, 1.0, 0.0), ("b", 0.0, 1.5, 0.5), ("c", 0.0, 2.0, 0.5), ("a", 3.0, 3.5, 0.0)],
        [[], [], [], [0, 1, 2]],
    )
    for t, row in enumerate(run.rows):
        row[COLUMN["out_bytes"]] = 1e6 if t < 3 else 8
        row[COLUMN["stored_bytes"]] = 1e6 if t in (1, 2) else 0
        row[COLUMN["read_bytes"]] = 2e6 if t == 3 else 0
        row[COLUMN["read_s"]] = 200_000 if t == 3 else 0  # 0.2 s
    model = backend_model(write_latency_s=0.0, write_s_per_byte=1e-8)
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
    run = run_of(
        [("a", 0.0, 0.001, 0.3), ("a", 0.001, 0.011, 0.3), ("a", 0.711, 0.8, 0.0)],
        [[], [0], [1]],
    )
    p = Predictor({}, "mean", backend_model(), [run])
    assert p.task_gap(0, "m.f") == 0.0  # its write is charged after it, as if alone
    assert p.task_gap(1, "m.f") == pytest.approx(0.1)  # 0.7 s less both writes
    # Quick tasks 0 and 1 feed task 2: the step that readied it took both writes.
    run = run_of(
        [("a", 0.0, 0.001, 0.3), ("a", 0.001, 0.002, 0.3), ("a", 0.702, 0.8, 0.0)],
        [[], [], [0, 1]],
    )
    p = Predictor({}, "mean", backend_model(), [run])
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
    runs = [run_of([("a", 0.0, d, 0.0)], [[]]) for d in [0.120, 0.102] + [0.0133] * 7 + [0.0135]]
    p = Predictor({}, "mean", backend_model(), runs)
    assert p.task_base(0, "m.f") == pytest.approx(0.0133, abs=0.0001)
    noisy = [run_of([("a", 0.0, d, 0.0)], [[]]) for d in [1.0, 1.2, 0.8, 1.4, 1.1]]
    assert Predictor({}, "mean", backend_model(), noisy).task_base(0, "m.f") == pytest.approx(1.1)


def test_of_two_runs_one_over_twice_the_other_is_no_guide() -> None:
    first_then_warm = [run_of([("a", 0.0, d, 0.0)], [[]]) for d in [0.0129, 0.0024]]
    assert Predictor({}, "mean", backend_model(), first_then_warm).task_base(0, "m.f") == 0.0024
    alike = [run_of([("a", 0.0, d, 0.0)], [[]]) for d in [0.004, 0.003]]
    assert Predictor({}, "mean", backend_model(), alike).task_base(0, "m.f") == pytest.approx(
        0.0035
    )
    assert Predictor({}, "p95", backend_model(), first_then_warm).task_base(0, "m.f") == 0.0129


def test_a_completion_that_handed_work_out_teaches_no_gap() -> None:
    # Task 0 readied 1 and 2 and handed 2 out to worker b: its worker's second until task
    # 1 held the hand-out, which the simulator plays itself.
    run = run_of([("a", 0.0, 1.0, 0.0), ("a", 2.0, 3.0, 0.0), ("b", 2.5, 3.0, 0.0)], [[], [0], [0]])
    model = backend_model()
    assert Predictor({}, "mean", model, [run]).task_gap(0, "m.f") == model.gap_s


def test_a_hand_out_is_learned_without_the_invoke_request_the_simulator_charges() -> None:
    stats = BackendStats(handout_warm=Summary.of([0.06, 0.06]))
    platform = Platform(2.0, 60.0, {}, invoke_latency_s=0.05)
    model = BackendModel.learn("gateway", stats, "mean", platform, 2)
    assert model.handout_warm_s == pytest.approx(0.01) and model.invoke_s == 0.05
