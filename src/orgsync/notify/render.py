"""Notifications as people read them: one message, three wire forms. Pure: no I/O.

`compose` turns a `Notification` into a `Message` (a title, fact lines, the commands to
type next, a footer), and each channel renders that: `webhook_document` (JSON with the
structured fields too), `slack_payload` (incoming-webhook `text` + Block Kit `blocks`),
`teams_payload` (an Adaptive Card), `email_message` (text/plain).

Every string that came from outside (reasons, e-mail addresses, errors, group names) goes
through a `Redactor` before it is used, which removes the channel secrets it was given
and anything shaped like a credential; a URL in it is written so that no client makes a
link of it (`disarm_links`); Slack text is escaped so that a group named `<!channel>`
cannot ping a whole channel; an e-mail subject is one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from orgsync.core.text import visible
from orgsync.notify.events import Notification, clip

REDACTED = "[redacted]"

_CREDENTIAL_SHAPES = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;]+"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), REDACTED),
    (re.compile(r"(://)[^/\s@]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?i)(hooks\.slack\.com/)[^\s]+"), r"\1" + REDACTED),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # all that splitlines() splits on
# A lone surrogate (JSON from an IdP may carry "\ud800") cannot be encoded as UTF-8: in an
# e-mail it raised, so one hostile display name silenced the channel for that event.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Redactor:
    """Removes known secret values and credential-shaped text from a string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret containing another must go whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _CREDENTIAL_SHAPES:
            text = pattern.sub(replacement, text)
        return text


# A URL's scheme and host, or a host starting "www.": what a chat client or a mail reader
# turns into a link by itself (Slack does so to bare URLs, whatever `<`/`>` escaping).
_LINK = re.compile(r"(?i)\b(?:([a-z][a-z0-9+.-]*)://|(?=www\.))([^\s/?#\\<>]+)")


def disarm_links(text: str) -> str:
    """`text` with every URL made plain text that no client makes a link of, the way
    security alerts write them: `http://evil.example/login` reads
    `http[:]//evil[.]example/login`, `www.evil.example` `www[.]evil[.]example`. A group
    a directory user named after a phishing page must not become a link in the alert an
    administrator reads; the name stays readable, and is shown, not followed."""

    def one(found: re.Match[str]) -> str:
        scheme = f"{found[1]}[:]//" if found[1] is not None else ""
        return scheme + found[2].replace(".", "[.]")

    return _LINK.sub(one, text)


def one_line(text: str) -> str:
    """Control characters and line breaks become single spaces, direction overrides are
    shown escaped (`\\u202e`: they reorder what a person reads), lone surrogates are
    U+FFFD: the result is one line any channel can encode."""
    return _SURROGATE.sub("\ufffd", visible(_CONTROL.sub(" ", text))).strip()


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the dispatcher knows about this sending, beyond the event itself."""

    id: str = ""
    """This delivery's id (the webhook's `id`), the same in each attempt."""
    host: str = ""
    repeats: int = 0
    """Identical events not sent since the last one that was."""
    since: datetime | None = None
    """When that last identical one was sent."""
    dropped: int = 0
    """Notifications of this entry the rate limit dropped before this one."""
    late: bool = False
    """A kept message sent again: its first attempts, when it happened, failed."""


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    lines: tuple[str, ...]
    commands: tuple[str, ...]
    footer: str


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ops(count: int) -> str:
    return f"{count} operation" + ("" if count == 1 else "s")


def _runs(count: int) -> str:
    return f"{count} failed run" + ("" if count == 1 else "s")


def compose(event: Notification, delivery: Delivery, redact: Redactor) -> Message:
    """The message for `event`: never raises, never longer than a screen."""

    def safe(text: str, limit: int = 500) -> str:
        # Redacted first: a secret URL must still match whole to be found.
        return clip(disarm_links(one_line(redact(text))), limit)

    target = safe(event.target, 100)
    trigger = f" ({safe(event.trigger, 60)})" if event.trigger else ""
    lines: list[str] = []
    commands = ["orgsync status", f"orgsync sync --dry-run --target {target}"]
    if event.kind == "held":
        title = f"{target}: {_ops(event.held)} held by the safety gate"
        lines.append(
            f"A sync of {target}{trigger} held {_ops(event.held)} back for a person to "
            f"review; {_ops(event.applied)} were applied."
        )
        if event.guards:
            lines.append("Why:")
            lines.extend(f"• {safe(guard, 300)} ({_ops(n)})" for guard, n in event.guards)
        if event.held_subjects:
            lines.append("Held:")
            lines.extend(f"• {safe(subject, 200)}" for subject in event.held_subjects)
            more = event.held - len(event.held_subjects)
            if more > 0:
                lines.append(f"• and {more} more")
        if event.checksum:
            lines.append(f"Plan checksum: {safe(event.checksum, 80)}")
        if any("max_removal" in guard for guard, _ in event.guards):
            commands.append(
                f"orgsync sync --target {target} --allow-removals {event.held}"
                "   # only if the removals are intended"
            )
    elif event.kind == "failed":
        title = f"{target}: sync failed"
        lines.append(f"A sync of {target}{trigger} failed: {safe(event.error or 'no reason')}")
        if event.failed_operations:
            lines.append(
                f"{_ops(event.failed_operations)} failed, {_ops(event.applied)} were applied."
            )
        if event.held:
            lines.append(f"{_ops(event.held)} were also held by the safety gate.")
        commands.insert(1, f"orgsync runs --target {target}")
    elif event.kind == "quarantined":
        title = f"{target}: quarantined after {_runs(event.failures)}"
        after = f"; next attempt at {_when(event.next_run_at)}" if event.next_run_at else ""
        lines.append(
            f"{target} failed {_runs(event.failures)} in a row and is quarantined: its runs "
            f"back off{after}. One clean run ends the quarantine."
        )
        if event.error:
            lines.append(f"Last error: {safe(event.error)}")
        commands.insert(1, f"orgsync runs --target {target}")
    else:
        title = f"{target}: recovered"
        lines.append(
            f"{target} ran clean again after {_runs(event.failures)}; "
            "it is back on its normal schedule."
        )
        commands = ["orgsync status"]
    if delivery.repeats:
        since = f" since {_when(delivery.since)}" if delivery.since else ""
        lines.append(f"The same happened {delivery.repeats} more time(s){since} without a message.")
    if delivery.late:
        lines.append(
            f"Sent late: this could not be delivered at {_when(event.at)}; it may no "
            "longer be the current standing (see orgsync status)."
        )
    if delivery.dropped:
        lines.append(
            f"{delivery.dropped} earlier notification(s) were dropped by this channel's "
            "rate limit (max_per_hour) or its full queue; see the log."
        )
    footer = " · ".join(
        part
        for part in (
            f"orgsync on {safe(delivery.host, 100)}" if delivery.host else "orgsync",
            f"run {safe(event.run_id, 80)}" if event.run_id else "",
            _when(event.at),
        )
        if part
    )
    return Message(title=title, lines=tuple(lines), commands=tuple(commands), footer=footer)


def plain_text(message: Message) -> str:
    """The message as plain text (e-mail body, the webhook's `text`)."""
    parts = [message.title, "", *message.lines, "", "Next:"]
    parts.extend(f"  {command}" for command in message.commands)
    parts.extend(["", message.footer])
    return "\n".join(parts) + "\n"


def webhook_document(
    event: Notification, message: Message, delivery: Delivery, redact: Redactor, event_id: str
) -> dict[str, Any]:
    """The JSON body of a generic webhook: the message and the event's fields."""

    def safe(text: str | None) -> str | None:
        return one_line(redact(text)) if text is not None else None

    return {
        "id": event_id,
        "kind": event.kind,
        "target": safe(event.target),
        "at": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "host": safe(delivery.host),
        "title": message.title,
        "text": plain_text(message),
        "commands": list(message.commands),
        "trigger": safe(event.trigger),
        "run_id": safe(event.run_id),
        "held": event.held,
        "guards": [{"reason": safe(g), "operations": n} for g, n in event.guards],
        "held_operations": [safe(s) for s in event.held_subjects],
        "held_not_listed": max(0, event.held - len(event.held_subjects)),
        "summary": dict(event.summary),
        "applied": event.applied,
        "failed_operations": event.failed_operations,
        "error": safe(event.error),
        "checksum": safe(event.checksum),
        "consecutive_failures": event.failures,
        "next_run_at": event.next_run_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if event.next_run_at
        else None,
        "repeats": delivery.repeats,
        "dropped_before": delivery.dropped,
    }


def _slack_escape(text: str) -> str:
    # Slack's only control characters in mrkdwn; escaping them disarms <!channel>, <@U…>
    # and <http://link|label> in anything a directory or a target sent us.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_SECTION = 2900  # Slack refuses a section text over 3000 characters


def slack_payload(message: Message) -> dict[str, Any]:
    """An incoming-webhook body: `text` (notifications, old clients) and `blocks`."""
    body = clip("\n".join(_slack_escape(line) for line in message.lines), _SLACK_SECTION)
    commands = clip("\n".join(message.commands), _SLACK_SECTION - 20).replace("```", "'''")
    return {
        "text": _slack_escape(clip(message.title, 300)),
        # A URL someone put in a group name is not fetched by Slack nor shown as a
        # preview card under the alert.
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(message.title, 150)}},
            {"type": "section", "text": _mrkdwn(body or "-")},
            {"type": "section", "text": _mrkdwn(f"*Next:*\n```{_slack_escape(commands)}```")},
            {"type": "context", "elements": [_mrkdwn(_slack_escape(message.footer))]},
        ],
    }


def _mrkdwn(text: str) -> dict[str, Any]:
    # `verbatim`: Slack makes no link of a bare URL or domain ("evil.example") nor a
    # channel name in it; `compose` already wrote URLs so that no client does either.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


_TEAMS_TEXT = 6000
"""Characters of a Teams card's lines: Teams refuses a message over 28 KB."""
# Adaptive Card text is Markdown: `[label](url)` would be a link with a label a
# directory user chose. A zero-width space between `]` and `(` leaves it plain text.
_MARKDOWN_LINK = re.compile(r"\]\s*\(")


def _teams_escape(text: str) -> str:
    return _MARKDOWN_LINK.sub("]\u200b(", text)


def teams_payload(message: Message) -> dict[str, Any]:
    """A Teams incoming-webhook body: one Adaptive Card (what Teams Workflows take; a
    Microsoft 365 connector takes it too) with the title, the lines, the commands in a
    monospace font and the footer."""

    def block(text: str, **style: object) -> dict[str, Any]:
        return {"type": "TextBlock", "text": _teams_escape(text) or "-", "wrap": True, **style}

    lines, room = [], _TEAMS_TEXT
    for line in message.lines:
        if room <= 0:
            lines.append(block("…"))
            break
        lines.append(block(clip(line, room), spacing="Small"))
        room -= len(line)
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            block(clip(message.title, 300), size="Medium", weight="Bolder"),
            *lines,
            block("Next:", weight="Bolder"),
            *(block(clip(c, 300), fontType="Monospace", spacing="None") for c in message.commands),
            block(message.footer, isSubtle=True, size="Small"),
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def email_message(
    message: Message, *, sender: str, recipients: Iterable[str], prefix: str, at: datetime
) -> EmailMessage:
    """A text/plain e-mail; the subject is one line whatever the event held."""
    mail = EmailMessage()
    subject = one_line(f"{prefix} {message.title}" if prefix else message.title)
    mail["Subject"] = clip(subject, 200)
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Date"] = format_datetime(at.astimezone(UTC))
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    mail.set_content(plain_text(message))
    return mail
