"""What crosses a process boundary, as signed bytes: the encoded graph (pages of task specs,
one blob per function), task outputs, failures and invocation payloads.

Specs are pickled as plain tuples (a named tuple would carry its class path in every spec);
functions and outputs go through cloudpickle, so that code of the user's script or project
travels by value (see :mod:`shoal.usercode`). Every blob is signed (:mod:`shoal.security`)
and checked before it is unpickled.
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

from .errors import BadSignature
from .graph import PAGE, EncodedGraph, ShippedGraph, TaskFunction, TaskSpec
from .graph.template import _SCALARS, Lifted, Ref
from .usercode import ship_user_code

if TYPE_CHECKING:
    from .backends import Invocation
    from .failures import TaskFailure
    from .security import Signer

PROTOCOL = pickle.HIGHEST_PROTOCOL
_PLAIN = _SCALARS | {Ref, Lifted}
#: A page of specs bigger than this has its big constant arguments lifted out of it ...
LIFT_PAGE_BYTES = 256 << 10
#: ... each one bigger than this: it travels to the tasks that take it, not to every
#: worker that reads the page.
LIFT_ABOVE = 64 << 10
#: A stored output whose data starts with this is a reference to a blob (a pickle starts
#: with its PROTO opcode, 0x80): see :mod:`shoal.blobs`.
_BLOB_REF = b"@"


#: A blob's frame: magic, buffer count, pickle length; then per buffer its offset and
#: length (from the frame's start), then the pickle, then each buffer, 64-byte aligned.
_FRAME = struct.Struct("<4sIQ")
_FRAME_MAGIC = b"SHF1"
_ALIGN = 64


class BlobRef(NamedTuple):
    """What :meth:`Codec.load_value` returns for a reference to a blob."""

    size: int
    signed: bool  # False: kept where only this user can write (shoal.blobs.files)


class Codec:
    """Encodes and decodes with one signer (one shared secret)."""

    __slots__ = ("signer",)

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    # ----------------------------------------------------------------- the graph
    def encode_graph(self, graph: ShippedGraph) -> EncodedGraph:
        """Pages of specs and the functions, each a signed blob, and the big constant
        arguments lifted out of big pages (a page holds 64 tasks' specs, and every worker
        that runs one of them reads all of it: a 100 KB text given to each of 32 tasks would
        make every such read 3 MB). An argument that cannot be pickled is a
        :class:`TypeError` naming the task and the argument, raised before anything is
        stored or run."""
        ship_user_code(graph.functions)
        sign, specs = self.signer.sign, graph.specs
        pages: list[bytes] = []
        constants: list[bytes] = []
        lifted: dict[int, int] = {}  # id of a constant -> its index (one object, one copy)
        for lo in range(0, len(specs), PAGE):
            page = specs[lo : lo + PAGE]
            try:
                # Plainly too big (big texts, arrays): lifted without pickling it all first.
                plainly_big = _plain_bytes(page) > LIFT_PAGE_BYTES
                if plainly_big or len(data := _pickle_page(page)) > LIFT_PAGE_BYTES:
                    data = self._lift(page, constants, lifted)
            except Exception as exc:
                raise _unpicklable(graph, lo, exc) from exc
            pages.append(sign(data))
        functions = [sign(cloudpickle.dumps(f, PROTOCOL)) for f in graph.functions]
        return EncodedGraph(pages, functions, constants)

    def encode_pages(self, specs: Mapping[int, TaskSpec]) -> dict[int, bytes]:
        """The signed pages holding ``specs`` (whole pages: a map's elements,
        :mod:`shoal.graph.maps`); their arguments stay in them."""
        by_page: dict[int, list[TaskSpec]] = {}
        for task in sorted(specs):
            by_page.setdefault(task // PAGE, []).append(specs[task])
        return {p: self.signer.sign(_pickle_page(page)) for p, page in by_page.items()}

    def _lift(self, page: list[TaskSpec], constants: list[bytes], lifted: dict[int, int]) -> bytes:
        """The page pickled with each top-level argument over :data:`LIFT_ABOVE` bytes
        replaced by a :class:`Lifted` index into ``constants`` (appended to), and with the
        offsets of the tasks that have one."""

        def lift(value: Any) -> Any:
            if type(value) in (Ref, Lifted) or hasattr(value, "fill"):  # a template
                return value
            index = lifted.get(id(value))
            if index is None:
                data = self.pickle_value(value)
                if len(data) <= LIFT_ABOVE:
                    return value
                index = lifted[id(value)] = len(constants)
                constants.append(self.signer.sign(data))
            return Lifted(index)

        rows, offsets = [], []
        for offset, spec in enumerate(page):
            args = tuple(lift(a) for a in spec.args)
            kwargs = {k: lift(v) for k, v in spec.kwargs.items()}
            if any(type(a) is Lifted for a in (*args, *kwargs.values())):
                offsets.append(offset)
            rows.append(tuple(spec._replace(args=args, kwargs=kwargs)))
        return cloudpickle.dumps((rows, tuple(offsets)), PROTOCOL)

    def decode_page(self, blob: bytes) -> tuple[list[TaskSpec], tuple[int, ...]]:
        """The specs of one page, in task order, and the offsets in the page of those with
        lifted constants (see :meth:`load_constant`)."""
        rows = pickle.loads(self.signer.verify(blob, "a page of task specs"))
        offsets: tuple[int, ...] = ()
        if type(rows) is tuple:
            rows, offsets = rows
        return [TaskSpec._make(row) for row in rows], offsets

    def load_constant(self, blob: bytes) -> Any:
        return pickle.loads(self.signer.verify(blob, "a constant argument"))

    def decode_function(self, blob: bytes) -> TaskFunction[Any, Any]:
        fn: TaskFunction[Any, Any] = pickle.loads(self.signer.verify(blob, "a task function"))
        return fn

    # ----------------------------------------------------------------- values
    @staticmethod
    def pickle_value(value: Any) -> bytes:
        """A task output, not yet signed. Plain values skip cloudpickle's slower pickler."""
        if type(value) in _SCALARS:
            return pickle.dumps(value, PROTOCOL)
        return cloudpickle.dumps(value, PROTOCOL)

    def dump_reference(self, size: int, signed: bool) -> bytes:
        """What the store keeps for an output kept in a blob of ``size`` bytes."""
        return self.signer.sign(_BLOB_REF + (b"s" if signed else b"u") + str(size).encode())

    def load_value(self, blob: bytes) -> Any:
        """The output in ``blob``, or a :class:`BlobRef` when it is kept in a blob."""
        data = self.signer.verify(blob, "a task output")
        if data and data[0] == _BLOB_REF[0]:
            return BlobRef(int(bytes(data[2:])), data[1:2] == b"s")
        return pickle.loads(data)

    @staticmethod
    def frame_value(value: Any) -> tuple[list[bytes | memoryview], bool]:
        """A task output as a blob's frame, in parts to write one after another, and
        whether it has out-of-band buffers. Pickle protocol 5 leaves big contiguous
        buffers (NumPy arrays, bytearrays) out of the pickle: written as they are, and read
        back in place (:meth:`unframe_value`), they are never copied."""
        buffers: list[pickle.PickleBuffer] = []
        dumps = pickle.dumps if type(value) in _SCALARS else cloudpickle.dumps
        data = dumps(value, PROTOCOL, buffer_callback=buffers.append)
        return Codec.frame_pickled(data, [b.raw() for b in buffers]), bool(buffers)

    @staticmethod
    def frame_pickled(data: bytes, raws: Sequence[memoryview] = ()) -> list[bytes | memoryview]:
        """The frame of a pickle ``data`` and its out-of-band buffers ``raws``."""
        offset = _FRAME.size + 16 * len(raws) + len(data)
        parts: list[bytes | memoryview] = [b"", data]
        places: list[int] = []
        for raw in raws:
            pad = -offset % _ALIGN
            if pad:
                parts.append(bytes(pad))
                offset += pad
            places += (offset, raw.nbytes)
            parts.append(raw)
            offset += raw.nbytes
        header = _FRAME.pack(_FRAME_MAGIC, len(raws), len(data))
        parts[0] = header + struct.pack(f"<{len(places)}Q", *places)
        return parts

    @staticmethod
    def unframe_value(frame: memoryview) -> Any:
        """The output in a blob's frame; its buffers are views of ``frame``."""
        magic, count, length = _FRAME.unpack_from(frame)
        if magic != _FRAME_MAGIC:
            raise ValueError("not a Shoal blob (a bad frame)")
        places = struct.unpack_from(f"<{2 * count}Q", frame, _FRAME.size)
        start = _FRAME.size + 16 * count
        buffers = [frame[places[i] : places[i] + places[i + 1]] for i in range(0, len(places), 2)]
        return pickle.loads(frame[start : start + length], buffers=buffers)

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


def _plain_bytes(page: Sequence[TaskSpec]) -> int:
    """The bytes the page's arguments plainly hold (texts, bytes, arrays), not pickling."""
    total = 0
    for spec in page:
        for value in (*spec.args, *spec.kwargs.values()):
            kind = type(value)
            if kind in (str, bytes, bytearray):
                total += len(value)
            elif kind not in _PLAIN and type(nbytes := getattr(value, "nbytes", None)) is int:
                total += nbytes  # a missing attribute costs a caught exception: not asked of refs
    return total


def _pickle_page(page: Sequence[TaskSpec]) -> bytes:
    # Plain pickle is 3x faster, but would send constants of user types by reference.
    plain = all(not s.kwargs and all(type(a) in _PLAIN for a in s.args) for s in page)
    dumps = pickle.dumps if plain else cloudpickle.dumps
    return dumps([tuple(s) for s in page], PROTOCOL)


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
