"""A history in Redis (``redis://``, ``rediss://``, ``redis+cluster://``…), for a team that
shares one. Its keys (:mod:`shoal.stores.keys`) stay outside every run's tag and carry no
TTL. Statistics are merged optimistically: read, merge here, and write with a script that
refuses when someone merged in between (then read again), so concurrent runs from any
number of processes all count, and nothing here is ever unpickled.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from ..errors import ConfigError
from ..stores import keys, scripts
from .base import DEFAULT_KEEP, Workflow, decode_record, encode_record, merged
from .records import BackendStats, FunctionStats, RunRecord, StatsKey

_RETRIES = 50


class RedisHistory:
    def __init__(self, url: str, *, keep: int = DEFAULT_KEEP) -> None:
        parts = urlsplit(url)
        self.url = url
        self.keep = keep
        scheme = parts.scheme.removesuffix("+cluster")
        plain = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        options: dict[str, Any] = {"socket_connect_timeout": 5}
        if parts.scheme.endswith("+cluster"):
            self.client: Any = redis.RedisCluster.from_url(plain, **options)
        else:
            self.client = redis.Redis.from_url(plain, **options)
        try:
            self.client.ping()
        except RedisError as exc:  # before the run: a history that is not there is an error
            where = parts.hostname or "localhost"
            raise ConfigError(f"cannot reach the Redis history at {where}: {exc}") from None
        self._merge = self.client.register_script(scripts.MERGE_STATS)
        self._add_run = self.client.register_script(scripts.ADD_RUN)

    def record(
        self,
        run: RunRecord,
        stats: Mapping[StatsKey, FunctionStats],
        backend: BackendStats,
    ) -> None:
        wf = keys.workflow_keys(run.workflow)
        try:
            self._merge_into(wf.stats, {k.text(): v for k, v in stats.items()})
            self._merge_into(keys.BACKEND_STATS, {run.backend: backend})
            self._add_run(
                keys=(wf.runs, wf.records),
                args=(run.run_id, self.keep, run.started, encode_record(run)),
            )
            entry = json.dumps({"name": run.name, "last": run.started})
            self.client.hset(keys.WORKFLOW_INDEX, run.workflow, entry)
        except RedisError as exc:
            raise ConfigError(f"history {self.url}: {exc}") from None

    def _merge_into(self, key: str, new: Mapping[str, Any]) -> None:
        fields = list(new)
        for _ in range(_RETRIES):
            *old, version = self.client.hmget(key, [*fields, keys.VERSION_FIELD])
            args: list[Any] = [version or ""]
            for field, value, before in zip(fields, new.values(), old, strict=True):
                args += (field, merged((self.url, key, field), before, value))
            if self._merge(keys=(key,), args=args):
                return
            time.sleep(random.uniform(0, 0.01))  # someone merged first: read again
        raise ConfigError(f"history {self.url}: {key} kept changing; statistics not merged")

    def function_stats(self, workflow: str, backend: str) -> dict[StatsKey, FunctionStats]:
        out = {}
        for field, data in self.client.hgetall(keys.workflow_keys(workflow).stats).items():
            text = field.decode()
            if text == keys.VERSION_FIELD:
                continue
            key = StatsKey.parse(text)
            if key.backend == backend:
                out[key] = FunctionStats.from_json(json.loads(data))
        return out

    def backend_stats(self, backend: str) -> BackendStats:
        data = self.client.hget(keys.BACKEND_STATS, backend)
        return BackendStats.from_json(json.loads(data)) if data else BackendStats()

    def runs(self, workflow: str | None = None, limit: int = 100) -> list[RunRecord]:
        names = [workflow] if workflow else [w.workflow for w in self.workflows()]
        runs: list[RunRecord] = []
        for name in names:
            wf = keys.workflow_keys(name)
            ids = self.client.zrevrange(wf.runs, 0, limit - 1)
            if ids:
                blobs = self.client.hmget(wf.records, ids)
                runs += [decode_record(b) for b in blobs if b is not None]
        runs.sort(key=lambda r: r.started, reverse=True)
        return runs[:limit]

    def run(self, run_id: str) -> RunRecord | None:
        found = []
        for w in self.workflows():
            wf = keys.workflow_keys(w.workflow)
            for rid in self.client.zrange(wf.runs, 0, -1):
                if rid.decode().startswith(run_id):
                    found.append((wf.records, rid))
        if len(found) != 1:
            return None
        blob = self.client.hget(*found[0])
        return None if blob is None else decode_record(blob)

    def workflows(self) -> list[Workflow]:
        out = []
        for workflow, entry in self.client.hgetall(keys.WORKFLOW_INDEX).items():
            info = json.loads(entry)
            count = self.client.zcard(keys.workflow_keys(workflow.decode()).runs)
            if count:
                out.append(Workflow(workflow.decode(), info["name"], count, info["last"]))
        out.sort(key=lambda w: w.last_started, reverse=True)
        return out

    def close(self) -> None:
        # A cluster client's close() leaves its nodes' connections to the garbage collector.
        for node in getattr(self.client, "get_nodes", list)():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
        self.client.close()
