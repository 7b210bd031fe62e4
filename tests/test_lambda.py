"""AWS Lambda workers (``lambda://``), with AWS mocked.

AWS cannot be reached from here, so no test talks to Lambda: the Lambda API is mocked with
botocore's ``Stubber`` (``botocore.stub``) on real boto3 clients, which still check every
request against Lambda's API model (parameter names, types, the ``InvocationType`` enum)
but answer from a queue of canned responses instead of the network.

The unit tests drive :class:`LambdaWorkers` with a stubbed client and read back what it
sent. The end-to-end tests stand in for the Lambda platform with :class:`MockLambdaPlatform`:
a stubbed client that, like Lambda's asynchronous invoke, queues each event and answers
202, and a "container" thread that runs the queued events one at a time through the real
entry point, ``handler(event, None)``, against a real redis-server. What is not tested
here: IAM, networking, deployment and Lambda's own limits and retries.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber
from conftest import leftover_keys

import shoal
from shoal import envs
from shoal.backends import Invocation, Size, aws_lambda, open_workers
from shoal.backends.aws_lambda import ASYNC_PAYLOAD_LIMIT, LambdaWorkers, handler, read_event
from shoal.codec import Codec
from shoal.errors import BadSignature, ConfigError, WorkerLost
from shoal.graph import EncodedGraph
from shoal.security import Signer

URL = "lambda://shoal-test?region=us-east-1"
EVENT_INVOKE = {"FunctionName": ANY, "InvocationType": "Event", "Payload": ANY}


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No AWS configuration of this machine leaks in, and no credentials are looked for."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def lambda_client(region: str = "us-east-1") -> Any:
    """A real boto3 Lambda client; every test wraps it in a Stubber before any call."""
    return boto3.session.Session().client(
        "lambda", region_name=region, aws_access_key_id="testing", aws_secret_access_key="x"
    )


def decode(body: bytes, secret: str) -> tuple[Invocation, float | None]:
    """What the handler side makes of a request's payload: the event as Lambda passes it
    (parsed JSON), its signature checked with ``secret``."""
    payload, sent = read_event(json.loads(body))
    return Codec(Signer(secret)).load_invocation(payload), sent


class Stubbed:
    """A stubbed Lambda client and the parameters of every request it got."""

    def __init__(self) -> None:
        self.client = lambda_client()
        self.stubber = Stubber(self.client)
        self.requests: list[dict[str, Any]] = []
        self.threads: list[int] = []
        self.client.meta.events.register("before-parameter-build.lambda.Invoke", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(dict(params))
        self.threads.append(threading.get_ident())


@pytest.fixture
def stubbed() -> Iterator[Stubbed]:
    s = Stubbed()
    with s.stubber:
        yield s
        s.stubber.assert_no_pending_responses()


def invoke_all(client: Any, secret: str, *invocations: Invocation) -> int:
    """Invoke each through a backend for ``URL`` on ``client``, started with ``secret``;
    returns the event loop's thread."""
    workers = LambdaWorkers(URL, client=client)

    async def go() -> int:
        await workers.start(None, Signer(secret))  # type: ignore[arg-type]  # unused store
        try:
            for invocation in invocations:
                await workers.invoke(invocation)
        finally:
            await workers.close()
        return threading.get_ident()

    return asyncio.run(go())


def invocation(**changes: Any) -> Invocation:
    base = Invocation("run1", (0, 1), 64, None, "redis://127.0.0.1:1/0", URL)
    return dataclasses.replace(base, **changes)


def signed_graph(secret: str, spec_bytes: int) -> EncodedGraph:
    sign = Signer(secret).sign
    return EncodedGraph([sign(b"s" * spec_bytes), sign(b"t")], [sign(b"f")])


# --------------------------------------------------------------------------- the URL


def test_url_is_parsed_and_nothing_is_made_before_the_first_invoke(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str | None] = []
    monkeypatch.setattr(aws_lambda, "new_client", made.append)
    workers = open_workers("lambda://my_fn-1?region=eu-west-3&concurrency=200")
    assert isinstance(workers, LambdaWorkers)
    assert (workers.prefix, workers.region, workers.parallelism) == ("my_fn-1", "eu-west-3", 200)
    assert not workers.in_process and not workers.private
    assert made == []  # the boto3 client is lazy
    assert LambdaWorkers("lambda://f").parallelism == 64
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert LambdaWorkers("lambda://f").region == "ap-south-1"


@pytest.mark.parametrize(
    "url",
    [
        "lambda://",
        "lambda://f/extra",
        "lambda://bad.name",
        "lambda://" + "x" * 60,
        "lambda://f?concurrency=0",
        "lambda://f?concurrency=many",
        "lambda://f?regoin=us-east-1",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_workers(url)


def test_the_default_client_takes_the_region_and_needs_one() -> None:
    client = aws_lambda.new_client("eu-central-1")
    try:
        assert client.meta.region_name == "eu-central-1"
        assert client.meta.service_model.service_name == "lambda"
    finally:
        client.close()
    with pytest.raises(ConfigError, match="AWS_REGION"):  # no region anywhere
        aws_lambda.new_client(None)


# --------------------------------------------------------------------------- invoke requests


def test_invoke_request(stubbed: Stubbed, shared_secret: str) -> None:
    """One function per memory size, an asynchronous invoke, a payload the handler side
    verifies with the shared secret; sent from a thread, not the event loop's."""
    graph = signed_graph(shared_secret, 100)
    small = invocation(graph=graph, size=Size(1.0, 2048))
    big = invocation(tasks=(7,), pages={0: Signer(shared_secret).sign(b"spec")}, size=Size(2, 4096))
    many_cpus = invocation(tasks=(3,), size=Size(cpus=6.0))  # CPUs follow memory on Lambda
    for name in ("shoal-test-2048", "shoal-test-4096", "shoal-test-2048"):
        expected = {**EVENT_INVOKE, "FunctionName": name}
        stubbed.stubber.add_response("invoke", {"StatusCode": 202}, expected)
    before = time.time()
    loop_thread = invoke_all(stubbed.client, shared_secret, small, big, many_cpus)
    after = time.time()

    assert [r["FunctionName"] for r in stubbed.requests] == [
        "shoal-test-2048",
        "shoal-test-4096",
        "shoal-test-2048",
    ]
    assert all(r["InvocationType"] == "Event" for r in stubbed.requests)
    decoded = [decode(r["Payload"], shared_secret) for r in stubbed.requests]
    assert [d[0] for d in decoded] == [small, big, many_cpus]  # graph and specs inline, intact
    assert all(sent is not None and before <= sent <= after for _, sent in decoded)
    assert loop_thread not in stubbed.threads  # boto3 blocks: kept off the event loop
    with pytest.raises(BadSignature):  # and only the shared secret verifies it
        decode(stubbed.requests[0]["Payload"], "another secret, 16+ characters")


def test_prewarm_sends_warming_invocations_that_only_make_the_runtime(
    stubbed: Stubbed, shared_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-warm (stubbed Lambda client): one warming event per worker wanted, to the
    function of that size; the handler makes its runtime for it and runs nothing."""
    for _ in range(2):
        expected = {**EVENT_INVOKE, "FunctionName": "shoal-test-4096"}
        stubbed.stubber.add_response("invoke", {"StatusCode": 202}, expected)
    workers = LambdaWorkers(URL, client=stubbed.client)
    assert asyncio.run(workers.prewarm(2.0, 4096, 2)) == 2
    events = [json.loads(r["Payload"]) for r in stubbed.requests]
    assert events == [aws_lambda.WARM_EVENT] * 2
    ran: list[Any] = []
    monkeypatch.setattr("shoal.runtime.WorkerRuntime.run", lambda *a, **k: ran.append(a))
    aws_lambda.shutdown()
    try:
        assert handler(events[0], None) is None
        assert aws_lambda._runtime is not None and ran == []  # warm, and nothing ran
    finally:
        aws_lambda.shutdown()


@pytest.mark.parametrize("carried", ["graph", "pages"])
def test_an_oversized_invocation_goes_without_its_graph_and_specs(
    stubbed: Stubbed, shared_secret: str, carried: str
) -> None:
    sign = Signer(shared_secret).sign
    heavy = {
        "graph": {"graph": signed_graph(shared_secret, 300_000)},
        "pages": {"pages": {0: sign(b"a" * 150_000), 1: sign(b"b" * 150_000)}},
    }[carried]
    oversized = invocation(**heavy)
    stubbed.stubber.add_response("invoke", {"StatusCode": 202}, EVENT_INVOKE)
    invoke_all(stubbed.client, shared_secret, oversized)

    (request,) = stubbed.requests
    assert len(request["Payload"]) <= ASYNC_PAYLOAD_LIMIT
    sent, _ = decode(request["Payload"], shared_secret)
    assert sent.graph is None and sent.pages is None  # the worker reads them from the store
    assert (sent.run_id, sent.tasks, sent.storage, sent.workers) == (
        oversized.run_id,
        oversized.tasks,
        oversized.storage,
        oversized.workers,
    )


def test_an_invocation_too_large_even_without_its_graph_is_refused(
    stubbed: Stubbed, shared_secret: str
) -> None:
    huge = invocation(tasks=tuple(range(100_000, 200_000)))
    with pytest.raises(WorkerLost, match="256 KiB limit"):
        invoke_all(stubbed.client, shared_secret, huge)
    assert stubbed.requests == []  # nothing was sent


@pytest.mark.parametrize(
    ("code", "status"),
    [("ResourceNotFoundException", 404), ("TooManyRequestsException", 429)],
)
def test_a_refused_invoke_is_worker_lost_naming_the_function(
    stubbed: Stubbed, shared_secret: str, code: str, status: int
) -> None:
    stubbed.stubber.add_client_error(
        "invoke", service_error_code=code, service_message="no can do", http_status_code=status
    )
    with pytest.raises(WorkerLost) as info:
        invoke_all(stubbed.client, shared_secret, invocation(size=Size(1, 1024)))
    assert "shoal-test-1024" in str(info.value) and code in str(info.value)


def test_an_unreachable_endpoint_is_worker_lost(shared_secret: str) -> None:
    class Unreachable:
        def invoke(self, **params: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://lambda.us-east-1.amazonaws.com")

    with pytest.raises(WorkerLost, match="shoal-test-2048"):
        invoke_all(Unreachable(), shared_secret, invocation())


def test_a_size_lambda_does_not_offer_is_a_config_error(
    stubbed: Stubbed, shared_secret: str
) -> None:
    with pytest.raises(ConfigError, match="10240 MB"):
        invoke_all(stubbed.client, shared_secret, invocation(size=Size(1, 20_000)))
    assert stubbed.requests == []


# --------------------------------------------------------------------------- the handler


def test_a_tampered_payload_is_refused_by_the_handler(
    stubbed: Stubbed, shared_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[Any] = []
    monkeypatch.setattr("shoal.runtime.WorkerRuntime.run", lambda *a, **k: ran.append(a))
    stubbed.stubber.add_response("invoke", {"StatusCode": 202}, EVENT_INVOKE)
    invoke_all(stubbed.client, shared_secret, invocation())
    event = json.loads(stubbed.requests[0]["Payload"])
    try:
        handler(event, None)  # the genuine event is accepted ...
        assert len(ran) == 1
        payload = bytearray(base64.b64decode(event["payload"]))
        payload[-1] ^= 1  # ... one flipped bit is not
        tampered = {**event, "payload": base64.b64encode(bytes(payload)).decode()}
        with pytest.raises(BadSignature):
            handler(tampered, None)
        with pytest.raises(ValueError, match="not a Shoal invocation event"):
            handler({"hello": "world"}, None)
        assert len(ran) == 1
    finally:
        aws_lambda.shutdown()


# --------------------------------------------------------------------------- end to end


class MockLambdaPlatform:
    """Stands in for AWS Lambda, which cannot be reached from here.

    Its API side is a real boto3 Lambda client wrapped in a Stubber: each request is
    checked against Lambda's API model and answered 202, as an asynchronous invoke is (or
    refused as too large, as Lambda refuses an event over its limit), and recorded. Its
    compute side is one container: a thread that runs the queued events one at a time
    through :func:`aws_lambda.handler` (so the module's runtime stays warm between them, as
    in a reused Lambda container) and retires the runtime when the platform stops.
    """

    EVENT_LIMIT = 256 * 1024  # bytes in an asynchronous invocation's event, as documented

    def __init__(self) -> None:
        self._api = lambda_client()
        self._stubber = Stubber(self._api)
        self._stubber.activate()
        self._lock = threading.Lock()  # one stub response per request, in order
        self.requests: list[dict[str, Any]] = []
        self.regions: list[str | None] = []
        self.failures: list[BaseException] = []  # what the handler raised, as Lambda logs
        self.drop = 0  # events to lose (Lambda drops one after its own retries fail)
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._container = threading.Thread(target=self._serve, name="mock-lambda-container")
        self._container.start()

    def client(self, region: str | None) -> MockLambdaClient:
        """Replaces :func:`aws_lambda.new_client`."""
        self.regions.append(region)
        return MockLambdaClient(self)

    def invoke(self, **params: Any) -> dict[str, Any]:
        with self._lock:
            if len(params["Payload"]) > self.EVENT_LIMIT:  # what Lambda answers
                self._stubber.add_client_error(
                    "invoke", "RequestEntityTooLargeException", http_status_code=413
                )
            else:
                self._stubber.add_response("invoke", {"StatusCode": 202}, EVENT_INVOKE)
            reply: dict[str, Any] = self._api.invoke(**params)
            self.requests.append(params)
            if self.drop:
                self.drop -= 1
                return reply
        self._events.put(json.loads(params["Payload"]))  # Lambda hands the handler JSON
        return reply

    def _serve(self) -> None:
        try:
            while (event := self._events.get()) is not None:
                try:
                    handler(event, None)
                except BaseException as exc:
                    self.failures.append(exc)
                finally:
                    self._events.task_done()
        finally:
            aws_lambda.shutdown()  # the container is retired

    def drain(self) -> None:
        """Wait until every event sent so far, and every one those sent, has run."""
        self._events.join()

    def stop(self) -> None:
        self.drain()
        self._events.put(None)
        self._container.join()
        self._stubber.deactivate()
        self._api.close()


class MockLambdaClient:
    """What :class:`LambdaWorkers` gets for a boto3 client: requests go to the platform."""

    def __init__(self, platform: MockLambdaPlatform) -> None:
        self.platform = platform
        self.closed = False

    def invoke(self, **params: Any) -> dict[str, Any]:
        return self.platform.invoke(**params)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockLambdaPlatform]:
    mock = MockLambdaPlatform()
    monkeypatch.setattr(aws_lambda, "new_client", mock.client)
    try:
        yield mock
    finally:
        mock.stop()
    assert mock.failures == []


class Boom(Exception):
    pass


@shoal.task
def square(x: int) -> int:
    return x * x


@shoal.task(retries=1)
def patient_square(x: int) -> int:
    return x * x


@shoal.task(memory_mb=4096)
def big_square(x: int) -> int:
    return x * x


@shoal.task
def add(a: int, b: int) -> int:
    return a + b


@shoal.task
def explode(x: int) -> int:
    raise Boom(f"cannot take {x}")


@shoal.task
def length(blob: bytes) -> int:
    return len(blob)


def tree_sum(nodes: list[Any]) -> Any:
    while len(nodes) > 1:
        pairs = [add(a, b) for a, b in zip(nodes[::2], nodes[1::2], strict=False)]
        nodes = pairs + ([nodes[-1]] if len(nodes) % 2 else [])
    return nodes[0]


def names(platform: MockLambdaPlatform) -> set[str]:
    return {r["FunctionName"] for r in platform.requests}


def test_a_tree_reduction_runs_on_lambda(
    platform: MockLambdaPlatform, redis_url: str, shared_secret: str
) -> None:
    leaves = [big_square(0)] + [square(i) for i in range(1, 16)]
    (result,) = shoal.compute(tree_sum(leaves), storage=redis_url, workers=URL, progress=False)
    assert result == sum(i * i for i in range(16))

    summary = shoal.last_run()
    assert summary is not None and summary.ok and summary.tasks_done == 31
    assert summary.workers == len(platform.requests) > 1  # one worker per invocation
    assert summary.cold_starts == 1  # one container, warm after its first invocation
    assert names(platform) == {"shoal-test-2048", "shoal-test-4096"}
    assert set(platform.regions) == {"us-east-1"}  # the client's and the workers' clients
    assert all(r["InvocationType"] == "Event" for r in platform.requests)
    platform.drain()
    assert leftover_keys(redis_url) == []


@shoal.task
def upto(n: int) -> list[int]:
    return list(range(n))


@shoal.task
def summed(xs: list[int]) -> int:
    return sum(xs)


def test_a_map_expands_on_lambda(
    platform: MockLambdaPlatform, redis_url: str, shared_secret: str
) -> None:
    """A map's elements are made by the function that ran its input, and handed out to
    other invocations (the mocked platform's), chained element by element."""
    node = summed(square.map(square.map(upto(12))))
    (result,) = shoal.compute(node, storage=redis_url, workers=URL, progress=False)
    assert result == sum(i**4 for i in range(12))
    summary = shoal.last_run()
    assert summary is not None and summary.ok and summary.tasks == summary.tasks_done
    assert summary.workers == len(platform.requests) > 1
    platform.drain()
    assert leftover_keys(redis_url) == []


def test_a_failing_task_raises_its_own_exception(
    platform: MockLambdaPlatform, redis_url: str
) -> None:
    with pytest.raises(Boom, match="cannot take 9") as info:
        shoal.compute(
            tree_sum([square(i) for i in range(8)] + [explode(add(4, 5))]),
            storage=redis_url,
            workers=URL,
            progress=False,
        )
    assert "explode" in "".join(getattr(info.value, "__notes__", []))
    assert len(platform.requests) >= 1
    platform.drain()  # workers still queued find the run gone and stop
    assert leftover_keys(redis_url) == []


def test_a_graph_too_big_for_an_event_is_read_from_the_store(
    platform: MockLambdaPlatform, redis_url: str, shared_secret: str
) -> None:
    blob = bytes(range(256)) * 1200  # ~300 KB: it cannot travel in an event
    (result,) = shoal.compute(
        add(length(blob), square(3)), storage=redis_url, workers=URL, progress=False
    )
    assert result == len(blob) + 9
    assert all(len(r["Payload"]) <= ASYNC_PAYLOAD_LIMIT for r in platform.requests)
    sent = [decode(r["Payload"], shared_secret)[0] for r in platform.requests]
    assert all(s.graph is None for s in sent)  # the constant, lifted out, is read from Redis
    platform.drain()
    assert leftover_keys(redis_url) == []


def test_a_lost_event_is_invoked_again(
    platform: MockLambdaPlatform, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda accepted the event (202) but never ran it: its lease runs out and the client
    invokes its task again, as its retries allow."""
    monkeypatch.setenv("SHOAL_LEASE_S", "1")
    platform.drop = 1
    (result,) = shoal.compute(patient_square(7), storage=redis_url, workers=URL, progress=False)
    assert result == 49
    summary = shoal.last_run()
    assert summary is not None and len(platform.requests) == 2
    (lost,) = summary.errors
    assert "lease expired" in lost.error
    platform.drain()
    assert leftover_keys(redis_url) == []


# --------------------------------------------------------------------------- requirements


@shoal.task(requirements=["packaging>=20"])  # in this (the "container's") environment
def packaged(x: int) -> int:
    return x + 1


@shoal.task(requirements=["shoal-testpkg-absent>=1"])
def needs_absent(x: int) -> int:
    raise AssertionError("must not run: its requirement is missing")


def test_tasks_with_requirements_run_on_their_environments_function(
    platform: MockLambdaPlatform, redis_url: str
) -> None:
    """One function per (memory size, environment): a task with requirements goes to the
    function named by its set's key; its children without them to the plain one."""
    (result,) = shoal.compute(
        square(packaged(3)), storage=redis_url, workers=URL, progress=False, history="none"
    )
    assert result == 16
    key = envs.key(envs.normalise(["packaging>=20"]))
    assert names(platform) == {f"shoal-test-2048-{key}", "shoal-test-2048"}
    platform.drain()
    assert leftover_keys(redis_url) == []


def test_a_worker_lacking_a_requirement_refuses_before_running_anything(
    platform: MockLambdaPlatform, redis_url: str
) -> None:
    with pytest.raises(shoal.RequirementsUnsatisfied, match="shoal-testpkg-absent>=1"):
        shoal.compute(
            needs_absent(1), storage=redis_url, workers=URL, progress=False, history="none"
        )
    platform.drain()
    assert leftover_keys(redis_url) == []


def test_a_function_name_with_a_requirement_key_stays_within_lambdas_limit() -> None:
    workers = LambdaWorkers("lambda://" + "p" * 50)
    with pytest.raises(ConfigError, match="shorter prefix"):
        workers.function_name(Size(), ("numpy",))
    assert workers.function_name(Size()) == "p" * 50 + "-2048"
