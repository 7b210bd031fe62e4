"""The decentralized protocol, top to bottom (design brief, "How a run flows").

Client side (:func:`run_graph`, in :mod:`.client`):
  1. Build   the graph from the sinks (done by the caller, :func:`shoal.graph.build`).
  2. Plan    (by the caller, :mod:`shoal.planning`): a size and a group per task, carried
             in the task specs; without a plan, workers split work as they go.
  3. Ship    the partitioned graph to the store once. Workers in the client's process get
             it by reference; others get it inside their invocation when it is small, else
             the pages of specs of the tasks they are invoked for (and read the rest from
             the store, a few pages at a time: :mod:`.source`).
  4. Invoke  one worker per group of roots, handing the roots to their invocations
             (:mod:`shoal.leases`).
  5. Observe the run's event stream until every sink finished or something failed (woken
             only by the events it must see at once, and at its ticks); every quarter
             lease (or at once for a reported death), give the tasks of lost workers to
             new ones, exactly once per loss, as their retries allow.
  6. Finish  download the sinks' outputs and delete every key of the run (also on failure).

Worker side (:func:`run_worker`, in :mod:`.worker`): claim the invocation once (a
duplicate or a replay is refused before any user code), hold its lease (renewed by the
process's heartbeat thread), then for each task it owns, until none is left or the lease
is lost:
  a. gather the inputs: held in memory when this worker made them, else one store read;
  b. run the function, retrying with backoff;
  c. complete: in one atomic store step, mark every child (idempotently), store the output
     only if a consumer may live elsewhere, append the task's event (start and end). A
     worker buffers its completions and takes this step for a whole batch at once, as soon
     as it has nothing else to run, another worker waits on it, or a few milliseconds
     passed (:func:`shoal.decisions.should_flush`): one round trip for many small tasks.
     A step whose reply can tell the worker nothing new (nothing to store, every child its
     own), or can ready nothing for another worker while every slot of the platform is
     taken (:func:`shoal.decisions.runs_on`), is put on the wire and the next task runs
     while it is in flight;
  d. own the children the marks made ready: keep one group, hand each other group to a
     new worker (and, in the store, the children to its invocation). No central queue:
     whoever completes a child's last input owns it. A child whose only input is the task
     just run is owned for sure, so it runs at once, before the batch reaches the store.
     Each step tells the worker how many of the run's invocations are alive: while the
     run has fewer than the platform runs at once, a worker shares the ready tasks whose
     inputs are in the store with new ones (:mod:`.sharing`); with none free, a task's
     children all stay with it, and its output is stored only for a fan-in.
Then release the lease (by then the worker owns nothing).

The decisions inside these steps are pure functions in :mod:`shoal.decisions`.
"""

from .client import new_run_id, run_graph

# The worker side is imported from .worker where workers run: a client whose workers are
# other processes does not pay its imports (~5 ms of a private gateway's first run).
__all__ = ["new_run_id", "run_graph"]
