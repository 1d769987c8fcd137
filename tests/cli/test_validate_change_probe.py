"""`orgsync validate` says, after reading the source, what an incremental pass over it would
cost: its change probe available (a quiet pass's requests), degraded (why, and exactly
what to enable: the words the source logs as `source.change_probe_degraded` or a pass's
`source.cursor_expired`), or not applicable (a file: snapshot diff, 0 calls).

Real servers over loopback: slapd with and without the syncprov overlay, the Google
emulator with and without the Reports scope delegated, the Okta emulator with and
without System Log access, the Entra emulator, scim2-server (directly, and behind a proxy
refusing the `meta.lastModified` filter). A degraded probe is a warning: validate's exit
code stays 0. `validate --offline` contacts nothing and says nothing about probes.

Harms guarded: an operator who believes incremental passes are cheap while each one reads
the whole directory (the daemon's interval then costs a full read per pass) and learns it
only from a running pass's logs; a validate that fails an install whose every sync works.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.entra import EntraEmulator
from orgsync.testing.google import DIRECTORY_SCOPES, GoogleEmulator
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig
from tests.sources.cli import SOURCE_SECRET_ENV, write_config
from tests.sources.directory import make_directory
from tests.sources.idp import (
    ADMIN,
    KEY_ID,
    SERVICE_ACCOUNT,
    ServiceAccount,
    service_account,  # noqa: F401 - fixture
)
from tests.sources.idp_directory import build, seed_google, seed_okta
from tests.sources.servers import (
    READER_PASSWORD,
    FaultProxy,
    Respond,
    ServerProcess,
    Slapd,
    ldif,
    start_scim2_server,
)
from tests.sources.test_idp_cli import IdpRig, scoped_directory
from tests.sources.test_ldap import ldap_config
from tests.sources.test_scim import scim_config

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

SCIM_TOKEN = "scim-test-token-0123456789"


def validate(config: Path, secret: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_ENV: API_KEY}
    if secret is not None:
        env[SOURCE_SECRET_ENV] = secret
    return cli.run(config, "validate", *args, env=env, timeout=180)


def probe_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if "change probe" in line]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def openai() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


# ------------------------------------------------------------------------------ LDAP


@pytest.mark.parametrize("syncprov", [False, True])
def test_ldap_probe_degraded_without_syncprov_and_one_search_with_it(
    syncprov: bool, tmp_path: Path, openai: OpenAIEmulator
) -> None:
    """Without syncprov each pass counts every entry: validate says so, with the overlay
    to load (the words a sync logs), and still exits 0. With it: one search."""
    server = Slapd(tmp_path / "slapd", ldif(make_directory(40, 2)), syncprov=syncprov)
    try:
        config = write_config(tmp_path, openai, ldap_config(server.url))
        result = validate(config, READER_PASSWORD)
        assert result.returncode == 0, result.stdout + result.stderr
        line = probe_line(result)
        if syncprov:
            assert line == (
                "  change probe: available; a quiet incremental pass is 1 search page "
                "(the contextCSN the syncprov overlay keeps)"
            )
            return
        enable = (
            "load the syncprov overlay on the database holding the bases "
            "(olcOverlay=syncprov): a quiet pass is then one search"
        )
        assert line.startswith(
            "  change probe: WARNING: degraded: no contextCSN at or above the bases "
            "(OpenLDAP's syncprov keeps one); each incremental pass searches the changed "
            "entries and counts every person and group, DNs only"
        ), line
        assert "4 search pages here now" in line, line
        assert line.endswith(f"; to enable: {enable}"), line
        # The same words a running pass logs.
        synced = cli.run(
            config,
            "sync",
            "--dry-run",
            env={**os.environ, KEY_ENV: API_KEY, SOURCE_SECRET_ENV: READER_PASSWORD},
        )
        assert "source.change_probe_degraded" in synced.stderr + synced.stdout
        assert enable in synced.stderr + synced.stdout
    finally:
        server.stop()


# ------------------------------------------------------------------------------ Google


@pytest.mark.parametrize("setup", ["delegated", "scope not delegated", "no report reader"])
def test_google_probe_needs_the_reports_scope_delegated(
    setup: str,
    tmp_path: Path,
    openai: OpenAIEmulator,
    service_account: ServiceAccount,  # noqa: F811 - fixture
) -> None:
    """Without the Reports scope delegated (the token is refused), or with a `subject`
    who may not read reports (the API answers 403): degraded, with what to delegate, in
    the words a running pass logs; exit 0 all the same."""
    with GoogleEmulator(admins=(ADMIN,)) as google:
        scopes = {"delegated_scopes": DIRECTORY_SCOPES} if setup == "scope not delegated" else {}
        google.register_service_account(
            SERVICE_ACCOUNT, KEY_ID, service_account.public_pem, **scopes
        )
        if setup == "no report reader":
            google.report_readers = frozenset()
        rig = IdpRig("google", tmp_path, openai, service_account, google=google)
        seed_google(google, scoped_directory(nested=True))
        result = rig.orgsync("validate")
        assert result.returncode == 0, result.stdout + result.stderr
        line = probe_line(result)
        if setup == "delegated":
            assert line == (
                "  change probe: available; a quiet incremental pass is a token and two "
                "requests (the Reports API's activities)"
            )
            return
        if setup == "scope not delegated":
            assert line.startswith(
                "  change probe: WARNING: degraded: the token endpoint refused the scope "
                "https://www.googleapis.com/auth/admin.reports.audit.readonly"
            ), line
        else:
            assert line.startswith("  change probe: WARNING: degraded: the Reports API refused")
            assert "403" in line
        enable = (
            "delegate the scope "
            "https://www.googleapis.com/auth/admin.reports.audit.readonly to the service "
            "account's client id (Admin console, Security, API controls, Domain-wide "
            f"delegation), and let {ADMIN} read reports: a quiet pass is then a token and "
            "two requests"
        )
        assert line.endswith(f"; to enable: {enable}"), line
        assert "each incremental pass reads the whole directory" in line
        # The same words a running pass logs.
        synced = rig.orgsync("sync", "--dry-run")
        assert "source.change_probe_degraded" in synced.stderr
        assert enable in synced.stderr


# ------------------------------------------------------------------------------ Okta


@pytest.mark.parametrize("logs", [True, False])
def test_okta_probe_needs_the_system_log(
    logs: bool,
    tmp_path: Path,
    openai: OpenAIEmulator,
    service_account: ServiceAccount,  # noqa: F811 - fixture
) -> None:
    with OktaEmulator() as okta:
        okta.logs_forbidden = not logs
        rig = IdpRig("okta", tmp_path, openai, service_account, okta=okta)
        seed_okta(okta, build(12, 6, nested=False, inactive_every=4))
        result = rig.orgsync("validate")
        assert result.returncode == 0, result.stdout + result.stderr
        line = probe_line(result)
        if logs:
            assert line == (
                "  change probe: available; a quiet incremental pass is 3 requests (users "
                "and groups changed since, and the System Log)"
            )
            return
        assert line.startswith("  change probe: WARNING: degraded: okta: GET /api/v1/logs: ")
        assert "the token may not read the System Log (okta.logs.read)" in line
        assert "then reads the whole directory" in line
        assert line.endswith(
            "to enable: let the token read the System Log: an API token has its creating "
            "admin's rights, so create it as an admin whose role may view the System Log "
            "(Read-only Administrator, Report Administrator or above)"
        ), line
        assert okta.token not in result.stdout + result.stderr


# ------------------------------------------------------------------------------ Entra


def test_entra_probe_is_graph_delta(
    tmp_path: Path,
    openai: OpenAIEmulator,
    service_account: ServiceAccount,  # noqa: F811 - fixture
) -> None:
    with EntraEmulator() as entra:
        rig = IdpRig("entra", tmp_path, openai, service_account, entra=entra)
        rig.seed(scoped_directory(nested=True))
        result = rig.orgsync("validate")
        assert result.returncode == 0, result.stdout + result.stderr
        assert probe_line(result) == (
            "  change probe: available; a quiet incremental pass is 2 requests (Graph "
            "delta of /users and /groups)"
        )


# ------------------------------------------------------------------------------ SCIM


def validate_with_filters_answered(
    status: int, server: ServerProcess, tmp_path: Path, openai: OpenAIEmulator
) -> subprocess.CompletedProcess[str]:
    """`orgsync validate` with the SCIM source behind a proxy answering `status` to every
    filtered query (the probe's), and the server's own answer to everything else."""

    def answer(_number: int, path: str) -> Respond | None:
        return Respond(status) if "filter=" in path else None

    with FaultProxy(server.url, answer) as proxy:
        config = write_config(tmp_path, openai, scim_config(proxy.url))
        return validate(config, SCIM_TOKEN)


@pytest.mark.parametrize("filters", [True, False])
def test_scim_probe_needs_the_last_modified_filter(
    filters: bool, tmp_path: Path, openai: OpenAIEmulator
) -> None:
    """scim2-server filters on meta.lastModified; behind a proxy answering 400 to any
    filter it is read whole each pass, and validate says which filter it needs."""
    server = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    try:
        if filters:
            config = write_config(tmp_path, openai, scim_config(server.url))
            result = validate(config, SCIM_TOKEN)
            assert result.returncode == 0, result.stdout + result.stderr
            assert probe_line(result) == (
                "  change probe: available; a quiet incremental pass is 4 requests "
                "(resources changed since, and how many there are, of /Users and /Groups)"
            )
            return

        result = validate_with_filters_answered(400, server, tmp_path, openai)
        assert result.returncode == 0, result.stdout + result.stderr
        line = probe_line(result)
        assert line.startswith(
            "  change probe: WARNING: degraded: the provider does not filter on "
            "meta.lastModified (GET /Users?filter=meta.lastModified: "
        ), line
        assert "; each incremental pass reads /Users and /Groups whole and compares them" in line
        assert line.endswith("nothing to set in orgsync"), line
        assert SCIM_TOKEN not in result.stdout + result.stderr
    finally:
        server.stop()


def test_a_probe_failing_otherwise_is_not_checked_and_validate_still_passes(
    tmp_path: Path, openai: OpenAIEmulator
) -> None:
    """A provider answering 500 to the probe's filtered query only (every listing read
    fine): a pass would read whole (`source.probe_failed`); validate says the probe was
    not checked and why, and exits 0: every sync works."""
    server = start_scim2_server(make_directory(20, 2), tmp_path / "scim2", SCIM_TOKEN)
    try:
        result = validate_with_filters_answered(500, server, tmp_path, openai)
        assert result.returncode == 0, result.stdout + result.stderr
        line = probe_line(result)
        assert line.startswith("  change probe: WARNING: not checked: scim: "), line
        assert "500" in line
        assert SCIM_TOKEN not in result.stdout + result.stderr
    finally:
        server.stop()


# ------------------------------------------------------------------------------ file


def test_file_source_probe_is_not_applicable_and_offline_says_nothing(rig: Rig) -> None:
    groups = [
        {"id": "g1", "name": "openai-users", "members": ["1"]},
        {"id": "g2", "name": "openai-owners", "members": []},
    ]
    rig.write({"people": [{"id": "1", "email": "a@example.com", "name": "A"}], "groups": groups})
    online = rig.orgsync("validate")
    assert online.returncode == 0, online.stdout + online.stderr
    assert probe_line(online) == (
        "  change probe: not applicable; each pass reads the file and compares it with the "
        "last one (snapshot diff, 0 calls)"
    )
    offline = rig.orgsync("validate", "--offline")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "change probe" not in offline.stdout + offline.stderr
