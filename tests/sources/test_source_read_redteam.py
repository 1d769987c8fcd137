"""Red team of the source connectors' reads: a wrong picture of the directory.

Each test names the harm a wrong read would do downstream (lost access: people look
gone; extra access: people look present, active or in an owners group; a leaked
credential) and tries it against a real server on loopback (slapd, the Okta and Entra
emulators, scim2-server through a rewriting proxy). Every one must end with either the
right picture or a `SourceError` that names what is wrong, never a quiet partial read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orgsync.core.errors import SourceError
from orgsync.retrying import RetrySettings
from orgsync.sources.ldap import LdapSettings, LdapSource
from tests.sources.directory import make_directory
from tests.sources.servers import READER_DN, READER_PASSWORD, SUFFIX, Slapd, ldif

PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"


# --------------------------------------------------------------------------- LDAP


def _referral(dn: str, rdn: str, target: str) -> str:
    attribute, _, value = rdn.partition("=")
    return (
        f"\ndn: {dn}\nobjectClass: referral\nobjectClass: extensibleObject\n"
        f"{attribute}: {value}\nref: {target}\n"
    )


@pytest.fixture(scope="module")
def referring_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """40 people, and two referral entries under the people base: contractors held by
    another server, and an AD-style DNS partition."""
    data = ldif(make_directory(40, 2))
    data += _referral(
        f"ou=contractors,{PEOPLE}",
        "ou=contractors",
        f"ldap://127.0.0.1:9/ou=contractors,{PEOPLE}",
    )
    server = Slapd(tmp_path_factory.mktemp("slapd-referral"), data)
    yield server
    server.stop()


def _ldap(url: str, **overrides: Any) -> LdapSource:
    values: dict[str, Any] = {
        "url": url,
        "bind_dn": READER_DN,
        "password": READER_PASSWORD,
        "users_base": PEOPLE,
        "groups_base": GROUPS,
        "allow_plaintext": True,
        "timeout": 10,
    }
    values.update(overrides)
    return LdapSource(
        LdapSettings(**values),
        retry=RetrySettings(max_attempts=1, max_delay=1),
        sleep=lambda _: None,
    )


def test_ldap_a_continuation_reference_fails_the_read(referring_slapd: Slapd) -> None:
    """Harm: lost access. Part of the people subtree lives on another server (a referral
    entry, answered as a `searchResRef`); orgsync never follows referrals (the other
    server would get the bind password), so the people there were silently missing from
    the snapshot and would read as gone. The read must fail, naming the referral."""
    with pytest.raises(
        SourceError, match=r"referred part of the subtree to ldap://127\.0\.0\.1:9/"
    ):
        _ldap(referring_slapd.url).read()


def test_ldap_a_reference_to_another_server_never_gets_the_bind_password(
    referring_slapd: Slapd,
) -> None:
    """Harm: leaked credential. Following the referral would bind to 127.0.0.1:9 with the
    password; the read fails before any such connection, and the message carries no
    password."""
    with pytest.raises(SourceError) as caught:
        _ldap(referring_slapd.url).read()
    assert READER_PASSWORD not in str(caught.value)
    assert READER_PASSWORD not in repr(caught.value.__cause__)


def test_ldap_an_active_directory_partition_reference_is_passed_over(tmp_path: Path) -> None:
    """Active Directory answers a domain-root search with references to its DNS and
    configuration partitions (no people there): failing on those would stop every AD read
    from a domain root, so they alone are passed over; a reference to anything else
    still fails the read."""
    data = ldif(make_directory(40, 2)) + _referral(
        f"dc=DomainDnsZones,{PEOPLE}",
        "dc=DomainDnsZones",
        f"ldap://127.0.0.1:9/DC=DomainDnsZones,{SUFFIX}",
    )
    server = Slapd(tmp_path / "slapd", data)
    try:
        ad = {
            "flavor": "ad",
            "user_filter": "(objectClass=inetOrgPerson)",
            "group_filter": "(objectClass=groupOfNames)",
            "id_attribute": "entryUUID",
            "disabled_filter": "(employeeType=disabled)",
        }
        assert len(_ldap(server.url, **ad).read().people) == 40
        with pytest.raises(SourceError, match="continuation reference"):
            _ldap(server.url).read()  # the OpenLDAP flavour passes nothing over
    finally:
        server.stop()
