"""The organization fence (`orgsync.store.identity`) on Keycard and SCIM targets, with
the real `orgsync` command and a real SQLite state database.

Keycard names its organization in every path (`organization_id`): another organization
under the same base URL is refused, the same one under another address is not. A SCIM
API names no tenant, so a SCIM target is known by its base URL: another URL is refused
(a tenant moved to a new address included: `orgsync state forget --identity-only` says
it is the same one, and keeps whom orgsync manages there).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orgsync.store import StateStore
from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.keycard.state import KeycardState
from tests.targets.cli import KEYCARD_SECRET_ENV, Rig, directory, keycard_target, scim_target
from tests.targets.scim_servers import Scim2Server
from tests.targets.test_scim_e2e import Org

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

CLIENT = "sa_identity"
SECRET = "identity-test-secret-0123456789"


def keycard(organization: str) -> KeycardEmulator:
    emulator = KeycardEmulator(
        client_id=CLIENT,
        client_secret=SECRET,
        state=KeycardState(organization_id=organization, label=f"label-{organization}"),
    )
    emulator.state.add_user("root@example.com", "org_admin")
    return emulator


def test_keycard_another_organization_at_the_same_url_is_refused(tmp_path: Path) -> None:
    x = keycard("org0000000000000000000000xx")
    url = x.start()
    rig = Rig(tmp_path, [keycard_target(url, x.state.organization_id, CLIENT)])
    rig.env = {KEYCARD_SECRET_ENV: SECRET}
    rig.write(directory(4))
    try:
        first = rig.orgsync("sync")
        assert first.returncode == 0, first.stdout + first.stderr
    finally:
        x.stop()

    y = keycard("org0000000000000000000000yy")
    y.state.add_user("person1@example.com", "org_member")  # Y's own, never managed there
    port = urlsplit(url).port
    assert port is not None
    try:
        assert y.start(port=port) == url
        rig.targets = [keycard_target(url, y.state.organization_id, CLIENT)]
        rig.write(directory(1))
        refused = rig.orgsync("sync")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        said = refused.stdout + refused.stderr
        assert "org0000000000000000000000xx" in said and "org0000000000000000000000yy" in said
        # Only the token request: no invitation, no suspension.
        assert [w.path for w in y.writes()] == ["/service-account-token"]
        statuses = {u["email"]: u["status"] for u in y.state.users()}
        assert statuses["person1@example.com"] == "active"

        # The same organization reached under another address: not refused.
        other = url.replace("127.0.0.1", "localhost")
        rig.targets = [keycard_target(other, y.state.organization_id, CLIENT)]
        rig.write(directory(1))
        assert rig.orgsync("state", "forget", "keycard-test").returncode == 0
        assert rig.orgsync("sync").returncode == 0
        rig.targets = [keycard_target(url, y.state.organization_id, CLIENT)]
        rig.write(directory(1))
        moved = rig.orgsync("sync")
        assert moved.returncode == 0, moved.stdout + moved.stderr
    finally:
        y.stop()


def test_scim_another_base_url_is_refused_and_identity_only_keeps_the_memory(
    tmp_path: Path, scim2: Scim2Server
) -> None:
    first_tenant, second_tenant = scim2.tenant(), scim2.tenant()
    rig = Rig(tmp_path, [scim_target(first_tenant, groups=False)])
    rig.write(directory(3))
    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    state = tmp_path / "state.db"
    with StateStore.open(state) as store:
        managed = store.memory("scim-test").managed
    assert len(managed) == 3

    second = Org(second_tenant)
    try:
        rig.targets = [scim_target(second_tenant, groups=False)]
        rig.write(directory(1))
        refused = rig.orgsync("sync")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        said = refused.stdout + refused.stderr
        assert first_tenant in said and second_tenant in said
        assert "names no organization" in said
        assert second.users() == {}  # nothing was written there
    finally:
        second.close()

    # The first tenant under another spelling of its address: refused (the base URL is all
    # a SCIM target is known by) until an administrator says it is the same one.
    renamed = first_tenant.replace("127.0.0.1", "localhost")
    rig.targets = [scim_target(renamed, groups=False)]
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 1
    forgot = rig.orgsync("state", "forget", "scim-test", "--identity-only")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    with StateStore.open(state) as store:
        assert store.memory("scim-test").managed == managed
        recorded = store.identity("scim-test")
    assert recorded is not None
    assert recorded.identity.address == f"scim {renamed}"
