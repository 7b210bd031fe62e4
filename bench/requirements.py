"""Environment reuse on the gateway: ``python -m bench.requirements [--repeat N]``.

A one-task run whose task has requirements, on an environment the gateway has cached,
against the same run of a task without requirements (Redis and a gateway started here;
the requirement is a wheel zipped here, installed by uv offline, so no network is used):

- the first run of the requirement set: the environment is built while it waits;
- warm: both runs interleaved on warm workers, ``--repeat`` times each (medians);
- cold: on a freshly started ``shoal gateway --requirements FILE`` whose cache has the
  environment, the first run of each kind (a warm-up run of another size first, so the
  gateway and its templates are up): both workers are forks, of the environment's
  template and of the gateway's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import shoal

from .servers import ShoalServers


def _make_wheel(folder: Path, name: str = "shoal_benchpkg", version: str = "1.0") -> None:
    """A pure-Python wheel zipped by hand (as tests/test_requirements.py does)."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: shoal-bench\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{path},sha256={digest.rstrip(b'=').decode()},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def _plain(x: int) -> int:
    return x + 1


def _with_pkg(x: int) -> int:
    import shoal_benchpkg  # type: ignore[import-not-found]  # noqa: F401

    return x + 1


plain = shoal.task(_plain)
required = shoal.task(requirements=["shoal_benchpkg>=1"])(_with_pkg)
other_size = shoal.task(memory_mb=1024)(_plain)


def _timed(node: shoal.Node, servers: ShoalServers) -> float:
    started = time.perf_counter()
    shoal.compute(node, storage=servers.storage, workers=servers.workers, progress=False)
    wall = time.perf_counter() - started
    servers.wait_idle()
    return wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.requirements")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--cold", type=int, default=3, help="fresh gateways for the cold figure")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-req-") as tmp:
        wheels = Path(tmp, "wheels")
        wheels.mkdir()
        _make_wheel(wheels)
        os.environ.update(
            UV_FIND_LINKS=str(wheels),
            UV_NO_INDEX="1",
            SHOAL_CACHE_DIR=str(Path(tmp, "cache")),
            SHOAL_HISTORY="none",
        )
        requirements = str(Path(tmp, "requirements.txt"))
        Path(requirements).write_text("shoal_benchpkg>=1\n")
        servers = ShoalServers().start()
        try:
            build = _timed(required(0), servers)
            _timed(plain(0), servers)
            warm: dict[str, list[float]] = {"plain": [], "requirements": []}
            for i in range(args.repeat):
                warm["plain"].append(_timed(plain(i), servers))
                warm["requirements"].append(_timed(required(i), servers))
        finally:
            servers.close()
        cold: dict[str, list[float]] = {"plain": [], "requirements": []}
        for i in range(args.cold):
            for kind, task in (("plain", plain), ("requirements", required)):
                # As a gateway serving an environment is started: built (here: found) ahead.
                servers = ShoalServers(gateway_args=["--requirements", requirements]).start()
                try:
                    _timed(other_size(i), servers)  # the gateway and its template up
                    cold[kind].append(_timed(task(i), servers))
                finally:
                    servers.close()
    ms = lambda xs: f"{1000 * statistics.median(xs):.1f} ms"  # noqa: E731
    print(f"first run, environment built while it waits: {1000 * build:.0f} ms")
    print(f"warm, median of {args.repeat}: plain {ms(warm['plain'])}, "
          f"cached environment {ms(warm['requirements'])}")  # fmt: skip
    print(f"cold worker on a fresh gateway, median of {args.cold}: plain {ms(cold['plain'])}, "
          f"cached environment {ms(cold['requirements'])}")  # fmt: skip
    print(f"load: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
