"""The dispatcher built from `[[notify]]`: secrets resolved, channels made, ledger chosen.

Secrets (`secret_*`, `url_*`, `password_*`) are read here, once, when the CLI's sync or
the daemon starts. `strict` decides what an unresolvable one does: the daemon refuses to
start (as with its webhook secrets: a mistake is found at start, not at 3 a.m.); an
operator's `orgsync sync` logs it and runs without that entry, because a notification
must never stop a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import structlog

from orgsync.config import (
    Config,
    EmailNotify,
    NotifyConfig,
    SlackNotify,
    TeamsNotify,
    WebhookNotify,
)
from orgsync.core.errors import ConfigError
from orgsync.notify.dispatcher import Dispatcher, Route
from orgsync.notify.ledger import FileLedger, Ledger, MemoryLedger, ledger_path
from orgsync.notify.render import Redactor
from orgsync.notify.senders import (
    Channel,
    EmailChannel,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
)

log = structlog.get_logger(__name__)


def _secrets(entry: NotifyConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The entry's secrets by role; `ConfigError` naming the key if one is missing."""
    if isinstance(entry, WebhookNotify):
        secrets = {"secret": entry.secret.resolve(environ).get_secret_value()}
        if (ref := entry.url_secret) is not None:
            secrets["url"] = _secret_url(entry, ref.resolve(environ).get_secret_value())
        return secrets
    if isinstance(entry, SlackNotify | TeamsNotify):
        return {"url": _secret_url(entry, entry.url.resolve(environ).get_secret_value())}
    password = entry.password
    return {"password": password.resolve(environ).get_secret_value()} if password else {}


def _secret_url(entry: NotifyConfig, url: str) -> str:
    """`url` if it is usable; a `ConfigError` naming the key, never the URL, if not."""
    plain_ok = entry.allow_plaintext and url.startswith("http://")
    if not (url.startswith("https://") or plain_ok):
        # The URL is the credential: say what is wrong with it, never what it is.
        raise ConfigError(
            f"notify.{entry.name}.url: the webhook URL must start with https:// "
            "(http:// only with allow_plaintext = true)"
        )
    if (problem := _url_problem(url)) is not None:
        raise ConfigError(f"notify.{entry.name}.url: {problem} (the URL is not shown)")
    return url


def _url_problem(url: str) -> str | None:
    """What makes a secret URL unusable, in words that quote none of it: found at start
    (and by `orgsync validate`), not as a retried "cannot deliver" on every event."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the webhook URL has a bad host or port"
    if not parts.hostname or port == 0:
        return "the webhook URL names no host"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "the webhook URL contains a blank or a control character"
    return None


def _looks_secret(part: str) -> bool:
    """A URL piece worth redacting in a plain webhook URL: one with a long segment or
    value (a token), not a short readable path such as `/orgsync`."""
    return any(
        len(piece) >= _TOKEN_PART for piece in part.replace("&", "/").replace("=", "/").split("/")
    )


_TOKEN_PART = 12
"""A path segment or query value this long in a secret URL is redacted on its own."""


def _url_parts(url: str) -> list[str]:
    """The pieces of a secret URL a receiver may echo without the rest.

    A web server's 404 page quotes the request path ("The requested URL /services/T0/B0/
    <token> was not found"), a proxy quotes the query: redacting only the whole URL let
    the token through into `notify.failed`. The path, the query and each long segment or
    value (Slack's token, Teams' `sig`, Discord's token) are secrets too.
    """
    try:
        parts = urlsplit(url)
        values = [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError:
        return []
    found = [url.split("://", 1)[-1], parts.path, parts.query]
    found += [part for part in (*parts.path.split("/"), *values) if len(part) >= _TOKEN_PART]
    return [part for part in found if len(part) > 1]


def _channel(entry: NotifyConfig, secrets: Mapping[str, str], redact: Redactor) -> Channel:
    timeout = entry.timeout.total_seconds()
    if isinstance(entry, WebhookNotify):
        url = secrets.get("url") or entry.url
        assert url is not None  # the model requires url, url_env or url_file
        if url.startswith("http://"):
            log.warning("notify.plaintext", entry=entry.name)
        return WebhookChannel(
            url,
            secret=secrets["secret"].encode(),
            timeout=timeout,
            ca_file=entry.ca_file,
            redact=redact,
        )
    if isinstance(entry, SlackNotify | TeamsNotify):
        if secrets["url"].startswith("http://"):
            # allow_plaintext let it through; the URL, the credential itself, goes in clear.
            log.warning("notify.plaintext", entry=entry.name)
        kind = SlackChannel if isinstance(entry, SlackNotify) else TeamsChannel
        return kind(secrets["url"], timeout=timeout, ca_file=entry.ca_file, redact=redact)
    assert isinstance(entry, EmailNotify)
    if entry.tls == "none":
        log.warning("notify.plaintext", entry=entry.name)
    return EmailChannel(
        host=entry.host,
        port=entry.smtp_port,
        tls=entry.tls,
        sender=entry.sender,
        recipients=entry.recipients,
        subject_prefix=entry.subject_prefix,
        username=entry.username,
        password=secrets.get("password"),
        timeout=timeout,
        ca_file=entry.ca_file,
        redact=redact,
    )


def check_secrets(entry: NotifyConfig, environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` if the entry's secret cannot be read (`orgsync validate`)."""
    _secrets(entry, environ)


def build_dispatcher(
    config: Config,
    environ: Mapping[str, str],
    *,
    strict: bool,
    count: Callable[[str, str], None] | None = None,
) -> Dispatcher:
    """The dispatcher of `config.notify` (one that does nothing when there is none)."""
    resolved: list[tuple[NotifyConfig, dict[str, str]]] = []
    for entry in config.notify:
        try:
            resolved.append((entry, _secrets(entry, environ)))
        except ConfigError as error:
            if strict:
                raise
            log.error("notify.disabled", entry=entry.name, error=str(error))
    redact = Redactor(
        [
            *(
                part
                for _, secrets in resolved
                for role, value in secrets.items()
                for part in ([value, *_url_parts(value)] if role == "url" else [value])
            ),
            # A webhook's `url` sits in the file, yet a receiver may want a token in it
            # (`?key=`, a catch-hook path): what a server quotes back of it is not logged.
            *(
                part
                for entry, _ in resolved
                if isinstance(entry, WebhookNotify) and entry.url is not None
                for part in _url_parts(entry.url)[1:]
                if _looks_secret(part)
            ),
        ]
    )
    routes = [
        Route(
            name=entry.name,
            channel=_channel(entry, secrets, redact),
            events=frozenset(entry.events),
            targets=frozenset(entry.targets),
            max_per_hour=entry.max_per_hour,
            repeat_after=entry.repeat_after.total_seconds(),
            max_attempts=entry.max_attempts,
            timeout=entry.timeout.total_seconds(),
        )
        for entry, secrets in resolved
    ]
    ledger = _ledger(config.state.path) if routes else None
    return Dispatcher(routes, ledger=ledger, redact=redact, count=count)


def _ledger(state_path: Path) -> Ledger:
    if str(state_path) == ":memory:":
        return MemoryLedger()
    return FileLedger(ledger_path(state_path))
