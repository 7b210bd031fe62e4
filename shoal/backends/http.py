"""``http://host:port/path`` and ``https://…``: workers behind any HTTP endpoint that runs
``shoal worker`` (:mod:`shoal.service`), on Knative, OpenFaaS, Cloud Run or a plain
container.

An invocation is one POST of its signed payload, and the service answers only when the
invocation is done (FaaS platforms scale on requests in flight). So :meth:`invoke` does not
wait for that answer: it starts the POST as a background task and returns as soon as the
request body is out (httpcore's ``trace`` extension tells when), which is also what lets a
worker hand out work to the very service it runs on without waiting on itself. A failure
before the body is out (the endpoint cannot be reached) raises from :meth:`invoke`. An
answer other than 2xx, or a connection lost while the invocation ran, is logged at ERROR
with the run id and reported to the run's event stream as a failed worker, so the run fails
instead of waiting for tasks that will never run: 403 as :class:`~shoal.errors.BadSignature`
(the two sides have different secrets), 401 as :class:`~shoal.errors.ConfigError` naming
the token setting. Inside a worker, those answers are read while that worker's process
runs invocations (its event loop runs only then).

Options in the URL's query: ``token`` (else ``$SHOAL_WORKER_TOKEN``), sent as
``Authorization: Bearer …``, and ``parallelism`` (workers running at once at most, the
fan-out hint; 8 by default). Any other query parameter goes to the endpoint untouched (a
platform's function key, for instance). Workers hand out work to the same URL. The
platform, not Shoal, sizes the workers, so invocations' sizes are not used here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from ..codec import Codec
from ..errors import BadSignature, ConfigError, WorkerLost
from ..events import EventKind, event
from ..security import Signer
from .base import Invocation, Platform, verify_for

if TYPE_CHECKING:
    from ..stores import Store

log = logging.getLogger(__name__)

TOKEN_ENV = "SHOAL_WORKER_TOKEN"
DEFAULT_PARALLELISM = 8
#: Query parameters that configure this backend; the endpoint never sees them.
_OPTIONS = ("token", "parallelism")
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
        try:
            self.parallelism = int(options.get("parallelism", DEFAULT_PARALLELISM))
        except ValueError:
            self.parallelism = 0
        if self.parallelism < 1:
            raise ConfigError(
                f"workers URL {_redact(url)}: parallelism must be a whole number >= 1, "
                f"got {options.get('parallelism')!r}"
            )
        self.url = url  # as given, token included: workers hand out work with it
        rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS])
        self.endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", rest, ""))
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

    async def platform(self) -> Platform:
        """The platform behind the endpoint is not known from here: a FaaS default (each
        worker its own CPUs, a minute of keep-warm, none warm)."""
        return Platform(None, 60.0, {})

    async def _send(self, invocation: Invocation, payload: bytes, post: _Post) -> None:
        """The request, to its end. Raises what goes wrong before the body is out (the
        caller is still waiting then); logs and reports to the run what goes wrong after."""
        error: Exception | None
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
        else:
            error = self._refusal(response)
            if error is None:
                return
            if not post.sent.is_set():
                raise error
        log.error("run %s: %s", invocation.run_id, error)
        await self._report(invocation, error)

    def _refusal(self, response: httpx.Response) -> Exception | None:
        """The error an answer means, or None when the invocation ran."""
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
        return WorkerLost(f"the shoal worker at {self.where} answered {status}: {_error(response)}")

    async def _report(self, invocation: Invocation, error: Exception) -> None:
        """Fail the run: its client waits on the event stream for tasks that will not run."""
        failed = event(
            EventKind.WORKER_FAILED,
            self.where,
            data={"error": f"{type(error).__name__}: {error}"},
        )
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

    async def close(self) -> None:
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
