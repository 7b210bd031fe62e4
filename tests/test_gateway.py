"""``shoal gateway`` as a FaaS platform, with real worker processes: warm and cold starts,
keep-warm, the concurrency cap, pre-warming, sizes, dead workers, signatures and tokens,
and user code that the workers do not have."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import leftover_keys
from servers import free_port, gateway
from signals import wait_for

import shoal
from shoal.backends.gateway import GatewayWorkers
from shoal.gateway.limits import Limiter
from shoal.gateway.private import PrivateGateway


@shoal.task
def inc(x: int) -> int:
    return x + 1


@shoal.task
def add(a: Any, b: Any) -> Any:
    return a + b


def _http(url: str) -> str:
    return url.removeprefix("gateway+")


def _info(url: str, **headers: str) -> dict[str, Any]:
    reply = httpx.get(_http(url) + "/info", headers=headers)
    reply.raise_for_status()
    info: dict[str, Any] = reply.json()
    return info


def _idle(url: str) -> int:
    return sum(pool.get("idle", 0) for pool in _info(url)["pools"].values())


@pytest.fixture
def own_gateway(request: pytest.FixtureRequest, shared_secret: str) -> Iterator[str]:
    """A gateway of the test's own, with the arguments of ``@pytest.mark.gateway_args``."""
    marker = request.node.get_closest_marker("gateway_args")
    with gateway(*(marker.args if marker else ())) as url:
        yield url


async def _prewarm_one_more(url: str) -> int:
    workers = GatewayWorkers(url)
    try:
        return await workers.prewarm(cpus=1, memory_mb=2048, count=1)
    finally:
        await workers.close()


def _run(node: shoal.Node, redis_url: str, workers: str) -> Any:
    return node.compute(storage=redis_url, workers=workers, progress=False)


# --------------------------------------------------------------------------- starts


def test_a_first_run_starts_cold_and_the_next_one_warm(redis_url: str, own_gateway: str) -> None:
    assert _run(add(inc(1), inc(2)), redis_url, own_gateway) == 5
    first = shoal.last_run()
    assert first is not None and first.workers >= 1 and first.cold_starts == first.workers
    assert first.cold_start_s > 0  # each start reports how long it took
    assert _run(add(inc(1), inc(2)), redis_url, own_gateway) == 5
    second = shoal.last_run()
    assert second is not None and second.workers >= 1 and second.cold_starts == 0
    assert second.cold_start_s == 0
    assert _info(own_gateway)["started"]["warm"] >= second.workers


def test_a_warm_run_on_this_machine_teaches_the_cpu_each_worker_costs_it(
    redis_url: str, own_gateway: str, tmp_path: Path
) -> None:
    history = str(tmp_path / "h.db")

    def taught(planner: str) -> int:
        add(inc(1), inc(2)).compute(
            storage=redis_url, workers=own_gateway, progress=False, history=history,
            planner=planner,
        )  # fmt: skip
        return shoal.history(history).backend_stats("gateway").worker_cpu.n

    # The first runs no plan (its workers are not a plan's), the second starts its plan's
    # size cold (a Python start is no worker's loop): neither teaches. The third does,
    # warm; on a loaded machine it may still start a worker cold (the one before not yet
    # back in its pool) or miss a late worker's records, and teach nothing: a few tries.
    assert taught("none") == 0 and taught("uniform") == 0
    assert any(taught("uniform") for _ in range(5))
    worker_cpu = shoal.history(history).backend_stats("gateway").worker_cpu
    assert worker_cpu.n == 1 and worker_cpu.total > 0
    add(inc(1), inc(2)).compute(storage="memory://", workers="local", history=history)
    assert shoal.history(history).backend_stats("local").worker_cpu.n == 0  # tasks' CPU unknown


@pytest.mark.gateway_args("--keep-warm", "0.2")
def test_idle_workers_retire_after_the_keep_warm_period(redis_url: str, own_gateway: str) -> None:
    assert _run(inc(1), redis_url, own_gateway) == 2
    deadline = time.monotonic() + 20
    while _idle(own_gateway) or _info(own_gateway)["pools"]:  # the gateway's own state
        assert time.monotonic() < deadline, _info(own_gateway)
        time.sleep(0.05)
    assert _run(inc(1), redis_url, own_gateway) == 2
    summary = shoal.last_run()
    assert summary is not None and summary.cold_starts == summary.workers >= 1


@pytest.mark.gateway_args("--keep-warm", "600")
def test_prewarmed_workers_take_the_first_run_warm(redis_url: str, own_gateway: str) -> None:
    reply = httpx.post(_http(own_gateway) + "/prewarm", params={"count": 1})
    assert reply.status_code == 202 and reply.json() == {"started": 1}
    assert asyncio.run(_prewarm_one_more(own_gateway)) == 1  # the client's way to ask
    assert _idle(own_gateway) == 2
    assert _run(add(inc(1), inc(2)), redis_url, own_gateway) == 5
    summary = shoal.last_run()
    assert summary is not None and summary.workers >= 1 and summary.cold_starts == 0


@pytest.mark.gateway_args("--keep-warm", "600")
def test_a_prewarm_asked_for_later_starts_its_worker_then(own_gateway: str) -> None:
    asked = time.monotonic()
    reply = httpx.post(_http(own_gateway) + "/prewarm", params={"count": 1, "after_s": 0.5})
    assert reply.status_code == 202 and reply.json() == {"started": 1}  # asked for
    deadline = asked + 20
    while not _idle(own_gateway):
        assert time.monotonic() < deadline, _info(own_gateway)
        time.sleep(0.02)
    assert time.monotonic() - asked >= 0.5  # not before its time


@pytest.mark.gateway_args("--max-workers", "2")
def test_the_concurrency_cap_holds(redis_url: str, own_gateway: str, flags: Path) -> None:
    """A tree whose forks hand work out until four workers want to run at once, on a
    gateway that lets two: never more than two tasks run at once, and two do."""
    cap = 2
    running = flags / "running"  # a file per task while it runs
    running.mkdir()

    @shoal.task
    def fork(parent: int, i: int) -> int:
        return i

    @shoal.task
    def hold(parent: int, i: int) -> int:
        """Run for a while (1.5 s at most, less once more than ``cap`` tasks run at once);
        the most tasks it saw running at once, itself included."""
        me = running / f"{parent}-{i}-{os.getpid()}"
        me.touch()
        most, until = 0, time.monotonic() + 1.5
        while most <= cap and time.monotonic() < until:
            most = max(most, len(os.listdir(running)))
            time.sleep(0.01)
        # A last look, its own file still there: of tasks that all overlap, the one whose
        # last look comes first sees every one of them, so no overlap goes unseen.
        most = max(most, len(os.listdir(running)))
        me.unlink()
        return most

    assert _info(own_gateway)["parallelism"] == cap
    # The client sends the roots in at most `cap` invocations; each fork readies two
    # children and its worker hands one out: four invocations, of which two may run.
    # (Sharing off: with it, a worker hands out only to free slots, never past the cap.)
    root = fork(0, 0)
    leaves = [hold(parent, j) for parent in (fork(root, 1), fork(root, 2)) for j in range(2)]
    seen = shoal.compute(
        *leaves, storage=redis_url, workers=own_gateway, progress=False,
        optimizations=["invoke-tree"],
    )  # fmt: skip
    summary = shoal.last_run()
    assert summary is not None and summary.workers == 2 * cap  # more than the cap asked for
    assert max(seen) == cap, seen  # never more than the cap at once, and the cap reached


def test_a_1024_leaf_reduction_runs_on_about_as_many_workers_as_cores(
    redis_url: str, gateway_url: str
) -> None:
    xs = [inc(i) for i in range(1024)]
    while len(xs) > 1:
        xs = [add(xs[i], xs[i + 1]) for i in range(0, len(xs), 2)]
    assert _run(xs[0], redis_url, gateway_url) == sum(range(1, 1025))
    summary = shoal.last_run()
    parallelism = _info(gateway_url)["parallelism"]
    assert summary is not None and 1 <= summary.workers <= 2 * parallelism


# --------------------------------------------------------------------------- sizes


def test_a_task_beyond_its_memory_size_fails_with_memory_error(
    redis_url: str, gateway_url: str
) -> None:
    @shoal.task(memory_mb=256)
    def hog() -> int:
        return len(bytearray(1024 * 1024 * 1024))  # 1 GB on a 256 MB worker

    with pytest.raises(MemoryError) as caught:
        _run(hog(), redis_url, gateway_url)
    assert any("hog" in note for note in caught.value.__notes__)  # the task is named


def _cpu_share() -> float:
    """The CPUs this process may use: its cgroup's CPU quota where it has one (v1 or v2),
    else the CPUs it is pinned to."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            group = Path("/sys/fs/cgroup/cpu") / path.lstrip("/")
            quota = int((group / "cpu.cfs_quota_us").read_text())
            if quota > 0:
                return quota / int((group / "cpu.cfs_period_us").read_text())
        elif controllers == "":
            limit = Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max"
            quota_s, period = limit.read_text().split() if limit.exists() else ("max", "1")
            if quota_s != "max":
                return int(quota_s) / int(period)
    return float(len(os.sched_getaffinity(0)))


def test_a_worker_gets_the_cpu_share_of_its_size(redis_url: str, gateway_url: str) -> None:
    """A CPU quota in its cgroup where the host allows it (fractions included), else as
    many CPUs pinned as its size asks."""

    @shoal.task(cpus=1)
    def one() -> float:
        return _cpu_share()

    @shoal.task(cpus=2)
    def two() -> float:
        return _cpu_share()

    @shoal.task(cpus=0.5)
    def half() -> float:
        return _cpu_share()

    got = tuple(_run(task(), redis_url, gateway_url) for task in (one, two, half))
    cgroups = _info(gateway_url)["cgroups"]
    available = len(os.sched_getaffinity(0))
    assert got == ((1.0, 2.0, 0.5) if cgroups else (1.0, min(2, available), 1.0))


def test_a_half_cpu_worker_runs_at_half_speed(redis_url: str, gateway_url: str) -> None:
    """The quota is real: CPU-bound work takes about twice as long at half a CPU."""
    if not _info(gateway_url)["cgroups"]:
        pytest.skip("no writable cgroup here: a CPU share is pinned whole CPUs")

    def spin() -> float:
        started, end = time.perf_counter(), time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        return time.perf_counter() - started

    full, half = shoal.task(cpus=1)(spin), shoal.task(cpus=0.5)(spin)
    whole_s = _run(full(), redis_url, gateway_url)
    half_s = _run(half(), redis_url, gateway_url)
    assert 1.5 < half_s / whole_s < 3.0, (whole_s, half_s)


# --------------------------------------------------------------------------- faults


def test_a_tampered_payload_is_refused(redis_url: str, gateway_url: str) -> None:
    from shoal.backends import Invocation
    from shoal.codec import Codec
    from shoal.security import Signer

    payload = Codec(Signer.from_env()).dump_invocation(Invocation("r", (0,), 1, None, redis_url))
    for body in (payload[:-1] + bytes([payload[-1] ^ 1]), payload[16:], b"", b"junk"):
        reply = httpx.post(_http(gateway_url) + "/invoke", content=body)
        assert reply.status_code == 403
        assert "signature does not match" in reply.json()["error"]


def test_a_gateway_refuses_to_listen_beyond_loopback_without_a_token(
    shared_secret: str,
) -> None:
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "gateway", "--host", "0.0.0.0", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHOAL_GATEWAY_TOKEN": ""},
    )
    assert done.returncode != 0
    assert "without a token" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.gateway_args("--token", "let-me-in")
def test_a_gateway_with_a_token_wants_it(redis_url: str, own_gateway: str) -> None:
    assert httpx.get(_http(own_gateway) + "/info").status_code == 401
    assert _info(own_gateway, authorization="Bearer let-me-in")["parallelism"] >= 1
    with pytest.raises(shoal.ConfigError, match="wants a token"):
        _run(inc(1), redis_url, own_gateway)
    assert _run(inc(1), redis_url, own_gateway + "?token=let-me-in") == 2


def test_a_private_gateway_serves_the_processs_runs_until_one_fails(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SHOAL_SECRET, the process makes up a secret and hands it to its gateway,
    which it keeps for its next runs; a run that fails stops it (a task may be stuck)."""
    monkeypatch.delenv("SHOAL_SECRET")
    before = _children()
    assert _run(add(inc(1), inc(2)), redis_url, "gateway") == 5
    summary = shoal.last_run()
    assert summary is not None and summary.ok and summary.workers >= 1
    gateway = _children() - before
    assert len(gateway) == 1  # kept, idle
    assert _run(add(inc(3), inc(4)), redis_url, "gateway") == 9
    assert _children() - before == gateway  # the same one served the second run
    with pytest.raises(ZeroDivisionError):
        _run(divide(1, 0), redis_url, "gateway")
    assert _children() == before  # the gateway and its workers are gone


@shoal.task
def divide(a: int, b: int) -> float:
    return a / b


KEEPING_CLIENT = """
import os, sys
from pathlib import Path
import shoal

@shoal.task
def inc(x):
    return x + 1

for i in range(3):
    shoal.compute(inc(i), storage=sys.argv[1], workers="gateway", progress=False)
def parent(entry):
    return entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]

me = str(os.getpid())
children = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and parent(p) == me]
print(" ".join(children), flush=True)
"""


def _client(
    code: str, redis_url: str, folder: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a client script in ``folder`` (its own secret: none in its
    environment), with ``env`` added to its environment."""
    script = folder / "client.py"
    script.write_text(code)
    environ = {k: v for k, v in os.environ.items() if k != "SHOAL_SECRET"} | env
    return subprocess.run([sys.executable, str(script), redis_url], env=environ, cwd=folder,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_private_gateway_stops_in_order_when_its_process_exits(
    redis_url: str, tmp_path: Path
) -> None:
    done = _client(KEEPING_CLIENT, redis_url, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    kept = [int(pid) for pid in done.stdout.split()]
    assert len(kept) == 1  # one gateway served the three runs
    assert not Path(f"/proc/{kept[0]}").exists()  # gone, before its client's exit ended


PIPED_CLIENT = """
import sys
import shoal
from shoal.gateway import private

@shoal.task
def inc(x):
    return x + 1

@shoal.task
def total(*xs):
    return sum(xs)

options = {"storage": sys.argv[1], "workers": "gateway", "progress": False}
first = shoal.compute(inc(1), inc(2), **options)
# no HTTP client, and no worker loop (its workers are the gateway's)
lean = not {"httpx", "h11", "shoal.protocol.worker"} & set(sys.modules)
root = inc(0)
spread = shoal.compute(total(*[inc(root) for _ in range(8)]), **options)[0]
import httpx
info = httpx.get(private._kept.base + "/info").json()
print(repr((first, lean, spread, sum(info["started"].values()))))
"""


def test_a_private_gateway_takes_its_clients_invocations_on_its_stdin(
    redis_url: str, tmp_path: Path
) -> None:
    """The client hands its private gateway invocations through its stdin: its first run
    imports no HTTP client (nor the worker loop). The gateway's HTTP server, started later,
    takes the workers' hand-outs (the second run's root invocation is the client's only
    one) and requests."""
    done = _client(PIPED_CLIENT, redis_url, tmp_path)
    assert done.returncode == 0, done.stderr
    first, lean, spread, started = eval(done.stdout)
    assert first == (2, 3) and lean
    assert spread == 16 and started >= 4  # 2 for the first run, 1 + hand-outs for the second


@shoal.task
def meet(_: int, i: int, folder: str) -> int:
    """Children 1 to 7 leave a mark each; child 0, which its producer's worker keeps,
    waits for them all."""
    if i:
        (Path(folder) / str(i)).touch()
        return 1
    return int(wait_for(*(Path(folder) / str(j) for j in range(1, 8)), timeout=20))


def test_a_worker_hands_out_before_it_runs_the_child_it_keeps(
    redis_url: str, tmp_path: Path
) -> None:
    """A task's code runs on its worker's event loop: invocations left to go out in the
    background would wait for the kept child to end, and so would their tasks."""
    root = inc(0)
    children = [meet(root, i, str(tmp_path)) for i in range(8)]
    with gateway("--max-workers", "8") as url:
        assert _run(count_all(*children), redis_url, url) == 8


@shoal.task
def count_all(*xs: int) -> int:
    return sum(xs)


def test_handing_an_invocation_to_a_private_gateway_that_died_names_it() -> None:
    """Its stdin is a broken pipe then: the run gets WorkerLost naming the gateway, not a
    BrokenPipeError (nor a hang)."""
    private = PrivateGateway(secrets.token_hex(32))
    try:
        private.process.kill()
        private.process.wait(timeout=10)
        with pytest.raises(shoal.WorkerLost, match=f"private gateway .pid {private.process.pid}"):
            private.send(b"x" * (1 << 17))  # more than a pipe holds: the write must fail
    finally:
        private.stop()


ISOLATED_CLIENT = """
import os, sys
from pathlib import Path
import shoal

@shoal.task
def where():
    template = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\\0")
    return [part.decode() for part in template], sys.flags.isolated, sys.path

print(repr(shoal.compute(where(), storage=sys.argv[1], workers="gateway", progress=False)[0]))
"""


def test_a_private_gateway_forks_its_template_and_its_workers_path_stays_isolated(
    redis_url: str, tmp_path: Path
) -> None:
    done = _client(ISOLATED_CLIENT, redis_url, tmp_path, PYTHONPATH=str(tmp_path / "extra"))
    assert done.returncode == 0, done.stderr
    template, isolated, path = eval(done.stdout)
    # The worker's parent is the gateway's fork, not a new Python running the template.
    assert "shoal.gateway" in template and "--private" in template, template
    assert isolated == 1
    assert not any(entry.startswith(str(tmp_path)) for entry in path), path


def _children() -> set[int]:
    """Living child processes of this process (from /proc)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me and fields[0] != "Z":
                found.add(int(entry.name))
    return found


# --------------------------------------------------------------------------- user code


PROJECT = {
    "helpers.py": """
        class Box:
            def __init__(self, value):
                self.value = value

        def double(x):
            return 2 * x
    """,
    "pipeline.py": """
        import shoal
        from helpers import Box, double

        @shoal.task
        def boxed(x):
            return Box(double(x))

        @shoal.task
        def unbox(boxes):
            return sum(b.value for b in boxes)
    """,
    "main.py": """
        from pipeline import boxed, unbox

        print("total", unbox([boxed(i) for i in range(10)]).compute(progress=False))
    """,
}


@pytest.mark.parametrize("how", ["python", "shoal run"])
def test_user_code_travels_to_workers_that_do_not_have_it(
    how: str, redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    """A script calling tasks of a sibling module that use helpers of another: none of them
    is on the gateway workers' Python path."""
    for name, text in PROJECT.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "SHOAL_STORAGE": redis_url, "SHOAL_WORKERS": gateway_url}
    command = [sys.executable, "main.py"]
    if how == "shoal run":
        command = [sys.executable, "-m", "shoal", "run", "main.py"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "total 90" in done.stdout


def test_a_cold_worker_is_forked_from_the_template(redis_url: str, own_gateway: str) -> None:
    """A cold start is a fork of the gateway's template process, which imported the worker
    runtime once: no Python start, no imports."""

    @shoal.task
    def parent() -> str:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    assert "-m shoal.gateway.template" in _run(parent(), redis_url, own_gateway)
    summary = shoal.last_run()
    assert summary is not None and summary.cold_starts == 1


def test_a_forked_workers_collections_leave_the_templates_objects_alone(
    redis_url: str, own_gateway: str
) -> None:
    """The template's objects (its imports) are frozen before each fork: a worker's full
    collection walks none of them, so it writes to none of the pages it shares with the
    template (every one, before: each worker's private memory grew by ~7 MB)."""

    @shoal.task
    def collect() -> tuple[int, int, int]:
        import gc

        def private_kb() -> int:
            lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
            return sum(int(ln.split()[1]) for ln in lines if ln.startswith("Private_"))

        before = private_kb()
        gc.collect()
        return gc.get_freeze_count(), before, private_kb()

    frozen, before, after = _run(collect(), redis_url, own_gateway)
    assert frozen > 10_000  # the worker runtime's imports
    assert after - before < 2_000, (before, after)


def _shoal_cgroups(pid: int) -> set[Path]:
    """The cgroups of the gateway of process ``pid`` (others may run beside the tests)."""
    roots = [Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")]
    pattern = f"shoal-{pid}-*"
    return {p for root in roots if root.is_dir() for p in root.rglob(pattern) if p.is_dir()}


def test_a_gateway_leaves_no_cgroup_behind(redis_url: str, shared_secret: str) -> None:
    """Its workers' cgroups go with them, and with it."""
    with gateway() as url:
        info = _info(url)
        if not info["cgroups"]:
            pytest.skip("no writable cgroup here")
        assert _run(inc(1), redis_url, url) == 2
        assert _shoal_cgroups(info["pid"])  # its worker's
    assert not _shoal_cgroups(info["pid"])


def test_a_gateway_keeps_cgroup_moves_quick_only_while_it_waits_for_a_fork() -> None:
    """While it waits for its template to fork a worker, a thread moves the gateway into
    its own cgroup, again and again (the kernel's next move is then quick); not after."""
    limiter = Limiter.detect()
    if limiter is None:
        pytest.skip("no writable cgroup here")
    where = Path("/proc/self/cgroup").read_text()
    with limiter.attach_warm():
        warming = [t for t in threading.enumerate() if t.name == "shoal-cgroup-warm"]
        assert len(warming) == 1
    warming[0].join(timeout=5)
    assert not warming[0].is_alive()
    assert Path("/proc/self/cgroup").read_text() == where  # moved where it was


def test_a_worker_imports_ahead_what_its_first_hand_out_needs() -> None:
    import importlib.util

    from shoal.gateway.process import PRELOAD_WHEN_IDLE, idle_import

    # Each still names a module (a private one that moved would silently preload nothing).
    assert all(importlib.util.find_spec(name) is not None for name in PRELOAD_WHEN_IDLE)
    idle_import("shoal_no_such_module")  # no error: a preload is best effort


def test_a_process_asks_a_gateway_its_cap_once(
    redis_url: str, gateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    request = GatewayWorkers._request

    async def counting(self: GatewayWorkers, method: str, path: str, *args: Any, **kw: Any) -> Any:
        asked.append(path)
        return await request(self, method, path, *args, **kw)

    monkeypatch.setattr(GatewayWorkers, "_request", counting)
    assert _run(inc(1), redis_url, gateway_url) == 2
    assert _run(inc(2), redis_url, gateway_url) == 3
    assert asked.count("/info") <= 1  # the first run's, unless an earlier test asked already
    assert asked.count("/invoke") == 2


@shoal.task
def counted(i: int) -> dict[int, int]:
    sum(range(300_000))  # milliseconds of work: its worker's store steps go out one by one
    return {i: 1, -1: i}


@shoal.task
def merged(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {**a, **b, -1: a[-1] + b[-1]}


def test_a_worker_reads_back_no_output_it_stored_for_a_fan_in_it_then_runs(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    """A pairwise tree: a worker that stored an input of a fan-in (its sibling was not
    done yet) and then readies the fan-in itself has the input in memory still; only
    inputs that other workers made are read."""
    nodes = [counted(i) for i in range(16)]
    while len(nodes) > 1:
        nodes = [merged(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    history = str(tmp_path / "reads.db")
    out = nodes[0].compute(storage=redis_url, workers=gateway_url, history=history, progress=False)
    assert out[-1] == sum(range(16)) and len(out) == 17
    record = shoal.history(history).runs(limit=1)[0]
    tasks = {t.task: t for t in record.tasks}
    deps = record.deps
    for t in tasks.values():
        foreign = [d for d in deps[t.task] if tasks[d].worker != t.worker]
        assert bool(t.read_bytes) == bool(foreign), (t.name, t.worker, t.read_bytes, foreign)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two CPUs tell the workers apart")
def test_a_template_asked_for_workers_at_once_gives_each_its_own(shared_secret: str) -> None:
    """Spawns go to the template without waiting for each other's answers; each answer is
    still the worker of its own request (told apart here by their CPUs)."""
    from shoal.gateway.forkserver import ForkServer
    from shoal.gateway.process import read_frame_async

    cpus = sorted(os.sched_getaffinity(0))[:2]

    async def main() -> tuple[list[set[int]], float]:
        forks = ForkServer()
        await forks.start()
        template, control = forks._template  # type: ignore[misc]
        try:
            os.kill(template.pid, signal.SIGSTOP)  # it answers nothing meanwhile

            async def ask(cpus: list[int]) -> int:
                """Spawn on each of ``cpus``, let the requests go: the template's unread."""
                spawns.extend(asyncio.ensure_future(forks.spawn(256, [c], f"w{c}")) for c in cpus)
                await asyncio.sleep(0)
                unread = fcntl.ioctl(control.fileno(), termios.TIOCOUTQ, b"\0" * 4)
                return int.from_bytes(unread, sys.byteorder)

            spawns: list[Any] = []
            one = await ask(cpus[:1])
            asked = await ask(cpus[1:] + cpus) / one  # requests asked before any answer
            os.kill(template.pid, signal.SIGCONT)
            workers = await asyncio.gather(*spawns)
            for w in workers:  # each says it is ready once it applied its size
                assert (await read_frame_async(w.stdout))[0] == {"ready": True}
            pinned = [os.sched_getaffinity(w.pid) for w in workers]
            for w in workers:
                w.kill()
            assert sorted(await asyncio.gather(*(w.wait() for w in workers))) == [-9] * 4
            for w in workers:
                w.stdin.close()
            return pinned, asked
        finally:
            await forks.close()

    pinned, asked = asyncio.run(main())
    assert pinned == [{cpu} for cpu in cpus + cpus]
    assert asked > 3.5  # all four asked before the template answered any


DEAD_TEMPLATE_CLIENT = """
import sys, shoal

@shoal.task
def inc(x):
    return x + 1

try:
    inc(1).compute(storage=sys.argv[1], workers=sys.argv[2], progress=False)
except shoal.WorkerLost as exc:
    print("lost:", exc)
"""


def _children_named(pid: int, name: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            comm, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
            if comm == name and int(rest.split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_a_gateway_whose_template_died_tells_the_run_that_a_worker_could_not_start(
    redis_url: str, shared_secret: str, tmp_path: Path
) -> None:
    """Every cold start asks the template; without it, a spawn fails at once and the run
    hears so (its invocation is not left waiting for an answer that never comes)."""
    with gateway("--max-workers", "2") as url:
        pid = httpx.get(_http(url) + "/info").json()["pid"]
        (template,) = _children_named(pid, "shoal-template")
        os.kill(template, signal.SIGKILL)
        script = tmp_path / "client.py"
        script.write_text(DEAD_TEMPLATE_CLIENT)
        done = subprocess.run([sys.executable, str(script), redis_url, url], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lost: task inc-0 was lost with worker gw"), done.stdout
    assert leftover_keys(redis_url) == []


def test_a_client_learns_a_gateways_new_cap_from_its_next_run(redis_url: str) -> None:
    """A client process asks a gateway's cap once; a gateway restarted at the same
    address with another cap (here: the cap the client cached is made stale) tells it in
    the answer to each invocation, and the next run splits its roots by the new one."""
    from shoal.backends import gateway as backend

    with gateway("--max-workers", "1") as url:
        backend._caps[url.removeprefix("gateway+")] = 2  # an earlier gateway's, at this port
        options = {"storage": redis_url, "workers": url, "progress": False}
        workers = []
        for _ in range(2):
            assert add(add(inc(1), inc(2)), add(inc(3), inc(4))).compute(**options) == 14
            summary = shoal.last_run()
            assert summary is not None
            workers.append(summary.workers)
    assert workers == [2, 1]  # two root groups by the stale cap, then one
