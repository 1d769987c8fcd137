"""A target type from another package, found through the `orgsync.connectors` entry point.

The connector is the worked example of docs/connectors.md, taken from the document
itself (so the example is proven to work as written), installed the way pip leaves a
package: the module and a `.dist-info` with `entry_points.txt`, in a folder on the
orgsync process's `PYTHONPATH`. The real `orgsync` command then validates, plans and
syncs against a small Acme Teams server on loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"
KEY = "acme-key-0123456789abcdef"
KEY_ENV = "ACME_TEST_KEY"


def example_source() -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- example: orgsync_acme/__init__.py -->\n```python\n(.*?)\n```", text, re.S
    )
    assert match is not None, "docs/connectors.md lost its worked example"
    return match.group(1) + "\n"


def install(folder: Path, *, name: str, entry_points: str, module: str | None) -> Path:
    """A package as pip leaves it: its module and its .dist-info, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if module is not None:
        package = folder / "orgsync_acme"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(module, encoding="utf-8")
    dist = folder / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return folder


ACME_ENTRY = "[orgsync.connectors]\ntarget.acme = orgsync_acme:CONNECTOR\n"


@dataclass
class AcmeServer:
    """Acme Teams on loopback: one team's members, behind a bearer key."""

    members: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                state.requests.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._answer(401, {"error": "bad key"})
                base = "/api/teams/eng/members"
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                if self.path == base and self.command == "GET":
                    return self._answer(200, {"members": list(state.members.values())})
                if self.path == base and self.command == "POST":
                    member_id = f"m{len(state.members) + 1}"
                    state.members[member_id] = {
                        "id": member_id,
                        "email": body["email"],
                        "role": body["role"],
                    }
                    return self._answer(201, {"id": member_id})
                member_id = self.path.removeprefix(base + "/")
                if member_id not in state.members:
                    return self._answer(404, {"error": "no such member"})
                if self.command == "PATCH":
                    state.members[member_id]["role"] = body["role"]
                    return self._answer(200, state.members[member_id])
                if self.command == "DELETE":
                    del state.members[member_id]
                    return self._answer(204)
                return self._answer(405)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/api"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def acme() -> Iterator[AcmeServer]:
    server = AcmeServer()
    yield server
    server.stop()


def write_config(folder: Path, url: str, *, target_type: str = "acme", extra: str = "") -> Path:
    (folder / "directory.json").write_text(
        json.dumps(
            {
                "people": [
                    {"id": "p1", "email": "ada@example.com", "name": "Ada"},
                    {"id": "p2", "email": "bob@example.com", "name": "Bob"},
                ],
                "groups": [
                    {"id": "g1", "name": "acme-users", "members": ["p1", "p2"]},
                    {"id": "g2", "name": "acme-admins", "members": ["p2"]},
                ],
            }
        ),
        encoding="utf-8",
    )
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "acme-eng"
type = "{target_type}"
base_url = "{url}"
team = "eng"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "member"
scope_groups = ["acme-*"]
max_attempts = 1
{extra}
[[targets.roles]]
group = "acme-admins"
role = "admin"

[state]
path = "state.db"
""",
        encoding="utf-8",
    )
    return path


def orgsync(config: Path, *args: str, path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_ENV: KEY}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), env.get("PYTHONPATH", "")])
    return cli.run(config, *args, env=env)


def test_an_installed_connector_is_listed_planned_and_synced(
    tmp_path: Path, acme: AcmeServer
) -> None:
    site = install(
        tmp_path / "site", name="orgsync-acme", entry_points=ACME_ENTRY, module=example_source()
    )
    url = acme.start()
    acme.members["m0"] = {"id": "m0", "email": "Bob@Example.com", "role": "member"}
    acme.members["x9"] = {"id": "x9", "email": "carol@example.com", "role": "admin"}
    config = write_config(tmp_path, url)

    checked = orgsync(config, "validate", path=[site])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "connectors: sources file, scim, ldap, okta, entra, google; targets openai, keycard, scim (built-in)"
        in checked.stdout
    )
    assert "  target acme from orgsync-acme 0.1.0" in checked.stdout
    assert "target acme-eng (acme): reachable; 2 members" in checked.stdout

    dry = orgsync(config, "sync", "--dry-run", "--json", path=[site])
    assert dry.returncode == 2, dry.stdout + dry.stderr
    (plan,) = json.loads(dry.stdout)["targets"]
    kinds = sorted((op["op"], op["email"]) for op in plan["operations"])
    assert kinds == [("create_user", "ada@example.com"), ("set_role", "bob@example.com")]
    assert [r for r in acme.requests if not r.startswith("GET")] == []  # a dry run changes nothing

    synced = orgsync(config, "sync", path=[site])
    assert synced.returncode == 0, synced.stdout + synced.stderr
    held = {m["email"].lower(): m["role"] for m in acme.members.values()}
    # Carol, whom the source does not know and orgsync never managed, is left as found.
    assert held == {
        "ada@example.com": "member",
        "bob@example.com": "admin",
        "carol@example.com": "admin",
    }
    again = orgsync(config, "sync", "--dry-run", path=[site])
    assert again.returncode == 0, again.stdout + again.stderr


def test_without_the_package_the_type_is_unknown_and_the_error_lists_the_installed_ones(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    refused = orgsync(config, "validate", "--offline", path=[])
    assert refused.returncode != 0
    assert "type = 'acme' is not a target type; use one of: openai, keycard, scim" in (
        refused.stderr + refused.stdout
    )
    site = install(
        tmp_path / "site", name="orgsync-acme", entry_points=ACME_ENTRY, module=example_source()
    )
    typo = write_config(tmp_path, "http://127.0.0.1:9", target_type="acm")
    listed = orgsync(typo, "validate", "--offline", path=[site])
    assert "use one of: openai, keycard, scim, acme" in listed.stderr + listed.stdout


def test_the_connector_s_own_keys_get_the_usual_messages(tmp_path: Path) -> None:
    site = install(
        tmp_path / "site", name="orgsync-acme", entry_points=ACME_ENTRY, module=example_source()
    )
    config = write_config(tmp_path, "http://127.0.0.1:9", extra='tem = "x"\napi_key = "sk-pasted"')
    refused = orgsync(config, "validate", "--offline", path=[site])
    message = refused.stderr + refused.stdout
    assert refused.returncode != 0
    assert "targets[0].tem: unknown key; did you mean team?" in message
    assert "targets[0].api_key: a secret never sits in the configuration file" in message
    assert "sk-pasted" not in message


def test_a_package_cannot_take_over_a_built_in_type(tmp_path: Path, acme: AcmeServer) -> None:
    """An `openai` entry point is ignored (and shown): the built-in keeps the key."""
    hijack = install(
        tmp_path / "hijack",
        name="orgsync-hijack",
        entry_points="[orgsync.connectors]\ntarget.openai = orgsync_acme:CONNECTOR\n",
        module=example_source(),
    )
    config = write_config(tmp_path, acme.start(), target_type="openai")
    config.write_text(config.read_text(encoding="utf-8").replace('team = "eng"\n', ""))
    checked = orgsync(config, "validate", "--offline", path=[hijack])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "  target openai from orgsync-hijack 0.1.0 (IGNORED: a built-in type has this name)"
        in checked.stdout
    )
    assert "target acme-eng (openai): credentials present" in checked.stdout
    assert acme.requests == []


def test_a_type_declared_twice_or_broken_is_refused_naming_the_packages(tmp_path: Path) -> None:
    first = install(
        tmp_path / "one", name="orgsync-acme", entry_points=ACME_ENTRY, module=example_source()
    )
    second = install(tmp_path / "two", name="acme-fork", entry_points=ACME_ENTRY, module=None)
    config = write_config(tmp_path, "http://127.0.0.1:9")
    twice = orgsync(config, "validate", "--offline", path=[first, second])
    assert twice.returncode != 0
    assert "declared by several packages (orgsync-acme 0.1.0, acme-fork 0.1.0)" in twice.stderr

    broken = install(
        tmp_path / "broken",
        name="orgsync-broken",
        entry_points="[orgsync.connectors]\ntarget.acme = orgsync_missing:CONNECTOR\n",
        module=None,
    )
    failed = orgsync(config, "validate", "--offline", path=[broken])
    assert failed.returncode != 0
    assert "(orgsync-broken 0.1.0) cannot be loaded: ModuleNotFoundError" in failed.stderr


ROSTER = '''
"""A CSV roster as an identity provider: `email,group` per line (a test package)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from orgsync.config import SourceConfig
from orgsync.connectors import Hooks, SourceConnector
from orgsync.core.errors import SourceError
from orgsync.core.model import SourceGroup, SourcePerson, SourceSnapshot


class RosterConfig(SourceConfig):
    type: Literal["roster"]
    path: Path

    def anchored(self, base_dir: Path) -> RosterConfig:
        return self.model_copy(update={"path": base_dir / self.path})


class Roster:
    def __init__(self, path: Path) -> None:
        self._path = path

    def read(self) -> SourceSnapshot:
        try:
            rows = list(csv.reader(self._path.read_text(encoding="utf-8").splitlines()))
        except OSError as error:
            raise SourceError(f"{self._path}: {error.strerror}") from None
        groups: dict[str, list[str]] = {}
        for email, group in rows:
            groups.setdefault(group, []).append(email)
        return SourceSnapshot(
            people=tuple(SourcePerson(id=email, email=email) for email, _ in rows),
            groups=tuple(
                SourceGroup(id=name, name=name, members=tuple(members))
                for name, members in groups.items()
            ),
        )


CONNECTOR = SourceConnector(
    type="roster",
    settings=RosterConfig,
    build=lambda config, environ, hooks: Roster(config.path),
    reads_offline=True,
    summary="a CSV roster",
)
'''


def test_an_installed_source_is_read_and_planned_from(tmp_path: Path, acme: AcmeServer) -> None:
    site = install(
        tmp_path / "site",
        name="orgsync-acme",
        entry_points=ACME_ENTRY + "source.roster = orgsync_acme.roster:CONNECTOR\n",
        module=example_source(),
    )
    (site / "orgsync_acme" / "roster.py").write_text(ROSTER, encoding="utf-8")
    (tmp_path / "roster.csv").write_text(
        "eve@example.com,acme-admins\nfay@example.com,acme-users\n", encoding="utf-8"
    )
    config = write_config(tmp_path, acme.start())
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            'type = "file"\npath = "directory.json"', 'type = "roster"\npath = "roster.csv"'
        )
    )

    checked = orgsync(config, "validate", "--offline", path=[site])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "source roster: 2 people (0 inactive), 2 groups" in checked.stdout
    assert "  source roster from orgsync-acme 0.1.0" in checked.stdout

    dry = orgsync(config, "sync", "--dry-run", "--json", path=[site])
    assert dry.returncode == 2, dry.stdout + dry.stderr
    planned = sorted(
        (op["op"], op["email"], op.get("role"))
        for op in json.loads(dry.stdout)["targets"][0]["operations"]
    )
    assert planned == [
        ("create_user", "eve@example.com", "admin"),
        ("create_user", "fay@example.com", "member"),
    ]
