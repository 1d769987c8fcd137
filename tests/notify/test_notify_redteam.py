"""Notifications red-teamed: what a careless operator or an attacker can make them do,
each tried against real receivers on loopback.

The harms looked for:
- a leaked secret: the Slack URL (it is the credential), a token in a webhook URL or a
  signing key in a log line, an error, `status`/`runs`, the state directory, a redirect
  that forwards the message elsewhere, a TLS connection nobody verified; a chat
  service's webhook URL pasted into the configuration file;
- hostile directory content (a display name, a group name, an e-mail an IdP user can set):
  a Slack ping or link, a reordered line, a character that makes a channel fail, so that
  one person silences the alert about their own change;
- a receiver that trickles, answers endlessly, refuses forever or hangs: the entry's only
  sender thread held for hours (every later message dropped), the process' memory, an
  event claimed as told but never delivered, so the next process stays quiet about it;
- a flood: one failing target paging on every pass because its error carries a new trace
  id, many targets failing at once beyond `max_per_hour`.
The daemon's runs are not delayed by a hanging receiver (tests/daemon/test_notify_daemon.py)
and an `orgsync sync` with one waits a bounded time (tests/cli/test_notify_cli.py).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orgsync.config import Config, parse_config
from orgsync.core.errors import ConfigError, RequestRejected, TransientError
from orgsync.core.plan import HeldOperation, Plan, RemoveMember
from orgsync.notify import build_dispatcher
from orgsync.notify.dispatcher import Dispatcher, Route
from orgsync.notify.events import Notification, Standing, from_run, quarantine_change
from orgsync.notify.ledger import UNSENT_PER_ENTRY, UNSENT_TRIES, FileLedger, ledger_path
from orgsync.notify.render import Delivery, Redactor
from orgsync.notify.senders import SlackChannel, TeamsChannel, WebhookChannel
from tests.notify.receivers import HttpReceiver, SlowSmtp, SmtpReceiver
from tests.notify.test_channels import email
from tests.sources.servers import TlsFiles, make_tls

SECRET = b"redteam-notify-secret-0123456789"
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FAILED = Notification(kind="failed", target="prod", at=AT, error="HTTP 401: bad key")
HELD = Notification(kind="held", target="prod", at=AT, held=1, checksum="sha256:one")
EVENTS = frozenset({"held", "failed", "quarantined", "recovered"})
SLACK_TOKEN = "xoxWebhookToken0123456789abcdef"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def webhook(url: str, *, timeout: float = 5, ca_file: Path | None = None) -> WebhookChannel:
    return WebhookChannel(url, secret=SECRET, timeout=timeout, ca_file=ca_file, redact=Redactor())


def route(url: str, **settings: Any) -> Route:
    timeout = settings.pop("timeout", 5)
    channel = webhook(url, timeout=timeout)
    return Route(name="hook", channel=channel, events=EVENTS, timeout=timeout, **settings)


def notify_config(tmp_path: Path, entry: dict[str, Any]) -> Config:
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {"name": "prod", "type": "openai", "base_url": "https://x.test/v1", "api_key_env": "K"}
        ],
        "state": {"path": str(tmp_path / "orgsync.db")},
        "notify": [entry],
    }
    return parse_config(document, origin="orgsync.toml", base_dir=tmp_path)


def slack_config(tmp_path: Path, **entry: Any) -> Config:
    slack = {"name": "slack", "type": "slack", "url_env": "SLACK_URL", "allow_plaintext": True}
    return notify_config(tmp_path, slack | entry)


def logged(logs: list[dict[str, Any]]) -> str:
    return json.dumps(logs, default=str)


# --------------------------------------------------------------------------- secrets


def test_a_slack_url_quoted_back_by_a_404_page_is_not_logged(tmp_path: Path) -> None:
    """Web servers quote the request path in a 404 page; the path holds Slack's token.
    Redacting only the whole URL let the token into `notify.failed` (was broken)."""
    with HttpReceiver(default="echo-path") as receiver:
        url = f"{receiver.url}/services/T0ABC/B0DEF/{SLACK_TOKEN}"
        dispatcher = build_dispatcher(slack_config(tmp_path), {"SLACK_URL": url}, strict=True)
        with capture_logs() as logs:
            dispatcher.publish(FAILED)
            assert dispatcher.close(timeout=10)
        (request,) = receiver.received
    assert SLACK_TOKEN in request.path  # the receiver did quote it back
    assert dispatcher.counts == {("slack", "failed"): 1}
    failed = next(e for e in logs if e["event"] == "notify.failed")
    assert "answered 404" in failed["error"]
    assert SLACK_TOKEN not in logged(logs)
    assert "T0ABC/B0DEF" not in logged(logs)
    # Nor does the ledger beside the state database keep anything of it.
    ledger = (tmp_path / "orgsync.notify.db").read_bytes()
    assert SLACK_TOKEN.encode() not in ledger and b"bad key" not in ledger


def test_a_token_in_a_plain_webhook_url_quoted_back_is_not_logged(tmp_path: Path) -> None:
    """A receiver that wants a token in its URL (a catch hook, `?key=`) quotes it back
    in its 404 page; the webhook `url` was not redacted at all (was broken)."""
    with HttpReceiver(secret=SECRET, default="echo-path") as receiver:
        url = f"{receiver.url}/catch/123/{SLACK_TOKEN}?key={SLACK_TOKEN[::-1]}"
        hook = {"name": "hook", "type": "webhook", "url": url, "secret_env": "S"}
        cfg = notify_config(tmp_path, hook | {"allow_plaintext": True})
        dispatcher = build_dispatcher(cfg, {"S": SECRET.decode()}, strict=True)
        with capture_logs() as logs:
            dispatcher.publish(FAILED)
            assert dispatcher.close(timeout=10)
    assert "answered 404" in logged(logs)
    assert SLACK_TOKEN not in logged(logs) and SLACK_TOKEN[::-1] not in logged(logs)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"https:///services/T0/B0/{SLACK_TOKEN}", "names no host"),
        (f"https://hooks.slack.test:99999/services/T0/B0/{SLACK_TOKEN}", "bad host or port"),
        (f"https://hooks.slack.test/services/T0/B0/{SLACK_TOKEN} x", "a blank"),
        (f"http://hooks.slack.test/services/T0/B0/{SLACK_TOKEN}", "must start with https://"),
    ],
)
def test_a_broken_slack_url_is_refused_at_start_without_being_shown(
    tmp_path: Path, url: str, problem: str
) -> None:
    """A pasted URL with a typo failed each event as a retried "cannot deliver"; now the
    daemon refuses to start (and `orgsync validate` fails) naming the key, not the URL."""
    config = slack_config(tmp_path, allow_plaintext=False)
    with pytest.raises(ConfigError, match=problem) as raised:
        build_dispatcher(config, {"SLACK_URL": url}, strict=True)
    assert "notify.slack.url" in str(raised.value)
    assert SLACK_TOKEN not in str(raised.value) and "hooks.slack" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        f"https://hooks.slack.com/services/T0ABC/B0DEF/{SLACK_TOKEN}",
        f"https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/{SLACK_TOKEN}/x",
        f"https://prod-01.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig={SLACK_TOKEN}",
        f"https://discord.com/api/webhooks/123/{SLACK_TOKEN}",
        f"https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token={SLACK_TOKEN}",
        f"http://HOOKS.SLACK.COM/services/T0ABC/B0DEF/{SLACK_TOKEN}",
    ],
)
def test_a_chat_services_webhook_url_in_the_file_is_refused_without_being_shown(url: str) -> None:
    """A careless operator pastes a Slack or Teams incoming-webhook URL (whoever has it
    can post) into a `type = "webhook"` entry, in the configuration file, where secrets are
    refused; it was accepted, and a plain-HTTP one was quoted in the error (was broken)."""
    document = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [
            {"name": "prod", "type": "openai", "base_url": "https://x.test/v1", "api_key_env": "K"}
        ],
        "notify": [{"name": "chat", "type": "webhook", "url": url, "secret_env": "S"}],
    }
    with pytest.raises(ConfigError, match="give it with url_env or url_file") as raised:
        parse_config(document, origin="orgsync.toml", base_dir=Path("/etc/orgsync"))
    assert SLACK_TOKEN not in str(raised.value)
    assert "notify" in str(raised.value)


def test_a_plain_http_slack_url_is_warned_about_once_allowed(tmp_path: Path) -> None:
    """`allow_plaintext` lets an http:// Slack URL through (a loopback rig); its token then
    travels in clear, which the webhook and e-mail channels warned about and Slack did not."""
    url = f"http://127.0.0.1:9/services/T0/B0/{SLACK_TOKEN}"
    with capture_logs() as logs:
        build_dispatcher(slack_config(tmp_path), {"SLACK_URL": url}, strict=True)
    assert [(e["event"], e["entry"]) for e in logs] == [("notify.plaintext", "slack")]
    assert SLACK_TOKEN not in logged(logs)


def test_distinct_failures_beyond_the_rate_limit_leave_no_ledger_rows(
    tmp_path: Path,
) -> None:
    """Events the rate limit drops are not taken as told, and leave no row behind."""
    path = ledger_path(tmp_path / "orgsync.db")
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher(
            [route(receiver.url, max_per_hour=3)], ledger=FileLedger(path), queue_size=50
        )
        for i in range(15):
            dispatcher.publish(replace(FAILED, error=f"HTTP 500: broken part {'x' * (i % 50)}"))
        assert dispatcher.close(timeout=20)
    with closing(sqlite3.connect(path)) as db:
        rows = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sent", "pending", "sendings")
        }
    assert len(receiver.received) == 3
    assert rows == {"sent": 3, "pending": 0, "sendings": 3}


def test_a_webhook_url_carrying_a_token_is_given_as_a_secret_and_never_shown(
    tmp_path: Path,
) -> None:
    """The refusal above has somewhere to go: `url_env`/`url_file` on a webhook entry.
    The message arrives signed; what the receiver quotes back of the URL is redacted."""
    with HttpReceiver(secret=SECRET, script=[200, "echo-path"]) as receiver:
        url = f"{receiver.url}/workflows/abc/invoke?sig={SLACK_TOKEN}"
        hook = {"name": "hook", "type": "webhook", "url_env": "HOOK_URL", "secret_env": "S"}
        cfg = notify_config(tmp_path, hook | {"allow_plaintext": True})
        dispatcher = build_dispatcher(cfg, {"S": SECRET.decode(), "HOOK_URL": url}, strict=True)
        with capture_logs() as logs:
            dispatcher.publish(FAILED)
            dispatcher.publish(HELD)
            assert dispatcher.close(timeout=10)
        signed, quoted = receiver.received
    assert signed.signature_ok is True and SLACK_TOKEN in signed.path
    assert SLACK_TOKEN in quoted.path and "answered 404" in logged(logs)
    assert SLACK_TOKEN not in logged(logs)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"url": "https://h.test/x", "url_env": "U"}, "got url, url_env"),
        ({}, "give one of url, url_env or url_file"),
    ],
)
def test_a_webhook_takes_exactly_one_of_url_url_env_url_file(
    tmp_path: Path, keys: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        notify_config(tmp_path, {"name": "hook", "type": "webhook", "secret_env": "S", **keys})


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_a_redirect_to_another_host_is_not_followed(kind: str) -> None:
    """A receiver (or whoever took over its DNS name) answering 307 elsewhere gets the
    message no further, the other host hears nothing, the error does not name it."""
    with HttpReceiver() as elsewhere:
        target = elsewhere.url + "?collect=1"
        with HttpReceiver(secret=SECRET, default=("redirect", target)) as receiver:
            if kind == "webhook":
                channel: WebhookChannel | SlackChannel = webhook(receiver.url)
            else:
                secret_url = f"{receiver.url}/services/T0/B0/{SLACK_TOKEN}"
                channel = SlackChannel(
                    secret_url, timeout=5, ca_file=None, redact=Redactor([secret_url])
                )
            with pytest.raises(RequestRejected, match="answered 307") as raised:
                channel.send(HELD, Delivery(id="d1"))
            channel.close()
            assert len(receiver.received) == 1
        assert elsewhere.received == []
    assert "collect" not in str(raised.value) and str(elsewhere.url) not in str(raised.value)


def test_https_receivers_are_verified_by_default(tls: TlsFiles, tmp_path: Path) -> None:
    """No `ca_file`: a private certificate is refused, not retried, and sent nothing;
    with the CA that signed it, the same receiver gets the signed message."""
    with HttpReceiver(secret=SECRET, tls=tls) as receiver:
        with pytest.raises(RequestRejected, match="certificate not trusted"):
            webhook(receiver.url).send(HELD, Delivery(id="d1"))
        other = make_tls(tmp_path / "other")
        with pytest.raises(RequestRejected, match="certificate not trusted"):
            webhook(receiver.url, ca_file=other.ca).send(HELD, Delivery(id="d1"))
        assert receiver.received == []
        webhook(receiver.url, ca_file=tls.ca).send(HELD, Delivery(id="d1"))
        (request,) = receiver.received
    assert request.signature_ok is True


# --------------------------------------------------------------------------- hostile content

HOSTILE = (
    "<!channel> <!here|here> <@U0123> @here @channel",
    "<https://evil.example/login|Click to approve> [approve](https://evil.example)",
    "<b>bold</b><script>alert(1)</script> &lt;!channel&gt;",
    "alice\u202e@moc.elpmaxe\u202c bob\u2066x\u2069",
    "lone\ud800surrogate \udfff",
    "x" * 20_000,
    "line\r\nBcc: victim@example.com\x1b[2J\x00",
)


def hostile_held() -> Notification:
    """A held plan as `from_run` makes it of removals whose subjects a directory user set."""
    held = [
        HeldOperation(
            operation=RemoveMember(email=text, user_id=f"u{i}", reason="not in the source"),
            guard="group <!subteam^S123> holds \ud83d everyone",
        )
        for i, text in enumerate(HOSTILE)
    ]
    plan = Plan.build(target="prod", generated_at=AT, operations=[], held=held)
    event = from_run(Run(plan), Mode(), AT)
    assert event is not None
    return event


@dataclass
class Run:
    plan: Plan
    target: str = "prod"
    status: str = "held"
    run_id: str | None = "run-1"
    report: None = None
    error: str | None = None


@dataclass
class Mode:
    dry_run: bool = False
    trigger: str = "schedule"


def test_directory_markup_pings_nobody_forges_no_link_and_keeps_slack_blocks_valid() -> None:
    with HttpReceiver() as receiver:
        secret_url = f"{receiver.url}/services/T0/B0/{SLACK_TOKEN}"
        channel = SlackChannel(secret_url, timeout=5, ca_file=None, redact=Redactor([secret_url]))
        channel.send(hostile_held(), Delivery(id="d1"))
        channel.close()
        (request,) = receiver.received
    raw = request.body.decode("utf-8")  # strict: valid UTF-8
    assert "\\ud8" not in raw and "\\udf" not in raw  # no lone surrogate a strict parser refuses
    payload = json.loads(raw)
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(element["text"] for element in block.get("elements", ()))
    for text in texts:
        # Slack's only markup for mentions and links is <...>: none may survive.
        assert "<" not in text and ">" not in text, text
        assert "\u202e" not in text and "\x1b" not in text and "\r" not in text
    assert payload["unfurl_links"] is False and payload["unfurl_media"] is False
    header = payload["blocks"][0]["text"]["text"]
    assert len(header) <= 150
    assert all(len(text) <= 3000 for text in texts)
    assert "\\u202e" in payload["blocks"][1]["text"]["text"]  # shown, not obeyed


LINKS = ("http://evil.example/login", "www.evil.example", "https://evil.example")


def linked_held() -> Notification:
    """A held plan naming people and groups a directory user called after a phishing page."""
    held = [
        HeldOperation(
            operation=RemoveMember(email=text, user_id=f"u{i}", reason="not in the source"),
            guard=f"group {LINKS[0]} lost everyone",
        )
        for i, text in enumerate(LINKS)
    ]
    plan = Plan.build(target="prod", generated_at=AT, operations=[], held=held)
    event = from_run(Run(plan), Mode(), AT)
    assert event is not None
    return event


def test_a_bare_url_in_a_name_is_no_link_in_slack_email_or_the_webhook_text() -> None:
    """Harm: a group named `http://evil.example/login` became a clickable link in the
    alert an administrator reads (Slack links a bare URL: escaping `<`/`>` only stops
    forged `<url|label>` links; mail readers link URLs in plain text). Was broken: every
    channel carried the URL as is. Now written `http[:]//evil[.]example/login` in each,
    readable, and Slack's mrkdwn is `verbatim` (no link made of a bare domain either)."""
    with (
        HttpReceiver() as slack,
        HttpReceiver(secret=SECRET) as hook,
        SmtpReceiver(None, tls="none") as smtp,
    ):
        secret_url = f"{slack.url}/services/T0/B0/{SLACK_TOKEN}"
        channel = SlackChannel(secret_url, timeout=5, ca_file=None, redact=Redactor([secret_url]))
        channel.send(linked_held(), Delivery(id="d1"))
        channel.close()
        webhook(hook.url).send(linked_held(), Delivery(id="d1"))
        mail = email(smtp.port, None, tls="none", recipients=["ops@example.com"])
        mail.send(linked_held(), Delivery(id="d1"))
        (message,) = smtp.wait_for(1)
    payload = slack.received[0].json()
    texts = [b["text"] for b in payload["blocks"] if "text" in b]
    texts += [e for b in payload["blocks"] for e in b.get("elements", ())]
    mrkdwn = [text for text in texts if text["type"] == "mrkdwn"]
    assert mrkdwn and all(text["verbatim"] is True for text in mrkdwn)
    readings = {
        "slack": json.dumps(payload, ensure_ascii=False),
        "webhook text": hook.received[0].json()["text"],
        "e-mail": message.message.get_content(),
    }
    for channel_name, text in readings.items():
        for link in ("://", "www.", "evil.example"):
            assert link not in text, (channel_name, link)
        assert "http[:]//evil[.]example/login" in text, channel_name  # still readable
        assert "www[.]evil[.]example" in text, channel_name


def test_directory_markup_forges_no_link_in_a_teams_card_and_stays_under_its_limit() -> None:
    """Adaptive Card text is Markdown: a name `[Click to approve](https://evil.example)`
    would be a link with a label the attacker chose, and a bare URL a link too. Neither
    is; the 20 000-character name and the rest stay under Teams' 28 KB; the `sig` a
    404 page quotes back is not logged."""
    with HttpReceiver(script=[202, 202, "echo-path"]) as receiver:
        secret_url = f"{receiver.url}/workflows/w/triggers/manual/paths/invoke?sig={SLACK_TOKEN}"
        channel = TeamsChannel(
            secret_url, timeout=5, ca_file=None, redact=Redactor([secret_url, SLACK_TOKEN])
        )
        channel.send(hostile_held(), Delivery(id="d1"))
        channel.send(linked_held(), Delivery(id="d2"))
        with pytest.raises(RequestRejected, match="answered 404") as raised:
            channel.send(FAILED, Delivery(id="d3"))
        channel.close()
    assert SLACK_TOKEN not in str(raised.value)
    for request in receiver.received[:2]:
        assert len(request.body) < 28_000
        card = request.json()["attachments"][0]["content"]
        for block in card["body"]:
            text = block["text"]
            assert re.search(r"\]\s*\(", text) is None, text  # no [label](url)
            assert "://" not in text and "\u202e" not in text, text
    texts = " ".join(
        b["text"] for b in receiver.received[1].json()["attachments"][0]["content"]["body"]
    )
    assert "http[:]//evil[.]example/login" in texts


def test_a_lone_surrogate_in_a_name_cannot_silence_the_email_or_the_webhook() -> None:
    """A JSON source can hand over "\\ud800"; in an e-mail it raised UnicodeEncodeError,
    a final failure: one user's display name stopped the alert (was broken)."""
    with SmtpReceiver(None, tls="none") as smtp, HttpReceiver(secret=SECRET) as hook:
        mail = email(smtp.port, None, tls="none", recipients=["ops@example.com"])
        mail.send(hostile_held(), Delivery(id="d1"))
        (message,) = smtp.wait_for(1)
        webhook(hook.url).send(hostile_held(), Delivery(id="d1"))
        (request,) = hook.received
    content = message.message.get_content()
    assert "lone\ufffdsurrogate" in content
    assert message.message["Bcc"] is None
    body = request.body.decode("utf-8")
    assert "\\ud8" not in body and "\\udf" not in body
    document = json.loads(body)
    assert document["held"] == len(HOSTILE) and document["held_not_listed"] == 0
    assert len(request.body) < 12_000  # 20 000 characters of one name were cut


# --------------------------------------------------------------------------- bad receivers


def test_a_receiver_trickling_its_answer_costs_one_timeout() -> None:
    """httpx's timeout bounds each read: a receiver sending a header line every 0.1 s
    held the sender thread as long as it liked (was broken: the whole 5 s here)."""
    with HttpReceiver(secret=SECRET, default="trickle") as receiver:
        channel = webhook(receiver.url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"no answer within 0\.5s"):
            channel.send(FAILED, Delivery(id="d1"))
        took = time.monotonic() - started
        receiver.default = 200
        channel.send(FAILED, Delivery(id="d2"))  # the next attempt has a working client
        channel.close()
    print(f"\ntrickling receiver: gave up after {took:.2f} s")
    assert took < 1.5
    assert len(receiver.received) == 2


def test_an_smtp_server_trickling_its_greeting_costs_one_timeout() -> None:
    """smtplib's timeout bounds each read too: a greeting a line every 0.1 s held the
    e-mail entry's thread for as long as the server went on (was broken)."""
    with SlowSmtp() as server:
        channel = email(
            server.port, None, tls="starttls", recipients=["ops@example.com"], timeout=0.5
        )
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"no answer within 0\.5s"):
            channel.send(FAILED, Delivery(id="d1"))
        took = time.monotonic() - started
    assert took < 1.5


def test_an_endless_refusal_is_read_no_further_than_its_start() -> None:
    """A 500 whose body never ends was read whole for the error message (memory, and
    the thread held as long as it lasted); now its first 4 KiB are enough."""
    with HttpReceiver(secret=SECRET, default="endless") as receiver:
        channel = webhook(receiver.url, timeout=3)
        started = time.monotonic()
        with pytest.raises(TransientError, match="answered 500") as raised:
            channel.send(FAILED, Delivery(id="d1"))
        took = time.monotonic() - started
        channel.close()
    assert took < 1.0
    assert len(str(raised.value)) < 300


def test_an_endless_acceptance_is_delivered_reading_no_more_than_its_start() -> None:
    """A 200 whose body never ends: the message is delivered (the status says so) after
    reading at most the first 4 KiB, not held until the receiver stops talking."""
    with HttpReceiver(secret=SECRET, default="endless-ok") as receiver:
        channel = webhook(receiver.url, timeout=3)
        started = time.monotonic()
        channel.send(FAILED, Delivery(id="d1"))
        took = time.monotonic() - started
        channel.close()
    assert took < 1.0
    assert len(receiver.received) == 1


def test_a_receiver_refusing_forever_gets_max_attempts_then_the_next_event_tries_again() -> None:
    with HttpReceiver(secret=SECRET, default=(429, 0)) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_attempts=3)])
        with capture_logs() as logs:
            dispatcher.publish(FAILED)
            dispatcher.publish(FAILED)  # the failed one was not taken for told
            assert dispatcher.close(timeout=20)
    assert len(receiver.received) == 6
    assert dispatcher.counts == {("hook", "failed"): 2}
    assert sum(e["event"] == "notify.failed" for e in logs) == 2


def test_a_retry_after_of_a_day_is_not_waited_for() -> None:
    """The retry budget (60 s a message) is spent at once: the message fails, logged,
    and nothing sleeps for a day in the entry's thread."""
    with HttpReceiver(secret=SECRET, default=(429, 86400)) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_attempts=3)])
        dispatcher.publish(FAILED)
        started = time.monotonic()
        assert dispatcher.close(timeout=5)
        assert time.monotonic() - started < 1.5
    assert len(receiver.received) == 1
    assert dispatcher.counts == {("hook", "failed"): 1}


def test_an_event_abandoned_at_exit_is_told_by_the_next_process(tmp_path: Path) -> None:
    """`orgsync sync` stops waiting after DRAIN_SECONDS while a send is still blocked in
    the receiver; its claim stayed in the ledger, so the next sync took the failure for
    one already told and said nothing for `repeat_after` (was broken)."""
    path = ledger_path(tmp_path / "orgsync.db")
    with (
        HttpReceiver(secret=SECRET, default="hang") as hanging,
        HttpReceiver(secret=SECRET) as working,
    ):
        first = Dispatcher([route(hanging.url, timeout=30)], ledger=FileLedger(path))
        first.publish(FAILED)
        hanging.wait_for(1)
        assert first.close(timeout=0.2) is False  # its send is still blocked
        second = Dispatcher([route(working.url)], ledger=FileLedger(path))
        second.publish(FAILED)
        assert second.close(timeout=10)
        assert len(working.received) == 1
    assert second.counts == {("hook", "sent"): 1}


def test_an_event_claimed_by_a_process_killed_mid_send_is_told_by_the_next(
    tmp_path: Path,
) -> None:
    """A sync killed by a cron timeout (or a daemon by systemd) while sending left its
    claim in the ledger: the event read as told, nobody heard of it for `repeat_after`
    (was broken). A claim neither confirmed nor released in time is undone."""
    path = ledger_path(tmp_path / "orgsync.db")
    hook = route("http://127.0.0.1:9/unused")
    key = ("hook", FAILED.target, FAILED.kind, FAILED.fingerprint or "")
    killed = FileLedger(path)  # the process that died: it claimed, then nothing
    started = time.time() - hook.in_flight_for - 1
    claimed = killed.claim(key, now=started, window=21600, pending_for=hook.in_flight_for)
    assert claimed is not None
    with HttpReceiver(secret=SECRET) as receiver:
        with capture_logs() as logs:
            dispatcher = Dispatcher([route(receiver.url)], ledger=FileLedger(path))
            dispatcher.publish(FAILED)
            dispatcher.publish(FAILED)  # told now, so this one is a repeat
            assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 1
    assert dispatcher.counts == {("hook", "sent"): 1, ("hook", "suppressed"): 1}
    assert "notify.unfinished" in [e["event"] for e in logs]


def test_a_claim_still_in_flight_in_another_process_is_not_sent_twice(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "orgsync.db")
    key = ("hook", "prod", "failed", "sha256:x")
    daemon, operator = FileLedger(path), FileLedger(path)
    claim = daemon.claim(key, now=1000.0, window=600, pending_for=100)
    assert claim is not None
    assert operator.claim(key, now=1050.0, window=600, pending_for=100) is None  # sending
    daemon.confirm(claim)
    assert operator.claim(key, now=1200.0, window=600, pending_for=100) is None  # was told
    assert operator.claim(key, now=1700.0, window=600, pending_for=100) is not None


def test_a_ledger_file_busy_for_a_moment_is_used_again_after(tmp_path: Path) -> None:
    """A backup or an operator's sqlite3 shell locks the ledger past its busy timeout:
    that decision is made in memory, and the file is used again right after. It was
    given up for the rest of the process, and the next cron'd sync, reading the file,
    told again what the daemon had told since (was broken)."""
    path = ledger_path(tmp_path / "orgsync.db")
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher([route(receiver.url)], ledger=FileLedger(path, busy_timeout=0.1))
        dispatcher.publish(replace(HELD, checksum="sha256:before"))  # creates the file
        receiver.wait_for(1)
        with closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            with capture_logs() as logs:
                dispatcher.publish(FAILED)
                receiver.wait_for(2)
            locker.execute("ROLLBACK")
        dispatcher.publish(HELD)
        assert dispatcher.close(timeout=10)
        later = Dispatcher([route(receiver.url)], ledger=FileLedger(path))
        later.publish(HELD)  # a cron'd sync: the file says it was told
        assert later.close(timeout=10)
    assert later.counts == {("hook", "suppressed"): 1}
    assert len(receiver.received) == 3
    assert "notify.ledger_busy" in [e["event"] for e in logs]


# --------------------------------------------------------------------------- floods


def test_events_a_full_queue_dropped_are_counted_in_the_next_message() -> None:
    """While a receiver is slow the queue fills and events are dropped: logged and
    counted, but the next message people read did not mention them (was broken)."""
    with HttpReceiver(secret=SECRET, script=["hang"]) as receiver:
        dispatcher = Dispatcher(
            [route(receiver.url, timeout=0.5, max_attempts=1, max_per_hour=100)], queue_size=2
        )
        dispatcher.publish(replace(HELD, checksum="sha256:first"))
        receiver.wait_for(1)  # the sender thread is stuck in it
        for i in range(10):
            dispatcher.publish(replace(HELD, checksum=f"sha256:{i}"))
        assert dispatcher.close(timeout=10)
    dropped = dispatcher.counts[("hook", "dropped")]
    assert dropped == 8
    told = [body["dropped_before"] for body in receiver.bodies()]
    assert sum(told) == dropped
    assert any("8 earlier notification(s) were dropped" in b["text"] for b in receiver.bodies())


TRACE_IDS = (
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "9c1d2e7a-0b4f-4a3e-8d6c-1f2e3a4b5c6d",
    "ab12cd34-ef56-7890-abcd-ef1234567890",
)


def test_a_failure_carrying_a_new_trace_id_each_pass_pages_once() -> None:
    """Ids whose letters differ too ("b3fc") made every pass of a failing target a new
    failure: a page per pass until max_per_hour (was broken)."""
    with HttpReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher([route(receiver.url)])
        for trace in TRACE_IDS:
            dispatcher.publish(replace(FAILED, error=f"HTTP 503: upstream down, trace {trace}"))
        assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 1
    assert dispatcher.counts == {("hook", "sent"): 1, ("hook", "suppressed"): 2}


def test_many_targets_failing_at_once_send_at_most_max_per_hour_across_processes(
    tmp_path: Path,
) -> None:
    """An IdP outage fails every target: at most `max_per_hour` messages in the hour,
    also when each pass is a new `orgsync sync` process (cron)."""
    path = ledger_path(tmp_path / "orgsync.db")
    targets = [f"team-{i}" for i in range(8)]
    with HttpReceiver(secret=SECRET) as receiver:
        for _ in range(2):  # two cron'd syncs
            dispatcher = Dispatcher([route(receiver.url, max_per_hour=4)], ledger=FileLedger(path))
            for target in targets:
                dispatcher.publish(replace(FAILED, target=target))
            assert dispatcher.close(timeout=10)
    assert len(receiver.received) == 4


# --------------------------------------------------------------------------- kept messages

RESTARTS = 10
QUARANTINED = Standing(True, 3, datetime(2026, 3, 1, 12, 30, tzinfo=UTC), error="HTTP 401")


def unsent_rows(path: Path) -> list[tuple[str, int]]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT event, tries FROM unsent ORDER BY row").fetchall()
    return [(json.loads(event)["kind"], tries) for event, tries in rows]


def test_a_quarantine_and_a_recovery_nobody_received_are_sent_by_the_next_process(
    tmp_path: Path,
) -> None:
    """Harm: a daemon that stops reconciling a target says so once; when every attempt
    of that message failed (a receiver down for a minute) it was only logged, and the
    next daemon took the quarantine as its baseline: nobody was ever told (was broken).
    Now a quarantine or recovery message that is not delivered stays in the ledger and
    the next process (or pass) sends it, saying it is late. A failure is not kept: the
    next failing run reports it anew."""
    path = ledger_path(tmp_path / "orgsync.db")
    with HttpReceiver(secret=SECRET, default=503) as receiver:
        first = Dispatcher(
            [route(receiver.url, max_attempts=1)], ledger=FileLedger(path), retry_after=0
        )
        quarantined = quarantine_change("prod", Standing(False), QUARANTINED, AT)
        recovered = quarantine_change("prod", QUARANTINED, Standing(False), AT)
        assert quarantined is not None and recovered is not None
        first.publish(quarantined)  # as `quarantine` publishes them
        first.publish(recovered)
        first.publish(FAILED)
        assert first.close(timeout=10)
        assert first.counts == {("hook", "failed"): 3}
        assert unsent_rows(path) == [("quarantined", 1), ("recovered", 1)]
        receiver.default = 200
        second = Dispatcher([route(receiver.url)], ledger=FileLedger(path), retry_after=0)
        second.quarantine("prod", Standing(False))  # its baseline: no event of its own
        assert second.close(timeout=10)
    late = receiver.bodies()[3:]
    assert [body["kind"] for body in late] == ["quarantined", "recovered"]
    assert all("Sent late: this could not be delivered at" in body["text"] for body in late)
    assert second.counts == {("hook", "sent"): 2}
    assert unsent_rows(path) == []


def test_a_kept_message_is_given_up_after_its_rounds_and_never_pages_forever(
    tmp_path: Path,
) -> None:
    """A receiver that never comes back gets `UNSENT_TRIES` rounds of the message, then
    it is given up, logged; and an entry keeps at most `UNSENT_PER_ENTRY` of them."""
    path = ledger_path(tmp_path / "orgsync.db")
    with HttpReceiver(secret=SECRET, default=503) as receiver:
        with capture_logs() as logs:
            for restart in range(RESTARTS):  # daemon restarts, each a new round
                dispatcher = Dispatcher(
                    [route(receiver.url, max_attempts=1)], ledger=FileLedger(path), retry_after=0
                )
                if restart == 0:
                    dispatcher.quarantine("prod", Standing(False))
                dispatcher.quarantine("prod", QUARANTINED)  # later: the baseline, no event
                assert dispatcher.close(timeout=10)
    assert unsent_rows(path) == []
    assert len(receiver.received) == UNSENT_TRIES < RESTARTS
    assert [e["event"] for e in logs].count("notify.given_up") == 1
    ledger = FileLedger(path)
    for i in range(UNSENT_PER_ENTRY + 5):
        ledger.keep("hook", f'{{"kind":"quarantined","target":"t{i}"}}', now=1.0, retry_after=0)
    assert len(unsent_rows(path)) == UNSENT_PER_ENTRY


def test_a_kept_quarantine_message_is_sent_at_the_daemons_next_pass_in_memory_too() -> None:
    """The same within one daemon, with the ledger in memory (its file unusable): the
    next pass (the standing reported after the next run) sends the kept message."""
    with HttpReceiver(secret=SECRET, script=[503]) as receiver:
        dispatcher = Dispatcher([route(receiver.url, max_attempts=1)], retry_after=0)
        dispatcher.quarantine("prod", Standing(False))
        dispatcher.quarantine("prod", QUARANTINED)
        receiver.wait_for(1)
        dispatcher.quarantine("prod", QUARANTINED)  # the next run's standing: no event
        assert dispatcher.close(timeout=10)
    assert [body["kind"] for body in receiver.bodies()] == ["quarantined", "quarantined"]
    assert dispatcher.counts == {("hook", "failed"): 1, ("hook", "sent"): 1}


def test_a_quarantine_message_abandoned_at_exit_is_sent_by_the_next_process(
    tmp_path: Path,
) -> None:
    """A daemon stopping while its quarantine message hangs in the receiver: abandoned
    (logged), it was lost; now it is kept and the next process sends it."""
    path = ledger_path(tmp_path / "orgsync.db")
    quarantined = quarantine_change("prod", Standing(False), QUARANTINED, AT)
    assert quarantined is not None
    with (
        HttpReceiver(secret=SECRET, default="hang") as hanging,
        HttpReceiver(secret=SECRET) as working,
    ):
        first = Dispatcher([route(hanging.url, timeout=30)], ledger=FileLedger(path))
        first.publish(quarantined)
        hanging.wait_for(1)
        assert first.close(timeout=0.2) is False  # its send is still blocked
        assert unsent_rows(path) == [("quarantined", 1)]
        second = Dispatcher([route(working.url)], ledger=FileLedger(path))
        second.quarantine("prod", QUARANTINED)  # a daemon starting: its baseline
        assert second.close(timeout=10)
    assert [body["kind"] for body in working.bodies()] == ["quarantined"]
    assert unsent_rows(path) == []


def test_a_kept_message_taken_by_one_process_is_not_sent_by_another_meanwhile(
    tmp_path: Path,
) -> None:
    """A daemon and a cron'd sync share the ledger: the one that takes a kept message
    leases it for the time a sending may last; the other does not send it too."""
    path = ledger_path(tmp_path / "orgsync.db")
    daemon, operator = FileLedger(path), FileLedger(path)
    daemon.keep("hook", '{"kind":"quarantined","target":"prod"}', now=1000.0, retry_after=0)
    (taken,) = daemon.due("hook", now=1000.0, lease=100)
    assert operator.due("hook", now=1050.0, lease=100) == []
    (again,) = operator.due("hook", now=1101.0, lease=100)  # the daemon died mid-send
    assert again.row == taken.row
    operator.retried(again, sent=True, now=1102.0, retry_after=0)
    assert daemon.due("hook", now=5000.0, lease=100) == []
