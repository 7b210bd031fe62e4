"""``lambda://PREFIX?region=REGION&concurrency=N``: workers are AWS Lambda invocations.

Both sides live in this module: :class:`LambdaWorkers` starts workers (on the client, and
inside workers that hand out work), and :func:`handler` is the function's entry point, so
every function is deployed with the handler ``shoal.backends.aws_lambda.handler``.

One function per worker size
    Lambda sizes a function by its memory alone and gives it CPU in proportion (about one
    vCPU per 1 769 MB, up to six at 10 240 MB). A worker of ``Size(cpus, memory_mb)`` is an
    invocation of the function ``f"{PREFIX}-{memory_mb}"``; ``cpus`` plays no part, so a
    task that needs more CPU asks for more memory (``@shoal.task(memory_mb=…)``). Deploy
    ``PREFIX-2048`` (the default size) and one function per other ``memory_mb`` your tasks
    name, each configured with that much memory, the same code and ``$SHOAL_SECRET``.

One function per (size, environment)
    Tasks with requirements (``@shoal.task(requirements=...)``, ``compute(requirements=)``)
    run on ``f"{PREFIX}-{memory_mb}-{KEY}"``, where ``KEY`` is their requirement set's key
    (:func:`shoal.envs.key`; ``shoal env key FILE`` prints it): deploy it with a package
    (or image) that has them installed. Its worker checks them before running anything
    and fails the run naming what it lacks.

Asynchronous invokes
    A worker is started with ``InvocationType="Event"``: Lambda queues the event and
    answers 202 at once, which is what :meth:`Workers.invoke` promises. The event is JSON:
    the signed invocation payload (base64) and the wall-clock time it was sent, from which
    the worker reports how long its start took (queueing and cold start included). Lambda
    takes at most 256 KiB in such an event; a larger invocation is sent without the graph or
    specs it carries (the worker reads them from the store, where the client put them
    anyway), and one still too large is refused with :class:`~shoal.errors.WorkerLost`.

boto3 is synchronous, so each call runs on a thread (:func:`asyncio.to_thread`): a worker
that hands out work keeps its event loop, and so its store traffic, going meanwhile. The
client is made on first use (a worker that never hands out work never pays for it) by
:func:`new_client`, with the region from the URL, else ``$AWS_REGION`` (which Lambda sets
in every function), else boto3's own configuration. Credentials and endpoints are boto3's
(``$AWS_ENDPOINT_URL_LAMBDA`` points it at an emulator).

Warm containers
    Lambda reuses a container for later invocations of the same function, and with it this
    module's globals: :func:`handler` keeps one :class:`~shoal.runtime.WorkerRuntime`, made on
    the first invocation (a cold start), so later ones reuse its event loop, its store
    connection and its Lambda client.

Settings the functions need: a timeout long enough for the longest run of tasks one worker
may keep (a worker runs until it owns nothing; Lambda stops it at 15 minutes at most), and
``MaximumRetryAttempts=0`` for asynchronous invocation (Shoal retries tasks itself, with
``retries=``; Lambda would re-deliver a whole invocation whose function raised, timed out or
ran out of memory, and so run its tasks again).

Not reachable from here: the tests mock the Lambda API with botocore's Stubber.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import os
import re
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ..codec import Codec
from ..errors import ConfigError, WorkerLost
from ..security import Signer
from .base import Invocation, Platform, Size

if TYPE_CHECKING:
    from ..runtime import WorkerRuntime
    from ..stores import Store

log = logging.getLogger(__name__)

#: Lambda's limit on an asynchronous invocation's event, in bytes.
ASYNC_PAYLOAD_LIMIT = 256 * 1024
DEFAULT_CONCURRENCY = 64
#: The memory sizes Lambda offers, in MB, and the memory that buys one vCPU.
MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10_240
MB_PER_VCPU = 1769
#: Lambda function names: letters, digits, hyphens and underscores, at most 64 characters.
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 64
_OPTIONS = {"region", "concurrency"}
_EXTRA_HINT = "pip install 'shoal[lambda]'"


def new_client(region: str | None) -> Any:
    """A boto3 Lambda client for ``region`` (None: boto3's own configuration decides).

    :class:`LambdaWorkers` calls it through this module's namespace, once per backend, on
    first use; tests replace it (``monkeypatch.setattr(aws_lambda, "new_client", …)``) to
    reach backends that are made from a URL inside workers, where no client can be passed.
    """
    try:
        import boto3
        from botocore.exceptions import NoRegionError
    except ImportError:
        raise ConfigError(f"workers lambda:// need boto3: {_EXTRA_HINT}") from None
    try:
        # A session of its own: boto3's default session is not safe to share between threads.
        return boto3.session.Session().client("lambda", region_name=region)
    except NoRegionError:
        raise ConfigError(
            "workers lambda:// need an AWS region: add ?region=… to the URL or set AWS_REGION"
        ) from None


class LambdaWorkers:
    """Starts each worker as an asynchronous invocation of a Lambda function."""

    kind = "lambda"
    in_process = False
    private = False  # the functions exist beforehand, with a secret of their own
    same_host = False

    def __init__(self, url: str, *, client: Any = None) -> None:
        """``url``: ``lambda://PREFIX?region=REGION&concurrency=N``. ``client``: a boto3
        Lambda client to use instead of making one (tests pass a stubbed one)."""
        parts = urlsplit(url)
        prefix = parts.netloc
        if parts.scheme != "lambda" or not prefix or parts.path not in ("", "/"):
            raise ConfigError(
                f"workers {url!r}: expected lambda://PREFIX?region=REGION&concurrency=N, "
                "where PREFIX-<memory MB> are the names of the functions"
            )
        longest = len(f"{prefix}-{MAX_MEMORY_MB}")
        if not _NAME.fullmatch(prefix) or longest > _MAX_NAME:
            raise ConfigError(
                f"workers {url!r}: the function prefix {prefix!r} must be letters, digits, "
                f"'-' and '_', short enough that {prefix}-{MAX_MEMORY_MB} has at most "
                f"{_MAX_NAME} characters"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"workers {url!r}: unknown option(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(_OPTIONS))}"
            )
        try:
            concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
        except ValueError:
            concurrency = 0
        if concurrency < 1:
            raise ConfigError(
                f"workers {url!r}: concurrency must be a positive whole number, "
                f"got {options['concurrency']!r}"
            )
        self.url = url
        self.prefix = prefix
        self.region: str | None = options.get("region") or os.environ.get("AWS_REGION") or None
        self.parallelism = concurrency
        self._client = client
        self._client_lock = threading.Lock()
        self._made_client = False
        self._codec: Codec | None = None

    @classmethod
    def from_url(cls, url: str) -> LambdaWorkers:
        return cls(url)

    async def start(self, store: Store, signer: Signer | None = None) -> None:
        self._codec = Codec(signer or Signer.from_env())

    def function_name(self, size: Size, requirements: tuple[str, ...] = ()) -> str:
        """The function that runs workers of ``size`` (Lambda sizes by memory only) with
        ``requirements`` installed (their set's key ends the name)."""
        if not MIN_MEMORY_MB <= size.memory_mb <= MAX_MEMORY_MB:
            raise ConfigError(
                f"a task asks for {size.memory_mb} MB, but Lambda functions have "
                f"{MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB"
            )
        name = f"{self.prefix}-{size.memory_mb}"
        if requirements:
            from ..envs import key

            name = f"{name}-{key(requirements)}"
            if len(name) > _MAX_NAME:
                raise ConfigError(
                    f"the Lambda function {name} for tasks with requirements has over "
                    f"{_MAX_NAME} characters: use a shorter prefix"
                )
        return name

    def event(self, invocation: Invocation) -> bytes:
        """The JSON event that starts a worker on ``invocation``, within Lambda's limit."""
        if self._codec is None:  # inside a worker: hand out with the worker's own secret
            self._codec = Codec(Signer.from_env())
        body = encode_event(self._codec.dump_invocation(invocation))
        if len(body) > ASYNC_PAYLOAD_LIMIT and (invocation.graph or invocation.pages):
            log.debug("invocation of %d bytes goes without its graph and specs", len(body))
            light = dataclasses.replace(invocation, graph=None, pages=None)
            body = encode_event(self._codec.dump_invocation(light))
        if len(body) > ASYNC_PAYLOAD_LIMIT:
            raise WorkerLost(
                f"cannot start a Lambda worker on {len(invocation.tasks)} task(s) of run "
                f"{invocation.run_id}: its event is {len(body):,} bytes even without the "
                f"graph, over Lambda's {ASYNC_PAYLOAD_LIMIT // 1024} KiB limit for "
                "asynchronous invocations"
            )
        return body

    async def invoke(self, invocation: Invocation) -> None:
        name = self.function_name(invocation.size, invocation.requirements)
        await asyncio.to_thread(self._invoke, name, self.event(invocation))

    async def prewarm(self, cpus: float, memory_mb: int, count: int, after_s: float = 0.0) -> int:
        """A warming invocation per worker wanted, of the function of that size: its
        container starts (the worker runtime made), runs nothing and stays warm (for
        minutes: sent at once, whatever ``after_s``)."""
        name = self.function_name(Size(cpus, memory_mb))
        body = json.dumps(WARM_EVENT).encode()
        sent = await asyncio.gather(
            *(asyncio.to_thread(self._invoke, name, body) for _ in range(count)),
            return_exceptions=True,
        )
        return sum(1 for s in sent if not isinstance(s, BaseException))

    async def platform(self) -> Platform:
        """Lambda: each worker its own CPUs, one vCPU per 1 769 MB; idle containers stay
        warm for minutes (AWS does not promise how long), none is assumed warm."""
        return Platform(None, 300.0, {}, cpu_per_mb=1 / MB_PER_VCPU)

    def _invoke(self, name: str, body: bytes) -> None:
        client = self._lambda_client()  # first: a clear error if boto3 is missing
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = client.invoke(FunctionName=name, InvocationType="Event", Payload=body)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            request = exc.response.get("ResponseMetadata", {}).get("RequestId")
            raise WorkerLost(
                f"Lambda did not invoke the function {name}: {error.get('Code', 'unknown')}: "
                f"{error.get('Message', exc)}" + (f" (request {request})" if request else "")
            ) from None
        except BotoCoreError as exc:
            raise WorkerLost(f"cannot invoke the Lambda function {name}: {exc}") from None
        status = reply.get("StatusCode")
        if status != 202:  # anything else is not a queued asynchronous invocation
            raise WorkerLost(f"Lambda answered {status} to invoking the function {name}")

    def _lambda_client(self) -> Any:
        # Invokes run on pool threads, so two may want the client first at the same time.
        with self._client_lock:
            if self._client is None:
                self._client = new_client(self.region)
                self._made_client = True
            return self._client

    async def close(self, ok: bool = True) -> None:
        if self._made_client and self._client is not None:
            self._client.close()  # its HTTP connections
            self._client = None
            self._made_client = False


# --------------------------------------------------------------------------- the event


def encode_event(payload: bytes, sent: float | None = None) -> bytes:
    """The JSON event carrying a signed invocation ``payload`` sent at ``sent`` (wall clock,
    default now)."""
    event = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "sent": time.time() if sent is None else sent,
    }
    return json.dumps(event, separators=(",", ":")).encode()


#: The event of a warming invocation (pre-warm): the handler makes its runtime, nothing else.
WARM_EVENT = {"shoal": "warm"}


def read_event(event: Any) -> tuple[bytes, float | None]:
    """The signed invocation payload in a Lambda ``event`` (as Lambda hands it over: parsed
    JSON) and when it was sent. Checking the signature is the runtime's job."""
    if not isinstance(event, dict) or not isinstance(event.get("payload"), str):
        raise ValueError("not a Shoal invocation event: expected a JSON object with 'payload'")
    try:
        payload = base64.b64decode(event["payload"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not a Shoal invocation event: bad base64 payload ({exc})") from None
    sent = event.get("sent")
    return payload, float(sent) if isinstance(sent, int | float) else None


# --------------------------------------------------------------------------- the function

_runtime: WorkerRuntime | None = None
# A runtime runs one invocation at a time; Lambda sends a container one at a time anyway.
_runtime_lock = threading.Lock()


def handler(event: Any, context: Any) -> None:
    """The Lambda entry point: run the worker ``event`` starts, to the end.

    The first call in a container makes the runtime (a cold start); later calls reuse it.
    An event that is not signed with ``$SHOAL_SECRET`` raises
    :class:`~shoal.errors.BadSignature` before anything of it is unpickled, so Lambda
    records the invocation as failed. Failures inside the worker loop are the run's
    (reported in its event stream), not the invocation's.
    """
    global _runtime
    warming = event == WARM_EVENT  # pre-warm: the cold start only (nothing to verify)
    payload, sent = (b"", None) if warming else read_event(event)
    with _runtime_lock:
        if _runtime is None:
            from ..runtime import WorkerRuntime  # the worker loop's imports: not for clients

            _runtime = WorkerRuntime(name=f"lambda-{secrets.token_hex(3)}")
        if warming:
            return
        invocation = _runtime.load(payload)
        _runtime.run(invocation, received=sent)


def shutdown() -> None:
    """Close the warm runtime, if any (its store connections and event loop); the next
    :func:`handler` call starts cold. Lambda itself just freezes and discards containers:
    this is for tests and for processes that host the handler themselves."""
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()
