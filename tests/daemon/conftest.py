"""Fixtures shared by the daemon tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon.harness import Daemon


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    """Daemons a test started; any still running at the end is killed (by pid)."""
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        daemon.kill()
