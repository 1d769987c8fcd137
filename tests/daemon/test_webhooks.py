"""Webhook deliveries are verified before anything else, refused with the right status,
counted, and accepted ones only enqueue."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from orgsync.core.webhook import first_string_member
from orgsync.daemon import webhooks as webhooks_module
from orgsync.daemon.queue import MAX_TARGETED_PEOPLE, Mailbox
from orgsync.daemon.relay import Relay
from orgsync.daemon.webhooks import (
    MAX_BODY,
    MAX_DEPTH,
    REPLAY_WINDOW,
    UNNAMED_REMEMBERED,
    VENDOR_REMEMBERED,
    Delivery,
    Refused,
    WebhookEvent,
    WebhookReceiver,
    WebhookSecrets,
    nesting_problem,
    parse_graph,
    parse_json,
    parse_okta,
    sign,
    verify_signature,
)
from orgsync.store import StateStore

SECRET = b"generic-secret"
OKTA = "okta-shared-authorization"
STATE = "graph-client-state"
NOW = 1_800_000_000


class Client:
    """A synchronous face on httpx's ASGI transport: the app runs in this thread."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


class Rig:
    def __init__(self, secrets: WebhookSecrets | None = None) -> None:
        self.events: list[WebhookEvent] = []
        self.deliveries: list[Delivery] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.receiver = WebhookReceiver(
            secrets=secrets or WebhookSecrets(SECRET, OKTA, STATE),
            enqueue=self.enqueue,
            count=lambda kind, result: self.counts.update([(kind, result)]),
            known_targets=frozenset({"openai-prod", "openai-test"}),
            clock=lambda: NOW,
        )
        self.client = Client(Starlette(routes=self.receiver.routes()))

    def enqueue(self, event: WebhookEvent, delivery: Delivery) -> tuple[str, ...]:
        self.events.append(event)
        self.deliveries.append(delivery)
        return delivery.keys

    def generic(
        self,
        document: Any = None,
        *,
        body: bytes | None = None,
        at: int = NOW,
        secret: bytes = SECRET,
        header: str | None = None,
    ) -> Any:
        content = body if body is not None else json.dumps(document).encode()
        signature = header if header is not None else sign(secret, at, content)
        return self.client.post(
            "/webhooks/generic", content=content, headers={"X-Orgsync-Signature": signature}
        )


@pytest.fixture
def rig() -> Rig:
    return Rig()


class TestGeneric:
    def test_a_signed_event_naming_people_is_accepted_as_targeted(self, rig: Rig) -> None:
        response = rig.generic({"id": "e1", "emails": ["ada@x.com"], "source_ids": ["00u1"]})
        assert response.status_code == 202
        assert response.json() == {"status": "accepted", "scope": "targeted"}
        assert rig.events == [
            WebhookEvent("generic", frozenset({"ada@x.com"}), frozenset({"00u1"}))
        ]
        assert rig.counts == {("generic", "accepted"): 1}

    def test_an_event_naming_nobody_asks_for_everybody(self, rig: Rig) -> None:
        assert rig.generic({}).json()["scope"] == "full"
        assert rig.events == [WebhookEvent("generic")]

    def test_targets_narrow_the_event_and_unknown_ones_are_refused(self, rig: Rig) -> None:
        assert rig.generic({"id": "1", "targets": ["openai-test"]}).status_code == 202
        assert rig.events[0].targets == ("openai-test",)
        assert rig.generic({"id": "2", "targets": ["nope"]}).status_code == 400

    @pytest.mark.parametrize(
        ("kwargs", "status", "result"),
        [
            ({"secret": b"wrong"}, 401, "bad_signature"),
            ({"header": ""}, 401, "bad_signature"),
            ({"header": "t=abc,v1=00"}, 401, "bad_signature"),
            ({"header": f"t={NOW}"}, 401, "bad_signature"),
            ({"at": NOW - REPLAY_WINDOW - 1}, 401, "stale"),
            ({"at": NOW + REPLAY_WINDOW + 1}, 401, "stale"),
            ({"body": b"{not json"}, 400, "malformed"),
            ({"body": b"[1, 2]"}, 400, "malformed"),
            ({"body": b'{"emails": "ada@x.com"}'}, 400, "malformed"),
            ({"body": b'{"emails": [1]}'}, 400, "malformed"),
            ({"body": b'{"id": 7}'}, 400, "malformed"),
        ],
    )
    def test_hostile_deliveries_are_refused(
        self, rig: Rig, kwargs: dict[str, Any], status: int, result: str
    ) -> None:
        response = rig.generic({"id": "x", "emails": ["ada@x.com"]}, **kwargs)
        assert response.status_code == status
        assert response.json()["error"] == result
        assert rig.events == []
        assert rig.counts == {("generic", result): 1}

    def test_a_replay_of_an_accepted_event_is_refused(self, rig: Rig) -> None:
        first = rig.generic({"id": "e1"})
        again = rig.generic({"id": "e1"}, at=NOW - 10)
        assert (first.status_code, again.status_code) == (202, 409)
        assert len(rig.events) == 1

    def test_without_an_id_the_same_signed_request_is_a_replay(self, rig: Rig) -> None:
        assert rig.generic({"emails": ["a@x.com"]}).status_code == 202
        assert rig.generic({"emails": ["a@x.com"]}).status_code == 409
        assert rig.generic({"emails": ["a@x.com"]}, at=NOW + 1).status_code == 202

    def test_a_body_over_one_mebibyte_is_refused_before_the_signature(self, rig: Rig) -> None:
        body = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
        response = rig.generic(body=body)
        assert response.status_code == 413
        assert rig.counts == {("generic", "too_large"): 1}

    def test_an_endpoint_without_a_secret_is_disabled(self) -> None:
        rig = Rig(WebhookSecrets())
        assert rig.generic({"id": "1"}).status_code == 404
        assert rig.client.post("/webhooks/okta", json={}).status_code == 404
        assert rig.client.post("/webhooks/entra", json={}).status_code == 404
        assert rig.counts[("generic", "disabled")] == 1

    def test_a_shutting_down_daemon_answers_503(self, rig: Rig) -> None:
        rig.receiver.accepting = False
        response = rig.generic({"id": "1"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"


def test_rotation_several_v1_signatures_one_of_which_matches() -> None:
    body = b"{}"
    good = sign(SECRET, NOW, body).split("v1=")[1]
    verify_signature(f"t={NOW},v1={'0' * 64},v1={good}", body, SECRET, NOW)
    with pytest.raises(Refused):
        verify_signature(f"t={NOW},v1={'0' * 64}", body, SECRET, NOW)


OKTA_EVENT = {
    "eventType": "com.okta.event_hook",
    "eventId": "delivery-1",
    "data": {
        "events": [
            {
                "uuid": "ev-1",
                "eventType": "user.lifecycle.deactivate",
                "target": [
                    {"id": "00u1", "type": "User", "alternateId": "ada@x.com"},
                    {"id": "0oa1", "type": "AppInstance", "alternateId": "app"},
                ],
            }
        ]
    },
}


class TestOkta:
    def test_the_verification_challenge_is_echoed_to_an_authorized_caller(self, rig: Rig) -> None:
        response = rig.client.get(
            "/webhooks/okta",
            headers={"Authorization": OKTA, "X-Okta-Verification-Challenge": "abc123"},
        )
        assert response.status_code == 200
        assert response.json() == {"verification": "abc123"}
        refused = rig.client.get(
            "/webhooks/okta", headers={"X-Okta-Verification-Challenge": "abc123"}
        )
        assert refused.status_code == 401

    def test_events_name_their_users_and_a_redelivery_is_acknowledged_once(self, rig: Rig) -> None:
        first = rig.client.post("/webhooks/okta", json=OKTA_EVENT, headers={"Authorization": OKTA})
        again = rig.client.post("/webhooks/okta", json=OKTA_EVENT, headers={"Authorization": OKTA})
        assert (first.status_code, again.status_code) == (204, 204)
        assert rig.events == [WebhookEvent("okta", frozenset({"ada@x.com"}), frozenset({"00u1"}))]
        assert rig.counts == {("okta", "accepted"): 1, ("okta", "duplicate"): 1}

    def test_a_wrong_authorization_header_is_refused(self, rig: Rig) -> None:
        response = rig.client.post(
            "/webhooks/okta", json=OKTA_EVENT, headers={"Authorization": OKTA + "x"}
        )
        assert response.status_code == 401
        assert rig.events == []

    def test_an_event_without_a_user_asks_for_everybody(self) -> None:
        body = {"data": {"events": [{"uuid": "g", "target": [{"type": "UserGroup", "id": "g"}]}]}}
        _, event = parse_okta(json.dumps(body).encode())
        assert event == WebhookEvent("okta")


def graph(*items: dict[str, Any]) -> dict[str, Any]:
    return {"value": list(items)}


USER_CHANGE = {
    "subscriptionId": "s1",
    "clientState": STATE,
    "changeType": "updated",
    "resource": "Users/11111111-2222-3333-4444-555555555555",
    "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "11111111-2222"},
}


class TestEntra:
    def test_subscription_validation_echoes_the_token_as_plain_text(self, rig: Rig) -> None:
        response = rig.client.post("/webhooks/entra?validationToken=Validation%3A%20tok%3Cen")
        assert response.status_code == 200
        assert response.text == "Validation: tok<en"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-content-type-options"] == "nosniff"

    def test_a_user_notification_names_the_user(self, rig: Rig) -> None:
        response = rig.client.post("/webhooks/entra", json=graph(USER_CHANGE))
        assert response.status_code == 202
        assert rig.events == [
            WebhookEvent("entra", source_ids=frozenset({"11111111-2222-3333-4444-555555555555"}))
        ]
        assert rig.client.post("/webhooks/entra", json=graph(USER_CHANGE)).status_code == 202
        assert len(rig.events) == 1  # the redelivery was recognised

    def test_a_notification_without_an_id_is_a_copy_only_within_a_minute(
        self, rig: Rig, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Graph sends a user's directory changes without an id, so the next change to the
        same person is the same body: remembered for the day, a leaver disabled after an
        earlier edit that day would wait for the next scheduled pass (extra access). A copy
        within the minute is still taken once; one with an id is remembered for the day."""
        now = [1000.0]
        monkeypatch.setattr(
            webhooks_module, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time)
        )
        named = {**USER_CHANGE, "id": "notification-1"}
        for body in (USER_CHANGE, named):
            assert rig.client.post("/webhooks/entra", json=graph(body)).status_code == 202
            assert rig.client.post("/webhooks/entra", json=graph(body)).status_code == 202
        assert len(rig.events) == 2  # each copy within the minute was recognised
        assert [d.window for d in rig.deliveries] == [UNNAMED_REMEMBERED, VENDOR_REMEMBERED]
        now[0] += UNNAMED_REMEMBERED + 1
        for body in (USER_CHANGE, named):
            assert rig.client.post("/webhooks/entra", json=graph(body)).status_code == 202
        assert len(rig.events) == 3  # the next change to that user, not the named copy
        assert rig.counts[("entra", "duplicate")] == 3

    def test_a_wrong_client_state_is_refused(self, rig: Rig) -> None:
        forged = {**USER_CHANGE, "clientState": "guess"}
        response = rig.client.post("/webhooks/entra", json=graph(USER_CHANGE, forged))
        assert response.status_code == 401
        assert rig.events == []

    def test_a_group_notification_asks_for_everybody(self) -> None:
        change = {**USER_CHANGE, "resource": "Groups/g1", "resourceData": {"id": "g1"}}
        _, event = parse_graph(json.dumps(graph(change)).encode(), STATE)
        assert event == WebhookEvent("entra")


# --------------------------------------------------------------------------- the depth pre-scan


def reference_depth(text: str) -> int:
    """How deep `json.loads` recurses on `text` before it finishes or fails: a plain
    character-by-character reading that stops where JSON must fail (a backslash outside
    a string, a closing bracket with nothing open)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "\\":
            break
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            if depth == 0:
                break
            depth -= 1
    return deepest


JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(alphabet='ab"\\[]{}', max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='k"\\[{', max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]{}"\\ a,:1', max_size=200))
def test_what_the_prescan_lets_through_never_recurses_past_the_limit(text: str) -> None:
    if nesting_problem(text.encode()) is None:
        assert reference_depth(text) <= MAX_DEPTH


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.integers(0, 40))
def test_the_prescan_passes_json_exactly_as_deep_as_the_limit(value: Any, wrap: int) -> None:
    text = "[" * wrap + json.dumps(value) + "]" * wrap
    depth = reference_depth(text)
    assert (nesting_problem(text.encode()) is None) == (depth <= MAX_DEPTH)
    if depth <= MAX_DEPTH:
        assert parse_json(text.encode()) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | st.text(alphabet='[]{}"\\u0d8 1e9,:', max_size=300).map(str.encode)
)
def test_parse_json_raises_nothing_but_a_400(body: bytes) -> None:
    refusal: Refused | None = None
    try:
        parse_json(body)
    except Refused as refused:
        refusal = refused
    assert refusal is None or (refusal.status, refusal.result) == (400, "malformed")


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 40_000 + b"1" + b"}" * 40_000],
)
def test_deep_nesting_is_refused_before_json_loads_recurses(body: bytes) -> None:
    with pytest.raises(Refused, match=r"nested deeper|do not balance"):
        parse_json(body)


def test_escaped_quotes_and_brackets_inside_strings_do_not_count() -> None:
    inside = json.dumps({"s": '\\"[[[[' * 100, "t": "]]]" * 100})
    assert parse_json(inside.encode()) == json.loads(inside)


def test_one_webhook_naming_more_than_the_cap_is_one_full_reconcile(rig: Rig) -> None:
    many = [f"p{i}@x.com" for i in range(MAX_TARGETED_PEOPLE + 1)]
    response = rig.generic({"id": "many", "emails": many})
    assert response.status_code == 202
    assert response.json()["scope"] == "full"
    assert rig.events == [WebhookEvent("generic")]
    few = rig.generic({"id": "few", "emails": many[:MAX_TARGETED_PEOPLE]})
    assert few.json()["scope"] == "targeted"


class TestQueueUnavailable:
    """The state database's queue could not take a delivery (the database is closed, as
    when it is unreachable): 503 with Retry-After, and the sender's retry is taken, not
    refused as a replay or acknowledged as a duplicate."""

    def test_a_delivery_not_queued_is_refused_and_its_retry_is_taken(
        self, rig: Rig, tmp_path: Path
    ) -> None:
        mailboxes = {name: Mailbox() for name in ("openai-prod", "openai-test")}
        counts: Counter[tuple[str, str]] = Counter()

        def relay(store: StateStore) -> Relay:
            return Relay(
                store=store,
                instance="i-1",
                mailboxes=mailboxes,
                runnable=lambda: list(mailboxes),
                count=lambda target, result: counts.update([(target, result)]),
            )

        broken = StateStore.open(tmp_path / "state.db")
        broken.close()
        rig.receiver.enqueue = relay(broken).submit
        okta = {"headers": {"Authorization": OKTA}, "json": OKTA_EVENT}
        refused = [
            rig.generic({"id": "e1", "emails": ["ada@x.com"]}),
            rig.client.post("/webhooks/okta", **okta),
            rig.client.post("/webhooks/entra", json=graph(USER_CHANGE)),
        ]
        assert [r.status_code for r in refused] == [503, 503, 503]
        assert all(r.headers["retry-after"] == "30" for r in refused)
        assert refused[0].json()["error"] == "unavailable"

        with StateStore.open(tmp_path / "state.db") as store:
            rig.receiver.enqueue = relay(store).submit
            retried = [
                rig.generic({"id": "e1", "emails": ["ada@x.com"]}),
                rig.client.post("/webhooks/okta", **okta),
                rig.client.post("/webhooks/entra", json=graph(USER_CHANGE)),
            ]
            assert [r.status_code for r in retried] == [202, 204, 202]
            rows = store.queued_requests()
        assert {(r.target, r.kind, r.person) for r in rows} == {
            (target, kind, person)
            for target in mailboxes
            for kind, person in (
                ("email", "ada@x.com"),
                ("source_id", "00u1"),
                ("source_id", "11111111-2222-3333-4444-555555555555"),
            )
        }
        assert counts[("openai-test", "queued")] == 3


def test_an_id_too_long_to_name_anybody_is_refused_before_the_queue(tmp_path: Path) -> None:
    """What the queue stores is bounded: a delivery naming a 3000-character "email" (the
    state database's index over waiting people would refuse the row, and the sender would
    retry a 503 for ever) is refused as malformed, on every endpoint, and nothing queued."""
    rig = Rig()
    huge = "a" * 3000 + "@example.com"
    assert rig.generic({"id": "e1", "emails": [huge]}).status_code == 400
    okta = {"data": {"events": [{"uuid": "u1", "target": [{"type": "User", "id": "x" * 600}]}]}}
    answer = rig.client.post("/webhooks/okta", json=okta, headers={"Authorization": OKTA})
    assert answer.status_code == 400
    assert rig.events == []
    assert rig.generic({"id": "e1", "emails": ["a" * 200 + "@example.com"]}).status_code == 202


# Values may spell the member's name and quotes around it: escaped, they are not it.
MEMBERS = st.dictionaries(
    st.text(alphabet='ab"\\ :{}[]', max_size=6),
    st.none() | st.integers() | st.text(alphabet='clientSa"\\: {}', max_size=30),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    before=MEMBERS,
    after=MEMBERS,
    state=st.text(alphabet='aZ9"\\/ é\u2028\x00', max_size=20),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 2]),
)
def test_the_first_client_state_is_read_from_what_a_serializer_writes(
    before: dict[str, Any], after: dict[str, Any], state: str, ascii_only: bool, indent: int | None
) -> None:
    """What the receiver looks at before the parse is exactly the notification's
    `clientState`, however a JSON serializer escapes or spaces it and whatever members
    come before it; a body without one reads as None (refused 401, never accepted)."""
    item = {**before, "clientState": state, **after}
    body = json.dumps({"value": [item]}, ensure_ascii=ascii_only, indent=indent).encode()
    assert first_string_member(body, "clientState") == state
    without = json.dumps({"value": [{**before, **after}]}, ensure_ascii=ascii_only).encode()
    assert first_string_member(without, "clientState") is None
