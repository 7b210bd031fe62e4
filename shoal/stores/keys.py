"""Every Redis key Shoal uses, in one place.

All keys of one run share the hash tag ``{<run-id>}``, so that in Redis Cluster they live on
one shard and each multi-key protocol step is one atomic script there; runs spread over
the shards. Nothing that outlives a run starts with ``shoal:{``. Every key of a run is
created when the run is, with the run's TTL, and is never created again afterwards (the
scripts check that the run still exists before they write).

    shoal:{<run>}:specs      hash    page -> signed page of specs      (graph, step 3);
                                     "n" -> the next free task id, "x:<map>" -> the first
                                     id of the tasks that map's expansion made (maps)
    shoal:{<run>}:functions  hash    function index -> signed code     (graph, step 3)
    shoal:{<run>}:outputs    hash    task id -> signed output; "~" marks the run's birth
    shoal:{<run>}:marks      string  one 32-bit word per task, read with BITFIELD:
                                     bit 0 (the first) set when the task finished,
                                     bits 1-31 count its finished inputs
    shoal:{<run>}:failures   hash    task id -> signed TaskFailure
    shoal:{<run>}:events     stream  field "e": events as JSON; "b": bytes stored per event;
                                     "x": more events of the same step (metrics)
    shoal:{<run>}:wake       stream  an entry after each step whose events the client
                                     must see at once (a sink finished, a failure, a worker
                                     stopped): it blocks on this one, not on every event
    shoal:{<run>}:leases     hash    invocation id -> its lease (JSON: "e" expiry on the
                                     server's clock, 0 never; "c" claimed; "w" worker; "t"
                                     the task it runs); only live ones (shoal.leases)
    shoal:{<run>}:owners     hash    task id -> the invocation owning it while it is ready;
                                     "c:<invocation>" -> 1 once claimed; "n:<task>" -> losses
    shoal:{<run>}:shape      string  the graph for the dashboard: zlib JSON of each task's
                                     function name and inputs (nothing signed: no code)
    shoal:{<run>}:constants  hash    index -> signed big constant argument, lifted out of
                                     the specs (shoal.codec); only when there are some

Runs announce themselves for the dashboard's live view, outside every run's tag, from
their creation to their deletion:

    shoal:live               hash    run id -> JSON {name, workflow, started, tasks, ...}

A shared history (``history="redis://…"``) lives beside the runs, never under their tag and
with no TTL; each workflow's keys share its own tag, so each merge is one atomic script:

    shoal:history:{<workflow>}:stats    hash  "function|cpus|memory_mb|backend" -> JSON
                                              statistics; "~v" counts the merges
    shoal:history:{<workflow>}:runs     zset  run id, scored by its start (wall clock)
    shoal:history:{<workflow>}:records  hash  run id -> the run's record (zlib JSON)
    shoal:history:{backends}:stats      hash  backend kind -> JSON statistics; "~v"
    shoal:history:{index}:workflows     hash  workflow -> JSON {"name", "last"}
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "shoal"
RUN_PATTERN = PREFIX + ":{*"  # SCAN MATCH for the keys of every run

#: The field of the outputs hash that exists from the run's creation (its TTL holder).
BIRTH_FIELD = "~"


class RunKeys(NamedTuple):
    specs: str
    functions: str
    outputs: str
    marks: str
    failures: str
    events: str
    leases: str
    owners: str
    shape: str
    constants: str
    wake: str


def run_keys(run_id: str) -> RunKeys:
    tag = f"{PREFIX}:{{{run_id}}}:"
    return RunKeys(*(tag + name for name in RunKeys._fields))


LIVE = PREFIX + ":live"

HISTORY = PREFIX + ":history"
#: The field of a statistics hash that counts its merges (optimistic concurrency).
VERSION_FIELD = "~v"


class WorkflowKeys(NamedTuple):
    stats: str
    runs: str
    records: str


def workflow_keys(workflow: str) -> WorkflowKeys:
    tag = f"{HISTORY}:{{{workflow}}}:"
    return WorkflowKeys(*(tag + name for name in WorkflowKeys._fields))


BACKEND_STATS = HISTORY + ":{backends}:stats"
WORKFLOW_INDEX = HISTORY + ":{index}:workflows"
