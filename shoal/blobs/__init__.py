"""The data plane: outputs too big for a store value live in a blob store, and the store
keeps only a signed reference to them.

A blob store is chosen by URL scheme and imported lazily:

- ``file:///dir``: files in a directory every worker of the run can open, which means
  workers on one host. ``/dev/shm`` (the default directory) is shared memory, so passing
  an output costs a copy in memory, not a trip through Redis.
- ``s3://bucket/prefix?endpoint_url=…&region=…``: S3 or any S3-compatible object store,
  through boto3 (credentials from its usual chain: ``$AWS_ACCESS_KEY_ID``, profiles, roles),
  for workers spread over machines.

Blobs of a run live under ``<namespace>/<run id>/``, where the namespace names the store
that holds the run's keys: a sweep may then delete the blobs of any run that store no
longer has (finished, cancelled, abandoned or expired) without touching another store's.
A blob holds the output as a frame (:meth:`shoal.codec.Codec.frame_value`): pickle
protocol 5 with big buffers (NumPy arrays) beside the pickle, so that a reader maps them in
place instead of copying them. It carries the run's signature and is checked before it is
unpickled, except in a directory only this user can write (a file store's default), where
whoever could forge a blob could change Shoal's own code as well.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from ..registry import load

#: scheme -> "module:Class"; each class has ``from_url(url, namespace)``.
BLOB_STORES = {
    "file": "shoal.blobs.files:FileBlobs",
    "s3": "shoal.blobs.s3:S3Blobs",
}
#: Outputs bigger than this go to the blob store, when the run has one.
DEFAULT_ABOVE = 1 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class BlobStore(Protocol):
    """Where a run's big outputs live; one blob per task output, written once (or
    rewritten with the same bytes by a repeated step)."""

    url: str
    #: True when only this user can write the blobs: they need no signature.
    private: bool

    async def put(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        """Store the concatenation of ``parts`` as the output of ``task``; a reader never
        sees it half written."""

    async def get(self, run_id: str, task: int) -> bytes | bytearray | memoryview:
        """The output of ``task`` (writable when big: NumPy arrays read in place from it
        must be); :class:`LookupError` when it is not there."""

    async def delete(self, run_id: str, tasks: Sequence[int]) -> None:
        """Delete those outputs (gone already is fine)."""

    async def delete_run(self, run_id: str) -> None:
        """Delete every blob of the run (gone already is fine)."""

    async def runs(self) -> list[str]:
        """The runs that have blobs here."""


def default_url() -> str:
    """Files in shared memory where the host has it, else in the temporary directory."""
    shm = "/dev/shm"
    root = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    return "file://" + os.path.join(root, f"shoal-blobs-{os.getuid()}")


def open_blobs(url: str, namespace: str) -> BlobStore:
    """The blob store at ``url``, its blobs under ``namespace``; ConfigError naming what is
    wrong with the URL."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    target = BLOB_STORES.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown blob store {url!r}: expected one of "
            + ", ".join(f"{s}://..." for s in BLOB_STORES)
            + " (or 'off')"
        )
    cls = load(target, f"blob store {scheme}:// needs", "s3")
    store: BlobStore = cls.from_url(url, namespace)
    return store


def parse_size(text: str | int, what: str) -> int:
    """Bytes from ``1048576``, ``"512k"``, ``"1MB"`` or ``"1 MiB"`` (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ConfigError(f"{what} must be a size such as 1048576, 512k or 1MB, got {text!r}")
        number, unit = match.groups()
        value = int(float(number) * _UNITS[(unit or "")[:1].lower()])
    if value < 0:
        raise ConfigError(f"{what} must be at least 0 bytes, got {text!r}")
    return value


def storage_with_blobs(storage: str, blobs: str, same_host: bool) -> str:
    """The storage URL a run uses, with its blob store in it (workers open the store from
    that URL, so it carries the blob store to them). ``blobs``: a blob store URL, ``off``,
    or ``auto``: files in shared memory when every worker is on this host, else off. A
    ``blobs=`` already in ``storage`` wins; only the Redis stores keep values by copy
    (``memory://`` passes them by reference)."""
    parts = urlsplit(storage)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not parts.scheme.startswith("redis") or any(k == "blobs" for k, _ in query):
        return storage
    if blobs == "auto":
        blobs = default_url() if same_host else "off"
    if blobs == "off":
        return storage
    open_blobs(blobs, "")  # a bad URL is an error before the run
    return urlunsplit(parts._replace(query=urlencode([*query, ("blobs", blobs)])))


__all__ = [
    "BLOB_STORES",
    "DEFAULT_ABOVE",
    "BlobStore",
    "default_url",
    "open_blobs",
    "parse_size",
    "storage_with_blobs",
]
