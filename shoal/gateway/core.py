"""The gateway's core: pools of worker processes per size and environment, with a
concurrency cap and keep-warm, fed invocations by its fronts (the HTTP API of
:mod:`.server`; a private gateway's stdin, :mod:`.private`).

An invocation runs on a warm worker process of its size, or a cold one, or waits for the
concurrency cap (:mod:`.policy`). An environment's workers are forked from a template
process of their own, started on that environment's interpreter at its first cold start.
Idle workers retire after the keep-warm period. A worker process that dies while it runs
an invocation is reported to that run's event stream, so the run fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import Invocation, Size
from ..codec import Codec
from ..envs import key as requirements_key
from ..envs import normalise
from ..envs.build import Environment, Environments
from ..events import EventKind, event
from ..heartbeat import ABANDONED_EXIT
from ..security import Signer
from ..stores import Store, open_store
from .forkserver import ForkedWorker, ForkServer
from .limits import Limiter
from .policy import Place, ProcessInfo, cpu_set, expired, place
from .private import frames
from .process import read_frame_async, write_frame_async
from .template import Template, launch_template

log = logging.getLogger(__name__)

DEFAULT_PORT = 8471
DEFAULT_KEEP_WARM_S = 60.0
#: Lambda sells a vCPU per this many MB of memory (its documented ratio).
LAMBDA_MB_PER_CPU = 1769
#: How often the queue is looked at for leases to renew when it was empty.
QUEUED_RENEW_S = 0.25
#: How often the blob stores of the runs served are swept of runs their store no longer
#: has (expired keys included): blobs then expire like keys, with no client left to sweep.
SWEEP_ENV = "SHOAL_BLOB_SWEEP_S"
DEFAULT_SWEEP_S = 300.0


@dataclass(slots=True)
class _Pending:
    payload: bytes
    invocation: Invocation
    received: float  # wall clock: the worker tells how long its start took


@dataclass(eq=False)
class _Worker:
    info: ProcessInfo
    name: str
    proc: asyncio.subprocess.Process | ForkedWorker | None = None
    current: _Pending | None = None


class Gateway:
    """Pools of worker processes per size, with a concurrency cap and keep-warm."""

    def __init__(
        self,
        signer: Signer,
        *,
        max_workers: int | None = None,
        keep_warm_s: float = DEFAULT_KEEP_WARM_S,
        fork: bool = True,
        cgroups: bool = True,
        lambda_cpu: bool = False,
        template: Template | None = None,
        invoke_latency_s: float = 0.0,
        cache_dir: str | Path | None = None,
        requirements: Sequence[str] = (),
        exit_with_stdin: bool = False,
    ) -> None:
        self.codec = Codec(signer)
        self.signer = signer
        self.cap = max_workers or os.cpu_count() or 1
        self.limit = 2 * self.cap  # processes alive at most, idle ones included
        self.keep_warm_s = keep_warm_s
        self.workers: dict[int, _Worker] = {}
        self.queue: deque[_Pending] = deque()
        self.started = {"cold": 0, "warm": 0}
        self._ids = itertools.count(1)
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._next_cpu = 0
        self._lock = asyncio.Lock()
        self._stores: dict[str, Store] = {}
        self._served: set[str] = set()  # storage URLs of the invocations received
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.closing = False
        self.fork = fork  # workers are forked from a template process (else each starts anew)
        self._template = template  # one launched already (see serve)
        self._forks: ForkServer | None = None
        self.cgroups = cgroups  # sizes enforced by cgroups where the host has them
        self._limiter: Limiter | None = None
        self.lambda_cpu = lambda_cpu  # a worker's CPU share follows its memory, as on Lambda
        self.invoke_latency_s = invoke_latency_s  # each invocation request takes this long
        self.environments = Environments(cache_dir)
        self.ahead = normalise(requirements)  # an environment built at start-up
        self._envs: dict[str, Environment] = {}  # ready, by requirement-set key
        self._building: dict[str, asyncio.Task[Environment]] = {}
        self._env_forks: dict[str, ForkServer] = {}  # a template per environment
        self.exit_with_stdin = exit_with_stdin  # a private gateway: see _serve_stdin
        self._stdin_watch: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- requests
    async def submit(self, payload: bytes) -> Invocation:
        """Queue a signed invocation; :class:`BadSignature` if it is not ours. Placed in
        the background: the invoker is answered at once, not after a cold start (as an
        asynchronous FaaS invocation is)."""
        invocation = self.codec.load_invocation(payload)
        self._served.add(invocation.storage)
        pending = _Pending(payload, invocation, time.time())
        env = requirements_key(invocation.requirements)
        if env and env not in self._envs:  # its client made it ready; else a restart or
            # another gateway's run: it waits for the (one) build, not a worker
            self._keep(asyncio.create_task(self._queue_when_ready(pending)))
            return invocation
        self.queue.append(pending)
        self._keep(asyncio.create_task(self._dispatch()))
        return invocation

    async def environment(self, requirements: Sequence[str]) -> tuple[Environment, bool]:
        """The environment of ``requirements``, built now if it is missing (once, however
        many ask meanwhile), and whether this call waited for a build.
        :class:`~shoal.EnvironmentBuildError` with uv's output when it cannot be built."""
        reqs = normalise(requirements)
        env_key = requirements_key(reqs)
        ready = self._envs.get(env_key)
        if ready is not None:
            return ready, False
        building = self._building.get(env_key)
        if building is None:
            building = asyncio.create_task(asyncio.to_thread(self._ensure, reqs))
            self._building[env_key] = building
            building.add_done_callback(lambda _: self._building.pop(env_key, None))
        env = await asyncio.shield(building)
        if env_key not in self._envs:
            self._envs[env_key] = env
            if self._forks is not None:  # its template imports meanwhile: a first cold
                await self._forks_of(env_key)  # start then costs a fork, not a Python start
        return env, True

    def _ensure(self, requirements: tuple[str, ...]) -> Environment:
        env, _ = self.environments.ensure(requirements)
        return env

    async def _queue_when_ready(self, pending: _Pending) -> None:
        inv = pending.invocation
        try:
            await self.environment(inv.requirements)
        except Exception as exc:
            await self._report(inv, "gateway", f"{type(exc).__name__}: {exc}")
            return
        self.queue.append(pending)
        await self._dispatch()

    async def prewarm(self, size: Size, count: int, after_s: float = 0.0) -> int:
        """Start up to ``count`` idle workers of ``size`` (as room allows), ``after_s``
        seconds from now (a plan's timing: see shoal.optimizations.prewarm); how many
        (asked for, when later)."""
        if after_s > 0:
            self._keep(asyncio.create_task(self._prewarm_later(size, count, after_s)))
            return count
        started = 0
        async with self._lock:
            for _ in range(count):
                if len(self.workers) >= self.limit:
                    break
                await self._spawn(self._register(size, "", busy=False))
                started += 1
        return started

    async def _prewarm_later(self, size: Size, count: int, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await self.prewarm(size, count)

    def info(self) -> dict[str, Any]:
        pools: dict[str, dict[str, int]] = {}
        for w in self.workers.values():
            label = f"{w.info.size.cpus:g}cpu-{w.info.size.memory_mb}mb"
            pool = pools.setdefault(label + (f"-{w.info.env}" if w.info.env else ""), {})
            key = "busy" if w.info.busy else "idle"
            pool[key] = pool.get(key, 0) + 1
        idle: dict[Size, int] = {}
        for w in self.workers.values():
            if not w.info.busy and not w.info.env:  # what the planners can count on
                idle[w.info.size] = idle.get(w.info.size, 0) + 1
        return {
            "parallelism": self.cap,
            "cpus": len(self._cpus) or os.cpu_count() or 1,
            "idle": [[size.cpus, size.memory_mb, n] for size, n in idle.items()],
            "limit": self.limit,
            "keep_warm_s": self.keep_warm_s,
            "queued": len(self.queue),
            "pools": pools,
            "started": dict(self.started),
            # How sizes are enforced, and (like Lambda) whether the CPU follows memory.
            "cgroups": self._limiter is not None,
            "cpu_per_mb": 1 / LAMBDA_MB_PER_CPU if self.lambda_cpu else None,
            "invoke_latency_s": self.invoke_latency_s,
            "pid": os.getpid(),  # names its cgroups (shoal-PID-...)
            # Environments built by this process (the others were found in the cache).
            "environments": {
                "builds": self.environments.builds,
                "ready": sorted(self._envs),
                "cache_dir": str(self.environments.root),
            },
        }

    # ----------------------------------------------------------------- placing work
    async def _dispatch(self) -> None:
        async with self._lock:
            while self.queue:
                pending = self.queue[0]
                infos = [w.info for w in self.workers.values()]
                env = requirements_key(pending.invocation.requirements)
                placement = place(pending.invocation.size, infos, self.cap, self.limit, env)
                if placement.place is Place.WAIT:
                    return
                self.queue.popleft()
                if placement.retire is not None:
                    await self._retire(placement.retire)
                if placement.place is Place.WARM:
                    assert placement.process is not None
                    await self._assign(self.workers[placement.process], pending, False)
                else:  # started beside the next ones: the template forks them back to back
                    worker = self._register(pending.invocation.size, env)
                    self._keep(asyncio.create_task(self._start_cold(worker, pending)))

    async def _start_cold(self, worker: _Worker, pending: _Pending) -> None:
        try:
            await self._spawn(worker)
        except Exception as exc:  # no process: its run hears at once (it recovers or fails)
            self.workers.pop(worker.info.id, None)
            log.warning("could not start worker %s: %r", worker.name, exc)
            await self._report(pending.invocation, worker.name, f"{type(exc).__name__}: {exc}")
            await self._dispatch()  # its room goes to the next invocation
            return
        except BaseException:
            self.workers.pop(worker.info.id, None)
            raise
        await self._assign(worker, pending, True)

    async def _assign(self, worker: _Worker, pending: _Pending, cold: bool) -> None:
        worker.info.busy = True
        worker.current = pending
        self.started["cold" if cold else "warm"] += 1
        assert worker.proc is not None and worker.proc.stdin is not None
        header = {"received": pending.received, "dispatched": time.time(), "cold": cold}
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # its reader reports
            await write_frame_async(worker.proc.stdin, header, pending.payload)

    def _register(self, size: Size, env: str, busy: bool = True) -> _Worker:
        """A new worker's record, placed (busy) before its process starts."""
        wid = next(self._ids)
        name = f"gw{os.getpid()}-{wid}"  # unique over gateways sharing a run
        worker = _Worker(ProcessInfo(wid, size, busy, time.monotonic(), env), name)
        self.workers[wid] = worker
        return worker

    async def _spawn(self, worker: _Worker) -> None:
        """Start the process of ``worker`` (registered)."""
        size, env, name = worker.info.size, worker.info.env, worker.name
        share = self.cpus_of(size)
        # Pinned to whole CPUs, round-robin; a fraction of a CPU also gets a quota (see
        # shoal.gateway.limits: on a busy machine, pinning measured better than quotas).
        cpus = cpu_set(share, self._cpus, self._next_cpu) if self._cpus else []
        self._next_cpu += len(cpus)
        python = str(self._envs[env].python) if env else sys.executable
        forks = await self._forks_of(env) if self._forks is not None else None
        if forks is not None:  # a fork of the template: a cold start without imports
            warm = self._limiter.attach_warm() if self._limiter else contextlib.nullcontext()
            with warm:
                worker.proc = await forks.spawn(size.memory_mb, cpus, name)
                self._limit(worker, share)
            self._keep(asyncio.create_task(self._listen(worker)))
            return
        # -I: the worker's Python path holds installed packages only, as on a FaaS platform.
        worker.proc = await asyncio.create_subprocess_exec(
            python,
            "-I",
            "-m",
            "shoal.gateway.process",
            "--memory-mb",
            str(size.memory_mb),
            "--cpu-list",
            ",".join(map(str, cpus)),
            "--name",
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._limit(worker, share)
        self._keep(asyncio.create_task(self._listen(worker)))

    async def _forks_of(self, env: str) -> ForkServer | None:
        """The template that forks workers of environment ``env``: the gateway's own, or
        one on the environment's interpreter, started as the environment is made ready
        (else at its first cold start, which then pays a Python start and the runtime's
        imports)."""
        if not env:
            return self._forks
        forks = self._env_forks.get(env)
        if forks is None:
            forks = ForkServer(launch_template(str(self._envs[env].python)))
            try:
                await forks.start()
            except OSError as exc:
                log.warning("no template process for environment %s (%r)", env, exc)
                return None
            self._env_forks[env] = forks
        return forks

    def cpus_of(self, size: Size) -> float:
        """The CPU share of a worker of ``size``: as asked, or, like Lambda, by its memory."""
        return size.memory_mb / LAMBDA_MB_PER_CPU if self.lambda_cpu else size.cpus

    def _limit(self, worker: _Worker, cpus: float) -> None:
        """Put the worker in cgroups that enforce its size, where the host has them."""
        if self._limiter is None or worker.proc is None:
            return
        quota = None if float(cpus).is_integer() else cpus
        try:
            self._limiter.apply(worker.proc.pid, worker.name, quota, worker.info.size.memory_mb)
        except OSError as exc:
            log.warning("could not enforce the size of %s with cgroups: %r", worker.name, exc)

    async def _listen(self, worker: _Worker) -> None:
        """Follow one worker process: ready, each invocation done, and its end."""
        assert worker.proc is not None and worker.proc.stdout is not None
        try:
            while True:
                header, _ = await read_frame_async(worker.proc.stdout)
                if header.get("done"):
                    if header.get("error") and worker.current is not None:
                        await self._report(worker.current.invocation, worker.name, header["error"])
                    worker.info.busy = False
                    worker.info.idle_since = time.monotonic()
                    worker.current = None
                    await self._dispatch()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        returncode = await worker.proc.wait()
        if self._limiter is not None:
            self._limiter.release(worker.name)
        self.workers.pop(worker.info.id, None)
        if worker.current is not None:
            await self._report_death(worker, returncode)
        await self._dispatch()

    async def _report_death(self, worker: _Worker, returncode: int) -> None:
        pending = worker.current
        assert pending is not None and worker.proc is not None
        inv = pending.invocation
        if returncode == ABANDONED_EXIT:  # nobody waits for its task: nothing to report
            log.info("gateway worker process %s gave up a task of run %s", worker.name, inv.run_id)
            return
        how = (
            f"was killed by {signal.Signals(-returncode).name}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        error = (
            f"gateway worker process {worker.name} (pid {worker.proc.pid}, "
            f"{inv.size.cpus:g} cpu, {inv.size.memory_mb} MB) {how} while it ran tasks "
            f"{list(inv.tasks)[:10]} of run {inv.run_id}"
        )
        # Closing kills the workers still busy: their deaths are the shutdown's own doing.
        log.log(logging.DEBUG if self.closing else logging.WARNING, "%s", error)
        await self._report(inv, worker.name, error)

    async def _report(self, inv: Invocation, worker: str, error: str) -> None:
        """Tell ``inv``'s run that its worker failed outside the worker loop (the loop
        reports its own crashes): the client gives its tasks to a new worker or fails."""
        data = {"error": error, "invocation": inv.id}
        try:
            await self._store(inv.storage).emit(
                inv.run_id, [event(EventKind.WORKER_FAILED, worker, data=data)]
            )
        except Exception as exc:  # while closing, the run's end is the client's to tell
            log.log(
                logging.DEBUG if self.closing else logging.WARNING,
                "could not report the failure of %s to run %s: %r",
                worker,
                inv.run_id,
                exc,
            )

    def _store(self, url: str) -> Store:
        store = self._stores.get(url)
        if store is None:
            store = self._stores[url] = open_store(url, self.signer)
        return store

    async def _retire(self, wid: int) -> None:
        worker = self.workers.pop(wid, None)
        if worker is not None and worker.proc is not None and worker.proc.stdin is not None:
            worker.proc.stdin.close()  # end of input: the process exits by itself

    async def _keep_queued(self) -> None:
        """Renew the pending leases of queued invocations (:mod:`shoal.leases`): queued
        behind the cap, they are not lost. Should the gateway die, they expire, and their
        runs recover them."""
        while True:
            leases = [p.invocation.lease_s for p in self.queue if p.invocation.lease_s > 0]
            await asyncio.sleep(min(leases, default=4 * QUEUED_RENEW_S) / 4)
            by_run: dict[tuple[str, str], list[Invocation]] = {}
            for pending in list(self.queue):
                inv = pending.invocation
                if inv.id:
                    by_run.setdefault((inv.storage, inv.run_id), []).append(inv)
            for (url, run_id), invs in by_run.items():
                try:
                    held = dict.fromkeys(i.id for i in invs)
                    await self._store(url).renew(run_id, held, invs[0].lease_s)
                except Exception as exc:
                    log.debug("could not renew queued invocations of run %s: %r", run_id, exc)

    async def _sweep_blobs(self) -> None:
        """Every ``$SHOAL_BLOB_SWEEP_S`` seconds (5 minutes by default), sweep the blob
        stores of the runs served (:meth:`shoal.stores.Store.sweep_blobs`)."""
        every = float(os.environ.get(SWEEP_ENV) or DEFAULT_SWEEP_S)
        while True:
            await asyncio.sleep(every)
            for url in list(self._served):
                try:
                    await self._store(url).sweep_blobs()
                except Exception as exc:  # a store that is away: the next sweep retries
                    log.debug("could not sweep the blobs of %s: %r", url, exc)

    async def _reap(self) -> None:
        """Retire idle workers after the keep-warm period."""
        while True:
            await asyncio.sleep(max(0.05, self.keep_warm_s / 4))
            async with self._lock:
                infos = [w.info for w in self.workers.values()]
                for wid in expired(infos, time.monotonic(), self.keep_warm_s):
                    await self._retire(wid)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- life
    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap())
        if self.exit_with_stdin:  # not among the tasks close() cancels: it calls close()
            self._stdin_watch = asyncio.create_task(self._serve_stdin())
        self._keep(asyncio.create_task(self._keep_queued()))
        self._keep(asyncio.create_task(self._sweep_blobs()))
        if self.cgroups and sys.platform.startswith("linux"):
            self._limiter = Limiter.detect()
        if self.fork and hasattr(os, "fork"):
            forks = ForkServer(self._template)
            try:
                await forks.start()
            except OSError as exc:  # every worker then starts a Python of its own
                log.warning(
                    "no template process for worker forks (%r): cold starts are slower", exc
                )
            else:
                self._forks = forks
        if self.ahead:  # built before the gateway takes requests: runs find it ready
            env, _ = await self.environment(self.ahead)
            log.info("environment %s ready at %s", requirements_key(self.ahead), env.path)

    async def _serve_stdin(self) -> None:
        """A private gateway's stdin: its client's invocations (:func:`.private.frames`),
        each submitted as it comes, until it ends: its client closed it, or died, even by
        SIGKILL (the kernel closes a dead process's pipes). Nobody is left to serve: the
        workers and the template stop, then the process ends at once, without the web
        server's shutdown (which polls its connections and itself: ~150 ms)."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        buffer = bytearray()

        def readable() -> None:
            try:
                data = os.read(0, 1 << 16)
            except OSError:
                data = b""
            if not data:
                if not ended.done():
                    ended.set_result(None)
                return
            buffer.extend(data)
            for payload in frames(buffer):
                self._keep(asyncio.create_task(self._submit_piped(payload)))

        loop.add_reader(0, readable)
        await ended
        loop.remove_reader(0)
        log.debug("stdin closed: shutting down")
        await self.close()
        logging.shutdown()
        os._exit(0)

    async def settled(self, quiet_s: float) -> None:
        """Once an invocation has been placed and, for ``quiet_s``, no other was placed
        and none waits."""
        seen = 0
        while True:
            placed = sum(self.started.values())
            if placed and placed == seen and not self.queue:
                return
            seen = placed
            await asyncio.sleep(quiet_s)

    async def _submit_piped(self, payload: bytes) -> None:
        """An invocation from a private gateway's client, which no answer reaches: one
        that cannot be placed is logged (a signed payload that does not load is a bug)."""
        try:
            await self.submit(payload)
        except Exception:
            log.exception("an invocation from this private gateway's client was refused")

    async def close(self) -> None:
        self.closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        procs = [w.proc for w in self.workers.values() if w.proc is not None]
        self.workers.clear()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if self._forks is not None:
            await self._forks.close()
        for forks in self._env_forks.values():
            await forks.close()
        if self._limiter is not None:
            self._limiter.close()
        for task in list(self._tasks):
            task.cancel()
        for store in self._stores.values():
            await store.close()
