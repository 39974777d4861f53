"""Fixtures of the CLI tests: `python3 server.py` in a temporary folder, as a user starts it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import LocalServer
from tests.support.delivery import open_client  # noqa: F401  (a fixture: clients that close what they opened)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    """The local server with the shipped config.yaml, stopped after the test."""
    local = LocalServer(tmp_path)
    try:
        yield local
    finally:
        local.stop()
