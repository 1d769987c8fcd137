"""`orgsync emulate VENDOR`: one vendor's fake served until Ctrl-C, to rehearse against.

Organizations (`openai`, `keycard`) start as the demo's organization, partly in step and
partly drifted, or from a seed file of members, invitations and groups; directories
(`okta`, `entra`, `google`) hold the demo's sample company, or a seed file in the file
source's format (`{"people": [...], "groups": [...]}`). `--people N` adds N more people.
The command prints the `[[targets]]` or `[source]` table to paste and the well-known
credential the fake accepts: a fake organization on loopback has nothing to protect.

The fakes themselves are `orgsync.testing`; they load only when this command runs.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from orgsync.core.errors import OrgsyncError

if TYPE_CHECKING:
    from orgsync.core.model import SourceId, SourcePerson, SourceSnapshot
    from orgsync.testing.entra import EntraEmulator
    from orgsync.testing.google import GoogleEmulator
    from orgsync.testing.keycard import KeycardEmulator
    from orgsync.testing.okta import OktaEmulator
    from orgsync.testing.openai import OpenAIEmulator

ORGANIZATIONS = ("openai", "keycard")
DIRECTORIES = ("okta", "entra", "google")
VENDORS = ORGANIZATIONS + DIRECTORIES

DEMO_KEY_ENV = "ORGSYNC_DEMO_ADMIN_KEY"
DEMO_KEY = "sk-admin-demo-0000000000000000000000000000000000000000"
"""The emulators' well-known credentials: a fake organization on loopback has nothing to
protect, and a fixed value lets a kept demo folder work against `orgsync emulate` again."""
DEMO_KEY_OWNER = "it-admin@example.com"
KEYCARD_SECRET_ENV = "ORGSYNC_DEMO_CLIENT_SECRET"  # noqa: S105 - a variable's name
KEYCARD_CLIENT_ID = "sa_orgsync"
KEYCARD_SECRET = "keycard-demo-secret"  # noqa: S105 - a local fake's well-known secret
KEYCARD_ORG = "example-org"
OKTA_TOKEN_ENV = "ORGSYNC_DEMO_OKTA_TOKEN"  # noqa: S105 - a variable's name
OKTA_TOKEN = "okta-demo-token"  # noqa: S105 - a local fake's well-known token
ENTRA_SECRET_ENV = "ORGSYNC_DEMO_ENTRA_SECRET"  # noqa: S105 - a variable's name
ENTRA_SECRET = "entra-demo-secret"  # noqa: S105 - a local fake's well-known secret
GOOGLE_ADMIN = "admin@example.com"
GOOGLE_SERVICE_ACCOUNT = "orgsync-rehearsal@example-project.iam.gserviceaccount.com"


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


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv4 address or name; port 0 lets the system choose) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8700)")
    return host, int(port)


# ------------------------------------------------------------------ organizations


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


def _openai(seed_file: Path | None, people: int) -> OpenAIEmulator:
    from orgsync.testing.openai import OpenAIEmulator

    seed = read_seed(seed_file, "openai") if seed_file is not None else None
    emulator = OpenAIEmulator(api_key=DEMO_KEY, key_owner_email=DEMO_KEY_OWNER)
    if seed is None:
        seed_organization(emulator)
    else:
        _seed_openai(emulator, seed)
    for i in range(1, people + 1):
        emulator.state.add_user(f"person{i}@example.com", "reader", name=f"Person {i}")
    return emulator


def _keycard(seed_file: Path | None, people: int) -> KeycardEmulator:
    from orgsync.testing.keycard import KeycardEmulator, KeycardState

    seed = read_seed(seed_file, "keycard") if seed_file is not None else None
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
    return emulator


# ------------------------------------------------------------------ directories


def _directory(seed_file: Path | None, people: int) -> SourceSnapshot:
    """The people and groups a directory starts with: the seed file (the file source's
    format, read and checked as that source reads it) or the sample, plus `people` more,
    members of `openai-users`."""
    from dataclasses import replace

    from orgsync.core.model import SourceGroup, SourceId, SourcePerson
    from orgsync.sources.file import FileSource, parse_directory

    snapshot = (
        FileSource(seed_file).read()
        if seed_file is not None
        else parse_directory(sample_directory(), origin="the sample directory")
    )
    if not people:
        return snapshot
    extra = tuple(
        SourcePerson(id=SourceId(f"person{i}"), email=f"person{i}@example.com", name=f"Person {i}")
        for i in range(1, people + 1)
    )
    added = tuple(p.id for p in extra)
    groups = tuple(
        replace(g, members=g.members + added) if g.name == "openai-users" else g
        for g in snapshot.groups
    )
    if not any(g.name == "openai-users" for g in groups):
        groups += (SourceGroup(id=SourceId("openai-users"), name="openai-users", members=added),)
    return replace(snapshot, people=snapshot.people + extra, groups=groups)


def _split_name(name: str) -> tuple[str, str]:
    given, _, family = name.partition(" ")
    return given, family


def _people_of(snapshot: SourceSnapshot) -> dict[str, frozenset[SourceId]]:
    """Each group's people, nested groups followed (cycles broken): Okta has no nesting."""
    people = {p.id for p in snapshot.people}
    groups = {g.id: g for g in snapshot.groups}
    reached: dict[str, frozenset[SourceId]] = {}
    for group in snapshot.groups:
        found: set[SourceId] = set()
        seen, stack = {group.id}, [group.id]
        while stack:
            current = groups[stack.pop()]
            for member in (*current.members, *current.subgroups):
                if member in people:
                    found.add(member)
                elif member in groups and member not in seen:
                    seen.add(member)
                    stack.append(member)
        reached[group.id] = frozenset(found)
    return reached


class _Directory(Protocol):
    def add_group(self, name: str, /) -> str: ...
    def add_member(self, group_id: str, member_id: str, /) -> None: ...


def _fill(
    directory: _Directory,
    snapshot: SourceSnapshot,
    add_person: Callable[[SourcePerson, str, str], str],
    *,
    nested: bool,
) -> None:
    """Add the snapshot's people (`add_person(person, given name, family name)` returns
    the vendor's id), its groups and their members; without `nested`, each group holds
    its people directly (Okta has no nested groups)."""
    ids = {p.id: add_person(p, *_split_name(p.name)) for p in snapshot.people}
    for group in snapshot.groups:
        ids[group.id] = directory.add_group(group.name)
    reached = _people_of(snapshot)
    for group in snapshot.groups:
        if nested:
            members = [m for m in (*group.members, *group.subgroups) if m in ids]
        else:
            members = sorted(reached[group.id])
        for member in members:
            directory.add_member(ids[group.id], ids[member])


def _okta(seed_file: Path | None, people: int) -> OktaEmulator:
    from orgsync.testing.okta import OktaEmulator

    emulator = OktaEmulator(token=OKTA_TOKEN)

    def person(p: SourcePerson, given: str, family: str) -> str:
        status = "ACTIVE" if p.active else "SUSPENDED"
        return emulator.add_user(email=p.email, first_name=given, last_name=family, status=status)

    _fill(emulator, _directory(seed_file, people), person, nested=False)
    return emulator


def _entra(seed_file: Path | None, people: int) -> EntraEmulator:
    from orgsync.testing.entra import EntraEmulator

    emulator = EntraEmulator(client_secret=ENTRA_SECRET)

    def person(p: SourcePerson, given: str, family: str) -> str:
        return emulator.add_user(
            display_name=p.name or p.email,
            user_principal_name=p.email,
            mail=p.email,
            account_enabled=p.active,
            given_name=given or None,
            surname=family or None,
        )

    _fill(emulator, _directory(seed_file, people), person, nested=True)
    return emulator


def _google(seed_file: Path | None, people: int, key_folder: Path) -> GoogleEmulator:
    """The Workspace account, and a service account key for it in `key_folder`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from orgsync.testing.google import GoogleEmulator

    emulator = GoogleEmulator(admins=(GOOGLE_ADMIN,))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    emulator.register_service_account(GOOGLE_SERVICE_ACCOUNT, "rehearsal", public.decode())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file = key_folder / "service-account.json"
    key_file.touch(mode=0o600)
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "private_key_id": "rehearsal",
                "private_key": private.decode(),
                "client_email": GOOGLE_SERVICE_ACCOUNT,
            }
        ),
        encoding="utf-8",
    )

    def person(p: SourcePerson, given: str, family: str) -> str:
        return emulator.add_user(
            primary_email=p.email, given_name=given, family_name=family, suspended=not p.active
        )

    _fill(emulator, _directory(seed_file, people), person, nested=True)
    return emulator


# ------------------------------------------------------------------ serving


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
    """Serve one emulator (one of `VENDORS`) with a sample organization or directory until
    Ctrl-C; exit 0."""
    with tempfile.TemporaryDirectory(prefix="orgsync-emulate-") as scratch:
        emulator: OpenAIEmulator | KeycardEmulator | OktaEmulator | EntraEmulator | GoogleEmulator
        if kind == "openai":
            emulator = _openai(seed_file, people)
        elif kind == "keycard":
            emulator = _keycard(seed_file, people)
        elif kind == "okta":
            emulator = _okta(seed_file, people)
        elif kind == "entra":
            emulator = _entra(seed_file, people)
        else:
            emulator = _google(seed_file, people, Path(scratch))
        with _until_stopped() as stopped:
            try:
                url = emulator.start(host=host, port=port)
            except OSError as error:
                raise OrgsyncError(
                    f"--listen {host}:{port}: cannot listen there: {error.strerror} "
                    "(port 0 lets the system choose a free one)"
                ) from None
            try:
                _print_connection(kind, emulator, url, host, Path(scratch))
                while not stopped.wait(0.5):
                    pass
            finally:
                emulator.stop()
    print("emulator stopped", flush=True)
    return 0


def _table(kind: str, emulator: Any, url: str, key_folder: Path) -> tuple[list[str], str | None]:
    """The configuration table to paste, and the `NAME=value` to export (None: a file)."""
    if kind == "openai":
        return [
            "[[targets]]",
            'name = "openai-rehearsal"',
            'type = "openai"',
            f'base_url = "{url}"',
            f'api_key_env = "{DEMO_KEY_ENV}"',
        ], f"{DEMO_KEY_ENV}={DEMO_KEY}"
    if kind == "keycard":
        return [
            "[[targets]]",
            'name = "keycard-rehearsal"',
            'type = "keycard"',
            f'base_url = "{url}"',
            f'client_id = "{KEYCARD_CLIENT_ID}"',
            f'client_secret_env = "{KEYCARD_SECRET_ENV}"',
            f'organization_id = "{KEYCARD_ORG}"',
        ], f"{KEYCARD_SECRET_ENV}={KEYCARD_SECRET}"
    if kind == "okta":
        return [
            "[source]",
            'type = "okta"',
            f'url = "{emulator.url}"',
            f'token_env = "{OKTA_TOKEN_ENV}"',
        ], f"{OKTA_TOKEN_ENV}={OKTA_TOKEN}"
    if kind == "entra":
        return [
            "[source]",
            'type = "entra"',
            f'tenant_id = "{emulator.tenant_id}"',
            f'client_id = "{emulator.client_id}"',
            f'client_secret_env = "{ENTRA_SECRET_ENV}"',
            f'graph_url = "{emulator.graph_url}"',
            f'login_url = "{emulator.login_url}"',
        ], f"{ENTRA_SECRET_ENV}={ENTRA_SECRET}"
    return [
        "[source]",
        'type = "google"',
        f'subject = "{GOOGLE_ADMIN}"',
        f'credentials_file = "{key_folder / "service-account.json"}"',
        f'directory_url = "{emulator.directory_url}"',
        f'reports_url = "{emulator.reports_url}"',
        f'token_url = "{emulator.token_url}"',
    ], None


def _print_connection(kind: str, emulator: Any, url: str, host: str, key_folder: Path) -> None:
    table, secret = _table(kind, emulator, url, key_folder)
    lines = [f"orgsync emulate: {kind} emulator at {url}"]
    if host not in ("127.0.0.1", "localhost"):
        lines.append(
            f"  warning: listening on {host}, not loopback: anyone who can reach it can use "
            "this fake organization with the well-known credential below"
        )
    what = "a target of your configuration" if kind in ORGANIZATIONS else "your [source]"
    lines.append(f"Point {what} at it:")
    lines.extend(f"  {line}" for line in table)
    lines.append("  allow_plaintext = true   # the emulator speaks plain http on loopback")
    if secret is not None:
        lines.append("and give orgsync its credential:")
        lines.append(f"  export {secret}")
    else:
        lines.append("(the service account key file lasts as long as the emulator)")
    if kind in ORGANIZATIONS:
        lines.append(f"then: orgsync --config YOUR.toml sync --dry-run --target {kind}-rehearsal")
    else:
        lines.append("then: orgsync --config YOUR.toml sync --dry-run")
    lines.append("Ctrl-C stops the emulator (what it holds lives in memory only).")
    print("\n".join(lines), flush=True)
