"""`[[notify]]` in the configuration: refused whole with the key and the reason, secrets
only from the environment or files, and never echoed (a Slack URL is a secret)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orgsync.config import Config, EmailNotify, SlackNotify, WebhookNotify, parse_config
from orgsync.core.errors import ConfigError
from orgsync.notify import build_dispatcher
from orgsync.notify.ledger import FileLedger, MemoryLedger

BASE: dict[str, Any] = {
    "source": {"type": "file", "path": "directory.json"},
    "targets": [
        {"name": "prod", "type": "openai", "base_url": "https://x.test/v1", "api_key_env": "K"}
    ],
}
WEBHOOK = {"name": "hook", "type": "webhook", "url": "https://h.test/x", "secret_env": "S"}
SLACK = {"name": "slack", "type": "slack", "url_env": "SLACK_URL"}
TEAMS = {"name": "teams", "type": "teams", "url_env": "TEAMS_URL"}
EMAIL = {
    "name": "mail",
    "type": "email",
    "host": "smtp.test",
    "from": "orgsync@example.com",
    "to": ["ops@example.com"],
}


def config(*entries: dict[str, Any], tmp_path: Path | None = None) -> Config:
    document = {**BASE, "notify": list(entries)}
    if tmp_path is not None:
        document["state"] = {"path": str(tmp_path / "orgsync.db")}
    return parse_config(document, origin="orgsync.toml", base_dir=Path("/etc/orgsync"))


def refused(*entries: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        config(*entries)
    return str(raised.value)


def test_defaults_are_all_events_every_target_and_gentle_limits() -> None:
    webhook, slack, mail = config(WEBHOOK, SLACK, EMAIL).notify
    assert isinstance(webhook, WebhookNotify) and isinstance(slack, SlackNotify)
    assert webhook.events == ("held", "failed", "quarantined", "recovered")
    assert webhook.targets == ()
    assert (webhook.max_attempts, webhook.max_per_hour) == (3, 12)
    assert webhook.repeat_after == timedelta(hours=6)
    assert isinstance(mail, EmailNotify)
    assert (mail.tls, mail.smtp_port, mail.sender, mail.recipients) == (
        "starttls",
        587,
        "orgsync@example.com",
        ("ops@example.com",),
    )
    assert config({**EMAIL, "tls": "implicit"}).notify[0].smtp_port == 465  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {**WEBHOOK, "url": "http://h.test/x"},
            r"notify\[0\]: url = http://h.test/x is plain HTTP",
        ),
        ({**WEBHOOK, "secret_env": None}, r"notify\[0\]: secret_env or secret_file is required"),
        (
            {**WEBHOOK, "secret": "inline"},
            r"notify\[0\]\.secret: a secret never sits in the configuration file.*secret_env",
        ),
        (
            {**SLACK, "url": "https://hooks.slack.com/x"},
            r"notify\[0\]\.url: a secret never sits in the configuration file.*url_env",
        ),
        ({**SLACK, "url_env": None}, r"notify\[0\]: url_env or url_file is required"),
        ({**TEAMS, "url_env": None}, r"notify\[0\]: url_env or url_file is required"),
        (
            {**TEAMS, "url": "https://x.logic.azure.com/workflows/a/triggers/manual?sig=S"},
            r"notify\[0\]\.url: a secret never sits in the configuration file.*url_env",
        ),
        ({**EMAIL, "tls": "none"}, r'notify\[0\]: tls = "none" sends the message'),
        ({**EMAIL, "username": "bot"}, r"username and password_env/password_file go together"),
        ({**EMAIL, "password_env": "P"}, r"username and password_env/password_file go together"),
        ({**EMAIL, "to": []}, r"notify\[0\]\.to: "),
        ({**EMAIL, "to": ["ops@example.com\r\nBcc: x@evil.test"]}, r"notify\[0\]\.to\[0\]"),
        ({**EMAIL, "subject_prefix": "a\nBcc: x"}, r"subject_prefix must be one line"),
        ({**WEBHOOK, "events": ["held", "paged"]}, r"notify\[0\]\.events\[1\]"),
        ({**WEBHOOK, "events": []}, r"events must name at least one"),
        ({**WEBHOOK, "timeout": "0s"}, r"timeout must be more than 0s"),
        ({**WEBHOOK, "repeat_after": "10s"}, r"repeat_after must be at least 1m"),
        ({**WEBHOOK, "max_per_hour": 0}, r"notify\[0\]\.max_per_hour"),
        ({**WEBHOOK, "targets": ["staging"]}, r"no such target staging \(configured: prod\)"),
        (
            {**WEBHOOK, "type": "pager"},
            r"notify\[0\]: type = 'pager' is not a notification type; use one of: webhook, slack, "
            "teams, email",
        ),
    ],
)
def test_a_wrong_entry_is_refused_with_its_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(entry)


def test_two_entries_with_one_name_are_refused() -> None:
    assert "notify names must be unique; repeated: hook" in refused(
        WEBHOOK, {**SLACK, "name": "hook"}
    )


def test_an_insecure_email_needs_allow_plaintext() -> None:
    entry = config({**EMAIL, "tls": "none", "allow_plaintext": True}).notify[0]
    assert isinstance(entry, EmailNotify) and entry.smtp_port == 25


def test_a_slack_url_that_is_not_https_is_refused_without_being_echoed() -> None:
    url = "http://hooks.example.test/services/T/B/very-secret"
    with pytest.raises(ConfigError) as raised:
        build_dispatcher(config(SLACK), {"SLACK_URL": url}, strict=True)
    assert "notify.slack.url: the webhook URL must start with https://" in str(raised.value)
    assert "very-secret" not in str(raised.value)


def test_secrets_come_from_files_in_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "hook-secret").write_text("from-a-file-0123456789\n", encoding="utf-8")
    entry = {**WEBHOOK, "secret_env": None, "secret_file": "hook-secret"}
    cfg = config(entry)
    dispatcher = build_dispatcher(cfg, {"CREDENTIALS_DIRECTORY": str(tmp_path)}, strict=True)
    assert [r.name for r in dispatcher.routes] == ["hook"]
    assert dispatcher.redact("x from-a-file-0123456789 y") == "x [redacted] y"
    with pytest.raises(ConfigError, match=r"notify\.hook\.secret_file: cannot read"):
        build_dispatcher(cfg, {}, strict=True)


def test_strict_refuses_a_missing_secret_lenient_drops_only_that_entry() -> None:
    cfg = config(WEBHOOK, SLACK)
    with pytest.raises(ConfigError, match=r"notify\.hook\.secret_env: environment variable S"):
        build_dispatcher(cfg, {"SLACK_URL": "https://hooks.slack.test/x"}, strict=True)
    lenient = build_dispatcher(cfg, {"SLACK_URL": "https://hooks.slack.test/x"}, strict=False)
    assert [r.name for r in lenient.routes] == ["slack"]


def test_the_ledger_lives_beside_the_state_database(tmp_path: Path) -> None:
    dispatcher = build_dispatcher(config(WEBHOOK, tmp_path=tmp_path), {"S": "s" * 20}, strict=True)
    assert isinstance(dispatcher.ledger, FileLedger)
    assert dispatcher.ledger.path == tmp_path / "orgsync.notify.db"
    in_memory = parse_config(
        {**BASE, "notify": [WEBHOOK], "state": {"path": ":memory:"}}, origin="t", base_dir=tmp_path
    )
    assert isinstance(
        build_dispatcher(in_memory, {"S": "s" * 20}, strict=True).ledger, MemoryLedger
    )


def test_an_unusable_ledger_file_degrades_to_memory_and_still_decides(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "missing-directory" / "orgsync.notify.db")
    key = ("hook", "prod", "failed", "sha256:x")
    assert ledger.claim(key, now=1000.0, window=60) is not None
    assert ledger.claim(key, now=1010.0, window=60) is None
    assert ledger.claim(key, now=1070.0, window=60) is not None
