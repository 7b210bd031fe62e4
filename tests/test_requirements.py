"""Per-task and per-run requirements: the pure decisions (normalising, hashing, checking
versions), the embedded engine's check, and environments on a real gateway built with uv
from a wheel made here (no network: uv is pointed at a folder, offline)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import leftover_keys
from servers import gateway

import shoal
from shoal.envs import key, merge, normalise, python_tag, requirements_arg, unsatisfied
from shoal.envs.build import MARKER, Environments
from shoal.envs.requirements import environment_id, parse_lines

# --------------------------------------------------------------------------- pure decisions


def test_equal_sets_normalise_to_one_key_whatever_their_spelling_and_order() -> None:
    a = normalise(["Pillow >= 10", "numpy", "numpy"])
    b = normalise(["numpy", "pillow>=10"])
    assert a == b == ("numpy", "pillow>=10")
    assert key(a) == key(b) != key(normalise(["pillow>=11", "numpy"]))
    assert key(()) == ""
    assert merge(["a"], ["B", "a"]) == ("a", "b")


def test_an_environment_is_keyed_by_the_python_version_too() -> None:
    reqs = normalise(["numpy"])
    assert environment_id(reqs, "cpython-3.11") != environment_id(reqs, "cpython-3.12")
    assert python_tag((3, 12), "cpython") == "cpython-3.12"


def test_unsatisfied_names_what_is_missing_and_why() -> None:
    versions = {"numpy": "1.26.4", "pillow": None}
    reqs = ["numpy>=2", "pillow", "numpy<3", 'other>=1; python_version < "3"']
    assert unsatisfied(reqs, versions) == [
        ("numpy>=2", "1.26.4 is installed"),
        ("pillow", "not installed"),
    ]
    assert unsatisfied(["numpy>=1.20"], versions) == []


def test_requirements_files_are_parsed_as_pip_does_with_includes(tmp_path: Path) -> None:
    reqs, includes = parse_lines(
        ["# comment", "", "numpy>=1  # pinned", "pil\\", "low", "-r other.txt"]
    )
    assert (reqs, includes) == (["numpy>=1", "pillow"], ["other.txt"])
    with pytest.raises(shoal.ConfigError, match="--index-url"):
        parse_lines(["--index-url https://example.org"])
    (tmp_path / "other.txt").write_text("click\n")
    (tmp_path / "req.txt").write_text("numpy\n-r other.txt\n")
    assert requirements_arg(tmp_path / "req.txt") == ("click", "numpy")
    with pytest.raises(shoal.ConfigError, match="cannot read"):
        requirements_arg(tmp_path / "missing.txt")


def test_a_bad_requirement_is_an_error_at_decoration_naming_it() -> None:
    with pytest.raises(shoal.ConfigError, match="'pillow>>10'"):
        shoal.task(requirements=["numpy", "pillow>>10"])(lambda: 1)
    with pytest.raises(ValueError, match="list of requirement strings"):
        shoal.task(requirements="numpy")(lambda: 1)
    fn = shoal.task(requirements=["Pillow>=10", "numpy"])(lambda: 1)
    assert fn.options.requirements == ("numpy", "pillow>=10")


# --------------------------------------------------------------------------- embedded engine


@shoal.task(requirements=["packaging>=20"])
def has_packaging() -> str:
    import packaging

    return str(packaging.__version__)


@shoal.task(requirements=["packaging>=9999", "shoal-testpkg-absent"])
def wants_too_much(x: Any) -> Any:
    raise AssertionError("must not run")


def test_embedded_runs_what_this_interpreter_satisfies() -> None:
    assert has_packaging().compute(history="none", progress=False)


def test_embedded_refuses_before_any_task_runs_naming_task_and_requirement(
    flags: Path,
) -> None:
    marker = flags / "ran"

    @shoal.task
    def first() -> int:
        marker.write_text("ran")
        return 1

    with pytest.raises(shoal.RequirementsUnsatisfied) as info:
        wants_too_much(first()).compute(history="none", progress=False)
    text = str(info.value)
    assert "task wants_too_much" in text
    assert "packaging>=9999" in text and "is installed" in text
    assert "shoal-testpkg-absent (not installed)" in text
    assert not marker.exists()


def test_run_requirements_apply_to_every_task(tmp_path: Path) -> None:
    (tmp_path / "req.txt").write_text("click<1\n")

    @shoal.task
    def plain() -> int:
        return 1

    with pytest.raises(shoal.RequirementsUnsatisfied, match=r"task plain: click<1"):
        plain().compute(requirements=str(tmp_path / "req.txt"), history="none")
    assert plain().compute(requirements=["click"], history="none") == 1
    assert plain.options.requirements == ()  # the user's function is left as it was


# --------------------------------------------------------------------------- gateway


def make_wheel(folder: Path, name: str = "shoal_testpkg", version: str = "1.0") -> Path:
    """A pure-Python wheel zipped by hand: a module whose VALUE is its version."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: shoal-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """uv's settings for builds from a folder holding the test wheel, offline."""
    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels)
    return {
        "UV_FIND_LINKS": str(wheels),
        "UV_NO_INDEX": "1",
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": str(tmp_path_factory.mktemp("uv-cache")),
    }


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


@pytest.fixture(scope="module")
def env_gateway(shared_secret: str, offline: dict[str, str], cache_dir: Path) -> Iterator[str]:
    with gateway("--cache-dir", str(cache_dir), env=offline) as url:
        yield url


def info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removeprefix("gateway+") + "/info") as reply:
        data: dict[str, Any] = json.load(reply)
    return data


@shoal.task(requirements=["shoal_testpkg>=1"])
def uses_testpkg() -> tuple[str, str]:
    import shoal_testpkg  # type: ignore[import-not-found]

    return shoal_testpkg.VALUE, sys.executable


@shoal.task
def tries_testpkg(upstream: Any) -> str:
    try:
        import shoal_testpkg  # noqa: F401
    except ImportError:
        return "cannot import"
    return "imported"


@shoal.task(requirements=["shoal_testpkg>=1"])
def again_with_testpkg(x: Any) -> str:
    import shoal_testpkg

    return str(shoal_testpkg.VALUE)


def test_a_task_imports_its_requirement_on_the_gateway_and_others_cannot(
    env_gateway: str, redis_url: str, cache_dir: Path
) -> None:
    options = {"storage": redis_url, "workers": env_gateway, "progress": False}
    # A chain across environments: required -> plain -> required again.
    source = uses_testpkg()
    (value, plain, again) = shoal.compute(
        source, tries_testpkg(source), again_with_testpkg(tries_testpkg(source)), **options
    )
    assert value[0] == "1.0" and value[1].startswith(str(cache_dir))
    assert plain == "cannot import"  # a task without the requirement runs without it
    assert again == "1.0"
    assert leftover_keys(redis_url) == []
    built = info(env_gateway)["environments"]
    assert built["builds"] == 1 and built["ready"] == [key(normalise(["shoal_testpkg>=1"]))]


@shoal.task(requirements=["shoal_testpkg>=1"])
def version_times(i: int) -> str:
    import shoal_testpkg  # type: ignore[import-not-found]

    return f"{shoal_testpkg.VALUE}x{i}"


@shoal.task
def upto(n: int) -> list[int]:
    return list(range(n))


def test_a_maps_elements_run_in_their_functions_environment(
    env_gateway: str, redis_url: str
) -> None:
    """The elements of a map expanded by a worker without the requirement go elsewhere;
    those of a plain map after them come back."""
    options = {"storage": redis_url, "workers": env_gateway, "progress": False}
    versions = version_times.map(upto(3))
    assert shoal.compute(versions, tries_testpkg.map(versions), **options) == (
        ["1.0x0", "1.0x1", "1.0x2"],
        ["cannot import"] * 3,
    )
    assert leftover_keys(redis_url) == []


def test_a_second_run_and_a_restarted_gateway_reuse_the_environment(
    env_gateway: str,
    redis_url: str,
    cache_dir: Path,
    offline: dict[str, str],
) -> None:
    options = {"storage": redis_url, "progress": False}
    uses_testpkg().compute(workers=env_gateway, **options)  # built by now, maybe here
    env = Environments(cache_dir).find(normalise(["shoal_testpkg>=1"]))
    assert env is not None
    stamp = (env.path / MARKER).stat().st_mtime_ns
    builds = info(env_gateway)["environments"]["builds"]
    assert uses_testpkg().compute(workers=env_gateway, **options)[0] == "1.0"
    assert info(env_gateway)["environments"]["builds"] == builds  # no rebuild
    with gateway("--cache-dir", str(cache_dir), env=offline) as restarted:
        assert uses_testpkg().compute(workers=restarted, **options)[0] == "1.0"
        assert info(restarted)["environments"]["builds"] == 0  # found in the cache
    assert (env.path / MARKER).stat().st_mtime_ns == stamp


def test_an_unsatisfiable_requirement_fails_before_any_task_runs(
    env_gateway: str, redis_url: str, flags: Path
) -> None:
    marker = flags / "ran"

    @shoal.task
    def first() -> int:
        marker.write_text("ran")
        return 1

    @shoal.task(requirements=["shoal_testpkg>=99"])
    def impossible(x: int) -> int:
        return x

    with pytest.raises(shoal.EnvironmentBuildError) as info_:
        impossible(first()).compute(storage=redis_url, workers=env_gateway, progress=False)
    text = str(info_.value)
    assert "shoal-testpkg>=99" in text and "nothing ran" in text
    assert "unsatisfiable" in text  # uv's own explanation comes along
    assert not marker.exists()
    assert leftover_keys(redis_url) == []


def test_a_gateway_builds_ahead_at_start_up_and_env_build_shares_the_cache(
    shared_secret: str, offline: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("shoal-testpkg==1.0\n")
    cache = tmp_path / "cache"
    env = {**os.environ, **offline}
    command = [sys.executable, "-m", "shoal", "env", "build", str(requirements)]
    command += ["--cache-dir", str(cache)]
    built = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    env_key, path = built.stdout.split()[:2]
    assert env_key == key(normalise(["shoal-testpkg==1.0"])) and Path(path, MARKER).is_file()
    again = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert "already built" in again.stdout
    with gateway(
        "--cache-dir", str(cache), "--requirements", str(requirements), env=offline
    ) as url:
        assert info(url)["environments"] == {
            "builds": 0,
            "ready": [env_key],
            "cache_dir": str(cache / "envs"),
        }

        @shoal.task(requirements=["shoal-testpkg==1.0"])
        def pinned() -> str:
            import shoal_testpkg

            return str(shoal_testpkg.VALUE)

        assert pinned().compute(storage=redis_url, workers=url, progress=False) == "1.0"


def test_a_worker_lacking_a_requirement_refuses_naming_it(
    shared_secret: str, redis_url: str
) -> None:
    """``shoal worker`` (the HTTP image) has what its image installed: a task needing more
    fails the run, naming the requirement, before anything runs."""
    from servers import worker_service

    @shoal.task(requirements=["shoal-testpkg-absent>=1"])
    def needs_absent() -> int:
        raise AssertionError("must not run")

    with (
        worker_service() as url,
        pytest.raises(
            shoal.RequirementsUnsatisfied, match="shoal-testpkg-absent>=1 \\(not installed\\)"
        ),
    ):
        needs_absent().compute(storage=redis_url, workers=url, progress=False)
    assert leftover_keys(redis_url) == []
