"""`orgsync demo`: the embedded default, a complete sync that needs no account anywhere.

Starts the OpenAI Admin API emulator on loopback with a sample organization, writes a
sample directory and configuration into a temporary folder, runs a dry run, a sync and a
second dry run through the real engine, prints all three, and stops what it started.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orgsync.config import load_config
from orgsync.emulators.openai_admin import OpenAIEmulator
from orgsync.engine import Engine, RunOptions, TargetResult, worst_exit_code
from orgsync.report import Style, render_results, sync_json

DEMO_KEY_ENV = "ORGSYNC_DEMO_ADMIN_KEY"
DEMO_KEY = "sk-admin-demo-0000000000000000000000000000000000000000"


def sample_directory() -> dict[str, Any]:
    """A small company: owners, readers via a nested team, a leaver and a duplicate email."""
    people = [
        ("00u1", "ada@example.com", "Ada Lovelace", True),
        ("00u2", "grace@example.com", "Grace Hopper", True),
        ("00u3", "alan@example.com", "Alan Turing", True),
        ("00u4", "edsger@example.com", "Edsger Dijkstra", True),
        ("00u5", "barbara@example.com", "Barbara Liskov", True),
        ("00u6", "ken@example.com", "Ken Thompson", False),
        ("00u7", "margaret@example.com", "Margaret Hamilton", True),
        ("00u8", "dup@example.com", "Duplicate One", True),
        ("00u9", "DUP@example.com", "Duplicate Two", True),
    ]
    return {
        "people": [
            {"id": i, "email": e, "name": n, "active": a, "department": "engineering"}
            for i, e, n, a in people
        ],
        "groups": [
            {"id": "g-owners", "name": "openai-owners", "members": ["00u1"]},
            {"id": "g-users", "name": "openai-users", "members": ["g-ml", "00u5", "00u6", "00u8"]},
            {"id": "g-ml", "name": "team-ml", "members": ["00u2", "00u3", "00u4", "00u7", "00u9"]},
        ],
    }


def seed_organization(emulator: OpenAIEmulator) -> None:
    """Today's organization: partly in step, partly drifted."""
    state = emulator.state
    state.add_user("ada@example.com", "reader", name="Ada Lovelace")  # must become owner
    state.add_user("grace@example.com", "reader", name="Grace Hopper")  # already right
    state.add_user("ken@example.com", "reader", name="Ken Thompson")  # left the company
    state.add_user("contractor@partner.example", "reader", name="Unmanaged Contractor")
    state.add_user("ci-bot@example.com", "reader", is_service_account=True)
    state.add_invite("alan@example.com", "owner")  # wrong role on a pending invitation
    state.add_invite("edsger@example.com", "reader", expires_at=int(time.time()) - 86400)
    state.add_role("ml-engineer", ["api.model.read"])  # a custom role for the team's group


def demo_config(folder: Path, base_url: str) -> Path:
    (folder / "directory.json").write_text(json.dumps(sample_directory(), indent=2))
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "openai-demo"
type = "openai"
base_url = "{base_url}"
api_key_env = "{DEMO_KEY_ENV}"
allow_plaintext = true      # the emulator listens on loopback without TLS
default_role = "reader"
scope_groups = ["openai-*"]
[[targets.roles]]
group = "openai-owners"
role = "owner"
[[targets.groups]]          # IdP teams mirrored as groups holding a role
source = "team-*"
roles = ["ml-engineer"]

[safety]
max_removals = 5
max_removal_ratio = 0.5
protected = ["breakglass@example.com"]

[state]
path = "orgsync.db"
""",
        encoding="utf-8",
    )
    return path


def _show(title: str, results: list[TargetResult], *, dry_run: bool, as_json: bool) -> None:
    print(f"\n=== {title} ===")
    if as_json:
        print(json.dumps(sync_json(results, dry_run=dry_run), indent=2))
    else:
        print(render_results(results, dry_run=dry_run, style=Style.for_stream(sys.stdout)))


def run_demo(*, as_json: bool = False) -> int:
    """Dry run, sync, dry run again; exit 0 when the organization ends in step."""
    with (
        tempfile.TemporaryDirectory(prefix="orgsync-demo-") as tmp,
        OpenAIEmulator(api_key=DEMO_KEY, key_owner_email="it-admin@example.com") as emulator,
    ):
        seed_organization(emulator)
        config = load_config(demo_config(Path(tmp), emulator.start()))
        engine = Engine(config, environ={DEMO_KEY_ENV: DEMO_KEY})
        try:
            print(f"orgsync demo: OpenAI Admin API emulator on {emulator.start()}")
            print(f"directory and state in {tmp} (removed afterwards)")
            before = engine.run(RunOptions(dry_run=True))
            _show("1. dry run (changes nothing)", before, dry_run=True, as_json=as_json)
            applied = engine.run(RunOptions(dry_run=False))
            _show("2. sync", applied, dry_run=False, as_json=as_json)
            after = engine.run(RunOptions(dry_run=True))
            _show("3. dry run again", after, dry_run=True, as_json=as_json)
        finally:
            engine.close()
        print("\n=== the organization now ===")
        for user in sorted(emulator.state.users(), key=lambda u: str(u.get("email"))):
            print(f"  member   {user.get('email')!s:<28} {user.get('role')}")
        for invite in sorted(emulator.state.invites(), key=lambda i: str(i.get("email"))):
            if invite.get("status") == "pending":
                print(f"  invited  {invite.get('email')!s:<28} {invite.get('role')}")
        emails = {u["id"]: u.get("email") for u in emulator.state.users()}
        for group in emulator.state.groups():
            members = ", ".join(sorted(str(emails.get(m)) for m in group["members"]))
            print(f"  group    {group['name']!s:<28} members: {members or '-'}")
    return worst_exit_code([r.exit_code for r in after])
