"""Stores, chosen by URL scheme and imported lazily (a backend's extra may be missing)."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import Store

#: scheme -> "module:Class"; each class has ``from_url(url)``.
STORES = {
    "memory": "shoal.stores.memory:MemoryStore",
}


def open_store(url: str) -> Store:
    """The store for ``url``, e.g. ``memory://``."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown storage URL {url!r}: expected one of "
            + ", ".join(f"{s}://..." for s in STORES)
        )
    module, _, name = target.partition(":")
    store: Store = getattr(importlib.import_module(module), name).from_url(url)
    return store


__all__ = ["STORES", "Store", "open_store"]
