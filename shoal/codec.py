"""What crosses a process boundary, as signed bytes: the encoded graph (pages of task specs,
one blob per function), task outputs, failures and invocation payloads.

Specs are pickled as plain tuples (a named tuple would carry its class path in every spec);
functions and outputs go through cloudpickle, so that code of the user's script or project
travels by value (see :mod:`shoal.usercode`). Every blob is signed (:mod:`shoal.security`)
and checked before it is unpickled.
"""

from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from .errors import BadSignature
from .graph import PAGE, EncodedGraph, ShippedGraph, TaskFunction, TaskSpec
from .graph.template import _SCALARS, Ref
from .usercode import ship_user_code

if TYPE_CHECKING:
    from .backends import Invocation
    from .failures import TaskFailure
    from .security import Signer

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PLAIN = _SCALARS | {Ref}
#: A stored output whose data starts with this is a reference to a blob (a pickle starts
#: with its PROTO opcode, 0x80): see :mod:`shoal.blobs`.
_BLOB_REF = b"@"


class BlobRef(int):
    """What :meth:`Codec.load_value` returns for a reference to a blob: the blob's size."""


class Codec:
    """Encodes and decodes with one signer (one shared secret)."""

    __slots__ = ("signer",)

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    # ----------------------------------------------------------------- the graph
    def encode_graph(self, graph: ShippedGraph) -> EncodedGraph:
        """Pages of specs and the functions, each a signed blob. An argument that cannot be
        pickled is a :class:`TypeError` naming the task and the argument, raised before
        anything is stored or run."""
        ship_user_code(graph.functions)
        sign, specs = self.signer.sign, graph.specs
        pages = []
        for lo in range(0, len(specs), PAGE):
            page = specs[lo : lo + PAGE]
            # Plain pickle is 3x faster, but would send constants of user types by reference.
            plain = all(not s.kwargs and all(type(a) in _PLAIN for a in s.args) for s in page)
            dumps = pickle.dumps if plain else cloudpickle.dumps
            try:
                pages.append(sign(dumps([tuple(s) for s in page], PROTOCOL)))
            except Exception as exc:
                raise _unpicklable(graph, lo, exc) from exc
        functions = [sign(cloudpickle.dumps(f, PROTOCOL)) for f in graph.functions]
        return EncodedGraph(pages, functions)

    def decode_page(self, blob: bytes) -> list[TaskSpec]:
        """The specs of one page, in task order."""
        rows = pickle.loads(self.signer.verify(blob, "a page of task specs"))
        return [TaskSpec._make(row) for row in rows]

    def decode_function(self, blob: bytes) -> TaskFunction[Any, Any]:
        fn: TaskFunction[Any, Any] = pickle.loads(self.signer.verify(blob, "a task function"))
        return fn

    # ----------------------------------------------------------------- values
    def dump_value(self, value: Any) -> bytes:
        """A task output, signed."""
        return self.signer.sign(self.pickle_value(value))

    @staticmethod
    def pickle_value(value: Any) -> bytes:
        """A task output, not yet signed. Plain values skip cloudpickle's slower pickler."""
        if type(value) in _SCALARS:
            return pickle.dumps(value, PROTOCOL)
        return cloudpickle.dumps(value, PROTOCOL)

    def dump_reference(self, size: int) -> bytes:
        """What the store keeps for an output of ``size`` signed bytes kept in a blob."""
        return self.signer.sign(_BLOB_REF + str(size).encode())

    def load_value(self, blob: bytes) -> Any:
        """The output in ``blob``, or a :class:`BlobRef` when it is kept in a blob."""
        data = self.signer.verify(blob, "a task output")
        if data[:1] == _BLOB_REF:
            return BlobRef(bytes(data[1:]))
        return pickle.loads(data)

    def dump_failure(self, failure: TaskFailure) -> bytes:
        return self.signer.sign(failure.to_bytes())

    def load_failure(self, blob: bytes) -> TaskFailure:
        from .failures import TaskFailure

        return TaskFailure.from_bytes(bytes(self.signer.verify(blob, "a task failure")))

    # ----------------------------------------------------------------- invocations
    def dump_invocation(self, invocation: Invocation) -> bytes:
        return self.signer.sign(pickle.dumps(invocation, PROTOCOL))

    def load_invocation(self, blob: bytes) -> Invocation:
        """The invocation in ``blob``; :class:`BadSignature` if it is not signed with this
        secret, or expired (an old capture replayed)."""
        invocation: Invocation = pickle.loads(self.signer.verify(blob, "an invocation payload"))
        if invocation.expires and time.time() > invocation.expires:
            raise BadSignature(
                f"the invocation payload of run {invocation.run_id} expired at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(invocation.expires))}"
            )
        return invocation


def _unpicklable(graph: ShippedGraph, first: int, exc: Exception) -> TypeError:
    """Name the task, from ``first`` on, and the argument that cannot be pickled."""
    task = first
    for task in range(first, min(first + PAGE, len(graph.specs))):
        spec = graph.specs[task]
        try:
            cloudpickle.dumps(tuple(spec), PROTOCOL)
        except Exception:
            break
    spec = graph.specs[task]
    name = f"{graph.functions[spec.func].name}-{task}"
    where = "an argument"
    for label, value in [
        *((f"argument {i}", a) for i, a in enumerate(spec.args)),
        *((f"keyword argument {k!r}", v) for k, v in spec.kwargs.items()),
    ]:
        try:
            cloudpickle.dumps(value, PROTOCOL)
        except Exception:
            where = f"{label} ({type(value).__name__})"
            break
    return TypeError(
        f"{where} of task {name} cannot be pickled, so it cannot travel to a worker "
        f"process: {type(exc).__name__}: {exc}"
    )
