"""Red team of the webhook endpoints as an attacker who knows the URL (not the secrets)
and as a careless sender, against one real `orgsync daemon` shared by the module (file
source, SQLite state, OpenAI emulator over loopback).

How it could hurt an administrator, each tried below:
- a daemon that acts on what nobody authenticated: a signature over another body, a
  timestamp outside the window either way, a captured delivery sent again within it;
- an unauthenticated flood that queues work or runs reconciles (it must cost one 401
  each and nothing else, and leave genuine deliveries working);
- the endpoints reflecting an attacker's content: Graph's `validationToken` echo (the
  only unauthenticated answer with a body of the sender's choosing: it must stay inert
  text, bounded), Okta's verification challenge (only to the authorized caller);
- Graph notifications whose `clientState` is missing, wrong, or right in one item and
  wrong in another; a notification for a subscription or tenant orgsync never asked
  for (the `clientState` is the proof; what it names is read from the IdP itself, so a
  stranger's id changes nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orgsync.daemon.webhooks import REPLAY_WINDOW, sign
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import GRAPH_STATE, OKTA_AUTH, SECRET, Daemon, DaemonRig, wait_for

PEOPLE = 3


@dataclass
class Served:
    rig: DaemonRig
    daemon: Daemon
    http: httpx.Client

    def queued(self) -> int:
        return len(self.rig.query("SELECT id FROM webhook_queue"))

    def runs(self) -> int:
        return len(self.rig.runs())

    def writes(self) -> int:
        return sum(1 for r in self.rig.emulator.requests if r.method != "GET")

    def generic(self, body: bytes, header: str) -> httpx.Response:
        return self.http.post(
            self.daemon.url("/webhooks/generic"),
            content=body,
            headers={"X-Orgsync-Signature": header, "Content-Type": "application/json"},
        )

    def entra(self, document: object, **params: str) -> httpx.Response:
        return self.http.post(
            self.daemon.url("/webhooks/entra"), json=document, params=params or None
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("webhook-endpoints")
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=folder, emulator=emulator, debounce="50ms")
        document = directory(PEOPLE)
        rig.write(document)
        daemon = rig.start()
        try:
            daemon.wait_started()
            wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=30, what="sync")
            wait_for(rig.finished_runs, timeout=30, what="the first run")
            with httpx.Client(timeout=10) as http:
                yield Served(rig, daemon, http)
        finally:
            daemon.kill()


@pytest.fixture
def quiet(served: Served) -> Iterator[Served]:
    """Asserts the test queued, ran and wrote nothing."""
    before = (served.queued(), served.runs(), served.writes())
    yield served
    time.sleep(0.2)  # past the debounce: a run the test caused would have started
    assert (served.queued(), served.runs(), served.writes()) == before


BODY = json.dumps({"id": "forged", "emails": ["person1@example.com"]}).encode()


FORGED = [
    ("signed over another body", sign(SECRET.encode(), int(time.time()), b'{"emails": []}')),
    ("signed with another secret", sign(b"guessed", int(time.time()), BODY)),
    (
        "older than the window",
        sign(SECRET.encode(), int(time.time()) - 10 * REPLAY_WINDOW, BODY),
    ),
    ("from the future", sign(SECRET.encode(), int(time.time()) + 10 * REPLAY_WINDOW, BODY)),
    ("far future", sign(SECRET.encode(), 10**12 - 1, BODY)),
    ("no timestamp", "v1=" + sign(SECRET.encode(), 0, BODY).split("v1=")[1]),
    ("many guesses", "t=1," + ",".join(f"v1={i:064x}" for i in range(200))),
]


@pytest.mark.parametrize(("name", "header"), FORGED, ids=[name for name, _ in FORGED])
def test_a_delivery_not_signed_for_this_body_and_time_is_a_401_and_nothing_more(
    quiet: Served, name: str, header: str
) -> None:
    answer = quiet.generic(BODY, header)
    assert answer.status_code == 401, (name, answer.text)
    assert "person1" not in answer.text


def test_a_captured_delivery_sent_again_within_the_window_runs_once(served: Served) -> None:
    at = int(time.time()) + REPLAY_WINDOW - 5  # dated ahead: the longest it could live
    body = json.dumps({"emails": ["person2@example.com"]}).encode()
    header = sign(SECRET.encode(), at, body)
    runs = served.runs()
    assert served.generic(body, header).status_code == 202
    wait_for(lambda: served.runs() > runs, timeout=30, what="the delivery's run")
    for _ in range(3):
        replay = served.generic(body, header)
        assert replay.status_code == 409, replay.text
    # The same body with the header's pieces reordered and the hex in capitals is the
    # same signature: still a replay.
    t, v1 = header.split(",")
    assert served.generic(body, f"{v1.upper().replace('V1=', 'v1=')},{t}").status_code == 409
    time.sleep(0.2)
    assert served.runs() == runs + 1


def test_an_unauthenticated_flood_costs_a_401_each_and_queues_nothing(quiet: Served) -> None:
    """600 forged deliveries (generic, Okta, Graph) on one connection: each is refused
    before anything is queued; the probes and a genuine delivery still answer."""
    daemon, http = quiet.daemon, quiet.http
    started = time.monotonic()
    for i in range(200):
        body = json.dumps({"id": f"flood-{i}", "emails": [f"x{i}@example.com"]}).encode()
        assert quiet.generic(body, sign(b"wrong", int(time.time()), body)).status_code == 401
        okta = http.post(
            daemon.url("/webhooks/okta"),
            json={"data": {"events": []}},
            headers={"Authorization": f"guess-{i}"},
        )
        assert okta.status_code == 401
        graph = {"value": [{"clientState": f"guess-{i}", "resource": f"Users/u{i}"}]}
        assert quiet.entra(graph).status_code == 401
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"600 refusals took {elapsed:.1f}s"
    assert http.get(daemon.probe_url("/healthz")).status_code == 200
    metrics = http.get(daemon.probe_url("/metrics")).text
    for kind, result in (("generic", "bad_signature"), ("okta", "unauthorized")):
        line = f'orgsync_webhooks_total{{kind="{kind}",result="{result}"}}'
        (count,) = [float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line)]
        assert count >= 200


TOKEN = "Validation: <script>alert(document.domain)</script>\r\nSet-Cookie: a=b"


def test_the_validation_echo_is_inert_text_and_bounded(quiet: Served) -> None:
    """Graph cannot authenticate its validation request, so anyone can make the daemon
    echo a string: it goes back as the body only (never a header), as text/plain that a
    browser must not sniff into a page, and at most 1024 characters."""
    answer = quiet.entra(None, validationToken=TOKEN)
    assert answer.status_code == 200
    assert answer.text == TOKEN
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert answer.headers["cache-control"] == "no-store"
    assert "set-cookie" not in answer.headers
    too_long = quiet.entra(None, validationToken="x" * 1025)
    assert too_long.status_code == 400 and "x" * 100 not in too_long.text


def test_the_okta_challenge_is_echoed_only_to_the_authorized_caller(quiet: Served) -> None:
    challenge = "<script>alert(1)</script>"
    url = quiet.daemon.url("/webhooks/okta")
    for headers in (
        {"X-Okta-Verification-Challenge": challenge},
        {"X-Okta-Verification-Challenge": challenge, "Authorization": OKTA_AUTH[:-1]},
    ):
        refused = quiet.http.get(url, headers=headers)
        assert refused.status_code == 401 and "script" not in refused.text
    answer = quiet.http.get(
        url, headers={"X-Okta-Verification-Challenge": challenge, "Authorization": OKTA_AUTH}
    )
    assert answer.status_code == 200
    assert answer.json() == {"verification": challenge}
    assert answer.headers["content-type"] == "application/json"


USER = {
    "subscriptionId": "s1",
    "changeType": "updated",
    "resource": "Users/p1",
    "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "p1"},
}


@pytest.mark.parametrize(
    ("name", "items"),
    [
        ("no clientState", [USER]),
        ("wrong clientState", [{**USER, "clientState": GRAPH_STATE + "x"}]),
        ("clientState not a string", [{**USER, "clientState": [GRAPH_STATE]}]),
        (
            "one right, one wrong",
            [{**USER, "clientState": GRAPH_STATE}, {**USER, "clientState": "guess"}],
        ),
    ],
)
def test_graph_notifications_without_the_client_state_are_refused(
    quiet: Served, name: str, items: list[dict[str, object]]
) -> None:
    answer = quiet.entra({"value": items})
    assert answer.status_code == 401, (name, answer.text)


def test_a_notification_for_a_subscription_orgsync_never_made_changes_nothing(
    served: Served,
) -> None:
    """The right clientState (a leaked one, or a second subscription reusing it) on a
    notification for another tenant naming a user this IdP does not have: a reconcile of
    a stranger reads the IdP and finds nobody to change."""
    runs, writes = served.runs(), served.writes()
    stranger = {
        **USER,
        "clientState": GRAPH_STATE,
        "subscriptionId": "not-one-of-ours",
        "tenantId": "another-tenant",
        "resource": "Users/ghost-0000",
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "ghost-0000"},
    }
    assert served.entra({"value": [stranger]}).status_code == 202
    wait_for(
        lambda: served.runs() > runs and served.rig.finished_runs()[-1]["status"] != "running",
        timeout=30,
        what="the stranger's run",
    )
    assert served.writes() == writes
    assert served.rig.finished_runs()[-1]["status"] == "ok"


def test_the_daemon_logged_no_traceback(served: Served, tmp_path: Path) -> None:
    assert "Traceback" not in served.daemon.log_path.read_text(encoding="utf-8")
