"""Session-scoped real servers for the source tests: each is seeded once and torn down.
The IdP emulators' fixtures live in `tests/sources/idp.py`; importing them here makes them
this folder's fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY
from tests.sources.directory import Directory, make_directory
from tests.sources.idp import entra, google, okta, service_account  # noqa: F401 - fixtures
from tests.sources.samba import SambaDC
from tests.sources.servers import ServerProcess, Slapd, ldif, start_scim2_server, start_scimmy

SCIM_TOKEN = "scim-test-token-0123456789"
LDAP_DANGLING = 3
"""Member values of group0 that point outside the search bases."""


@pytest.fixture(scope="session")
def scim2_directory() -> Directory:
    # scim2-server sorts every list in full per page (O(N) a page): 1.5k people keep the
    # walks quick while `big` still has more than 1000 members.
    return make_directory(1500, 30, big=1100)


@pytest.fixture(scope="session")
def scimmy_directory() -> Directory:
    # SCIMMY builds schema objects for the whole list on every page: keep it small.
    return make_directory(600, 10, big=0)


@pytest.fixture(scope="session")
def ldap_directory() -> Directory:
    return make_directory(10_000, 1000, big=1500)


@pytest.fixture(scope="session")
def scim2_server(
    scim2_directory: Directory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_scim2_server(
        scim2_directory, tmp_path_factory.mktemp("scim2-server"), SCIM_TOKEN
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scimmy(
    scimmy_directory: Directory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_scimmy(
        scimmy_directory, tmp_path_factory.mktemp("scimmy"), f"bearer:{SCIM_TOKEN}"
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slapd(ldap_directory: Directory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"), ldif(ldap_directory, dangling=LDAP_DANGLING))
    yield server
    server.stop()


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, key_owner_email="key-owner@example.com") as running:
        running.start()
        yield running


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDC]:
    """A real Samba AD DC (provision ~7-20 s, start ~3 s), one per session: its LDAP port
    is fixed (tests/sources/samba.py). Only tests/sources/test_ldap_ad_changes.py uses it:
    `--dist loadfile` runs one file on one worker, and two workers each starting a DC
    collide on port 389."""
    dc = SambaDC(tmp_path_factory.mktemp("samba-dc"))
    yield dc
    dc.stop()
