"""Real directory servers on loopback for the source tests, and proxies that break them.

* `start_scim2_server` / `start_scimmy`: scim2-server (PyPI) and SCIMMY (npm) in child
  processes, seeded from a `Directory` before they listen on a free port (started by the
  suite's one launcher, `tests/servers.py`);
* `Slapd`: OpenLDAP's slapd with every file in one folder, loaded offline with slapadd;
* `FaultProxy`: an HTTP proxy that can answer an error, reset the connection or rewrite
  the JSON body of chosen requests (a real server, made to fail at a chosen page);
* `TcpProxy`: a byte pump that runs a callback once N bytes came back from the server (to
  kill slapd, or cut the connection, in the middle of a paged search).

A missing server binary skips the tests on a workstation but fails them under CI=true or
scripts/test (ORGSYNC_REQUIRE_SERVERS=1): CI must never pass by running less.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.servers import (
    ChildServer,
    ensure_npm_installed,
    free_port,
    require_binary,
    start_printing_port,
)
from tests.sources.directory import Directory, Person

HERE = Path(__file__).resolve().parent
SCIMMY_DIR = HERE / "scimmy"
SUFFIX = "dc=example,dc=test"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"


ServerProcess = ChildServer
"""A seeded source server (the shared launcher's `ChildServer`, by its older name)."""


def scim_user(person: Person) -> dict[str, Any]:
    """The SCIM payload of a person, with the email shapes real IdPs send.

    Most have a primary work email; every 10th (i % 10 == 3) has a home address first and
    a work address without `primary` (the work one must win); every 10th (i % 10 == 7) has
    no emails at all and its address as userName; every 4th carries the enterprise
    extension. Whatever the shape, the address orgsync must pick is `person.email`.
    """
    i = person.index
    payload: dict[str, Any] = {
        "userName": person.email if i % 10 != 3 else f"login{i}",
        "externalId": f"ext-{person.key}",
        "name": {"givenName": person.given, "familyName": person.family},
        "displayName": person.display,
        "active": person.active,
    }
    if i % 10 == 3:
        payload["emails"] = [
            {"value": f"home{i}@example.org", "type": "home"},
            {"value": person.email, "type": "work"},
        ]
    elif i % 10 != 7:
        payload["emails"] = [{"value": person.email, "type": "work", "primary": True}]
    if i % 4 == 0:
        payload["schemas"] = [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ]
        payload["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {
            "employeeNumber": str(i),
            "department": "Research",
        }
    return payload


def scim_seed(directory: Directory) -> dict[str, Any]:
    return {
        "users": [{"key": p.key, "payload": scim_user(p)} for p in directory.people],
        "groups": [
            {
                "key": g.key,
                "payload": {"displayName": g.name, "externalId": f"ext-{g.key}"},
                "members": list(g.members),
            }
            for g in directory.groups
        ],
    }


def start_scim2_server(directory: Directory, folder: Path, token: str) -> ChildServer:
    """scim2-server with `directory` in memory; base URL `http://127.0.0.1:PORT/v2`."""
    folder.mkdir(parents=True, exist_ok=True)
    seed, ids = folder / "seed.json", folder / "ids.json"
    seed.write_text(json.dumps(scim_seed(directory)))
    process, port = start_printing_port(
        [sys.executable, str(HERE / "scim2_seeded.py"), str(seed), str(ids), token],
        folder / "stderr.log",
        what="scim2-server",
        timeout=120,
    )
    return ChildServer(process, port, f"http://127.0.0.1:{port}/v2", json.loads(ids.read_text()))


def ensure_scimmy_installed() -> None:
    ensure_npm_installed(SCIMMY_DIR, "scimmy-routers")


def start_scimmy(directory: Directory, folder: Path, auth: str) -> ChildServer:
    """SCIMMY with `directory` in memory; base URL `http://127.0.0.1:PORT/scim/v2`.

    `auth` is `bearer:TOKEN` or `basic:USER:PASSWORD`.
    """
    ensure_scimmy_installed()
    folder.mkdir(parents=True, exist_ok=True)
    seed, ids = folder / "seed.json", folder / "ids.json"
    seed.write_text(json.dumps(scim_seed(directory)))
    process, port = start_printing_port(
        ["node", str(SCIMMY_DIR / "server.mjs"), str(seed), str(ids), auth],
        folder / "stderr.log",
        what="SCIMMY",
        cwd=SCIMMY_DIR,
    )
    return ChildServer(
        process, port, f"http://127.0.0.1:{port}/scim/v2", json.loads(ids.read_text())
    )


# --------------------------------------------------------------------------- slapd


def person_dn(person: Person) -> str:
    return f"uid=user{person.index},ou=people,{SUFFIX}"


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{SUFFIX}"


def ldif(directory: Directory, *, dangling: int = 0) -> str:
    """The organization as LDIF for slapadd: inetOrgPerson people, groupOfNames groups.

    Disabled people carry `employeeType: disabled` (the tests' `disabled_filter`).
    `dangling` member values pointing outside the bases are added to group0, as real
    directories reference entries in other OUs. A group whose members are all groups
    still gets them as `member` values (nesting); groupOfNames needs at least one member.
    """
    out: list[str] = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=contractors,{SUFFIX}\nobjectClass: organizationalUnit\nou: contractors\n",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {READER_PASSWORD}\n",
    ]
    for p in directory.people:
        entry = (
            f"dn: {person_dn(p)}\nobjectClass: inetOrgPerson\nuid: user{p.index}\n"
            f"cn: {p.display}\nsn: {p.family}\ngivenName: {p.given}\n"
            f"displayName: {p.display}\nmail: {p.email}\nemployeeNumber: {p.index}\n"
        )
        if not p.active:
            entry += "employeeType: disabled\n"
        out.append(entry)
    for g in directory.groups:
        lines = [f"dn: {group_dn(g.name)}", "objectClass: groupOfNames", f"cn: {g.name}"]
        members = [
            person_dn(m) if isinstance(m, Person) else group_dn(m.name)
            for m in (directory.by_key[k] for k in g.members)
        ]
        if g.name == "group0":
            members += [f"uid=ghost{k},ou=contractors,{SUFFIX}" for k in range(dangling)]
        lines += [f"member: {m}" for m in members or [group_dn(g.name)]]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


_SLAPD_CONF = """\
include  /etc/ldap/schema/core.schema
include  /etc/ldap/schema/cosine.schema
include  /etc/ldap/schema/inetorgperson.schema
include  /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
{modules}pidfile  {dir}/slapd.pid
argsfile {dir}/slapd.args
loglevel none
{tls}
database mdb
maxsize  1073741824
dbnosync
suffix   "{suffix}"
rootdn   "cn=admin,{suffix}"
rootpw   admin-secret
directory {dir}/db
index objectClass eq
index uid,mail,cn eq
index member eq
index employeeType eq
limits dn.exact="{reader}" {limits}
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
{overlays}"""


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 and localhost (openssl CLI)."""
    openssl = require_binary("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=orgsync test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca, cert, key)


class Slapd:
    """One slapd in the foreground (`-d 0`), every file under `folder`, loopback only."""

    def __init__(
        self,
        folder: Path,
        data: str,
        *,
        size_limit: str = "unlimited",
        tls: TlsFiles | None = None,
        syncprov: bool = False,
        limits: str | None = None,
    ) -> None:
        """`syncprov`: load the syncprov overlay (RFC 4533 provider), which keeps the
        database's `contextCSN` on its suffix entry. `limits`: the reader's limits as
        slapd.conf(5) spells them (`size.soft=500 size.pr=100 ...`), instead of
        `size_limit` for unpaged and paged searches alike."""
        self.folder = folder
        self.port = free_port()
        self.ldaps_port = free_port() if tls else None
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        slapd = require_binary("slapd")
        slapadd = require_binary("slapadd")
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "db").mkdir(parents=True)
        tls_conf = (
            f"TLSCACertificateFile {tls.ca}\nTLSCertificateFile {tls.cert}\n"
            f"TLSCertificateKeyFile {tls.key}\n"
            if tls
            else ""
        )
        conf = folder / "slapd.conf"
        conf.write_text(
            _SLAPD_CONF.format(
                dir=folder,
                suffix=SUFFIX,
                reader=READER_DN,
                limits=limits
                or f"size.soft={size_limit} size.hard={size_limit} size.prtotal={size_limit}",
                tls=tls_conf,
                modules="moduleload syncprov\n" if syncprov else "",
                overlays="index entryCSN,entryUUID eq\noverlay syncprov\n" if syncprov else "",
            )
        )
        seed = folder / "seed.ldif"
        seed.write_text(data)
        subprocess.run(
            [slapadd, "-q", "-f", str(conf), "-l", str(seed)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.ldaps_port:
            urls += f" ldaps://127.0.0.1:{self.ldaps_port}/"
        self._slapd = slapd
        self._argv = [slapd, "-d", "0", "-f", str(conf), "-h", urls]
        self.start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.ldaps_port is not None
        return f"ldaps://localhost:{self.ldaps_port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("slapd did not listen within 20 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


# --------------------------------------------------------------------------- proxies


@dataclass(frozen=True)
class Respond:
    """Answer this status (and headers) instead of forwarding."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"detail": "injected"}'


@dataclass(frozen=True)
class Reset:
    """Drop the connection without an answer (the client sees a reset)."""


@dataclass(frozen=True)
class Rewrite:
    """Forward, then pass the JSON body through `change` before answering."""

    change: Callable[[dict[str, Any]], dict[str, Any]]


Fault = Respond | Reset | Rewrite
FaultPlan = Callable[[int, str], Fault | None]
"""(1-based number of the request, its path and query) -> what to do; None forwards."""


class FaultProxy:
    """An HTTP proxy in front of a real server that breaks the requests a plan picks."""

    def __init__(
        self, upstream: str, plan: FaultPlan | None = None, *, tls: TlsFiles | None = None
    ) -> None:
        parsed = httpx.URL(upstream)
        self.upstream_origin = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
        self.base_path = parsed.raw_path.decode().rstrip("/")
        self.plan: FaultPlan = plan or (lambda n, path: None)
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.paths.append(self.path)
                    number = len(proxy.paths)
                fault = proxy.plan(number, self.path)
                if isinstance(fault, Reset):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(fault, Respond):
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "accept")
                }
                upstream = proxy._client.get(proxy.upstream_origin + self.path, headers=headers)
                body = upstream.content
                if isinstance(fault, Rewrite):
                    body = json.dumps(fault.change(json.loads(body))).encode()
                self._answer(
                    upstream.status_code,
                    {"Content-Type": upstream.headers.get("content-type", "application/json")},
                    body,
                )

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:  # HTTPS with a certificate from a private CA
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_port}{self.base_path}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


class TcpProxy:
    """Pumps bytes to `upstream_port`; once `after` bytes came back, calls `trip` once."""

    def __init__(self, upstream_port: int, *, after: int, trip: Callable[[], None]) -> None:
        self.upstream_port = upstream_port
        self.after = after
        self.trip = trip
        self.tripped = threading.Event()
        self._received = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
                if downstream:
                    with self._lock:
                        self._received += len(data)
                        due = self._received >= self.after and not self.tripped.is_set()
                        if due:
                            self.tripped.set()
                    if due:
                        self.trip()
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def serving(process: ChildServer) -> Iterator[ChildServer]:
    try:
        yield process
    finally:
        process.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
