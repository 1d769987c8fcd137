"""`orgsync validate` and `status` on a SCIM target, whose API names no tenant: its
memory is about its base URL, so validate fails (with the sync's refusal) when the
configuration now points at another URL, and passes once `orgsync state forget
--identity-only` says it is the same tenant. The real `orgsync` command, the scim2-server
reference implementation and a real SQLite state database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.output_schema import assert_status_output
from tests.targets.cli import Rig, directory, scim_target
from tests.targets.scim_servers import Scim2Server
from tests.targets.test_scim_e2e import Org

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def test_validate_fails_on_another_scim_address_as_a_sync_would(
    tmp_path: Path, scim2: Scim2Server
) -> None:
    first_tenant, second_tenant = scim2.tenant(), scim2.tenant()
    rig = Rig(tmp_path, [scim_target(first_tenant, groups=False)])
    rig.write(directory(3))
    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    status = rig.orgsync("status")
    assert f"memory is about: scim {first_tenant} (its API names no organization)" in (
        status.stdout
    ), status.stdout
    (entry,) = json.loads(rig.orgsync("status", "--json").stdout)
    assert_status_output([entry])
    assert entry["identity"]["organization"] is None
    assert entry["identity"]["address"] == f"scim {first_tenant}"

    second = Org(second_tenant)
    try:
        rig.targets = [scim_target(second_tenant, groups=False)]
        rig.write(directory(1))
        checked = rig.orgsync("validate")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "target scim-test (scim): FAILED: target scim-test: the state database's" in (
            checked.stdout
        ), checked.stdout
        assert first_tenant in checked.stdout and second_tenant in checked.stdout
        assert "--identity-only" in checked.stdout
        assert second.users() == {}  # validate wrote nothing there
    finally:
        second.close()

    # The same tenant under another spelling of its address: fails until said to be it.
    renamed = first_tenant.replace("127.0.0.1", "localhost")
    rig.targets = [scim_target(renamed, groups=False)]
    rig.write(directory(3))
    assert rig.orgsync("validate").returncode == 1
    forgot = rig.orgsync("state", "forget", "scim-test", "--identity-only")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    checked = rig.orgsync("validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"the next sync records scim {renamed} (its API names no organization)" in (
        checked.stdout
    ), checked.stdout
