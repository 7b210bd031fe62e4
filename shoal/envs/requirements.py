"""Requirement sets as values: parsing, normalising, hashing, and deciding whether an
interpreter's installed distributions satisfy one.

Everything here but :func:`installed` and :func:`read_requirements` is a pure function, so
that the decisions (is this set equal to that one? does this interpreter have them?) are
tested without touching an environment.

A *requirement set* is a sorted tuple of normalised requirement strings (PEP 508, as
``packaging`` writes them, with the project name canonicalised). Two tasks whose sets are
equal share one environment; the empty set is "no requirements" and its key is ``""``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # imported where a set is parsed: a gateway's start needs neither
    from packaging.requirements import Requirement

RequirementSet = tuple[str, ...]


def parse(text: str) -> Requirement:
    """One requirement string as a :class:`Requirement`; :class:`~shoal.ConfigError`
    naming the string when it is not PEP 508."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a requirement must be a non-empty string, got {text!r}")
    try:
        return Requirement(text.strip())
    except InvalidRequirement as exc:
        raise ConfigError(f"bad requirement {text!r}: {exc}") from None


def normalise_one(text: str) -> str:
    """``text`` in its one canonical spelling: ``Pillow >= 10`` and ``pillow>=10`` are
    the same requirement, so they must key the same environment."""
    from packaging.utils import canonicalize_name

    req = parse(text)
    req.name = canonicalize_name(req.name)
    return str(req)


def normalise(requirements: Iterable[str]) -> RequirementSet:
    """The requirement set of ``requirements``: each normalised, duplicates dropped,
    sorted (order in a list says nothing about the environment it needs)."""
    if isinstance(requirements, str):  # a lone string would iterate by character
        requirements = [requirements]
    return tuple(sorted({normalise_one(r) for r in requirements}))


def merge(*sets: Iterable[str]) -> RequirementSet:
    """One set holding every requirement of ``sets`` (a run's and a task's own)."""
    return normalise(r for s in sets for r in s)


@functools.cache
def key(requirements: RequirementSet) -> str:
    """The requirement set's key: ``""`` for none, else a short hash of the normalised
    set. It names pools, Lambda functions and (with the Python version) environments."""
    if not requirements:
        return ""
    return hashlib.blake2b("\n".join(requirements).encode(), digest_size=6).hexdigest()


def python_tag(version: tuple[int, int] | None = None, implementation: str | None = None) -> str:
    """The interpreter an environment is built for: ``cpython-3.11``. Packages built for
    one Python minor version do not load in another, so it is part of an environment's
    identity."""
    major, minor = version or sys.version_info[:2]
    return f"{implementation or sys.implementation.name}-{major}.{minor}"


def environment_id(requirements: RequirementSet, python: str | None = None) -> str:
    """The identity of the environment of ``requirements`` on Python ``python`` (default:
    this one): the name of its directory in a cache."""
    data = "\n".join([python or python_tag(), *requirements]).encode()
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def unsatisfied(
    requirements: Iterable[str], versions: Mapping[str, str | None]
) -> list[tuple[str, str]]:
    """The requirements of ``requirements`` that an interpreter with the distributions
    ``versions`` (canonical name -> version, None when absent) does not meet, each with
    why. Requirements whose environment marker excludes this interpreter are met.
    Extras are not checked (what an extra pulls in is the extra's own requirements)."""
    from packaging.utils import canonicalize_name

    missing = []
    for text in requirements:
        req = parse(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = versions.get(canonicalize_name(req.name))
        if have is None:
            missing.append((text, "not installed"))
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            missing.append((text, f"{have} is installed"))
    return missing


def installed(requirements: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each distribution ``requirements`` name, in this
    interpreter (None: not installed)."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    versions: dict[str, str | None] = {}
    for text in requirements:
        name = canonicalize_name(parse(text).name)
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def missing_here(requirements: RequirementSet) -> tuple[tuple[str, str], ...]:
    """What this interpreter lacks of ``requirements`` (cached: a warm worker checks each
    set once)."""
    return tuple(unsatisfied(requirements, installed(requirements)))


def parse_lines(lines: Iterable[str], source: str = "requirements") -> tuple[list[str], list[str]]:
    """The requirements in the lines of a requirements file, and the files it includes
    (``-r FILE``). Comments, blank lines and line continuations are pip's; any other
    option is an error (an index or find-links belongs to the builder's configuration,
    e.g. ``$UV_INDEX_URL``, not to the environment's identity)."""
    requirements: list[str] = []
    includes: list[str] = []
    joined: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.rstrip("\n")
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    for number, line in enumerate(joined, 1):
        text = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(("-r ", "--requirement ", "--requirement=")):
            includes.append(text.split("=", 1)[1] if "=" in text else text.split(None, 1)[1])
            continue
        if text.startswith("-"):
            raise ConfigError(
                f"{source}, line {number}: option {text.split()[0]!r} is not supported in "
                "Shoal requirements (only requirements and -r FILE); configure where "
                "packages come from with uv's environment variables, e.g. UV_INDEX_URL, "
                "UV_FIND_LINKS"
            )
        parse(text)  # a clear error, with the bad string, now
        requirements.append(text)
    return requirements, includes


def read_requirements(path: str | Path) -> list[str]:
    """The requirements of a requirements file (and of the files it includes, relative
    to it); :class:`~shoal.ConfigError` for a missing file or a bad line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read requirements file {str(path)!r}: {exc}") from None
    requirements, includes = parse_lines(lines, str(path))
    for include in includes:
        requirements += read_requirements(path.parent / include)
    return requirements


def requirements_arg(value: str | os.PathLike[str] | Iterable[str] | None) -> RequirementSet:
    """``compute(requirements=...)``: a requirements file's path, or a list of
    requirement strings; None for none."""
    if value is None:
        return ()
    if isinstance(value, str | os.PathLike):
        return normalise(read_requirements(os.fspath(value)))
    return normalise(list(value))
