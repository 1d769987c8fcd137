"""Real SCIM servers on loopback for the SCIM target tests, and a proxy that counts and breaks.

* `Scim2Server`: the `scim2-server` command from PyPI, unchanged, with `--dynamic-tenants`:
  every test gets its own empty tenant (`/<tenant>/v2`) of one long-lived process, since
  starting one takes a second. Two processes serve the session: one announcing every
  feature, one whose `/ServiceProviderConfig` announces no PATCH (a server without PATCH);
* `start_scimmy`: SCIMMY + scimmy-routers (npm) in a child process with the storage glue in
  `tests/targets/scimmy/server.mjs` (userName uniqueness, optional PATCH, optional members
  in group lists); one process per test (it starts in a third of a second);
* `start_django_scim`: django-scim2 (PyPI) in a minimal Django project
  (`tests/targets/django_scim`) over SQLite, served by the standard library's WSGI server
  in a child process; users and groups are Django models with integer keys, so their ids
  come from separate sequences (user 2 and group 2 are both "2"), members carry `$ref`
  but no `type`, and PATCH forms it does not implement get 501. One process per test;
* `ScimProxy`: a reverse proxy in this process (ASGI under uvicorn) wrapped in the shared
  `orgsync.testing.faults.FaultInjector`, so SCIM servers that have no fault injection of
  their own get the same seeded 429/500/reset/timeout faults as the emulators, and every
  request is recorded (the tests count PATCH requests on it). `quirks` answer 501 to the
  PATCH forms a server in production use did not implement (`QUIRKS`), `refuse` answers
  a chosen request with a SCIM 400 instead of forwarding it, `lose` forwards one and answers 502
  (the change happened, the client never learns), `before` runs ahead of forwarding.

Every server process is started by the suite's one launcher (`tests/servers.py`). A
missing `node` fails under CI=true and skips on a workstation, like the source tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from orgsync.testing._server import BackgroundServer
from orgsync.testing.faults import FaultInjector, Faults, RecordedRequest
from tests.servers import ChildServer, ensure_npm_installed, start_polled, start_printing_port

HERE = Path(__file__).resolve().parent
SCIMMY_DIR = HERE / "scimmy"
TOKEN = "scim-target-token-0123456789"  # a loopback test server's token
_FORWARDED = ("authorization", "content-type", "accept", "if-match", "if-none-match")
_RETURNED = ("content-type", "etag", "location", "www-authenticate")


@dataclass
class Scim2Server:
    """One `scim2-server --dynamic-tenants` process; `tenant()` gives a fresh base URL."""

    process: subprocess.Popen[str]
    port: int
    patch: bool

    @classmethod
    def start(cls, folder: Path, *, patch: bool = True) -> Scim2Server:
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).with_name("scim2-server")),
            "--hostname", "127.0.0.1", "--port", "0", "--bearer-token", TOKEN,
            "--dynamic-tenants",
        ]  # fmt: skip
        if not patch:
            config = {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": False},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": True, "maxResults": 1000},
                "changePassword": {"supported": False},
                "sort": {"supported": True},
                "etag": {"supported": True},
                "authenticationSchemes": [],
            }
            (folder / "spc.json").write_text(json.dumps(config))
            command += ["--service-provider-config", str(folder / "spc.json")]
        # scim2-server has no "print the port" option: the launcher picks one and polls it.
        process, port = start_polled(
            command,
            folder / "stderr.log",
            what="scim2-server",
            port_option="--port",
            probe="/probe/v2/ServiceProviderConfig",
        )
        return cls(process, port, patch)

    def tenant(self) -> str:
        return f"http://127.0.0.1:{self.port}/t{uuid.uuid4().hex[:12]}/v2"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


Scimmy = ChildServer
"""A SCIM server in a child process that printed its port (SCIMMY, or django-scim2)."""


def ensure_scimmy_installed() -> None:
    ensure_npm_installed(SCIMMY_DIR, "scimmy-routers")


def start_scimmy(folder: Path, *, patch: bool = True, list_members: bool = True) -> Scimmy:
    """SCIMMY on a free loopback port; base URL `http://127.0.0.1:PORT/scim/v2`."""
    ensure_scimmy_installed()
    folder.mkdir(parents=True, exist_ok=True)
    options = json.dumps({"token": TOKEN, "patch": patch, "listMembers": list_members})
    process, port = start_printing_port(
        ["node", str(SCIMMY_DIR / "server.mjs"), options],
        folder / "scimmy.log",
        what="SCIMMY",
        cwd=SCIMMY_DIR,
        timeout=30,
    )
    return ChildServer(process, port, f"http://127.0.0.1:{port}/scim/v2")


def start_django_scim(folder: Path) -> Scimmy:
    """django-scim2 over a fresh SQLite file; base URL `http://127.0.0.1:PORT/scim/v2`."""
    folder.mkdir(parents=True, exist_ok=True)
    process, port = start_printing_port(
        [sys.executable, "-m", "tests.targets.django_scim.serve", str(folder)],
        folder / "django.log",
        what="django-scim2",
        cwd=HERE.parent.parent,
        env={**os.environ, "SCIM_TEST_TOKEN": TOKEN},
        timeout=30,
    )
    return ChildServer(process, port, f"http://127.0.0.1:{port}/scim/v2")


# --------------------------------------------------------------------------- the proxy


def _scim_error(status: int, detail: str) -> bytes:
    return json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": str(status),
            "detail": detail,
        }
    ).encode()


def _fault_body(kind: str) -> bytes:
    status = {"429": 429, "rate_limit": 429, "timeout": 504}.get(kind, 500)
    return _scim_error(status, f"injected {kind}")


QUIRKS = frozenset({"no-filter-removal", "no-value-array-removal", "no-display-name-replace"})
"""PATCH forms a proxy can answer with 501 (what a provider in production use did, issue 11):
`no-filter-removal`: `{"op": "remove", "path": "members[value eq …]"}`;
`no-value-array-removal`: `{"op": "remove", "path": "members", "value": [...]}`;
`no-display-name-replace`: a replace of `displayName`, with a path or in a value object."""


def refused_by_quirks(quirks: frozenset[str], method: str, body: bytes) -> bool:
    """Whether a PATCH uses a form one of `quirks` does not implement."""
    if method != "PATCH" or not quirks:
        return False
    try:
        operations = json.loads(body).get("Operations") or []
    except (ValueError, AttributeError):
        return False
    for operation in operations:
        op = str(operation.get("op", "")).lower()
        path = operation.get("path") or ""
        value = operation.get("value")
        renames = path == "displayName" or (isinstance(value, dict) and "displayName" in value)
        if (
            (op == "remove" and path.startswith("members[") and "no-filter-removal" in quirks)
            or (op == "remove" and path == "members" and "no-value-array-removal" in quirks)
            or (op == "replace" and renames and "no-display-name-replace" in quirks)
        ):
            return True
    return False


Refusal = Callable[[str, str, bytes], bool]
"""(method, path, body) -> whether to answer a SCIM 400 instead of forwarding."""
Loss = Callable[[str, str, bytes], bool]
"""(method, path, body) -> whether to forward, then answer 502 (a lost response)."""
Before = Callable[[str, str], None]
"""(method, path) -> called before forwarding (to change the server behind our back)."""
Tamper = Callable[[str, str, str, int, bytes], "tuple[int, bytes] | None"]
"""(method, path, query, status, body) of the upstream's answer -> the (status, body) to
send instead, or None to pass it on: a lying or compromised server in front of a real one."""


@dataclass
class ScimProxy:
    """A recording, fault-injecting reverse proxy in front of a SCIM server's base URL."""

    upstream: str
    faults: Faults | None = None
    refuse: Refusal | None = None
    lose: Loss | None = None
    before: Before | None = None
    tamper: Tamper | None = None
    quirks: frozenset[str] = frozenset()
    bodies: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(method, path?query, body) of every request forwarded or refused, in order."""
    put_if_match: list[str | None] = field(default_factory=list)
    """The `If-Match` header of every PUT, in order."""

    def __post_init__(self) -> None:
        unknown = self.quirks - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")
        parsed = httpx.URL(self.upstream)
        self._origin = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
        self._lock = threading.Lock()
        self._injector = FaultInjector(self._app, error_body=_fault_body, faults=self.faults)
        self._server = BackgroundServer(self._injector, name="scim-proxy")
        # No kept-alive connections: they would outlive the proxy's event loop and end up
        # as unclosed sockets (and ResourceWarnings) when it stops.
        self._client = httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
        )
        port = self._server.start()
        self.url = f"http://127.0.0.1:{port}{parsed.raw_path.decode().rstrip('/')}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._injector.requests

    def set_faults(self, faults: Faults) -> None:
        self._injector.faults = faults

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and path_part in r.path)

    def stop(self) -> None:
        self._injector.release_stalls()
        self._server.stop()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        query = scope["query_string"].decode()
        with self._lock:
            self.bodies.append((method, path + (f"?{query}" if query else ""), body))
            if method == "PUT":
                sent = dict(scope["headers"]).get(b"if-match")
                self.put_if_match.append(sent.decode() if sent is not None else None)
        if refused_by_quirks(self.quirks, method, body):
            await _answer(send, 501, {"content-type": "application/scim+json"},
                          _scim_error(501, "not implemented by this server"))  # fmt: skip
            return
        if self.refuse is not None and self.refuse(method, path, body):
            await _answer(send, 400, {"content-type": "application/scim+json"},
                          _scim_error(400, "refused by the test proxy"))  # fmt: skip
            return
        if self.before is not None:
            self.before(method, path)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in _FORWARDED}
        url = f"{self._origin}{path}" + (f"?{query}" if query else "")
        upstream = await self._client.request(method, url, content=body, headers=headers)
        if self.lose is not None and self.lose(method, path, body):
            await _answer(send, 502, {"content-type": "application/scim+json"},
                          _scim_error(502, "the response was lost"))  # fmt: skip
            return
        returned = {k: v for k, v in upstream.headers.items() if k.lower() in _RETURNED}
        status, content = upstream.status_code, upstream.content
        if self.tamper is not None:
            lie = self.tamper(method, path, query, status, content)
            if lie is not None:
                status, content = lie
        await _answer(send, status, returned, content)


async def _answer(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
