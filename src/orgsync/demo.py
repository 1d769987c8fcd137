"""`orgsync demo` and `orgsync emulate`: rehearsals that need no account anywhere.

`demo` starts the OpenAI Admin API emulator on loopback with a sample organization,
writes a sample directory and configuration into a temporary folder (or `--keep DIR`),
runs a dry run, a sync and a second dry run through the real engine, prints all three,
and stops what it started; with `--keep` it leaves the folder and says what to type next.

`emulate` serves one emulator with the same sample organization (or one from a seed
file) until Ctrl-C, for an administrator to try a configuration against.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from orgsync.config import load_config
from orgsync.core.errors import OrgsyncError
from orgsync.engine import Engine
from orgsync.report import Style, render_results, sync_json
from orgsync.results import RunOptions, TargetResult, worst_exit_code
from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.keycard.state import KeycardState
from orgsync.testing.openai.emulator import OpenAIEmulator

DEMO_KEY_ENV = "ORGSYNC_DEMO_ADMIN_KEY"
DEMO_KEY = "sk-admin-demo-0000000000000000000000000000000000000000"
"""The emulators' well-known credentials: a fake organization on loopback has nothing to
protect, and a fixed value lets a kept demo folder work against `orgsync emulate` again."""
DEMO_KEY_OWNER = "it-admin@example.com"
KEYCARD_SECRET_ENV = "ORGSYNC_DEMO_CLIENT_SECRET"  # noqa: S105 - a variable's name
KEYCARD_CLIENT_ID = "sa_orgsync"
KEYCARD_SECRET = "keycard-demo-secret"  # noqa: S105 - a local fake's well-known secret
KEYCARD_ORG = "example-org"


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


@contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    """A temporary folder, or `keep` (created, and refused if it holds a demo already)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="orgsync-demo-") as tmp:
            yield Path(tmp)
        return
    taken = [n for n in ("orgsync.toml", "directory.json", "orgsync.db") if (keep / n).exists()]
    if taken:
        raise OrgsyncError(
            f"--keep {keep}: already holds {', '.join(taken)}; nothing was overwritten "
            "(give an empty or new folder)"
        )
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OrgsyncError(f"--keep {keep}: cannot create the folder: {error.strerror}") from None
    yield keep.resolve()


def run_demo(*, as_json: bool = False, keep: Path | None = None) -> int:
    """Dry run, sync, dry run again; exit 0 when the organization ends in step."""
    with (
        _folder(keep) as folder,
        OpenAIEmulator(api_key=DEMO_KEY, key_owner_email=DEMO_KEY_OWNER) as emulator,
    ):
        tmp = str(folder)
        seed_organization(emulator)
        config = load_config(demo_config(folder, emulator.start()))
        engine = Engine(config, environ={DEMO_KEY_ENV: DEMO_KEY})
        try:
            print(f"orgsync demo: OpenAI Admin API emulator on {emulator.start()}")
            kept = "kept afterwards" if keep is not None else "removed afterwards"
            print(f"directory and state in {tmp} ({kept})")
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
        if keep is not None:
            _print_next_steps(folder, emulator.start())
    return worst_exit_code([r.exit_code for r in after])


def _print_next_steps(folder: Path, base_url: str) -> None:
    listen = base_url.removeprefix("http://").removesuffix("/v1")
    config = shlex.quote(str(folder / "orgsync.toml"))
    print(f"\n=== kept in {folder} ===")
    print("  orgsync.toml     the configuration (target openai-demo on the emulator)")
    print("  directory.json   the file source: edit it to try your own rules (README: Rehearse)")
    print("  orgsync.db       the state database: whom orgsync links, invited and owns")
    print("\nNext: start the emulator again, with the organization the demo started from:")
    print(f"  orgsync emulate openai --listen {listen}")
    print("and in another terminal:")
    print(f"  export {DEMO_KEY_ENV}={DEMO_KEY}")
    print(f"  orgsync --config {config} sync --dry-run")
    print(f"  orgsync --config {config} sync")
    print(f"  orgsync --config {config} status")


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv4 address or name; port 0 lets the system choose) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8700)")
    return host, int(port)


def _seed_list(document: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise OrgsyncError(f"{where}: {key!r} must be a list of objects")
    return items


def read_seed(path: Path, kind: str) -> dict[str, list[dict[str, Any]]]:
    """A seed file: `{"members": [...], "invites": [...], "groups": [...]}` (README)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OrgsyncError(f"--seed-file {path}: cannot read it: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OrgsyncError(f"--seed-file {path}: not JSON: {error}") from None
    if not isinstance(document, dict):
        raise OrgsyncError(f"--seed-file {path}: must be a JSON object")
    unknown = sorted(set(document) - {"members", "invites", "groups"})
    if unknown:
        raise OrgsyncError(
            f"--seed-file {path}: unknown key(s) {', '.join(unknown)} "
            "(known: members, invites, groups)"
        )
    seed = {k: _seed_list(document, k, f"--seed-file {path}") for k in document}
    if seed.get("groups") and kind != "openai":
        raise OrgsyncError(f"--seed-file {path}: {kind} organizations have no groups")
    for key in ("members", "invites"):
        for index, record in enumerate(seed.get(key, [])):
            if not isinstance(record.get("email"), str) or "@" not in record["email"]:
                raise OrgsyncError(f"--seed-file {path}: {key}[{index}]: needs an email")
    return seed


def _seed_openai(emulator: OpenAIEmulator, seed: dict[str, list[dict[str, Any]]]) -> None:
    state = emulator.state
    ids: dict[str, str] = {}
    for index, member in enumerate(seed.get("members", [])):
        try:
            ids[member["email"].lower()] = state.add_user(
                member["email"],
                member.get("role", "reader"),
                name=str(member.get("name", "")),
                is_service_account=bool(member.get("service_account", False)),
            )
        except ValueError as error:
            raise OrgsyncError(f"--seed-file: members[{index}]: {error}") from None
    for index, invite in enumerate(seed.get("invites", [])):
        try:
            state.add_invite(invite["email"], invite.get("role", "reader"))
        except ValueError as error:
            raise OrgsyncError(f"--seed-file: invites[{index}]: {error}") from None
    for index, group in enumerate(seed.get("groups", [])):
        if not isinstance(group.get("name"), str):
            raise OrgsyncError(f"--seed-file: groups[{index}]: needs a name")
        group_id = state.add_group(group["name"])
        for email in group.get("members", []):
            if str(email).lower() not in ids:
                raise OrgsyncError(
                    f"--seed-file: groups[{index}] ({group['name']}): {email} is not a member"
                )
            state.add_group_member(group_id, ids[str(email).lower()])


def _seed_keycard(emulator: KeycardEmulator, seed: dict[str, list[dict[str, Any]]]) -> None:
    state = emulator.state
    for index, member in enumerate(seed.get("members", [])):
        try:
            state.add_user(
                member["email"],
                member.get("role", "org_member"),
                status=member.get("status", "active"),
            )
        except ValueError as error:
            raise OrgsyncError(f"--seed-file: members[{index}]: {error}") from None
    for index, invite in enumerate(seed.get("invites", [])):
        try:
            state.add_invitation(invite["email"], invite.get("role", "org_member"))
        except ValueError as error:
            raise OrgsyncError(f"--seed-file: invites[{index}]: {error}") from None


def _sample_keycard(emulator: KeycardEmulator) -> None:
    """The demo's organization in Keycard's terms (no groups, no service accounts)."""
    state = emulator.state
    state.add_user(DEMO_KEY_OWNER, "org_admin")
    state.add_user("ada@example.com", "org_member")  # must become org_admin
    state.add_user("grace@example.com", "org_member")
    state.add_user("ken@example.com", "org_member")  # left the company
    state.add_user("contractor@partner.example", "org_member")
    state.add_invitation("alan@example.com", "org_admin")  # wrong role


@contextmanager
def _until_stopped() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM: stopping an emulator is its normal end."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopped.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_emulator(
    kind: str, *, host: str = "127.0.0.1", port: int = 0, people: int = 0, seed_file: Path | None
) -> int:
    """Serve one emulator ("openai" or "keycard") with a sample organization until
    Ctrl-C; exit 0."""
    seed = read_seed(seed_file, kind) if seed_file is not None else None
    emulator: OpenAIEmulator | KeycardEmulator
    if kind == "openai":
        emulator = OpenAIEmulator(api_key=DEMO_KEY, key_owner_email=DEMO_KEY_OWNER)
        if seed is None:
            seed_organization(emulator)
        else:
            _seed_openai(emulator, seed)
        for i in range(1, people + 1):
            emulator.state.add_user(f"person{i}@example.com", "reader", name=f"Person {i}")
    else:
        emulator = KeycardEmulator(
            client_id=KEYCARD_CLIENT_ID,
            client_secret=KEYCARD_SECRET,
            state=KeycardState(organization_id=KEYCARD_ORG, label=KEYCARD_ORG),
        )
        if seed is None:
            _sample_keycard(emulator)
        else:
            _seed_keycard(emulator, seed)
        for i in range(1, people + 1):
            emulator.state.add_user(f"person{i}@example.com", "org_member")
    with _until_stopped() as stopped:
        try:
            url = emulator.start(host=host, port=port)
        except OSError as error:
            raise OrgsyncError(
                f"--listen {host}:{port}: cannot listen there: {error.strerror} "
                "(port 0 lets the system choose a free one)"
            ) from None
        try:
            _print_connection(kind, url, host)
            while not stopped.wait(0.5):
                pass
        finally:
            emulator.stop()
    print("emulator stopped", flush=True)
    return 0


def _print_connection(kind: str, url: str, host: str) -> None:
    lines = [f"orgsync emulate: {kind} emulator at {url}"]
    if host not in ("127.0.0.1", "localhost"):
        lines.append(
            f"  warning: listening on {host}, not loopback: anyone who can reach it can use "
            "this fake organization with the well-known credential below"
        )
    lines.append("Point a target of your configuration at it:")
    lines.append("  [[targets]]")
    lines.append(f'  name = "{kind}-rehearsal"')
    lines.append(f'  type = "{kind}"')
    lines.append(f'  base_url = "{url}"')
    if kind == "openai":
        lines.append(f'  api_key_env = "{DEMO_KEY_ENV}"')
        secret = f"{DEMO_KEY_ENV}={DEMO_KEY}"
    else:
        lines.append(f'  client_id = "{KEYCARD_CLIENT_ID}"')
        lines.append(f'  client_secret_env = "{KEYCARD_SECRET_ENV}"')
        lines.append(f'  organization_id = "{KEYCARD_ORG}"')
        secret = f"{KEYCARD_SECRET_ENV}={KEYCARD_SECRET}"
    lines.append("  allow_plaintext = true   # the emulator speaks plain http on loopback")
    lines.append("and give orgsync its credential:")
    lines.append(f"  export {secret}")
    lines.append("then: orgsync --config YOUR.toml sync --dry-run --target " + f"{kind}-rehearsal")
    lines.append("Ctrl-C stops the emulator (its organization lives in memory only).")
    print("\n".join(lines), flush=True)
