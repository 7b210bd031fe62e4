"""Failures, retries and time limits, on every backend."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from typing import Any

import pytest
from signals import count, mark, wait_for

import shoal
from shoal.errors import RunTimeout, WorkerLost


class Oops(Exception):
    pass


@shoal.task
def inc(x: int) -> int:
    return x + 1


@shoal.task
def fail(x: Any) -> Any:
    raise Oops(f"bad input {x!r}")


@shoal.task
def fail_root() -> Any:
    raise KeyError("no such key")


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_failure_at_the_root_raises_the_tasks_own_exception(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        inc(fail_root()).compute(**engine)
    text = _formatted(info.value)
    assert "fail_root" in text and "no such key" in text
    summary = shoal.last_run()
    assert summary is not None and not summary.ok


def test_failure_in_the_middle(engine: dict[str, Any]) -> None:
    with pytest.raises(Oops) as info:
        inc(inc(fail(inc(1)))).compute(**engine)
    text = _formatted(info.value)
    assert "in fail" in text and "bad input 2" in text
    assert "[shoal] task fail-1 failed" in text


def test_failure_at_the_sink(engine: dict[str, Any]) -> None:
    with pytest.raises(Oops, match="bad input 3"):
        fail(inc(inc(1))).compute(**engine)


def test_failure_in_one_branch_does_not_wait_for_the_others(
    engine: dict[str, Any], flags: Path
) -> None:
    release = flags / "release"

    @shoal.task
    def slow() -> int:
        wait_for(release, timeout=60)
        return 1

    try:
        with pytest.raises(Oops):
            shoal.compute(inc(slow()), fail(1), **engine)
        assert not release.exists()  # compute() returned while `slow` was still running
    finally:
        release.touch()


def test_retries_that_succeed_on_the_third_attempt(engine: dict[str, Any], flags: Path) -> None:
    attempts = flags / "attempts"

    @shoal.task(retries=2, retry_delay=0.001)
    def flaky() -> str:
        mark(attempts)
        if count(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    assert flaky().compute(**engine) == "ok"
    assert count(attempts) == 3
    assert shoal.last_run().retries == 2  # type: ignore[union-attr]


def test_every_failed_attempt_is_on_record(engine: dict[str, Any], flags: Path) -> None:
    """Each attempt's error, traceback and what it printed, in last_run().errors."""
    attempts = flags / "attempts"

    @shoal.task(retries=1, retry_delay=0.001)
    def loud() -> None:
        mark(attempts)
        print(f"working on attempt {count(attempts)}")
        raise Oops(f"attempt {count(attempts)}")

    with pytest.raises(Oops, match="attempt 2"):
        loud().compute(**engine)
    summary = shoal.last_run()
    assert summary is not None
    assert [(e.name, e.attempt, e.error) for e in summary.errors] == [
        ("loud-0", 1, "Oops: attempt 1"),
        ("loud-0", 2, "Oops: attempt 2"),
    ]
    for n, error in enumerate(summary.errors, 1):
        assert ", in loud\n" in error.traceback and f"Oops: attempt {n}" in error.traceback
        assert error.output == f"working on attempt {n}\n"


def test_retries_exhausted_raise_the_last_error(engine: dict[str, Any], flags: Path) -> None:
    attempts = flags / "attempts"

    @shoal.task(retries=2, retry_delay=0.001)
    def always() -> None:
        mark(attempts)
        raise Oops(f"attempt {count(attempts)}")

    with pytest.raises(Oops, match="attempt 3") as info:
        always().compute(**engine)
    assert count(attempts) == 3
    assert "after 3 attempt(s)" in _formatted(info.value)


def test_timeout(engine: dict[str, Any], flags: Path) -> None:
    release = flags / "release"

    @shoal.task
    def stuck() -> int:
        wait_for(release, timeout=60)
        return 1

    try:
        with pytest.raises(RunTimeout, match="did not finish within 0.2 s"):
            stuck().compute(timeout=0.2, **engine)
    finally:
        release.touch()


def test_unknown_compute_option_is_an_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        inc(1).compute(colour="blue")  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_bad_timeout_is_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        inc(1).compute(timeout=bad)


def test_unknown_storage_and_workers_urls_name_the_url() -> None:
    with pytest.raises(shoal.ConfigError, match="'nosuch://x'"):
        inc(1).compute(storage="nosuch://x")
    with pytest.raises(shoal.ConfigError, match="'carrier-pigeon'"):
        inc(1).compute(workers="carrier-pigeon")


def test_a_worker_crash_outside_user_code_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.stores.memory import MemoryStore

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("store exploded")

    monkeypatch.setattr(MemoryStore, "complete_tasks", broken)
    with pytest.raises(WorkerLost, match="store exploded"):
        inc(1).compute(progress=False)


def test_an_output_that_cannot_be_stored_fails_its_task(engine: dict[str, Any]) -> None:
    @shoal.task
    def locked() -> Any:
        return threading.Lock()

    if engine["storage"].startswith("memory"):  # passed by reference: nothing to store
        assert isinstance(locked().compute(**engine), type(threading.Lock()))
        return
    with pytest.raises(TypeError, match="lock") as info:
        locked().compute(**engine)
    assert "the output of task locked-0 cannot be stored" in _formatted(info.value)
