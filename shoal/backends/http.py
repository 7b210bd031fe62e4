"""``http://host:port/path`` and ``https://…``: workers behind any HTTP endpoint that runs
``shoal worker`` (:mod:`shoal.service`), on Knative, OpenFaaS, Cloud Run or a plain
container.

An invocation is one POST of its signed payload, and the service answers only when the
invocation is done (FaaS platforms scale on requests in flight). So :meth:`invoke` does not
wait for that answer: it starts the POST as a background task and returns as soon as the
request body is out (httpcore's ``trace`` extension tells when), which is also what lets a
worker hand out work to the very service it runs on without waiting on itself. A failure
before the body is out (the endpoint cannot be reached) raises from :meth:`invoke`. An
answer of 429 (Too Many Requests) or 503 (Service Unavailable), a platform out of instances
for now, sends the invocation again after a wait (:func:`retry_wait`: the answer's
``Retry-After`` if any, else exponential backoff with full jitter; 30 s at most), up to
``attempts`` sends in all. Any other answer than 2xx, the last of those refusals, or a
connection lost while the invocation ran, is logged at ERROR with the run id and reported
to the run's event stream as a failed worker, so the run fails instead of waiting for tasks
that will never run: 403 as :class:`~shoal.errors.BadSignature` (the two sides have
different secrets), 401 as :class:`~shoal.errors.ConfigError` naming the token setting.
Inside a worker, those answers are read, and the invocations sent again, while that
worker's process runs invocations (its event loop runs only then).

Options in the URL's query: ``token`` (else ``$SHOAL_WORKER_TOKEN``), sent as
``Authorization: Bearer …``, ``parallelism`` (workers running at once at most, the
fan-out hint; 8 by default) and ``attempts`` (sends of an invocation refused with 429 or
503, the first one included; 8 by default, 1 to never send again). Any other query
parameter goes to the endpoint untouched (a platform's function key, for instance).
Workers hand out work to the same URL. The platform, not Shoal, sizes the workers, so
invocations' sizes are not used here.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import random
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from ..codec import Codec
from ..decisions import backoff_delays
from ..errors import BadSignature, ConfigError, WorkerLost
from ..events import EventKind, event
from ..security import Signer
from .base import Invocation, Platform, is_loopback, verify_for

if TYPE_CHECKING:
    from ..stores import Store

log = logging.getLogger(__name__)

TOKEN_ENV = "SHOAL_WORKER_TOKEN"
DEFAULT_PARALLELISM = 8
#: Sends of an invocation answered 429 or 503, the first one included. With the backoff
#: below and no ``Retry-After``, the 7 waits add up to 91 s at most (about 45 s on average).
DEFAULT_ATTEMPTS = 8
#: The answers that mean "not now, try again": the invocation did not run.
RETRY_STATUSES = frozenset({429, 503})
#: Backoff before the n-th retry: uniform(0, min(MAX_WAIT, BACKOFF_BASE * 2**(n-1))) s.
BACKOFF_BASE = 1.0
#: The longest wait before a retry, ``Retry-After`` included.
MAX_WAIT = 30.0
#: Query parameters that configure this backend; the endpoint never sees them.
_OPTIONS = ("token", "parallelism", "attempts", "warmup")
#: httpcore's trace event once the whole request body is written (HTTP/1.1 or HTTP/2).
_BODY_SENT = "send_request_body.complete"
# No read or pool timeout: the answer comes when the invocation ends, however long it
# runs, and every invocation in flight holds a connection (a cap could deadlock a worker
# handing out work to its own service).
_TIMEOUT = httpx.Timeout(30.0, read=None, write=60.0, pool=None)
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=32)


class _Post:
    """One invocation's request in flight; ``sent`` once its whole body is written."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith(_BODY_SENT):
            self.sent.set()


class HttpWorkers:
    """Invokes workers by POSTing signed invocation payloads to a ``shoal worker``
    endpoint."""

    kind = "http"
    in_process = False
    private = False

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ConfigError(
                f"workers {_redact(url)!r}: expected http(s)://host[:port]/path of a "
                "`shoal worker` endpoint"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        options = {k: v for k, v in query if k in _OPTIONS}
        self.token = options.get("token") or os.environ.get(TOKEN_ENV) or None
        self.parallelism = _count_option(url, options, "parallelism", DEFAULT_PARALLELISM)
        self.attempts = _count_option(url, options, "attempts", DEFAULT_ATTEMPTS)
        self.url = url  # as given, token included: workers hand out work with it
        self.same_host = is_loopback(parts.hostname)
        rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS])
        self.endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", rest, ""))
        # Pre-warm (shoal.optimizations.prewarm): a GET of this, beside the endpoint (the
        # worker's health check by default; "off": none), per worker wanted.
        warmup = options.get("warmup", "health")
        self.warmup_url = None if warmup == "off" else urljoin(self.endpoint, warmup)
        #: The endpoint for messages and events: no token, no credentials.
        self.where = _redact(url)
        self._codec: Codec | None = None
        self._store: Store | None = None
        self._stores: dict[str, Store] = {}  # opened here, to report failures from workers
        self._http: httpx.AsyncClient | None = None
        self._requests: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> HttpWorkers:
        return cls(url)

    async def start(self, store: Store, signer: Signer | None = None) -> None:
        """Get ready to invoke workers of runs in ``store``, signing with ``signer``
        (default: ``$SHOAL_SECRET``, which the workers must share)."""
        self._store = store
        self._codec = Codec(signer or Signer.from_env())

    async def invoke(self, invocation: Invocation) -> None:
        """POST ``invocation`` and return once its body is sent, not when it is done.
        :class:`~shoal.errors.WorkerLost` if the endpoint cannot be reached."""
        if self._codec is None:  # inside a worker: hand out with the worker's own secret
            self._codec = Codec(Signer.from_env())
        payload = self._codec.dump_invocation(invocation)
        post = _Post()
        request = asyncio.create_task(self._send(invocation, payload, post))
        self._requests.add(request)
        request.add_done_callback(self._requests.discard)
        body_sent = asyncio.create_task(post.sent.wait())
        try:
            await asyncio.wait((request, body_sent), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if not post.sent.is_set():
                request.cancel()  # half a payload runs nowhere
            raise
        finally:
            body_sent.cancel()
        if not post.sent.is_set():  # so the request ended first: raise what ended it
            request.result()

    async def prewarm(self, cpus: float, memory_mb: int, count: int, after_s: float = 0.0) -> int:
        """A warm-up request (``?warmup=PATH`` beside the endpoint, its ``health`` check by
        default) per worker wanted, all at once (whatever ``after_s``): a platform that
        scales by requests, at a concurrency of one per instance, starts an instance for
        each. How many answered."""
        if self.warmup_url is None or count <= 0:
            return 0
        http, url = self._client(), self.warmup_url
        answers = await asyncio.gather(
            *(http.get(url) for _ in range(count)), return_exceptions=True
        )
        return sum(1 for a in answers if isinstance(a, httpx.Response) and a.is_success)

    async def platform(self) -> Platform:
        """The platform behind the endpoint is not known from here: a FaaS default (each
        worker its own CPUs, a minute of keep-warm, none warm)."""
        return Platform(None, 60.0, {})

    async def _send(self, invocation: Invocation, payload: bytes, post: _Post) -> None:
        """The request, sent again while it is refused for now (429, 503), to its end.
        Raises what goes wrong before the body is out (the caller is still waiting then);
        logs and reports to the run what goes wrong after."""
        error: Exception | None
        attempt = 1
        while True:
            try:
                response = await self._client().post(
                    self.endpoint, content=payload, extensions={"trace": post.trace}
                )
            except httpx.HTTPError as exc:
                if not post.sent.is_set():
                    raise WorkerLost(
                        f"cannot reach the shoal worker at {self.where}: {exc!r}"
                    ) from None
                error = WorkerLost(
                    f"lost the connection to the shoal worker at {self.where} while it ran "
                    f"tasks {list(invocation.tasks)[:10]} of run {invocation.run_id}: {exc!r}"
                )
                break
            status = response.status_code
            wait = retry_wait(status, response.headers.get("retry-after"), attempt, self.attempts)
            if wait is None:
                error = self._refusal(response, retries=attempt - 1)
                break
            log.info(
                "run %s: the shoal worker at %s answered %d to attempt %d of %d; "
                "sending the invocation again in %.2f s",
                invocation.run_id,
                self.where,
                status,
                attempt,
                self.attempts,
                wait,
            )
            await asyncio.sleep(wait)
            attempt += 1
        if error is None:
            return
        if not post.sent.is_set():
            raise error
        # A lost worker (its tasks go to a new one, as retries allow) is no error yet.
        lost = isinstance(error, WorkerLost)
        log.log(logging.WARNING if lost else logging.ERROR, "run %s: %s", invocation.run_id, error)
        await self._report(invocation, error)

    def _refusal(self, response: httpx.Response, retries: int = 0) -> Exception | None:
        """The error an answer means (the last one, after ``retries`` sends again), or None
        when the invocation ran."""
        status = response.status_code
        if status < 300:
            return None
        if status == 403:
            return BadSignature(f"the shoal worker at {self.where} refused: {_error(response)}")
        if status == 401:
            return ConfigError(
                f"the shoal worker at {self.where} wants a token: pass ?token=… in the "
                f"workers URL or set {TOKEN_ENV} ({_error(response)})"
            )
        retried = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        return WorkerLost(
            f"the shoal worker at {self.where} answered {status}{retried}: {_error(response)}"
        )

    async def _report(self, invocation: Invocation, error: Exception) -> None:
        """Tell the run: its client waits on the event stream for tasks that will not run.
        A lost worker's tasks are recovered (its invocation is named); a refusal (a wrong
        secret or token) fails the run."""
        data = {"error": f"{type(error).__name__}: {error}"}
        if isinstance(error, WorkerLost):
            data["invocation"] = invocation.id
        failed = event(EventKind.WORKER_FAILED, self.where, data=data)
        try:
            store = self._store_for(invocation.storage)
            await store.emit(invocation.run_id, [failed])
        except Exception:
            log.exception("could not report the failure to run %s", invocation.run_id)

    def _store_for(self, url: str) -> Store:
        if self._store is not None and self._store.url == url:
            return self._store
        store = self._stores.get(url)
        if store is None:
            from ..stores import open_store

            assert self._codec is not None
            store = self._stores[url] = open_store(url, self._codec.signer)
        return store

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=_TIMEOUT,
                limits=_LIMITS,
                verify=verify_for(self.endpoint),
            )
        return self._http

    async def close(self, ok: bool = True) -> None:
        """Cancel the requests still waiting for their answer, and close the client."""
        requests = list(self._requests)
        for request in requests:
            request.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        for store in self._stores.values():
            await store.close()
        self._stores.clear()


def retry_wait(
    status: int,
    retry_after: str | None,
    attempt: int,
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    now: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before sending an invocation again, its ``attempt``-th send (from 1)
    answered ``status`` with a ``Retry-After: retry_after`` header (or None: no header); or
    None not to send it again: ``status`` is not 429 or 503, or that was the last of
    ``attempts``. ``Retry-After`` (seconds, or an HTTP date, from ``now``: the Unix time)
    is honoured; else, or if it cannot be read, exponential backoff with full jitter.
    Never more than :data:`MAX_WAIT`."""
    if status not in RETRY_STATUSES or attempt >= attempts:
        return None
    asked = _seconds_after(retry_after, time.time() if now is None else now)
    if asked is not None:
        return min(asked, MAX_WAIT)
    # This retry's wait in a backoff schedule (the earlier ones are drawn and dropped).
    return backoff_delays(attempt, BACKOFF_BASE, cap=MAX_WAIT, rng=rng)[-1]


def _seconds_after(retry_after: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` value asks for (0 for a date past), or None if none can be
    read from it."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, with no zone given
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _count_option(url: str, options: dict[str, str], name: str, default: int) -> int:
    """The whole number >= 1 of query option ``name``, or ``default`` without it."""
    given = options.get(name)
    try:
        value = default if given is None else int(given)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"workers URL {_redact(url)}: {name} must be a whole number >= 1, got {given!r}"
        )
    return value


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text


def _redact(url: str) -> str:
    """``url`` without its query (where the token may be) or credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
