"""Red team of the source connectors' reads: a wrong picture of the directory.

Each test names the harm a wrong read would do downstream (lost access: people look
gone; extra access: people look present, active or in an owners group; a leaked
credential) and tries it against a real server on loopback (slapd, the Okta and Entra
emulators, scim2-server through a rewriting proxy). Every one must end with either the
right picture or a `SourceError` that names what is wrong, never a quiet partial read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orgsync.core.errors import SourceDataError, SourceError
from orgsync.retrying import RetrySettings
from orgsync.sources._http import HttpSettings
from orgsync.sources.entra import EntraSource
from orgsync.sources.file import FileSource
from orgsync.sources.google import GoogleSource, ServiceAccountKey
from orgsync.sources.ldap import LdapSettings, LdapSource
from orgsync.sources.okta import OktaSource
from orgsync.sources.scim import ScimSource
from orgsync.testing.entra import EntraEmulator
from orgsync.testing.google import GoogleEmulator
from orgsync.testing.okta import OktaEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from orgsync.testing.pagination import offset_token
from tests.sources.cli import SOURCE_SECRET_ENV, holdings, orgsync, write_config
from tests.sources.directory import make_directory
from tests.sources.idp import ADMIN, FAST, KEY_ID, SERVICE_ACCOUNT, ServiceAccount, Sleeps
from tests.sources.servers import (
    READER_DN,
    READER_PASSWORD,
    SUFFIX,
    FaultProxy,
    Respond,
    Rewrite,
    ServerProcess,
    Slapd,
    ldif,
    start_scim2_server,
)

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


# --------------------------------------------------------------------------- Okta

Tamper = Callable[[str, str | None, Any], Any]
"""(listing, group id or None, the page's JSON body) -> the body to answer instead."""


class HostileOkta(OktaEmulator):
    """The Okta emulator with each listing page passed through `tamper` (a backend that
    answers inconsistently, or a hostile one)."""

    tamper: Tamper | None = None

    def _page(
        self, request: Request, listing: Any, rows: Any, *args: Any, **kwargs: Any
    ) -> Response:
        response = super()._page(request, listing, rows, *args, **kwargs)
        if self.tamper is None or response.status_code != 200:
            return response
        body = self.tamper(listing, kwargs.get("group"), json.loads(bytes(response.body)))
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return JSONResponse(body, headers=headers)


@pytest.fixture
def hostile_okta() -> Iterator[HostileOkta]:
    with HostileOkta() as running:
        yield running


def _okta(okta: OktaEmulator, page_size: int = 200) -> OktaSource:
    return OktaSource(
        okta.url, token=okta.token, page_size=page_size, settings=FAST, sleep=Sleeps()
    )


def _seed_okta(okta: OktaEmulator, people: int = 6) -> list[str]:
    return [okta.add_user(email=f"u{i}@example.test", first_name=f"U{i}") for i in range(people)]


def test_okta_a_person_on_two_pages_with_different_data_fails_the_read(
    hostile_okta: HostileOkta,
) -> None:
    """Harm: extra or lost access. The listing moves while it is paged (or one page comes
    from a stale replica): the first person shows up again on page 2, suspended. Taking
    the last copy deactivates someone who is active (or the reverse grants a leaver);
    the read must fail, naming the id."""
    ids = _seed_okta(hostile_okta)

    def tamper(listing: str, _group: str | None, body: Any) -> Any:
        if listing == "users" and body and body[0]["id"] != ids[0]:
            return [{**body[0], "id": ids[0], "status": "SUSPENDED"}, *body]
        return body

    hostile_okta.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"{ids[0]}.*listed twice with different data"):
        _okta(hostile_okta, page_size=3).read()


def test_okta_the_same_record_twice_is_read_once(hostile_okta: HostileOkta) -> None:
    """Held: a record repeated unchanged is harmless and must not stop reconciling."""
    ids = _seed_okta(hostile_okta)

    def tamper(listing: str, _group: str | None, body: Any) -> Any:
        return [*body, body[0]] if listing == "users" and body else body

    hostile_okta.tamper = tamper
    snapshot = _okta(hostile_okta, page_size=3).read()
    assert sorted(p.id for p in snapshot.people) == sorted(ids)


def test_okta_a_group_listed_twice_under_another_name_fails_the_read(
    hostile_okta: HostileOkta,
) -> None:
    """Harm: extra access. A group seen again as "owners" would hand its members the
    owner role mapped to that name."""
    _seed_okta(hostile_okta)
    staff = hostile_okta.add_group("staff")
    for name in ("a", "b"):
        hostile_okta.add_group(name)
    first = hostile_okta.group_record(staff)  # taken here: the page holds the lock

    def tamper(listing: str, _group: str | None, body: Any) -> Any:
        if listing == "groups" and body and body[0]["id"] != staff:
            return [{**first, "profile": {**first["profile"], "name": "owners"}}, *body]
        return body

    hostile_okta.tamper = tamper
    with pytest.raises(SourceDataError, match="listed twice with different data"):
        _okta(hostile_okta, page_size=2).read()


def test_okta_a_group_id_in_a_member_list_fails_the_read(hostile_okta: HostileOkta) -> None:
    """Harm: extra access. Okta groups cannot nest, yet a member listing of "owners"
    that names the id of "all-staff" would be read by the core as all-staff nested in
    owners: everyone an owner. The read must fail instead."""
    ids = _seed_okta(hostile_okta)
    staff = hostile_okta.add_group("all-staff")
    owners = hostile_okta.add_group("owners")
    for user in ids:
        hostile_okta.add_member(staff, user)
    hostile_okta.add_member(owners, ids[0])

    def tamper(listing: str, group: str | None, body: Any) -> Any:
        if listing == "members" and group == owners:
            return [*body, {**body[0], "id": staff}]
        return body

    hostile_okta.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"member '{staff}' is a group"):
        _okta(hostile_okta).read()


def test_okta_an_id_naming_a_user_and_a_group_fails_the_read(hostile_okta: HostileOkta) -> None:
    """Harm: extra access. A group whose id is also a person's: the core would read the
    person's memberships as the group nested there."""
    ids = _seed_okta(hostile_okta)
    hostile_okta.add_group("owners")

    def tamper(listing: str, _group: str | None, body: Any) -> Any:
        if listing == "groups":
            return [{**doc, "id": ids[1]} for doc in body]
        return body

    hostile_okta.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"name both a user and a group \(first '{ids[1]}'"):
        _okta(hostile_okta).read()


@pytest.mark.parametrize(
    "link",
    [
        "http://{host}/api/v1/users?after=x",  # a downgrade to plain HTTP
        "https://{host}:8443/api/v1/users?after=x",  # another port of the same host
        "https://{host}.evil.example/api/v1/users?after=x",
        "https://evil.example/?u=https://{host}/api/v1/users",
    ],
)
def test_okta_a_next_link_off_the_api_never_gets_the_token(link: str) -> None:
    """Harm: leaked credential. Whatever the next link points to off the API's scheme,
    host and port, no request is sent there (so no SSWS token)."""
    sent: list[httpx.Request] = []
    host = "example.okta.com"

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200, json=[], headers={"Link": f'<{link.format(host=host)}>; rel="next"'}
        )

    okta = OktaSource(
        f"https://{host}",
        token="t0ken-value",
        settings=FAST,
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(SourceError, match="leaves the API") as caught:
        okta.read()
    assert [str(r.url.host) for r in sent] == [host]
    assert "t0ken-value" not in str(caught.value)


# --------------------------------------------------------------------------- Entra


class HostileEntra(EntraEmulator):
    """The Graph emulator with each listing page's `value` passed through `tamper`."""

    tamper: Tamper | None = None

    def _page(self, request: Request, listing: Any, rows: Any, **kwargs: Any) -> Response:
        response = super()._page(request, listing, rows, **kwargs)
        if self.tamper is None or response.status_code != 200:
            return response
        body = json.loads(bytes(response.body))
        body["value"] = self.tamper(listing, kwargs.get("group"), body["value"])
        return JSONResponse(body)


@pytest.fixture
def hostile_entra() -> Iterator[HostileEntra]:
    with HostileEntra() as running:
        yield running


def _entra(entra: EntraEmulator, page_size: int = 999, **kwargs: Any) -> EntraSource:
    values: dict[str, Any] = {
        "tenant_id": entra.tenant_id,
        "client_id": entra.client_id,
        "client_secret": entra.client_secret,
        "graph_url": entra.graph_url,
        "login_url": entra.login_url,
        "page_size": page_size,
        "settings": FAST,
        "sleep": Sleeps(),
    }
    values.update(kwargs)
    return EntraSource(**values)


def _seed_entra(entra: EntraEmulator, people: int = 6) -> list[str]:
    return [
        entra.add_user(
            display_name=f"U{i}", user_principal_name=f"u{i}@example.test", mail=f"u{i}@x.test"
        )
        for i in range(people)
    ]


def test_entra_a_person_on_two_pages_with_different_data_fails_the_read(
    hostile_entra: HostileEntra,
) -> None:
    """Harm: extra or lost access, as for Okta: disabled on one page, enabled on the next."""
    ids = _seed_entra(hostile_entra)

    def tamper(listing: str, _group: str | None, value: Any) -> Any:
        if listing == "users" and value and value[0]["id"] != ids[0]:
            return [{**value[0], "id": ids[0], "accountEnabled": False}, *value]
        return value

    hostile_entra.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"{ids[0]}.*listed twice with different data"):
        _entra(hostile_entra, page_size=3).read()


def test_entra_a_member_typed_user_that_is_a_group_fails_the_read(
    hostile_entra: HostileEntra,
) -> None:
    """Harm: extra access. "owners" lists all-staff's id typed as a user: the core would
    nest all-staff in owners by its id. Graph's type and the directory disagree: the read
    fails."""
    ids = _seed_entra(hostile_entra)
    staff = hostile_entra.add_group("all-staff")
    owners = hostile_entra.add_group("owners")
    for user in ids:
        hostile_entra.add_member(staff, user)
    hostile_entra.add_member(owners, ids[0])

    def tamper(listing: str, group: str | None, value: Any) -> Any:
        if group == owners:
            return [*value, {"@odata.type": "#microsoft.graph.user", "id": staff}]
        return value

    hostile_entra.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"member '{staff}' is typed #microsoft.graph.user"):
        _entra(hostile_entra).read()


def test_entra_an_id_naming_a_user_and_a_group_fails_the_read(
    hostile_entra: HostileEntra,
) -> None:
    """Harm: extra access, as for Okta."""
    ids = _seed_entra(hostile_entra)
    hostile_entra.add_group("owners")

    def tamper(listing: str, _group: str | None, value: Any) -> Any:
        if listing == "groups":
            return [{**doc, "id": ids[2]} for doc in value]
        return value

    hostile_entra.tamper = tamper
    with pytest.raises(SourceDataError, match="name both a user and a group"):
        _entra(hostile_entra).read()


def test_entra_a_next_link_under_another_scheme_never_gets_the_bearer_token(
    hostile_entra: HostileEntra,
) -> None:
    """Harm: leaked credential. A nextLink to the same host under another scheme (here
    http to https, as the emulator serves plain HTTP; https to http in production would
    carry the bearer token in clear): refused before anything is sent to it."""
    _seed_entra(hostile_entra)
    seen: list[str] = []
    original = hostile_entra._page

    def downgrade(request: Request, listing: Any, rows: Any, **kwargs: Any) -> Response:
        response = original(request, listing, rows, **kwargs)
        body = json.loads(bytes(response.body))
        seen.append(str(request.url))
        if "@odata.nextLink" in body:
            body["@odata.nextLink"] = body["@odata.nextLink"].replace("http://", "https://")
        return JSONResponse(body)

    hostile_entra._page = downgrade  # type: ignore[method-assign]
    with pytest.raises(SourceError, match="leaves the API"):
        _entra(hostile_entra, page_size=2).read()
    assert len(seen) == 1


def test_entra_a_token_endpoint_answering_a_redirect_is_not_followed() -> None:
    """Harm: leaked credential. A token endpoint that redirects (a captive proxy, a
    hijacked login URL) would, if followed, post the client secret to wherever it
    points. The redirect fails the read, naming it, and nothing reaches the target."""
    posted: list[bytes] = []

    class Catcher(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            posted.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    catcher = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    target = f"http://127.0.0.1:{catcher.server_port}/steal"

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

    login = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (catcher, login)]
    for thread in threads:
        thread.start()
    try:
        source = EntraSource(
            tenant_id="tenant",
            client_id="client",
            client_secret="s3cret-value",
            graph_url="http://127.0.0.1:9/v1.0",
            login_url=f"http://127.0.0.1:{login.server_port}",
            settings=FAST,
            sleep=Sleeps(),
        )
        with pytest.raises(SourceError, match="redirect") as caught:
            source.read()
        assert posted == []
        assert "s3cret-value" not in str(caught.value)
    finally:
        for server in (catcher, login):
            server.shutdown()
            server.server_close()


# --------------------------------------------------------------------------- SCIM

SCIM_TOKEN = "scim-redteam-token-0123456789"


@pytest.fixture(scope="module")
def small_scim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_scim2_server(
        make_directory(40, 2), tmp_path_factory.mktemp("scim2-redteam"), SCIM_TOKEN
    )
    yield server
    server.stop()


def _scim(url: str) -> ScimSource:
    return ScimSource.connect(
        url,
        token=SCIM_TOKEN,
        credential_key="source.token_env (IDP_TOKEN)",
        page_size=100,
        settings=HttpSettings(timeout=60, retry=RetrySettings(max_attempts=4, max_delay=5)),
        sleep=lambda _s: None,
    )


def _users_page(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[int, str], Any]:
    """Rewrite the first resource with emails of each /Users page with `change` (the
    server's order is its ids', random, and some seeded users have no emails)."""

    def plan(_n: int, path: str) -> Any:
        if not path.split("?", maxsplit=1)[0].endswith("/Users"):
            return None

        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            resources = list(body["Resources"])
            at = next(i for i, r in enumerate(resources) if r.get("emails"))
            resources[at] = change(resources[at])
            return {**body, "Resources": resources}

        return Rewrite(rewrite)

    return plan


def test_scim_two_different_primary_emails_fail_the_read(small_scim: ServerProcess) -> None:
    """Harm: extra access or a duplicate account. A user with two primary addresses (the
    second someone else's): which one a server lists first is arbitrary, so orgsync
    could invite the person under the other address, or flip between the two on every
    read. Held: scim2-models refuses the ListResponse (`primary_uniqueness_error`), so
    the read fails naming it and nothing is planned."""

    def two(user: dict[str, Any]) -> dict[str, Any]:
        emails = [
            {"value": "ceo@example.test", "primary": True, "type": "work"},
            *[{**e, "primary": True} for e in user.get("emails", [])],
        ]
        return {**user, "emails": emails}

    with FaultProxy(small_scim.url, _users_page(two)) as proxy:
        with pytest.raises(SourceDataError, match="primary_uniqueness_error"):
            _scim(proxy.url).read()


def test_scim_the_same_primary_email_twice_also_fails_the_read(small_scim: ServerProcess) -> None:
    """Held, strictly: even one address listed twice as primary is refused by
    scim2-models, so the read fails (nothing planned) rather than guessing. Noted: one
    such record stops reading everyone until the directory is fixed."""

    def twice(user: dict[str, Any]) -> dict[str, Any]:
        email = user["emails"][0]["value"]
        emails = [{"value": email, "primary": True}, {"value": email.upper(), "primary": True}]
        return {**user, "emails": emails}

    with FaultProxy(small_scim.url, _users_page(twice)) as proxy:
        with pytest.raises(SourceDataError, match="primary_uniqueness_error"):
            _scim(proxy.url).read()


@pytest.mark.parametrize(("value", "active"), [("false", False), ("False", False), (0, False)])
def test_scim_active_as_a_string_false_is_inactive(
    small_scim: ServerProcess, value: object, active: bool
) -> None:
    """Held: `active: "false"` (a string, as some providers send it) must not read as
    truthy and grant a leaver access."""
    ids: list[str] = []

    def stringly(user: dict[str, Any]) -> dict[str, Any]:
        ids.append(user["id"])
        return {**user, "active": value}

    with FaultProxy(small_scim.url, _users_page(stringly)) as proxy:
        snapshot = _scim(proxy.url).read()
    assert {p.id: p.active for p in snapshot.people}[ids[0]] is active


def test_scim_active_that_is_no_boolean_fails_the_read(small_scim: ServerProcess) -> None:
    """Held: `active: "suspended"` is neither true nor false; guessing either way is
    wrong, so the read fails naming the field."""

    def odd(user: dict[str, Any]) -> dict[str, Any]:
        return {**user, "active": "suspended"}

    with FaultProxy(small_scim.url, _users_page(odd)) as proxy:
        with pytest.raises(SourceDataError, match="active"):
            _scim(proxy.url).read()


def test_scim_a_refusal_that_echoes_the_token_does_not_repeat_it(
    small_scim: ServerProcess,
) -> None:
    """Held: leaked credential. A server (or proxy) whose 401 body quotes the token it
    refused: the error orgsync reports carries no token."""
    body = json.dumps({"detail": f"token {SCIM_TOKEN} refused", "status": "401"}).encode()
    with FaultProxy(small_scim.url, lambda _n, _p: Respond(401, {}, body)) as proxy:
        with pytest.raises(SourceError) as caught:
            _scim(proxy.url).read()
    assert SCIM_TOKEN not in str(caught.value)
    assert "refused" in str(caught.value)


# --------------------------------------------------------------------------- hostile bodies

DEEP = b"[" * 100_000 + b"]" * 100_000
"""Valid JSON nested past Python's parser depth (it raises RecursionError, no ValueError)."""


class DeepOkta(OktaEmulator):
    """Answers the users listing with `status` and a body nested 100k levels deep."""

    status = 200

    async def _list_users(self, request: Request) -> Response:
        return Response(DEEP, status_code=self.status, media_type="application/json")


@pytest.mark.parametrize("status", [200, 400, 401, 500])
def test_okta_a_body_nested_too_deep_fails_the_read_with_a_source_error(status: int) -> None:
    """Harm: a daemon that stops reconciling without saying why. A body nested past the
    JSON parser's depth (a hostile or broken proxy) raised RecursionError out of the
    read, past every handler that expects a `SourceError`; the read must fail as one,
    naming the call, and an error body must still give the status."""
    with DeepOkta() as okta:
        okta.status = status
        with pytest.raises(SourceError, match=r"GET /api/v1/users") as caught:
            _okta(okta).read()
    assert not isinstance(caught.value.__cause__, RecursionError)
    if status == 200:
        assert "nests JSON too deeply" in str(caught.value)


class DeepTokenEntra(EntraEmulator):
    """A token endpoint answering 200 with a body nested 100k levels deep."""

    async def _token(self, request: Request) -> Response:
        return Response(DEEP, media_type="application/json")


def test_entra_a_token_answer_nested_too_deep_fails_the_read_with_a_source_error() -> None:
    """As above, for the client-credentials token request (retried as a garbled answer,
    then a `SourceError`)."""
    with DeepTokenEntra() as entra:
        with pytest.raises(SourceError, match="the token response is not JSON"):
            _entra(entra).read()


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("truncate", ["members", "groups"])
def test_okta_a_truncated_answer_is_held_by_the_guards_end_to_end(
    truncate: str, tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """Harm: lost access. Okta answers 200 with less than it holds (a backend hiccup):
    the member list of openai-users stops after 5 people with no next link, or the
    group listing comes back empty. Nothing in such an answer says it is short, so the
    read cannot refuse it; the safety guards must hold the mass removal it implies
    (exit 3; with no group at all, the scope rule matching nothing refuses the run,
    exit 1), and the target keeps everyone."""
    with HostileOkta() as okta:
        people = _seed_okta(okta, 30)
        users, owners = okta.add_group("openai-users"), okta.add_group("openai-owners")
        for user in people:
            okta.add_member(users, user)
        okta.add_member(owners, people[0])
        source = (
            f'[source]\ntype = "okta"\nurl = "{okta.url}"\ntoken_env = "{SOURCE_SECRET_ENV}"\n'
            "allow_plaintext = true\nmax_attempts = 1\n"
        )
        config = write_config(tmp_path, emulator, source)
        first = orgsync(config, "sync", secret=okta.token)
        assert first.returncode == 0, first.stdout + first.stderr
        before = holdings(emulator)
        assert len(before) == 30 and before["u0@example.test"] == "owner"

        def short(listing: str, group: str | None, body: Any) -> Any:
            if truncate == "members" and listing == "members" and group == users:
                return body[:5]
            if truncate == "groups" and listing == "groups":
                return []
            return body

        okta.tamper = short
        second = orgsync(config, "sync", secret=okta.token)
    if truncate == "members":  # the removal guards hold it
        assert second.returncode == 3, second.stdout + second.stderr
    else:  # a scope rule matching no group refuses the run before any guard
        assert second.returncode == 1, second.stdout + second.stderr
        assert "matches no group of the source" in second.stdout + second.stderr
    assert holdings(emulator) == before


class CursorIgnoringOkta(OktaEmulator):
    """Answers every users page with the first three users and a fresh `after` cursor,
    for `pages` pages (then no next link, so that a client without the check ends)."""

    pages = 200

    async def _list_users(self, request: Request) -> Response:
        served = int(request.query_params.get("after", "0")) + 1
        rows = self._users.rows()[:3]
        headers = {}
        if served < self.pages:
            url = request.url.include_query_params(after=str(served), limit=3)
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse([self._render_user(r, request) for r in rows], headers=headers)


def test_okta_a_server_ignoring_the_page_cursor_fails_the_read() -> None:
    """Harm: a daemon that stops reconciling, then lost access. A server ignoring `after`
    answers the first page again under a fresh cursor each time: no cursor repeats and
    no page is empty, so the read went on for up to 100,000 pages (hours of rate limit),
    and a server that stops after a while (here after 4 pages) left a snapshot of three
    people out of ten. A page of repeats that points onward fails the read at once."""
    with CursorIgnoringOkta() as okta:
        okta.pages = 4
        _seed_okta(okta, 10)
        with pytest.raises(SourceError, match="lists only objects already read"):
            _okta(okta, page_size=3).read()
        assert len(okta.requests) == 2


def test_entra_a_server_ignoring_the_skiptoken_fails_the_read(
    hostile_entra: HostileEntra,
) -> None:
    """As for Okta: Graph's pages keep advancing their $skiptoken but each carries the
    first page's users again; the read ended with 3 people of 9."""
    _seed_entra(hostile_entra, 9)
    first: list[Any] = []

    def again(listing: str, _group: str | None, rows: Any) -> Any:
        if listing != "users":
            return rows
        if not first:
            first.extend(rows)
        return first

    hostile_entra.tamper = again
    with pytest.raises(SourceError, match="lists only objects already read"):
        _entra(hostile_entra, page_size=3).read()


@pytest.fixture(scope="module")
def clashing_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """40 people, and under ou=more one more person whose uid repeats user3's and whose
    cn is the name of group0 (ids that are unique only if the operator chose well)."""
    data = ldif(make_directory(40, 2))
    data += (
        f"\ndn: ou=more,{PEOPLE}\nobjectClass: organizationalUnit\nou: more\n"
        f"\ndn: uid=user3,ou=more,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: user3\n"
        "cn: group0\nsn: Clash\nmail: mallory@example.test\n"
    )
    server = Slapd(tmp_path_factory.mktemp("slapd-clash"), data)
    yield server
    server.stop()


@pytest.mark.parametrize("attribute", ["uid", "cn"])
def test_ldap_an_id_attribute_that_is_not_unique_fails_the_read(
    clashing_slapd: Slapd, attribute: str
) -> None:
    """Harm: extra and lost access. With `id_attribute = "uid"` two people in two OUs
    shared one id: the core read both under the last one's address, so user3 looked
    gone and mallory took user3's groups. With `"cn"`, a person named like group0 was
    taken for group0 wherever group0 is a member. The read fails naming both entries."""
    with pytest.raises(SourceDataError, match=rf"share the id .*\({attribute} is not unique\)"):
        _ldap(clashing_slapd.url, id_attribute=attribute).read()


def test_ldap_the_same_directory_read_with_a_unique_id_is_whole(clashing_slapd: Slapd) -> None:
    """Held: with the default entryUUID, both entries are read, each with its own id."""
    snapshot = _ldap(clashing_slapd.url).read()
    assert len(snapshot.people) == len({p.id for p in snapshot.people}) == 41


def test_ldap_a_base_held_by_another_server_fails_the_read(referring_slapd: Slapd) -> None:
    """Held: lost access. A base that is itself a referral answers result 10 (referral)
    with no entries; read as an empty OU it would make everyone look gone. The read
    fails naming the result."""
    with pytest.raises(SourceError, match=r"result 10 referral: the base is held by ldap://127"):
        _ldap(referring_slapd.url, users_base=f"ou=contractors,{PEOPLE}").read()


@pytest.mark.parametrize("value", ["true", "True", 1, None])
def test_entra_account_enabled_that_is_no_true_boolean_is_inactive(
    hostile_entra: HostileEntra, value: object
) -> None:
    """Held: extra access. `accountEnabled: "true"` (a string), 1 or null is not Graph's
    boolean true; an unknown state must never grant access."""
    ids = _seed_entra(hostile_entra, 3)

    def stringly(listing: str, _group: str | None, rows: Any) -> Any:
        if listing == "users":
            return [
                {**doc, "accountEnabled": value} if doc["id"] == ids[1] else doc for doc in rows
            ]
        return rows

    hostile_entra.tamper = stringly
    snapshot = _entra(hostile_entra).read()
    assert {p.id: p.active for p in snapshot.people} == {ids[0]: True, ids[1]: False, ids[2]: True}


def test_file_a_document_nested_too_deep_fails_the_read_with_a_source_error(
    tmp_path: Path,
) -> None:
    """Harm: an unclear failure. A file nested past the JSON parser's depth raised
    RecursionError out of the read; it must be a `SourceDataError` naming the file."""
    path = tmp_path / "people.json"
    path.write_bytes(b'{"people": ' + DEEP + b"}")
    with pytest.raises(SourceDataError, match=r"people\.json: the JSON nests too deeply"):
        FileSource(path).read()


def test_scim_a_member_of_another_type_is_no_person(small_scim: ServerProcess) -> None:
    """Harm: extra access. A provider numbering users, groups and devices from separate
    sequences lists device "N" in a group: its value equals some user's id, and looking
    it up made that user a member. A member typed neither User nor Group is skipped
    (counted with the dangling members)."""
    user_ids: list[str] = []
    planted: list[tuple[str, str]] = []  # (group id, the device's value)

    def users(body: dict[str, Any]) -> dict[str, Any]:
        user_ids.extend(r["id"] for r in body["Resources"])
        return body

    def groups(body: dict[str, Any]) -> dict[str, Any]:
        # The server lists groups in the order of their random ids, and the seeded
        # all-staff group holds only subgroups: plant in a group with people.
        resources = list(body["Resources"])
        at = next(
            i
            for i, g in enumerate(resources)
            if any(m["value"] in user_ids for m in g.get("members", []))
        )
        chosen = resources[at]
        inside = {m["value"] for m in chosen["members"]}
        outsider = next(u for u in user_ids if u not in inside)
        planted.append((chosen["id"], outsider))
        device = {"value": outsider, "type": "Device"}
        resources[at] = {**chosen, "members": [*chosen["members"], device]}
        return {**body, "Resources": resources}

    def plan(_n: int, path: str) -> Any:
        route = path.split("?", maxsplit=1)[0]
        if route.endswith("/Users"):
            return Rewrite(users)
        return Rewrite(groups) if route.endswith("/Groups") else None

    with FaultProxy(small_scim.url, plan) as proxy:
        snapshot = _scim(proxy.url).read()
    group_id, outsider = planted[0]
    group = next(g for g in snapshot.groups if g.id == group_id)
    assert group.members, "the group's real members are still read"
    assert outsider not in group.members


class EchoingTokenEntra(EntraEmulator):
    """A token endpoint that refuses and quotes the form it was sent (the secret in it)."""

    async def _token(self, request: Request) -> Response:
        form = (await request.body()).decode()
        return JSONResponse(
            {"error": "invalid_client", "error_description": f"AADSTS7000215: got {form}"},
            status_code=401,
        )


def test_entra_a_token_refusal_quoting_the_secret_does_not_repeat_it() -> None:
    """Held: leaked credential. The refusal names the problem (AADSTS code) but not the
    client secret the endpoint echoed, raw or form-encoded."""
    secret = "s3cret+value/with=chars"
    with EchoingTokenEntra() as entra:
        with pytest.raises(SourceError, match="invalid_client") as caught:
            _entra(entra, client_secret=secret).read()
    text = str(caught.value) + repr(caught.value.__cause__)
    assert secret not in text
    assert "s3cret%2Bvalue%2Fwith%3Dchars" not in text


def test_ldap_a_server_message_echoing_the_bind_password_is_scrubbed() -> None:
    """Harm: leaked credential. A failed step's error quotes the server's diagnostic
    message; a server (or a proxy in front of it) that echoes the bind password would
    put it in logs and the run history. Unit test of `_classify`: no server answers so."""
    from ldap3.core import exceptions as lx

    ldap = _ldap("ldap://127.0.0.1:9")
    echo = lx.LDAPUnwillingToPerformResult(
        result=53, description="unwillingToPerform", message=f"bind with {READER_PASSWORD} refused"
    )
    error = ldap._classify(echo, "bind")
    assert READER_PASSWORD not in str(error)
    assert "unwillingToPerform" in str(error)


class RelinkingOkta(HostileOkta):
    """Rewrites the next link of one group's member listing to another group's."""

    relink: tuple[str, str] | None = None

    def _page(
        self, request: Request, listing: Any, rows: Any, *args: Any, **kwargs: Any
    ) -> Response:
        response = super()._page(request, listing, rows, *args, **kwargs)
        if self.relink and kwargs.get("group") == self.relink[0] and "link" in response.headers:
            response.headers["link"] = response.headers["link"].replace(*self.relink)
        return response


def test_okta_a_next_link_to_another_listing_fails_the_read() -> None:
    """Harm: extra access. The next link of owners' member listing names all-staff's
    member listing (a caching proxy mixing up URLs): everyone after the first page
    would read as an owner. Okta's next link is the same listing with `after`: the read
    fails."""
    with RelinkingOkta() as okta:
        people = _seed_okta(okta, 6)
        staff, owners = okta.add_group("all-staff"), okta.add_group("owners")
        for user in people:
            okta.add_member(staff, user)
        okta.add_member(owners, people[0])
        okta.add_member(owners, people[1])
        okta.relink = (owners, staff)
        with pytest.raises(SourceError, match="the next-page link leads to another listing"):
            _okta(okta, page_size=1).read()


def test_entra_a_next_link_to_another_listing_fails_the_read(hostile_entra: HostileEntra) -> None:
    """As for Okta: owners' member listing's nextLink names all-staff's listing."""
    people = _seed_entra(hostile_entra, 6)
    staff, owners = hostile_entra.add_group("all-staff"), hostile_entra.add_group("owners")
    for user in people:
        hostile_entra.add_member(staff, user)
    hostile_entra.add_member(owners, people[0])
    hostile_entra.add_member(owners, people[1])
    original = hostile_entra._page

    def relink(request: Request, listing: Any, rows: Any, **kwargs: Any) -> Response:
        response = original(request, listing, rows, **kwargs)
        body = json.loads(bytes(response.body))
        if kwargs.get("group") == owners and "@odata.nextLink" in body:
            # A link the emulator honours: all-staff's listing from its second member.
            link = httpx.URL(body["@odata.nextLink"].replace(owners, staff))
            token = offset_token("members", staff, 1)
            body["@odata.nextLink"] = str(link.copy_set_param("$skiptoken", token))
        return JSONResponse(body, status_code=response.status_code)

    hostile_entra._page = relink  # type: ignore[method-assign]
    with pytest.raises(SourceError, match=r"the @odata\.nextLink leads to another listing"):
        _entra(hostile_entra, page_size=1).read()


def test_entra_a_next_link_spelling_the_service_root_its_own_way_is_the_same_listing() -> None:
    """Graph documents nextLinks as opaque: a tenant segment or another casing before the
    resource path is still the listing asked for; another resource path is not."""
    from orgsync.sources.entra import _same_listing

    members = "/groups/g-owners/members"
    assert _same_listing("/v1.0/groups/g-owners/members", members)
    assert _same_listing("/v1.0/0f1e2d3c-tenant/Groups/G-Owners/members/", members)
    assert not _same_listing("/v1.0/groups/g-staff/members", members)
    assert not _same_listing("/v1.0/groups/g-owners/members/extra", members)
    assert _same_listing("/v1.0/users", "/users")
    assert not _same_listing("/v1.0/groups", "/users")


# --------------------------------------------------------------------------- Google


class HostileGoogle(GoogleEmulator):
    """The Directory emulator with each listing page's list passed through `tamper`."""

    tamper: Tamper | None = None

    def _page(self, request: Request, listing: Any, rows: Any, **kwargs: Any) -> Response:
        response = super()._page(request, listing, rows, **kwargs)
        if self.tamper is None or response.status_code != 200:
            return response
        body = json.loads(bytes(response.body))
        body[listing] = self.tamper(listing, kwargs.get("group"), body.get(listing, []))
        return JSONResponse(body)


@pytest.fixture
def hostile_google(service_account: ServiceAccount) -> Iterator[HostileGoogle]:
    with HostileGoogle(admins=(ADMIN,)) as running:
        running.register_service_account(SERVICE_ACCOUNT, KEY_ID, service_account.public_pem)
        yield running


def _google(google: GoogleEmulator, account: ServiceAccount, page_size: int = 500) -> GoogleSource:
    return GoogleSource(
        key=ServiceAccountKey.from_json(account.text),
        subject=ADMIN,
        directory_url=google.directory_url,
        reports_url=google.reports_url,
        token_url=google.token_url,
        page_size=page_size,
        settings=FAST,
        sleep=Sleeps(),
    )


def _seed_google(google: GoogleEmulator, people: int = 6) -> list[str]:
    return [
        google.add_user(primary_email=f"u{i}@example.com", given_name=f"U{i}", family_name="X")
        for i in range(people)
    ]


def test_google_a_person_on_two_pages_with_different_data_fails_the_read(
    hostile_google: HostileGoogle, service_account: ServiceAccount
) -> None:
    """Harm: extra or lost access, as for Okta: suspended on one page, active on the next."""
    ids = _seed_google(hostile_google)

    def tamper(listing: str, _group: str | None, rows: Any) -> Any:
        if listing == "users" and rows and rows[0]["id"] != ids[0]:
            return [{**rows[0], "id": ids[0], "suspended": True}, *rows]
        return rows

    hostile_google.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"{ids[0]}.*listed twice with different data"):
        _google(hostile_google, service_account, page_size=3).read()


def test_google_a_member_typed_user_that_is_a_group_fails_the_read(
    hostile_google: HostileGoogle, service_account: ServiceAccount
) -> None:
    """Harm: extra access, as for Entra: owners lists all-staff's id typed USER."""
    ids = _seed_google(hostile_google)
    staff, owners = hostile_google.add_group("all-staff"), hostile_google.add_group("owners")
    for user in ids:
        hostile_google.add_member(staff, user)
    hostile_google.add_member(owners, ids[0])

    def tamper(listing: str, group: str | None, rows: Any) -> Any:
        if listing == "members" and group == owners:
            return [*rows, {**rows[0], "id": staff, "type": "USER"}]
        return rows

    hostile_google.tamper = tamper
    with pytest.raises(SourceDataError, match=rf"member '{staff}' is typed USER"):
        _google(hostile_google, service_account).read()


def test_google_a_server_ignoring_the_page_token_fails_the_read(
    hostile_google: HostileGoogle, service_account: ServiceAccount
) -> None:
    """As for Okta: each page carries the first page's users again under a new token."""
    _seed_google(hostile_google, 9)
    first: list[Any] = []

    def again(listing: str, _group: str | None, rows: Any) -> Any:
        if listing != "users":
            return rows
        if not first:
            first.extend(rows)
        return first

    hostile_google.tamper = again
    with pytest.raises(SourceError, match="lists only objects already read"):
        _google(hostile_google, service_account, page_size=3).read()


def test_okta_email_wins_over_a_different_login(hostile_okta: HostileOkta) -> None:
    """Held: duplicate account or extra access. A user whose `login` names another
    address than their `email` (a renamed person, or a login copied from a colleague's):
    the email is who they are, the login only an attribute; the login stands in only when
    there is no address-shaped email."""
    ids = _seed_okta(hostile_okta, 3)

    def tamper(listing: str, _group: str | None, body: Any) -> Any:
        if listing != "users":
            return body
        out = []
        for doc in body:
            profile = dict(doc["profile"])
            if doc["id"] == ids[0]:
                profile["login"] = "ceo@example.test"
            elif doc["id"] == ids[1]:
                profile["email"] = "not-an-address"
                profile["login"] = "u1-login@example.test"
            out.append({**doc, "profile": profile})
        return out

    hostile_okta.tamper = tamper
    emails = {p.id: p.email for p in _okta(hostile_okta).read().people}
    assert emails == {
        ids[0]: "u0@example.test",
        ids[1]: "u1-login@example.test",
        ids[2]: "u2@example.test",
    }
