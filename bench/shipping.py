"""Shipping a big graph: build a 100 000-task no-op chain, encode it and store it in the
harness's Redis (``RedisStore.create_run``, what ``shoal.compute`` does before invoking any
worker), and weigh what it stores.

Timed: nodes (the user's calls, reported apart), build (``shoal.graph.build`` + the
structure hash), ship (``Graph.ship()``: the per-task specs) and ``create_run`` (encode +
sign + one pipelined write); ``total_s`` = build + ship + create_run. Encoding alone is
timed once more, outside the total, to split ``create_run`` into encoding and writing.
Stored bytes per task: the encoded spec bytes, and Redis's ``MEMORY USAGE ... SAMPLES 0``
(exact) of the run's keys; the keys are deleted afterwards.
"""

import asyncio
import gc
import time
import uuid

from .graphs import chain

TARGET_S, TARGET_BYTES = 1.0, 150
PER_TASK_KEYS = ("specs", "functions", "marks")  # what the graph costs in Redis


def measure_ship(storage, secret, tasks=100_000):
    import redis

    import shoal
    from shoal.codec import Codec
    from shoal.graph import build
    from shoal.security import Signer
    from shoal.stores.keys import run_keys
    from shoal.stores.redis import RedisStore

    signer, run_id = Signer(secret), f"bench-{uuid.uuid4().hex[:8]}"
    keys = run_keys(run_id)

    out = {}

    async def create(shipped, sinks):
        store = RedisStore(storage, signer)
        try:
            await store.client.ping()  # connect first: the figure is the write, not the dial
            t = time.perf_counter()
            out["encoded"] = await store.create_run(run_id, shipped, sinks)
            out["create_s"] = time.perf_counter() - t
        finally:
            await store.close()
        # Nothing big is returned: on Python 3.11, asyncio.run() repr()s the coroutine's
        # result in full (via signal.getsignal on its SIGINT handler) when it ends.

    gc.collect()
    t0 = time.perf_counter()
    sink, n, _ = chain(shoal.task, tasks)
    t1 = time.perf_counter()
    graph = build([sink])
    graph.structure_hash  # noqa: B018 (compute() computes it for the summary)
    t2 = time.perf_counter()
    shipped = graph.ship()
    t3 = time.perf_counter()
    client = redis.Redis.from_url(storage)
    try:
        asyncio.run(create(shipped, graph.sinks))
        encoded, create_s = out["encoded"], out["create_s"]
        t = time.perf_counter()
        Codec(signer).encode_graph(shipped)
        encode_s = time.perf_counter() - t
        memory = {
            name: client.memory_usage(getattr(keys, name), samples=0) or 0
            for name in ("specs", "functions", "marks", "outputs", "events")
        }
    finally:
        client.unlink(*keys)
        client.close()
    spec_bytes = sum(map(len, encoded.pages))
    stored = sum(memory[k] for k in PER_TASK_KEYS)
    return {
        "tasks": n,
        "nodes_s": t1 - t0,
        "build_s": t2 - t1,
        "ship_s": t3 - t2,
        "create_run_s": create_s,
        "encode_s": encode_s,
        "total_s": t3 - t1 + create_s,  # build + ship + create_run: the target's figure
        "encoded_bytes": encoded.nbytes,
        "spec_bytes_per_task": spec_bytes / n,
        "redis_memory": memory,
        "redis_bytes_per_task": stored / n,
    }
