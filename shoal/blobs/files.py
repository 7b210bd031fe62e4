"""``file:///dir``: blobs as files, for workers on one host (``/dev/shm``: shared memory).

A big blob is mapped, copy-on-write, rather than read: the NumPy arrays in it are used in
place (shared memory, in ``/dev/shm``), and a task that writes to one writes to its own
copy of the pages it touches."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import mmap
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

#: Blobs bigger than this are written in a thread, not on the event loop ...
_THREAD_ABOVE = 4 << 20
#: ... and mapped rather than read when bigger than this.
_MAP_ABOVE = 1 << 20
_names = itertools.count()
#: Tries to make a run's folder while another process prunes the empty namespace.
_MKDIR_TRIES = 5


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
        base = Path(unquote(parts.path))
        self.root = base / namespace  # made by the first blob written (0700, in base)
        base.mkdir(mode=0o700, parents=True, exist_ok=True)  # (parents=True: base 0755)
        # Only this user can make the namespace's folder in a base only it can write in.
        # (One look at it: another run's delete may remove it, empty, at any moment.)
        self.private = _only_mine(base) and _only_mine(self.root, absent=True)

    @classmethod
    def from_url(cls, url: str, namespace: str) -> FileBlobs:
        return cls(url, namespace)

    async def put(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        if sum(map(len, parts)) > _THREAD_ABOVE:
            await asyncio.to_thread(self._write, run_id, task, parts)
        else:
            self._write(run_id, task, parts)

    async def get(self, run_id: str, task: int) -> bytes | memoryview:
        path = self.root / run_id / str(task)
        try:
            with open(path, "rb") as file:
                if os.fstat(file.fileno()).st_size <= _MAP_ABOVE:
                    return file.read()
                return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY))
        except FileNotFoundError:
            raise LookupError(f"no blob for the output of task {task} at {path}") from None

    async def delete(self, run_id: str, tasks: Sequence[int]) -> None:
        for task in tasks:
            (self.root / run_id / str(task)).unlink(missing_ok=True)

    async def delete_run(self, run_id: str) -> None:
        """Gone at once from where readers look; freeing the memory (milliseconds for tens
        of MB in ``/dev/shm``) goes on in a thread, which the interpreter waits for at
        exit. A folder left half-deleted by a killed process is swept with the runs. The
        namespace's folder goes too once empty: one was left behind for every Redis
        address (a test's or a bench's on a new port each time)."""
        doomed = self.root / f".{run_id}.{os.getpid()}.{next(_names)}"
        try:
            os.rename(self.root / run_id, doomed)
        except FileNotFoundError:
            self._prune()
            return
        threading.Thread(target=self._free, args=(doomed,), name="shoal-blob-delete").start()

    def _free(self, doomed: Path) -> None:
        shutil.rmtree(doomed, ignore_errors=True)
        self._prune()

    def _prune(self) -> None:
        """Remove the namespace's folder if it is empty (else it stays, as it must)."""
        with contextlib.suppress(OSError):
            os.rmdir(self.root)

    async def runs(self) -> list[str]:
        """The runs with blobs here, and folders of deletions whose process died before
        they finished (``.<run>.<pid>.<n>``: no run has such a name, so a sweep deletes
        them)."""
        try:
            names = [entry.name for entry in os.scandir(self.root) if entry.is_dir()]
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".") or not _alive(n.split(".")[2])]

    def _write(self, run_id: str, task: int, parts: Sequence[bytes | memoryview]) -> None:
        folder = self.root / run_id
        for _ in range(_MKDIR_TRIES):  # the namespace's folder may be pruned meanwhile
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
                break
            except FileNotFoundError:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            folder.mkdir(mode=0o700, exist_ok=True)
        # Unique per writer: a step repeated by another worker may write the same blob.
        temporary = folder / f".{task}.{os.getpid()}.{next(_names)}"
        with open(temporary, "wb") as file:
            file.writelines(parts)
        os.replace(temporary, folder / str(task))


def _only_mine(folder: Path, absent: bool = False) -> bool:
    """Whether only this user (and root) can write in ``folder``; ``absent`` when it is
    not there."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return absent
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
