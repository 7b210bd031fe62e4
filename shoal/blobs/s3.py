"""``s3://bucket/prefix``: blobs as objects in S3 or an S3-compatible store, through boto3.

Query options: ``endpoint_url`` (an S3-compatible server, e.g. MinIO or Ceph), ``region``.
Credentials come from boto3's usual chain. Objects are
``<prefix>/<namespace>/<run>/<task>``; a bucket lifecycle rule that expires objects after a
day or two backs up the sweep (see :mod:`shoal.blobs`) where no client runs for a while.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError

#: Bigger objects are sent in parts, several at once (boto3's managed transfer).
_MULTIPART_ABOVE = 64 << 20
_OPTIONS = {"endpoint_url", "region"}


class S3Blobs:
    """Blobs as S3 objects; every call runs in a thread (boto3 is synchronous)."""

    private = False

    def __init__(self, url: str, namespace: str) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - _OPTIONS
        if not parts.netloc or unknown:
            what = f"unknown options {sorted(unknown)}" if unknown else "no bucket"
            raise ConfigError(
                f"blob store {url!r}: {what}; expected "
                "s3://bucket[/prefix][?endpoint_url=http://host:port&region=name]"
            )
        self.url = url
        self.bucket = parts.netloc
        self.prefix = "/".join(p for p in (parts.path.strip("/"), namespace) if p) + "/"
        self._options = options
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, namespace: str) -> S3Blobs:
        return cls(url, namespace)

    def _s3(self) -> Any:
        with self._lock:  # boto3 makes clients thread-unsafely; a client is then safe
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self._options.get("endpoint_url"),
                    region_name=self._options.get("region"),
                    config=Config(retries={"max_attempts": 5, "mode": "standard"}),
                )
            return self._client

    def _key(self, run_id: str, task: int) -> str:
        return f"{self.prefix}{run_id}/{task}"

    async def put(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        body = b"".join(parts)
        key = self._key(run_id, task)

        def upload() -> None:
            if len(body) > _MULTIPART_ABOVE:
                self._s3().upload_fileobj(io.BytesIO(body), self.bucket, key)
            else:
                self._s3().put_object(Bucket=self.bucket, Key=key, Body=body)

        await asyncio.to_thread(upload)

    async def get(self, run_id: str, task: int) -> bytearray:
        key = self._key(run_id, task)

        def download() -> bytearray:
            s3 = self._s3()
            try:
                body = bytearray(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except s3.exceptions.NoSuchKey:
                raise LookupError(
                    f"no blob for the output of task {task} at s3://{self.bucket}/{key}"
                ) from None
            return body

        return await asyncio.to_thread(download)

    async def delete(self, run_id: str, tasks: Sequence[int]) -> None:
        await asyncio.to_thread(self._delete_keys, [self._key(run_id, t) for t in tasks])

    async def delete_run(self, run_id: str) -> None:
        def delete() -> None:
            pages = self._s3().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{run_id}/"):
                self._delete_keys([item["Key"] for item in page.get("Contents", ())])

        await asyncio.to_thread(delete)

    async def runs(self) -> list[str]:
        def listed() -> list[str]:
            pages = self._s3().get_paginator("list_objects_v2")
            found = []
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", ()):
                    found.append(common["Prefix"][len(self.prefix) :].rstrip("/"))
            return found

        return await asyncio.to_thread(listed)

    def _delete_keys(self, keys: list[str]) -> None:
        for lo in range(0, len(keys), 1000):  # the most one request deletes
            objects = [{"Key": k} for k in keys[lo : lo + 1000]]
            self._s3().delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
