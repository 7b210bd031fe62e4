"""Stores, chosen by URL scheme and imported lazily (a backend's extra may be missing)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..registry import load
from .base import Settled, Store

if TYPE_CHECKING:
    from ..security import Signer

#: scheme -> "module:Class"; each class has ``from_url(url)``.
STORES = {
    "memory": "shoal.stores.memory:MemoryStore",
    "redis": "shoal.stores.redis:RedisStore",
    "rediss": "shoal.stores.redis:RedisStore",
    "redis+cluster": "shoal.stores.redis:RedisStore",
    "rediss+cluster": "shoal.stores.redis:RedisStore",
}


def open_store(url: str, signer: Signer | None = None) -> Store:
    """The store for ``url``, e.g. ``memory://`` or ``redis://127.0.0.1:6379/0``.
    ``signer`` signs what the store pickles (default: from ``$SHOAL_SECRET``)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown storage URL {url!r}: expected one of "
            + ", ".join(f"{s}://..." for s in STORES)
        )
    cls = load(target, f"storage {scheme}:// needs", "redis")
    store: Store = cls.from_url(url, signer)
    return store


__all__ = ["STORES", "Settled", "Store", "open_store"]
