"""Worker backends, chosen by URL scheme and imported lazily."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigError
from ..registry import load
from .base import Invocation, Platform, Size, Workers, invoke_all, new_invocation_id

#: scheme (or bare name) -> "module:Class"; each class has ``from_url(url)``.
BACKENDS = {
    "local": "shoal.backends.local:LocalWorkers",
    "gateway": "shoal.backends.gateway:GatewayWorkers",
    "gateway+http": "shoal.backends.gateway:GatewayWorkers",
    "gateway+https": "shoal.backends.gateway:GatewayWorkers",
    "http": "shoal.backends.http:HttpWorkers",
    "https": "shoal.backends.http:HttpWorkers",
    "lambda": "shoal.backends.aws_lambda:LambdaWorkers",
}


def open_workers(url: str) -> Workers:
    """The worker backend for ``url``, e.g. ``local``."""
    scheme = urlsplit(url).scheme if "://" in url else url
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown workers {url!r}: expected one of " + ", ".join(sorted(BACKENDS))
        )
    extra = "lambda" if scheme == "lambda" else "gateway"
    cls = load(target, f"workers {scheme!r} need", extra)
    workers: Workers = cls.from_url(url)
    return workers


__all__ = [
    "BACKENDS",
    "Invocation",
    "Platform",
    "Size",
    "Workers",
    "invoke_all",
    "new_invocation_id",
    "open_workers",
]
