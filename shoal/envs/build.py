"""Environments built once per requirement set with uv, and cached on disk.

An environment is a directory ``<cache>/envs/<id>`` where ``id`` is
:func:`~.requirements.environment_id` (the normalised set plus the Python version), made
by ``uv venv`` for this interpreter and filled by ``uv pip install`` (uv keeps its own
download and wheel cache, so a second environment sharing packages builds from it).

Shoal itself is not installed into it. A ``.pth`` file appends this interpreter's
site directories *behind* the environment's own (``site.addsitedir``, so their ``.pth``
files, an editable install's included, are honoured): a worker imports the exact Shoal
(and cloudpickle, redis...) the gateway runs, which the payloads need, while a package the
requirements name shadows the gateway's copy. The environment is built for the same
Python (``--python`` this interpreter), so the overlay's compiled packages load.
``--system-site-packages`` would not do: from a virtual environment it exposes the
*base* interpreter's site-packages, not the one Shoal is installed in.

A marker file, written last, says an environment is complete; a build that failed or was
killed leaves none and is redone from scratch. Builds of one environment are serialised
across processes by a file lock (two gateways on one cache build it once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, EnvironmentBuildError
from .requirements import RequirementSet, environment_id, key, python_tag

log = logging.getLogger(__name__)

#: Written last into a complete environment.
MARKER = "shoal-env.json"
#: Where environments live unless told: the user's cache directory.
CACHE_ENV = "SHOAL_CACHE_DIR"
OVERLAY = "_shoal_overlay.pth"


def default_cache_dir() -> Path:
    """``$SHOAL_CACHE_DIR``, else the user's cache directory (platformdirs)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("shoal"))


@dataclass(frozen=True, slots=True)
class Environment:
    """A built environment."""

    id: str
    key: str  # the requirement set's key (what invocations carry)
    requirements: RequirementSet
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def uv_binary() -> str:
    """The uv executable: the one the ``uv`` package installs beside this interpreter,
    else one on ``PATH``."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin

        return str(find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise ConfigError("building environments needs uv: pip install uv (or 'shoal[gateway]')")
    return found


class Environments:
    """The environments of one cache directory: looked up, or built once."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.root = (Path(cache_dir) if cache_dir else default_cache_dir()).absolute()
        self.root = self.root / "envs"
        self.builds = 0  # environments this process built (the rest were found ready)

    def path_of(self, requirements: RequirementSet) -> Path:
        return self.root / environment_id(requirements, python_tag())

    def find(self, requirements: RequirementSet) -> Environment | None:
        """The complete environment of ``requirements``, if it is built."""
        path = self.path_of(requirements)
        if not (path / MARKER).is_file():
            return None
        return Environment(path.name, key(requirements), requirements, path)

    def ensure(self, requirements: RequirementSet) -> tuple[Environment, bool]:
        """The environment of ``requirements``, built now if it is not yet (blocking:
        call it on a thread from async code), and whether this call built it.
        :class:`~shoal.EnvironmentBuildError` with uv's output when it cannot be built."""
        found = self.find(requirements)
        if found is not None:
            return found, False
        path = self.path_of(requirements)
        with _locked(path.with_suffix(".lock")):
            found = self.find(requirements)  # built by another process meanwhile
            if found is not None:
                return found, False
            self._build(requirements, path)
            self.builds += 1
        env = self.find(requirements)
        assert env is not None
        return env, True

    def _build(self, requirements: RequirementSet, path: Path) -> None:
        started = time.perf_counter()
        log.info("building environment %s for %s", path.name, ", ".join(requirements))
        if path.exists():  # a build that did not finish
            shutil.rmtree(path)
        uv = uv_binary()
        try:
            _uv([uv, "venv", "--quiet", "--python", sys.executable, str(path)], requirements)
            _write_overlay(path)
            (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
            _uv(
                [uv, "pip", "install", "--python", str(path / "bin" / "python"),
                 "-r", str(path / "requirements.txt")],
                requirements,
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        marker = {
            "key": key(requirements),
            "requirements": list(requirements),
            "python": python_tag(),
            "built": time.time(),
            "build_s": round(time.perf_counter() - started, 3),
        }
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=1))
        tmp.replace(path / MARKER)  # atomic: the environment is complete from here on
        log.info("built environment %s in %.1f s", path.name, marker["build_s"])


def _uv(command: list[str], requirements: RequirementSet) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise EnvironmentBuildError(
            f"could not build the environment for {', '.join(requirements)}: "
            f"`{' '.join(command[1:3])}` failed (exit {result.returncode}):\n{output}"
        )


def _write_overlay(path: Path) -> None:
    """The ``.pth`` file that puts this interpreter's site directories behind the
    environment's own (see the module's docstring)."""
    found = list((path / "lib").glob("python*/site-packages"))
    if not found:
        raise EnvironmentBuildError(f"uv made no site-packages in {path}")
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
    (found[0] / OVERLAY).write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
