"""The data plane (shoal.blobs): big outputs in a blob store, references in Redis.

File blobs run against a temporary directory; S3 blobs against moto's server, an S3
**emulator** started here (no S3-compatible server is packaged for this machine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import blob_files, blobs_left, folders_left, leftover_keys
from servers import S3_ENV, gateway, s3_keys
from signals import wait_for

import shoal
from shoal.blobs import default_url, open_blobs, parse_size, storage_with_blobs
from shoal.blobs.files import FileBlobs
from shoal.codec import BlobRef
from shoal.errors import BadSignature, ConfigError
from shoal.stores.redis import RedisStore

MiB = 1 << 20


# --------------------------------------------------------------------------- plain data
def test_sizes_read_as_bytes_with_binary_units() -> None:
    assert parse_size("0", "x") == 0
    assert parse_size(4096, "x") == 4096
    assert parse_size("512k", "x") == 512 * 1024
    assert parse_size("1MB", "x") == MiB
    assert parse_size("1.5 GiB", "x") == 3 * (1 << 29)
    with pytest.raises(ConfigError, match="blob_above must be a size"):
        parse_size("lots", "blob_above")


def test_auto_puts_blobs_in_shared_memory_only_when_every_worker_shares_the_host() -> None:
    redis = "redis://127.0.0.1:6379/0"
    assert "blobs=file" in storage_with_blobs(redis, "auto", same_host=True)
    assert storage_with_blobs(redis, "auto", same_host=False) == redis
    assert storage_with_blobs(redis, "off", same_host=True) == redis
    assert storage_with_blobs("memory://", "file:///tmp/x", same_host=True) == "memory://"
    given = redis + "?blobs=file%3A%2F%2F%2Fmine"
    assert storage_with_blobs(given, "auto", same_host=True) == given  # the URL's own wins
    assert default_url().startswith("file:///")


def test_a_bad_blob_store_url_is_an_error_naming_it_before_the_run() -> None:
    with pytest.raises(ConfigError, match="unknown blob store 'ftp://x'"):
        storage_with_blobs("redis://localhost", "ftp://x", same_host=True)
    with pytest.raises(ConfigError, match="no bucket"):
        open_blobs("s3:///prefix", "ns")
    with pytest.raises(ConfigError, match="unknown options"):
        open_blobs("s3://bucket?endpoint=http://x", "ns")
    with pytest.raises(ConfigError, match="file:///absolute"):
        open_blobs("file://otherhost/dir", "ns")


def test_file_blobs_are_written_whole_read_back_listed_and_deleted(tmp_path: Path) -> None:
    blobs = FileBlobs((tmp_path / "b").as_uri(), "ns")

    async def scenario() -> None:
        await blobs.put("run1", 3, [b"tag", b"data" * 1000])
        await blobs.put("run1", 3, [b"tag", b"data" * 1000])  # a repeated step: same blob
        await blobs.put("run2", 0, [b"x", memoryview(b"y" * (5 * MiB))])  # through a thread
        assert await blobs.get("run1", 3) == b"tag" + b"data" * 1000
        assert len(await blobs.get("run2", 0)) == 5 * MiB + 1
        assert sorted(await blobs.runs()) == ["run1", "run2"]
        with pytest.raises(LookupError, match="task 9"):
            await blobs.get("run1", 9)
        await blobs.delete("run1", [3, 9])
        with pytest.raises(LookupError):
            await blobs.get("run1", 3)
        await blobs.delete_run("run2")
        await blobs.delete_run("never")
        assert [r for r in await blobs.runs() if not r.startswith(".")] == ["run1"]  # ".": deleting

    asyncio.run(scenario())
    assert blobs_left(tmp_path / "b") == []  # no temporary file left either
    asyncio.run(blobs.delete_run("run1"))
    assert folders_left(tmp_path / "b") == []  # the namespace's folder too, once empty


def test_s3_blobs_against_the_emulator(s3_endpoint: str) -> None:
    blobs = open_blobs(f"s3://shoal-test/unit?endpoint_url={s3_endpoint}", "ns")

    async def scenario() -> None:
        await blobs.put("run1", 1, [b"tag", b"payload"])
        await blobs.put("run1", 2, [b"tag", b"more"])
        await blobs.put("run2", 0, [b"tag", b"z"])
        assert await blobs.get("run1", 1) == b"tagpayload"
        assert sorted(await blobs.runs()) == ["run1", "run2"]
        with pytest.raises(LookupError, match="task 7"):
            await blobs.get("run1", 7)
        await blobs.delete("run1", [2])
        await blobs.delete_run("run2")
        assert await blobs.runs() == ["run1"]
        await blobs.delete_run("run1")

    asyncio.run(scenario())
    assert [k for k in s3_keys(s3_endpoint) if k.startswith("unit/")] == []


# --------------------------------------------------------------------------- runs
@shoal.task
def blob_of(n: int) -> bytes:
    return os.urandom(n)


@shoal.task
def size_and_tail(data: bytes) -> tuple[int, bytes]:
    return len(data), data[-4:]


@shoal.task
def blob_files_now(data: bytes, root: str) -> int:
    """How many blob files exist while a consumer of one runs."""
    return sum(1 for p in Path(root).rglob("*") if p.is_file())


@shoal.task
def boom(data: bytes) -> None:
    raise RuntimeError("boom after reading a blob")


@shoal.task
def first_bytes(data: bytes) -> bytes:
    return data[:8]


def test_an_output_is_passed_through_the_blob_store_and_its_blob_deleted_after(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "blobs"
    # Two consumers on different workers: the output must be stored, as a blob.
    data = blob_of(3 * MiB)
    sinks = (blob_files_now(data, str(root)), size_and_tail(data))
    seen, (size, _) = shoal.compute(
        *sinks, storage=redis_url, workers=gateway_url, blobs=root.as_uri(), progress=False
    )
    assert seen >= 1 and size == 3 * MiB
    summary = shoal.last_run()
    assert summary is not None and summary.bytes_moved >= 3 * MiB  # the blob's bytes count
    assert blobs_left(root) == [] and leftover_keys(redis_url) == []
    assert folders_left(root) == []  # nor the folder of its Redis's namespace


@pytest.mark.parametrize("where", ["file", "s3"])
def test_blobs_are_gone_after_a_failed_run(
    where: str, redis_url: str, gateway_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        blobs = f"s3://shoal-test/failed?endpoint_url={endpoint}"
    else:
        blobs = (tmp_path / "blobs").as_uri()
    data = blob_of(2 * MiB)
    with pytest.raises(RuntimeError, match="boom after reading a blob"):
        shoal.compute(
            boom(data),
            size_and_tail(data),
            storage=redis_url + "?blob_above=0",
            workers="local",
            blobs=blobs,
            progress=False,
        )
    assert leftover_keys(redis_url) == []
    if where == "s3":
        assert [k for k in s3_keys(request.getfixturevalue("s3_endpoint")) if "failed/" in k] == []
    else:
        assert blobs_left(tmp_path / "blobs") == []


def test_an_output_too_big_for_redis_without_a_blob_store_fails_naming_the_fix(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shoal.stores.redis.VALUE_LIMIT", MiB)  # workers are threads here
    data = blob_of(2 * MiB)  # two consumers: it must be stored
    with pytest.raises(ValueError, match=r"more than the 1 MiB a Redis value holds.*blobs=") as e:
        shoal.compute(
            size_and_tail(data),
            first_bytes(data),
            storage=redis_url,
            workers="local",
            blobs="off",
            progress=False,
        )
    assert any("blob_of" in note for note in e.value.__notes__)
    assert leftover_keys(redis_url) == []


def test_a_store_without_the_blob_store_says_so_for_a_reference(
    redis_url: str, tmp_path: Path
) -> None:
    """A worker given a storage URL without the run's blob store gets a ConfigError."""
    from shoal.security import Signer

    signer = Signer.new()
    with_blobs = RedisStore(f"{redis_url}?blob_above=0&blobs={(tmp_path / 'b').as_uri()}", signer)
    without = RedisStore(redis_url, signer)

    async def scenario() -> None:
        blob, size = await with_blobs._encode_output("r1", 0, b"x" * 100)
        assert size > 100 and len(blob) < 64
        with pytest.raises(ConfigError, match="names none"):
            await without._get_blob("r1", 0, BlobRef(size, signed=False))
        await with_blobs.blobs.delete_run("r1")  # type: ignore[union-attr]
        await with_blobs.close()
        await without.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- across hosts
@shoal.task
def where_and_size(data: bytes) -> tuple[str, int]:
    return os.environ.get("SHOAL_TEST_HOST", "client"), len(data)


def test_workers_on_two_gateways_read_each_others_outputs_through_s3(
    redis_url: str, s3_endpoint: str, shared_secret: str
) -> None:
    """Each gateway stands for a host: its workers have their own temporary directory, so
    only the S3 store is common to them."""
    with (
        gateway(env={**S3_ENV, "SHOAL_TEST_HOST": "a"}) as a,
        gateway(env={**S3_ENV, "SHOAL_TEST_HOST": "b"}) as b,
    ):
        both = a + "," + b.removeprefix("gateway+http://")
        data = blob_of(MiB)
        results = shoal.compute(
            *[where_and_size(data) for _ in range(12)],
            storage=redis_url + "?blob_above=0",
            workers=both,
            blobs=f"s3://shoal-test/hosts?endpoint_url={s3_endpoint}",
            progress=False,
        )
    assert {size for _, size in results} == {MiB}
    assert {host for host, _ in results} == {"a", "b"}, results
    assert [k for k in s3_keys(s3_endpoint) if k.startswith("hosts/")] == []
    assert leftover_keys(redis_url) == []


# --------------------------------------------------------------------------- big
def test_a_1_gib_output_round_trips_on_redis_and_a_gateway(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    gib = 1 << 30

    @shoal.task(memory_mb=6144)
    def one_gib() -> bytes:
        return b"\x07" * gib

    @shoal.task(memory_mb=6144)
    def check(data: bytes) -> tuple[int, int]:
        return len(data), data.count(b"\x07")

    @shoal.task(memory_mb=6144)
    def head(data: bytes) -> bytes:
        return data[:4]

    data = one_gib()
    (size, sevens), start = shoal.compute(
        check(data),
        head(data),
        storage=redis_url,
        workers=gateway_url,
        blobs=(tmp_path / "blobs").as_uri(),
        progress=False,
    )
    assert size == gib and sevens == gib and start == b"\x07" * 4
    assert blobs_left(tmp_path / "blobs") == [] and leftover_keys(redis_url) == []


# --------------------------------------------------------------------------- cancelled
CANCELLED_CLIENT = """
import faulthandler, os, sys, time, shoal
faulthandler.dump_traceback_later(25)  # should it hang: where (the test waits 30 s)

@shoal.task
def big() -> bytes:
    return os.urandom(2 << 20)

@shoal.task
def stuck(data: bytes, flag: str, go: str) -> int:
    open(flag, "w").close()
    deadline = time.monotonic() + 60  # until the test lets it go: the worker is freed
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)

data = big()
go = sys.argv[3] + ".go"  # (the client's argv: a worker's is its own)
try:
    shoal.compute(stuck(data, sys.argv[3], go), stuck(data, sys.argv[3] + ".2", go),
                  storage=sys.argv[1] + "?blob_above=0", workers=sys.argv[2], progress=False)
except shoal.RunCancelled:
    sys.exit(3)
"""


def test_blobs_are_gone_after_a_cancelled_run(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(CANCELLED_CLIENT))
    flag = tmp_path / "started"
    env = {**os.environ, "SHOAL_BLOBS": (tmp_path / "blobs").as_uri()}
    proc = subprocess.Popen(
        [sys.executable, str(script), redis_url, gateway_url, str(flag)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(flag), "the task never started"
        blobs = tmp_path / "blobs"
        deadline = time.monotonic() + 5
        while not blob_files(blobs) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the directory, with a deadline
        listed = (
            sorted(str(p.relative_to(blobs)) for p in blobs.rglob("*")) if blobs.exists() else []
        )
        assert blob_files(blobs) != [], listed  # the big output is a blob, in use
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 3, out
    finally:
        (tmp_path / "started.go").touch()
        proc.kill()
        print(proc.communicate()[0])  # shown if the test fails
    assert blobs_left(tmp_path / "blobs") == [] and leftover_keys(redis_url) == []


def test_a_run_sweeps_the_blobs_of_runs_its_redis_no_longer_has(
    redis_url: str, tmp_path: Path
) -> None:
    """Blobs an earlier run left (its client and workers died together) go with the next
    run on the same Redis; another Redis's blobs in the same directory stay."""
    from shoal.security import Signer

    root = (tmp_path / "blobs").as_uri()
    mine = RedisStore(f"{redis_url}?blobs={root}", Signer.new())
    other = RedisStore(f"redis://127.0.0.1:1/0?blobs={root}", Signer.new())
    asyncio.run(mine.blobs.put("orphan", 0, [b"left behind"]))  # type: ignore[union-attr]
    asyncio.run(other.blobs.put("elsewhere", 0, [b"not ours"]))  # type: ignore[union-attr]
    data = blob_of(2 * MiB)
    shoal.compute(
        size_and_tail(data),
        first_bytes(data),
        storage=redis_url,
        workers="local",
        blobs=root,
        progress=False,
    )
    left = [p for p in blobs_left(tmp_path / "blobs", within_s=0) if "elsewhere" not in str(p)]
    deadline = time.monotonic() + 10  # freeing the orphan's blobs goes on in a thread
    while left and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the directory, with a deadline
        left = [p for p in blob_files(tmp_path / "blobs") if "elsewhere" not in str(p)]
    assert left == [] and [p.parent.name for p in blob_files(tmp_path / "blobs")] == ["elsewhere"]


# --------------------------------------------------------------------------- frames
@pytest.mark.parametrize(
    ("value", "out_of_band"),
    [
        (b"plain bytes" * 1000, False),
        (bytearray(b"\x01\x02" * 5000), False),
        (np.arange(100_000, dtype=np.float64), True),
        (np.asfortranarray(np.arange(60_000, dtype=np.int32).reshape(200, 300)), True),
        (np.arange(100_000)[::3], False),  # not contiguous: pickled in-band
        ({"a": np.ones(10_000), "b": [np.zeros(3), "text"], "c": 7}, True),
        (None, False),
    ],
    ids=["bytes", "bytearray", "array", "fortran", "strided", "nested", "none"],
)
def test_a_frame_round_trips_with_big_buffers_out_of_the_pickle(
    value: Any, out_of_band: bool
) -> None:
    from shoal.codec import Codec

    parts, has_buffers = Codec.frame_value(value)
    assert has_buffers == out_of_band
    back = Codec.unframe_value(memoryview(bytearray(b"".join(parts))))
    assert _equal(back, value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@shoal.task
def big_array() -> np.ndarray:
    return np.arange(1_000_000, dtype=np.float64)  # 8 MB: mapped, not read


@shoal.task
def doubled_in_place(array: np.ndarray) -> float:
    array *= 2  # the input is writable (a copy-on-write mapping of the blob)
    return float(array.sum())


@shoal.task
def array_sum(array: np.ndarray) -> float:
    return float(array.sum())


def test_arrays_from_file_blobs_are_mapped_writable_and_private_to_their_task(
    redis_url: str, gateway_url: str, tmp_path: Path
) -> None:
    array = big_array()
    total = float(np.arange(1_000_000, dtype=np.float64).sum())
    sinks = [doubled_in_place(array), array_sum(array), array_sum(array)]
    results = shoal.compute(
        *sinks,
        storage=redis_url,
        workers=gateway_url,
        blobs=(tmp_path / "blobs").as_uri(),
        progress=False,
    )
    assert results[0] == 2 * total
    # A task that changed its input changed its own copy: where another task read the
    # same blob, it saw the array as stored (on the producer's worker, which holds the
    # one object, order decides: so the two readers may not both be elsewhere).
    assert total in results[1:]
    assert blobs_left(tmp_path / "blobs") == []


def test_a_file_store_opens_while_another_runs_delete_prunes_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The namespace's folder goes with its last run's blobs, at any moment: a store opened
    just then is still made, and private (a folder this user made 0700, or none)."""
    base = tmp_path / "blobs"
    (base / "ns").mkdir(mode=0o700, parents=True)
    looked: list[Path] = []
    real_stat = Path.stat

    def stat(self: Path, **kwargs: Any) -> Any:
        if self == base / "ns":
            looked.append(self)
            if len(looked) > 1:  # pruned right after the first look
                raise FileNotFoundError(self)
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    blobs = FileBlobs(base.as_uri(), "ns")
    assert blobs.private and len(looked) == 1
    monkeypatch.undo()
    (base / "ns").rmdir()
    assert FileBlobs(base.as_uri(), "ns").private  # not there at all: made 0700 when needed


def test_blobs_are_signed_unless_only_this_user_can_write_them(
    redis_url: str, tmp_path: Path
) -> None:
    from shoal.security import Signer

    mine, shared = tmp_path / "mine", tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as a shared directory would be (umask aside)
    signer = Signer.new()
    private = RedisStore(f"{redis_url}?blob_above=0&blobs={mine.as_uri()}", signer)
    public = RedisStore(f"{redis_url}?blob_above=0&blobs={shared.as_uri()}", signer)
    assert private.blobs is not None and private.blobs.private
    assert public.blobs is not None and not public.blobs.private

    async def scenario() -> None:
        mine_ref, _ = await private._encode_output("r1", 0, np.ones(1000))
        shared_ref, _ = await public._encode_output("r1", 0, np.ones(1000))
        assert private.codec.load_value(mine_ref) == BlobRef(ANY_SIZE, False)
        assert public.codec.load_value(shared_ref) == BlobRef(ANY_SIZE, True)
        # A blob written unsigned is refused where others could have written it.
        (mine / "x").mkdir()
        moved = RedisStore(f"{redis_url}?blob_above=0&blobs={mine.as_uri()}", signer)
        mine.chmod(0o777)
        moved_again = RedisStore(f"{redis_url}?blob_above=0&blobs={mine.as_uri()}", signer)
        ref = private.codec.load_value(mine_ref)
        with pytest.raises(BadSignature, match="unsigned"):
            await moved_again._get_blob("r1", 0, ref)
        for store in (private, public, moved, moved_again):
            await store.blobs.delete_run("r1")  # type: ignore[union-attr]
            await store.close()

    asyncio.run(scenario())


class _AnySize(int):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)

    __hash__ = int.__hash__


ANY_SIZE = _AnySize(0)


def test_a_deletion_left_half_done_by_a_dead_process_is_swept(tmp_path: Path) -> None:
    blobs = FileBlobs((tmp_path / "b").as_uri(), "ns")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    blobs.root.mkdir()
    (blobs.root / f".run1.{dead}.0").mkdir()  # its deleting process died
    (blobs.root / f".run2.{os.getpid()}.0").mkdir()  # this process is deleting it
    assert asyncio.run(blobs.runs()) == [f".run1.{dead}.0"]


def test_a_gateway_sweeps_blobs_whose_run_expired(
    redis_url: str, tmp_path: Path, shared_secret: str
) -> None:
    """Blobs expire like keys even with no client left: the gateway sweeps the blob stores
    of the runs it served now and then."""
    from shoal.security import Signer

    root = tmp_path / "blobs"
    with gateway(env={"SHOAL_BLOB_SWEEP_S": "0.1"}) as url:
        assert (
            first_bytes(b"abc").compute(
                storage=redis_url, workers=url, blobs=root.as_uri(), progress=False
            )
            == b"abc"
        )
        store = RedisStore(storage_with_blobs(redis_url, root.as_uri(), True), Signer.new())
        asyncio.run(store.blobs.put("expired", 0, [b"its keys are gone"]))  # type: ignore[union-attr]
        assert blob_files(root) != []
        assert blobs_left(root) == []  # within 10 s, by the gateway's sweep
