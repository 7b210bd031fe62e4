"""Plug-ins chosen by URL scheme and imported only when used: stores
(:data:`shoal.stores.STORES`), worker backends (:data:`shoal.backends.BACKENDS`) and blob
stores (:data:`shoal.blobs.BLOB_STORES`), each registered as ``"module:Class"``."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError


def load(target: str, needs: str, extra: str) -> Any:
    """The class at ``target`` (``"module:Class"``), imported now. An extra that is not
    installed is a ConfigError: ``needs`` (e.g. ``"storage redis:// needs"``) the missing
    package, and ``pip install 'shoal[extra]'``."""
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(
            f"{needs} the {exc.name!r} package: pip install 'shoal[{extra}]'"
        ) from None
