"""Session-wide real SCIM servers for the SCIM target tests (each test takes a fresh tenant)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.targets.scim_servers import Scim2Server


@pytest.fixture(scope="session")
def scim2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Server]:
    server = Scim2Server.start(tmp_path_factory.mktemp("scim2-server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scim2_without_patch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim2Server]:
    server = Scim2Server.start(tmp_path_factory.mktemp("scim2-server-no-patch"), patch=False)
    yield server
    server.stop()
