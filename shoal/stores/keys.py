"""Every Redis key Shoal uses, in one place.

All keys of one run share the hash tag ``{<run-id>}``, so that in Redis Cluster they live on
one shard and each multi-key protocol step is one atomic script there; runs spread over
the shards. Nothing that outlives a run starts with ``shoal:{``. Every key of a run is
created when the run is, with the run's TTL, and is never created again afterwards (the
scripts check that the run still exists before they write).

    shoal:{<run>}:specs      hash    page -> signed page of specs      (graph, step 3)
    shoal:{<run>}:functions  hash    function index -> signed code     (graph, step 3)
    shoal:{<run>}:outputs    hash    task id -> signed output; "~" marks the run's birth
    shoal:{<run>}:marks      string  one 32-bit word per task, read with BITFIELD:
                                     bit 0 (the first) set when the task finished,
                                     bits 1-31 count its finished inputs
    shoal:{<run>}:failures   hash    task id -> signed TaskFailure
    shoal:{<run>}:events     stream  field "e": an Event as JSON; "b": bytes stored
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


def run_keys(run_id: str) -> RunKeys:
    tag = f"{PREFIX}:{{{run_id}}}:"
    return RunKeys(*(tag + name for name in RunKeys._fields))
