"""``file:///dir``: blobs as files, for workers on one host (``/dev/shm``: shared memory)."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

#: Blobs bigger than this are written and read in a thread, not on the event loop.
_THREAD_ABOVE = 4 << 20
_names = itertools.count()


class FileBlobs:
    """Blobs under ``<dir>/<namespace>/<run>/<task>``, written to a temporary name and
    renamed, so that a reader sees a whole blob or none."""

    def __init__(self, url: str, namespace: str) -> None:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(
                f"blob store {url!r}: expected file:///absolute/directory (on this host)"
            )
        self.url = url
        self.root = Path(unquote(parts.path)) / namespace

    @classmethod
    def from_url(cls, url: str, namespace: str) -> FileBlobs:
        return cls(url, namespace)

    async def put(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        if sum(map(len, parts)) > _THREAD_ABOVE:
            await asyncio.to_thread(self._write, run_id, task, parts)
        else:
            self._write(run_id, task, parts)

    async def get(self, run_id: str, task: int) -> bytes:
        path = self.root / run_id / str(task)
        try:
            if path.stat().st_size > _THREAD_ABOVE:
                return await asyncio.to_thread(path.read_bytes)
            return path.read_bytes()
        except FileNotFoundError:
            raise LookupError(f"no blob for the output of task {task} at {path}") from None

    async def delete(self, run_id: str, tasks: Sequence[int]) -> None:
        for task in tasks:
            (self.root / run_id / str(task)).unlink(missing_ok=True)

    async def delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)

    async def runs(self) -> list[str]:
        try:
            return [entry.name for entry in os.scandir(self.root) if entry.is_dir()]
        except FileNotFoundError:
            return []

    def _write(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        folder = self.root / run_id
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Unique per writer: a step repeated by another worker may write the same blob.
        temporary = folder / f".{task}.{os.getpid()}.{next(_names)}"
        with open(temporary, "wb") as file:
            file.writelines(parts)
        os.replace(temporary, folder / str(task))
