"""A real Active Directory domain controller for the tests: Samba's AD DC on loopback.

`SambaDC` provisions a fresh domain (`samba-tool domain provision --server-role=dc
--dns-backend=NONE`, about 7 s on this machine) with every file in one folder, then runs
`samba -i -M single` in the foreground with only its LDAP service (`server services =
ldap`: no Kerberos, SMB, DNS or replication daemons), bound to one loopback address.
Samba's LDAP server listens on fixed ports (389, 636, 3268, 3269; smb.conf has no
option to move them) and keeps its pid file in /run/samba, so one instance runs on this
machine at a time, on 127.0.0.1: the AD tests and `bench/incremental.py --only ad` must
not run at once (the second finds port 389 taken and says so). It runs as root (it refuses otherwise: it must own its
private folder), which the sandbox and CI are. Started: about 1-4 s until the rootDSE
answers.

Simple binds over plain LDAP are allowed (`ldap server require strong auth = no`), as
the slapd rig allows plain LDAP; orgsync is configured with `allow_plaintext`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import ldap3
import pytest

from tests.servers import require_binary

REALM, DOMAIN = "EXAMPLE.TEST", "EXAMPLE"
BASE = "DC=example,DC=test"
ADMIN_PASSWORD = "Passw0rd-Admin!"
READER_PASSWORD = "Passw0rd-Reader!"
SHOW_DELETED = "1.2.840.113556.1.4.417"


def _check_free(address: str) -> None:
    with socket.socket() as sock:
        if sock.connect_ex((address, 389)) == 0:
            raise RuntimeError(
                f"{address}:389 is taken: Samba's LDAP port cannot be moved (one Samba DC "
                "at a time on this machine)"
            )


class SambaDC:
    """One Samba AD DC (LDAP service only) provisioned under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.samba = require_binary("samba")
        self.tool = require_binary("samba-tool")
        if os.geteuid() != 0:
            message = "Samba's AD DC runs as root only (it owns its private folder)"
            if os.environ.get("CI") == "true" or os.environ.get("ORGSYNC_REQUIRE_SERVERS"):
                pytest.fail(message)
            pytest.skip(message)
        self.address = "127.0.0.1"
        _check_free(self.address)
        self.conf = folder / "etc" / "smb.conf"
        self.process: subprocess.Popen[bytes] | None = None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.monotonic()
        self._run(
            self.tool,
            "domain",
            "provision",
            f"--targetdir={folder}",
            f"--realm={REALM}",
            f"--domain={DOMAIN}",
            "--server-role=dc",
            "--dns-backend=NONE",
            f"--adminpass={ADMIN_PASSWORD}",
            f"--host-name=dc{random.randint(1000, 9999)}",
            "--option=interfaces=lo",
            "--option=bind interfaces only=yes",
            "--option=server services=ldap",
            f"--option=log file={folder}/log.%m",
            "--option=log level=1",
        )
        self.provision_seconds = time.monotonic() - started
        # Bind accounts that are no administrators, as orgsync's should be.
        self.add_account("reader")
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"ldap://{self.address}"

    def _run(self, *argv: str, timeout: float = 180) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} {argv[1:3]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        log = (self.folder / "samba.out").open("ab")
        self.process = subprocess.Popen(
            [
                self.samba,
                "-i",
                "-M",
                "single",
                "-s",
                str(self.conf),
                # Provision does not keep this one in smb.conf.
                "--option=ldap server require strong auth=no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started = time.monotonic()
        while time.monotonic() - started < 60:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"samba exited with {self.process.returncode}; see {self.folder}/samba.out"
                )
            try:
                with self.admin() as conn:
                    conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["dsServiceName"])
                    self.start_seconds = time.monotonic() - started
                    return
            except (ldap3.core.exceptions.LDAPException, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"samba did not answer within 60 s; see {self.folder}/samba.out")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    @contextmanager
    def admin(self) -> Iterator[ldap3.Connection]:
        conn = ldap3.Connection(
            ldap3.Server(self.address, port=389, get_info=ldap3.NONE, connect_timeout=5),
            f"Administrator@{REALM.lower()}",
            ADMIN_PASSWORD,
            raise_exceptions=False,
            receive_timeout=30,
        )
        try:
            if not conn.bind():
                raise OSError(f"the administrator's bind failed: {conn.result}")
            yield conn
        finally:
            with suppress(Exception):
                conn.unbind()
            if conn.socket is not None:
                with suppress(OSError):
                    conn.socket.close()

    def add_account(self, name: str) -> None:
        """A plain domain user `name` with READER_PASSWORD (bind as NAME@example.test)."""
        self._run(self.tool, "user", "create", name, READER_PASSWORD, "-s", str(self.conf))

    def bulk_add(self, entries: list[dict[str, str | list[str]]]) -> None:
        """Add entries (`dn` plus attributes) on the database itself, through Samba's own
        Python bindings and its whole module stack (SIDs, GUIDs, USNs, security
        descriptors, member backlinks, as an LDAP add makes them).

        The database is opened in ldb's batch mode (`batch_mode:1`): without it each add
        runs in a nested transaction whose commit copies every index list the add touched
        (`objectClass=user`, the OU's one-level index...) into the outer one, a copy as
        long as the directory, so a load is quadratic: 4 ms an entry at 2k, 21 at 10k,
        hours for 100k. In batch mode a failed add cannot be undone alone: its
        transaction is cancelled and the load fails (the folder is a throwaway DC).
        A transaction holds 2000 entries: one holding them all makes each add costlier
        as it grows (40k people in 103 s, against 64 s in transactions of 2000)."""
        data = self.folder / "bulk.json"
        data.write_text(json.dumps(entries))
        self._run("/usr/bin/python3", "-c", _BULK, str(self.conf), str(data), timeout=7200)

    def grant_deleted_objects(self, account: str = "reader") -> None:
        """Let `account` list the Deleted Objects container (List Contents, Read
        Property), as an administrator does with dsacls for a non-admin sync account."""
        # samba-tool dsacl cannot read this container (it does not send show-deleted):
        # Samba's own Python bindings, on the database directly, as samba-tool does.
        self._run(
            "/usr/bin/python3",
            "-c",
            _GRANT,
            str(self.conf),
            f"CN=Deleted Objects,{BASE}",
            account,
        )


_BULK = """
import json
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

conf, data = sys.argv[1:]
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp, options=["batch_mode:1"])
entries = json.load(open(data))
for start in range(0, len(entries), 2000):
    db.transaction_start()
    try:
        for entry in entries[start : start + 2000]:
            db.add(entry)
    except BaseException:
        db.transaction_cancel()
        raise
    db.transaction_commit()
"""

_GRANT = """
import sys
import ldb
from samba.auth import system_session
from samba.dcerpc import security
from samba.ndr import ndr_pack, ndr_unpack
from samba.param import LoadParm
from samba.samdb import SamDB

conf, dn, account = sys.argv[1:]
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
controls = ["show_deleted:1", "sd_flags:1:4"]
(who,) = db.search(db.domain_dn(), expression=f"(sAMAccountName={account})", attrs=["objectSid"])
sid = ndr_unpack(security.dom_sid, who["objectSid"][0])
found = db.search(dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=controls)
sd = ndr_unpack(security.descriptor, found[0]["nTSecurityDescriptor"][0])
ace = security.ace()
ace.type = security.SEC_ACE_TYPE_ACCESS_ALLOWED
ace.access_mask = security.SEC_ADS_LIST | security.SEC_ADS_READ_PROP
ace.trustee = sid
sd.dacl_add(ace)
change = ldb.Message()
change.dn = ldb.Dn(db, dn)
change["nTSecurityDescriptor"] = ldb.MessageElement(
    ndr_pack(sd), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor"
)
db.modify(change, controls=controls)
"""
