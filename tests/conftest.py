"""Shared fixtures. ``engine`` runs a test once per backend: every graph-shape and
semantics test in the shared suite takes it, so a new backend is added here only."""

from __future__ import annotations

from typing import Any

import pytest

ENGINES: dict[str, dict[str, Any]] = {
    "embedded": {"storage": "memory://", "workers": "local"},
}


@pytest.fixture(params=list(ENGINES), ids=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword options for ``shoal.compute`` selecting one backend."""
    return {**ENGINES[request.param], "progress": False}
