"""`orgsync` as an administrator runs it, reading Okta, Entra ID or Google from their emulators.

For each source: a dry run (exit 2, nothing written), a sync (exit 0, the organization
holds exactly the active people of the scope groups, nested groups and their cycle
included), a second dry run (exit 0); a read failing half-way (exit 1, not one write to the
organization); and `orgsync validate` reporting what the source holds.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orgsync.testing.entra import EntraEmulator
from orgsync.testing.entra import PageFailure as EntraFailure
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.google import PageFailure as GoogleFailure
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.okta import PageFailure as OktaFailure
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV
from tests.sources.idp import ADMIN, KEY_ID, SERVICE_ACCOUNT, ServiceAccount
from tests.sources.idp_directory import Directory, build, seed_entra, seed_google, seed_okta

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

SECRET_ENV = "ORGSYNC_TEST_IDP_SECRET"
KINDS = ("okta", "entra", "google")


def scoped_directory(nested: bool) -> Directory:
    """12 people; `openai-users` holds p0..p5 directly and, when nested, team-0, whose
    cycle team-0 ⊃ team-1 ⊃ team-2 ⊃ team-0 brings in the rest of the teams' people."""
    directory = build(12, 6, nested=nested, inactive_every=4)
    users = directory.group("openai-users")
    users.people = [f"p{i}" for i in range(6)]
    if nested:
        directory.group("team-0").people = ["p6", "p7"]
        directory.group("team-1").people = ["p8"]
        directory.group("team-2").people = ["p9", "p10"]
    return directory


def wanted(directory: Directory) -> dict[str, str]:
    """email → role the organization must end with (scope: openai-users, nesting followed)."""
    by_key = {g.key: g for g in directory.groups}
    reach, stack = set(), [directory.group("openai-users").key]
    seen = set(stack)
    while stack:
        group = by_key[stack.pop()]
        reach.update(group.people)
        for child in group.groups:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    owners = set(directory.group("openai-owners").people)
    return {
        p.email: "owner" if p.key in owners else "reader"
        for p in directory.people
        if p.active and p.key in reach
    }


@dataclass
class IdpRig:
    """One source emulator, the OpenAI emulator, and a configuration tying them together."""

    kind: str
    folder: Path
    openai: OpenAIEmulator
    account: ServiceAccount
    okta: OktaEmulator | None = None
    entra: EntraEmulator | None = None
    google: GoogleEmulator | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_override: str | None = None

    def seed(self, directory: Directory) -> None:
        if self.okta is not None:
            seed_okta(self.okta, directory)
        elif self.entra is not None:
            seed_entra(self.entra, directory)
        else:
            assert self.google is not None
            seed_google(self.google, directory)

    def fail_members_page(self, page: int) -> None:
        if self.okta is not None:
            self.okta.failure = OktaFailure("members", page)
        elif self.entra is not None:
            self.entra.failure = EntraFailure("members", page)
        else:
            assert self.google is not None
            self.google.failure = GoogleFailure("members", page)

    def source_block(self) -> str:
        common = 'allow_plaintext = true\ntimeout = "5s"\nmax_attempts = 2\nmax_retry_delay = "1s"'
        if self.okta is not None:
            self.env[SECRET_ENV] = self.secret_override or self.okta.token
            return (
                f'type = "okta"\nurl = "{self.okta.url}"\ntoken_env = "{SECRET_ENV}"\n'
                f"page_size = 3\n{common}"
            )
        if self.entra is not None:
            self.env[SECRET_ENV] = self.secret_override or self.entra.client_secret
            return (
                f'type = "entra"\ntenant_id = "{self.entra.tenant_id}"\n'
                f'client_id = "{self.entra.client_id}"\nclient_secret_env = "{SECRET_ENV}"\n'
                f'graph_url = "{self.entra.graph_url}"\nlogin_url = "{self.entra.login_url}"\n'
                f"page_size = 3\n{common}"
            )
        assert self.google is not None
        key_file = self.account.write(self.folder)
        return (
            f'type = "google"\nsubject = "{ADMIN}"\ncredentials_file = "{key_file}"\n'
            f'directory_url = "{self.google.directory_url}"\n'
            f'reports_url = "{self.google.reports_url}"\n'
            f'token_url = "{self.google.token_url}"\npage_size = 3\n{common}'
        )

    def write_config(self) -> Path:
        path = self.folder / "orgsync.toml"
        path.write_text(
            f"""
[source]
{self.source_block()}

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{self.openai.start()}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-users"]
timeout = "5s"

[[targets.roles]]
group = "openai-owners"
role = "owner"

[safety]
max_removals = 10
max_removal_ratio = 0.5

[state]
path = "state.db"
""",
            encoding="utf-8",
        )
        return path

    def orgsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        config = self.write_config()
        return cli.run(config, *args, env={**os.environ, KEY_ENV: API_KEY, **self.env})

    def holdings(self) -> dict[str, str]:
        held: dict[str, str] = {}
        for user in self.openai.state.users():
            if user["id"] != self.openai.state.key_owner_id:
                held[str(user["email"]).lower()] = str(user["role"])
        for invite in self.openai.state.invites():
            if invite["status"] == "pending":
                held[str(invite["email"]).lower()] = str(invite["role"])
        return held


@pytest.fixture(params=KINDS)
def rig(
    request: pytest.FixtureRequest, tmp_path: Path, service_account: ServiceAccount
) -> Iterator[IdpRig]:
    kind: str = request.param
    with OpenAIEmulator(api_key=API_KEY) as openai:
        if kind == "okta":
            with OktaEmulator() as okta:
                yield IdpRig(kind, tmp_path, openai, service_account, okta=okta)
        elif kind == "entra":
            with EntraEmulator() as entra:
                yield IdpRig(kind, tmp_path, openai, service_account, entra=entra)
        else:
            with GoogleEmulator(admins=(ADMIN,)) as google:
                google.register_service_account(SERVICE_ACCOUNT, KEY_ID, service_account.public_pem)
                yield IdpRig(kind, tmp_path, openai, service_account, google=google)


# As processes: `orgsync sync` reading each IdP through its real entry point.
@pytest.mark.orgsync_in_process(False)
def test_dry_run_sync_and_a_quiet_second_dry_run(rig: IdpRig) -> None:
    directory = scoped_directory(nested=rig.kind != "okta")
    rig.seed(directory)
    want = wanted(directory)
    assert len(want) >= 5, "the rig must want people, owners among them"
    assert "owner" in want.values()

    dry = rig.orgsync("sync", "--dry-run", "--json")
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert rig.openai.writes() == []
    (plan,) = json.loads(dry.stdout)["targets"]
    assert sorted((op["email"], op["role"]) for op in plan["operations"]) == sorted(want.items())

    applied = rig.orgsync("sync")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert rig.holdings() == want

    again = rig.orgsync("sync", "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_read_failing_half_way_plans_nothing_and_writes_nothing(rig: IdpRig) -> None:
    rig.seed(scoped_directory(nested=rig.kind != "okta"))
    rig.openai.state.add_user("person0@example.com", "reader")  # would be raised to owner
    rig.fail_members_page(2)
    result = rig.orgsync("sync")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "HTTP 5" in result.stdout + result.stderr
    assert rig.openai.writes() == []
    assert rig.holdings() == {"person0@example.com": "reader"}


def test_validate_reports_what_the_source_holds(rig: IdpRig) -> None:
    rig.seed(scoped_directory(nested=rig.kind != "okta"))
    result = rig.orgsync("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"source {rig.kind}: 12 people (3 inactive), 6 groups" in result.stdout
    wrong = "wrong-secret-0123456789"
    rig.secret_override = wrong
    if rig.google is not None:
        rig.google.admins.clear()  # domain-wide delegation withdrawn
    refused = rig.orgsync("validate")
    assert refused.returncode == 1
    assert f"source {rig.kind}: FAILED" in refused.stdout
    assert wrong not in refused.stdout + refused.stderr
