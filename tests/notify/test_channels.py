"""Each channel against a real receiver on loopback: what arrives, signed and shaped as
documented, and how each failure is classified (retried or not)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import parse_config
from orgsync.core.errors import RequestRejected, TransientError
from orgsync.daemon.webhooks import sign as daemon_sign
from orgsync.notify import build_dispatcher
from orgsync.notify.events import Notification
from orgsync.notify.render import Delivery, Redactor
from orgsync.notify.senders import EmailChannel, SlackChannel, WebhookChannel, sign
from tests.cli.test_proxy import Tinyproxy
from tests.notify.receivers import HttpReceiver, SmtpReceiver, closed_port_url
from tests.sources.servers import TlsFiles, free_port, make_tls

SECRET = b"notify-test-secret-0123456789"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT = Notification(
    kind="held",
    target="openai-prod",
    at=AT,
    trigger="cli",
    run_id="r1",
    held=3,
    guards=(("3 removals exceed safety.max_removals = 1", 3),),
    held_subjects=("remove_member a@example.com",),
    checksum="sha256:abc",
)
DELIVERY = Delivery(id="delivery-1", host="host-1")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def webhook(url: str, *, timeout: float = 5, secret: bytes = SECRET) -> WebhookChannel:
    return WebhookChannel(url, secret=secret, timeout=timeout, ca_file=None, redact=Redactor())


def test_the_signature_is_the_daemons_own_scheme() -> None:
    assert sign(SECRET, 1_700_000_000, b"{}") == daemon_sign(SECRET, 1_700_000_000, b"{}")


def test_a_webhook_arrives_signed_with_the_event_as_json() -> None:
    with HttpReceiver(secret=SECRET) as receiver:
        channel = webhook(receiver.url)
        channel.send(EVENT, DELIVERY)
        channel.close()
        (request,) = receiver.received
    assert request.signature_ok is True
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-orgsync-event"] == "held"
    assert request.headers["x-orgsync-delivery"] == "delivery-1"
    body: dict[str, Any] = request.json()
    assert body["id"] == "delivery-1"
    assert (body["kind"], body["target"], body["held"]) == ("held", "openai-prod", 3)
    assert body["guards"] == [
        {"reason": "3 removals exceed safety.max_removals = 1", "operations": 3}
    ]
    assert "orgsync sync --dry-run --target openai-prod" in body["commands"]
    assert body["text"].startswith("openai-prod: 3 operations held by the safety gate")


def test_a_receiver_with_another_secret_refuses_it() -> None:
    with HttpReceiver(secret=b"the-receivers-own-secret") as receiver:
        channel = webhook(receiver.url)
        with pytest.raises(RequestRejected, match="answered 401"):
            channel.send(EVENT, DELIVERY)
        channel.close()
        assert receiver.received[0].signature_ok is False


@pytest.mark.parametrize(
    ("answer", "error", "retry_after"),
    [
        (500, TransientError, None),
        (503, TransientError, None),
        ((429, 7), TransientError, 7.0),
        (400, RequestRejected, None),
        (404, RequestRejected, None),
        (302, RequestRejected, None),
    ],
)
def test_5xx_and_429_are_transient_other_answers_are_final(
    answer: Any, error: type[Exception], retry_after: float | None
) -> None:
    with HttpReceiver(secret=SECRET, default=answer) as receiver:
        channel = webhook(receiver.url)
        with pytest.raises(error) as raised:
            channel.send(EVENT, DELIVERY)
        channel.close()
    if retry_after is not None:
        assert isinstance(raised.value, TransientError)
        assert raised.value.retry_after == retry_after


def test_a_hanging_receiver_is_a_timeout_and_a_closed_port_a_transient_error() -> None:
    with HttpReceiver(secret=SECRET, default="hang") as receiver:
        channel = webhook(receiver.url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TransientError, match="no answer within"):
            channel.send(EVENT, DELIVERY)
        assert time.monotonic() - started < 3
        channel.close()
    channel = webhook(closed_port_url())
    with pytest.raises(TransientError, match="cannot deliver"):
        channel.send(EVENT, DELIVERY)


def test_slack_gets_text_and_blocks_and_errors_never_show_its_url() -> None:
    with HttpReceiver() as receiver:
        url = receiver.url + "/T000/B000/url-is-the-secret"
        channel = SlackChannel(url, timeout=5, ca_file=None, redact=Redactor([url]))
        channel.send(EVENT, DELIVERY)
        body = receiver.received[0].json()
        receiver.default = 404
        with pytest.raises(RequestRejected) as raised:
            channel.send(EVENT, DELIVERY)
        channel.close()
    assert body["text"] == "openai-prod: 3 operations held by the safety gate"
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    assert "orgsync status" in body["blocks"][2]["text"]["text"]
    assert "url-is-the-secret" not in str(raised.value)


# --------------------------------------------------------------------------- e-mail


def email(port: int, tls_files: TlsFiles | None, **overrides: Any) -> EmailChannel:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "starttls",
        "sender": "orgsync@example.com",
        "recipients": ["ops@example.com", "oncall@example.com"],
        "subject_prefix": "[orgsync]",
        "username": None,
        "password": None,
        "timeout": 5.0,
        "ca_file": tls_files.ca if tls_files else None,
        "redact": Redactor(),
    }
    settings.update(overrides)
    return EmailChannel(**settings)


def test_email_over_starttls_with_auth_verifies_the_server(tls: TlsFiles) -> None:
    with SmtpReceiver(tls, tls="starttls", users={"orgsync": "smtp-pass-123"}) as server:
        email(server.port, tls, username="orgsync", password="smtp-pass-123").send(EVENT, DELIVERY)
        (mail,) = server.wait_for(1)
    assert mail.tls and mail.authenticated == "orgsync"
    assert mail.mail_from == "orgsync@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert mail.message["Subject"] == "[orgsync] openai-prod: 3 operations held by the safety gate"
    body = mail.message.get_content()
    assert "remove_member a@example.com" in body and "orgsync status" in body
    assert "smtp-pass-123" not in body


def test_email_over_implicit_tls(tls: TlsFiles) -> None:
    with SmtpReceiver(tls, tls="implicit") as server:
        email(server.port, tls, tls="implicit").send(EVENT, DELIVERY)
        (mail,) = server.wait_for(1)
    assert mail.tls


def test_an_untrusted_certificate_is_refused_not_retried(tls: TlsFiles, tmp_path: Path) -> None:
    with SmtpReceiver(tls, tls="starttls") as server:
        with pytest.raises(RequestRejected, match="certificate"):
            email(server.port, None).send(EVENT, DELIVERY)  # system CAs only
        assert server.messages == []
    other = make_tls(tmp_path / "other")
    with SmtpReceiver(tls, tls="implicit") as server:
        with pytest.raises(RequestRejected, match="certificate"):
            email(server.port, other, tls="implicit").send(EVENT, DELIVERY)


def test_a_server_without_starttls_gets_nothing_in_clear() -> None:
    with SmtpReceiver(None, tls="none") as server:
        with pytest.raises(RequestRejected, match="offers no STARTTLS"):
            email(server.port, None).send(EVENT, DELIVERY)
        assert server.messages == []
        email(server.port, None, tls="none").send(EVENT, DELIVERY)  # allow_plaintext
        assert len(server.wait_for(1)) == 1


def test_a_wrong_password_is_final(tls: TlsFiles) -> None:
    with SmtpReceiver(tls, tls="starttls", users={"orgsync": "right"}) as server:
        with pytest.raises(RequestRejected, match="SMTP 535"):
            email(server.port, tls, username="orgsync", password="wrong").send(EVENT, DELIVERY)


def test_smtp_4yz_is_transient_5yz_final(tls: TlsFiles) -> None:
    replies = ["451 4.3.0 try again later", "554 5.7.1 rejected"]
    with SmtpReceiver(tls, tls="starttls", replies=replies) as server:
        channel = email(server.port, tls)
        with pytest.raises(TransientError, match="SMTP 451"):
            channel.send(EVENT, DELIVERY)
        with pytest.raises(RequestRejected, match="SMTP 554"):
            channel.send(EVENT, DELIVERY)
        channel.send(EVENT, DELIVERY)
        assert len(server.wait_for(1)) == 1


def test_a_dead_smtp_server_is_transient() -> None:
    with pytest.raises(TransientError, match="cannot reach"):
        email(free_port(), None).send(EVENT, DELIVERY)


def test_a_teams_message_is_one_adaptive_card(tmp_path: Path) -> None:
    """`type = "teams"`: what a Teams Workflows webhook takes (Adaptive Cards only; the
    generic webhook's document has no card, and its template flow posts nothing of it):
    one card with the title, the lines, the commands and the footer, in UTF-8. Built
    from the configuration as the daemon builds it; Workflows answers 202."""
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {"name": "prod", "type": "openai", "base_url": "https://x.test/v1", "api_key_env": "K"}
        ],
        "state": {"path": str(tmp_path / "orgsync.db")},
        "notify": [
            {"name": "teams", "type": "teams", "url_env": "TEAMS_URL", "allow_plaintext": True}
        ],
    }
    config = parse_config(document, origin="orgsync.toml", base_dir=tmp_path)
    with HttpReceiver(default=202) as receiver:
        url = f"{receiver.url}/workflows/abc/triggers/manual/paths/invoke?sig=SIG0123456789"
        dispatcher = build_dispatcher(config, {"TEAMS_URL": url}, strict=True)
        dispatcher.publish(replace(EVENT, target="prod", guards=(("max_removals é", 3),)))
        assert dispatcher.close(timeout=10)
        (request,) = receiver.received
    assert dispatcher.counts == {("teams", "sent"): 1}
    assert request.headers["content-type"] == "application/json"
    assert "é".encode() in request.body  # UTF-8, not \\u escapes
    body = request.json()
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    texts = [block["text"] for block in card["body"]]
    assert all(block["type"] == "TextBlock" and block["wrap"] for block in card["body"])
    assert texts[0] == "prod: 3 operations held by the safety gate"
    assert "• remove_member a@example.com" in texts
    assert "orgsync sync --dry-run --target prod" in texts
    assert texts[-1].startswith("orgsync on ")


@pytest.fixture
def behind_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Tinyproxy]:
    """The environment names a real tinyproxy for every HTTP call, loopback included."""
    server = Tinyproxy(tmp_path)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    try:
        yield server
    finally:
        server.stop()


def test_a_webhook_goes_through_the_environments_proxy_and_never_around_it(
    behind_proxy: Tinyproxy,
) -> None:
    """Documented (reference, "Egress proxy") and untested before the channels moved
    onto `orgsync.http.client.new_client`: the message goes through the proxy; with the
    proxy down it is a retried failure, and the receiver hears nothing directly."""
    with HttpReceiver(secret=SECRET) as receiver:
        channel = webhook(receiver.url)
        channel.send(EVENT, DELIVERY)
        channel.close()
        assert len(receiver.received) == 1
        port = receiver.url.split(":")[2].split("/")[0]
        assert any(f"127.0.0.1:{port}" in line for line in behind_proxy.requests())
        behind_proxy.stop()
        channel = webhook(receiver.url)
        with pytest.raises(TransientError, match="cannot deliver"):
            channel.send(EVENT, DELIVERY)
        channel.close()
        assert len(receiver.received) == 1
