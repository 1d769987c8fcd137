"""Red team: TLS to the state database (`[state] url`), against a real PostgreSQL
serving a certificate of a throwaway CA (openssl).

Harm: a URL without `sslmode` got libpq's default `prefer`: encrypted to whoever answers,
nobody's certificate checked. A man in the middle (DNS, ARP, a rogue proxy) then reads
every e-mail address of the state and can answer for the lease table (two writers at
once), and nobody is told that TLS verification is off. orgsync's rule: verification
stays on by default (`verify-full`) unless the URL or PGSSLMODE says otherwise or the
host is loopback / a Unix socket; a weaker mode chosen for a remote host is logged.

The server listens on 127.0.0.1 only: the URLs name a host (`pg.test`, `wrong.test`)
and reach it through `hostaddr=127.0.0.1`, which is how libpq checks a certificate
against a name while connecting to an address.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orgsync.core.errors import StateError
from orgsync.core.state_url import tls_settings
from orgsync.store.checkup import check_state_url
from orgsync.store.postgres import PostgresDB
from orgsync.store.state import StateStore
from tests.postgres import PASSWORD, USER, PostgresServer, running_postgres

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

SERVER_NAME = "pg.test"


@dataclass
class TlsServer:
    server: PostgresServer
    database: str
    ca: Path

    def url(self, host: str, query: str = "") -> str:
        extra = f"&{query}" if query else ""
        return (
            f"postgresql://{USER}@{host}:{self.server.port}/{self.database}"
            f"?hostaddr=127.0.0.1{extra}"
        )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    certs = tmp_path_factory.mktemp("pg-tls")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=certs,
    )  # fmt: skip
    (certs / "san.cnf").write_text(f"subjectAltName=DNS:{SERVER_NAME}\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={SERVER_NAME}",
        "-keyout", "server.key", "-out", "server.csr", cwd=certs,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt",
        cwd=certs,
    )  # fmt: skip
    with running_postgres() as server:
        data = server.folder / "data"
        for name in ("server.crt", "server.key"):
            target = data / name
            shutil.copy(certs / name, target)
            target.chmod(0o600)
            if server.as_user:
                shutil.chown(target, "nobody")
        with server.admin() as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        yield TlsServer(server, server.new_database(), certs / "ca.pem")


@pytest.fixture(autouse=True)
def _no_libpq_tls_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A home without ~/.postgresql/root.crt, and no PGSSL* choice from the environment.
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGHOSTADDR"):
        monkeypatch.delenv(name, raising=False)


def _ssl_in_use(db: PostgresDB) -> bool:
    with db.read() as session:
        return bool(session.scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))


def test_unknown_certificate_is_refused_by_default(tls_server: TlsServer) -> None:
    """A man in the middle with a certificate of his own (here: a CA nobody trusts) is
    refused when the URL says nothing about TLS; the error says how to trust a CA.
    Before the fix libpq's `prefer` connected to him without a word."""
    with pytest.raises(StateError) as caught:
        PostgresDB.open(tls_server.url(SERVER_NAME), password=PASSWORD, create=True)
    message = str(caught.value)
    assert "certificate" in message
    assert "sslrootcert=PATH" in message
    assert PASSWORD not in message


def test_certificate_for_another_host_is_refused_by_default(tls_server: TlsServer) -> None:
    """A certificate of a trusted CA, but issued to another host, is refused: verify-full
    checks the name, not only the chain (verify-ca or require would connect)."""
    url = tls_server.url("wrong.test", f"sslrootcert={tls_server.ca}")
    with pytest.raises(StateError, match=r"wrong\.test"):
        PostgresDB.open(url, password=PASSWORD, create=True)


def test_trusted_certificate_for_the_host_connects_encrypted(tls_server: TlsServer) -> None:
    url = tls_server.url(SERVER_NAME, f"sslrootcert={tls_server.ca}")
    db = PostgresDB.open(url, password=PASSWORD, create=True)
    try:
        assert _ssl_in_use(db)
        twin = db.companion()  # lease connections are verified the same way
        try:
            assert _ssl_in_use(twin)
        finally:
            twin.close()
    finally:
        db.close()


def test_root_certificate_from_libpq_home_is_honoured(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    """~/.postgresql/root.crt (libpq's own place) is used as it always was, not replaced
    by the system's roots."""
    (tmp_path / ".postgresql").mkdir()
    shutil.copy(tls_server.ca, tmp_path / ".postgresql" / "root.crt")
    db = PostgresDB.open(tls_server.url(SERVER_NAME), password=PASSWORD, create=True)
    try:
        assert _ssl_in_use(db)
    finally:
        db.close()


def test_explicit_weak_sslmode_connects_but_is_logged(tls_server: TlsServer) -> None:
    """The operator's explicit choice is honoured, but TLS without verification to a
    remote host is never silent."""
    with capture_logs() as logs:
        db = PostgresDB.open(
            tls_server.url(SERVER_NAME, "sslmode=require"), password=PASSWORD, create=True
        )
    try:
        assert _ssl_in_use(db)
    finally:
        db.close()
    warnings = [e for e in logs if e["event"] == "state.tls_unverified"]
    assert warnings and warnings[0]["sslmode"] == "require"
    assert PASSWORD not in repr(logs)


def test_pgsslmode_from_the_environment_is_honoured(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLMODE", "require")
    db = PostgresDB.open(tls_server.url(SERVER_NAME), password=PASSWORD, create=True)
    db.close()


def test_loopback_keeps_libpq_default(tls_server: TlsServer) -> None:
    """Loopback never leaves the machine: no certificate demanded (a local server without
    TLS keeps working), and no warning."""
    url = f"postgresql://{USER}@127.0.0.1:{tls_server.server.port}/{tls_server.database}"
    with capture_logs() as logs:
        db = PostgresDB.open(url, password=PASSWORD, create=True)
    db.close()
    assert not [e for e in logs if e["event"] == "state.tls_unverified"]


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("postgresql://u@db.internal/x", {}, {"sslmode": "verify-full", "sslrootcert": "system"}),
        ("postgresql://u@db/x?sslrootcert=/ca.pem", {}, {"sslmode": "verify-full"}),
        ("postgresql://u@db/x", {"PGSSLROOTCERT": "/ca.pem"}, {"sslmode": "verify-full"}),
        ("postgresql://u@db/x?sslmode=require", {}, {}),
        ("postgresql://u@db/x", {"PGSSLMODE": "disable"}, {}),
        ("postgresql://u@127.0.0.1:5432/x", {}, {}),
        ("postgresql://u@[::1]:5432/x", {}, {}),
        ("postgresql://u@localhost/x", {}, {}),
        ("postgresql://u@%2Fvar%2Frun%2Fpostgresql/x", {}, {}),
        ("postgresql://u@/x?host=/run/pg", {}, {}),
        # One remote host among several, or a remote address behind a local name.
        (
            "postgresql://u@localhost:1,db:2/x",
            {},
            {"sslmode": "verify-full", "sslrootcert": "system"},
        ),
        (
            "postgresql://u@localhost/x?hostaddr=10.0.0.5",
            {},
            {"sslmode": "verify-full", "sslrootcert": "system"},
        ),
    ],
)
def test_tls_defaults_by_url(url: str, environ: dict[str, str], expected: dict[str, str]) -> None:
    assert tls_settings(url, environ, root_certificate_configured=False) == expected


def test_validate_says_whether_tls_verifies_the_server(tls_server: TlsServer) -> None:
    """`orgsync validate`'s state line (check_state_url) says how the connection is
    protected: TLS left unverified, or off, is never invisible to the operator."""
    trusted = tls_server.url(SERVER_NAME, f"sslrootcert={tls_server.ca}")
    StateStore.open(trusted, password=PASSWORD).close()
    assert "TLS, server certificate verified" in check_state_url(trusted, password=PASSWORD)
    weak = tls_server.url(SERVER_NAME, "sslmode=require")
    assert "NOT verified (sslmode=require)" in check_state_url(weak, password=PASSWORD)
    off = tls_server.url(SERVER_NAME, "sslmode=disable")
    assert check_state_url(off, password=PASSWORD).endswith("; TLS off)")
