"""`GET /`: the daemon's read-only status page, plain server-rendered HTML and CSS.

What a person opening the daemon's address wants to know at a glance: each target's last
sync and its result, what runs now and next, whether it is quarantined, what the safety
gate holds and what waits (each with its reason), and the recent runs.

How it stays safe and cheap:
- Everything shown that is not a constant of this module goes through `Page.text`,
  which scrubs every configured secret (defence in depth: run errors are scrubbed where
  they are made) and then HTML-escapes it. Names, emails, group names and reasons come
  from the identity provider or the target, which an attacker may control.
- No script at all, and a Content-Security-Policy that allows none: `default-src 'none'`
  and the one inline stylesheet by its hash. The page refreshes itself with a meta
  refresh; responses are never cached (`no-store`), so nobody looks at stale data.
- Bounded work per render: `RECENT_RUNS` runs, at most `MAX_LISTED` operations of each
  status per target (counted in full in SQL once per finished run, listed in part, then
  kept: a finished run's journal no longer changes), and a rendered page is reused for
  `CACHE_SECONDS`, so a client reloading in a loop costs one render a second
  (`bench/status_page.py`: about 2 ms a render, the same with 1k or 100k held).
- It reads the state database through a connection of its own, opened read-only in
  spirit (only SELECTs): SQLite's WAL lets it read while a run writes, and it never
  takes the engine's connection, a writer lock or a lease, so it cannot delay a run.
  The quarantine standing, the next scheduled time and the waiting list come from the
  daemon's memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Final, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from orgsync import __version__
from orgsync.core.errors import OrgsyncError
from orgsync.core.plan import Waiting
from orgsync.core.ports import OperationStatus
from orgsync.core.quarantine import Quarantine
from orgsync.core.redaction import MIN_FRAGMENT
from orgsync.daemon.queue import SyncRequest
from orgsync.results import RunOptions, TargetResult
from orgsync.store import OperationRecord, RunRecord, StateStore
from orgsync.store.identity import Recorded

RECENT_RUNS: Final = 20
"""Runs in the "Recent runs" table (all targets)."""
MAX_LISTED: Final = 50
"""Operations listed per status (held, failed, …) and target; the rest are counted."""
CACHE_SECONDS: Final = 1.0
"""A page rendered less than this ago is served again as it is."""
REFRESH_SECONDS: Final = 15
RENDER_TIMEOUT: Final = 5.0
"""Seconds a render waits for the state database before the page is served from memory."""
"""The browser reloads the page this often (meta refresh)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listed(Generic[T]):
    """The first few of a list, and how long the whole list is."""

    items: tuple[T, ...]
    total: int

    @classmethod
    def of(cls, items: Sequence[T], limit: int = MAX_LISTED) -> Listed[T]:
        return cls(tuple(items[:limit]), len(items))


@dataclass(frozen=True, slots=True)
class KnownWaiting:
    """The waiting list of the daemon's last full run of a target (kept in memory)."""

    waiting: Listed[Waiting]
    at: datetime


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    kind: str
    last_sync: RunRecord | None = None
    """The newest finished sync run (any process's): what the held list belongs to."""
    running: RunRecord | None = None
    """A sync in progress, if any."""
    queued: SyncRequest | None = None
    next_run_at: datetime | None = None
    """The next scheduled full reconcile."""
    quarantine: Quarantine = field(default_factory=Quarantine)
    unsettled: Mapping[str, Listed[OperationRecord]] | None = None
    """Status (held, failed, …) -> operations the last sync left in it."""
    waiting: KnownWaiting | None = None
    identity: Recorded | None = None
    """Which organization the target's memory is about (`orgsync.store.identity`), as
    `orgsync status` shows it: an operator pointing a target elsewhere sees it here."""
    stalled: float | None = None
    """Seconds the run in progress has shown no progress, once past `stall_after`."""
    blocked: str | None = None
    """Why no run can start (the state database locked or broken), from the worker."""


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    generated_at: datetime
    targets: tuple[TargetStatus, ...]
    recent: tuple[RunRecord, ...] = ()
    error: str | None = None
    """Why the state database could not be read (the rest comes from memory)."""
    behind: str | None = None
    """Why syncs are refused: the state database is older than its high-water mark
    (restored from a backup; `orgsync.store.marks`). No run row says so, since a refused
    run writes none, so without it the page showed an old success as the latest news."""
    version: str = __version__


# --------------------------------------------------------------------------- rendering

STYLE: Final = """
:root{color-scheme:light;--ink:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#f5f7fa;
--ok:#17683a;--okbg:#e3f4e9;--warn:#8a5200;--warnbg:#fff1d6;--bad:#a3141e;--badbg:#fde4e4;
--info:#1d4f91;--infobg:#e3edfb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:14px 28px;display:flex;align-items:baseline;
gap:18px;flex-wrap:wrap}
header h1{margin:0;font-size:20px;letter-spacing:.02em}
header p{margin:0;color:#c5cbd6;font-size:13px}
main{padding:20px 28px;max-width:1280px}
.target{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;
margin:0 0 18px}
.target h2{margin:0 0 10px;font-size:18px;display:flex;align-items:center;gap:10px;
flex-wrap:wrap}
.kind{color:var(--muted);font-weight:400;font-size:13px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0 0 8px}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top;
overflow-wrap:anywhere}
th{color:var(--muted);font-weight:600;background:#fafbfc;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;
font-weight:600;white-space:nowrap}
.ok{color:var(--ok);background:var(--okbg)}
.warn{color:var(--warn);background:var(--warnbg)}
.bad{color:var(--bad);background:var(--badbg)}
.info{color:var(--info);background:var(--infobg)}
.none{color:var(--muted);background:var(--bg)}
.error{color:var(--bad)}
.muted{color:var(--muted)}
.more{color:var(--muted);font-style:italic;margin:6px 0 0}
.banner{background:var(--badbg);color:var(--bad);border:1px solid #f3b7b7;border-radius:8px;
padding:10px 14px;margin:0 0 18px}
.quarantine{background:var(--badbg);border-radius:6px;padding:8px 12px;margin:8px 0}
section.runs{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px}
section.runs h2{margin:0 0 10px;font-size:18px}
footer{padding:0 28px 24px;color:var(--muted);font-size:12px}
"""

STYLE_HASH: Final = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode()

CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store, max-age=0",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Response headers of `GET /` (the content type is `text/html; charset=utf-8`)."""

_RUN_BADGES: Final = {
    "ok": "ok",
    "changes-pending": "info",
    "held": "warn",
    "failed": "bad",
    "interrupted": "warn",
    "running": "info",
}
_OP_BADGES: Final = {
    OperationStatus.HELD.value: "warn",
    OperationStatus.FAILED.value: "bad",
    OperationStatus.INTERRUPTED.value: "warn",
    OperationStatus.IN_FLIGHT.value: "warn",
    OperationStatus.PLANNED.value: "info",
}
_UNSETTLED_TITLES: Final = {
    OperationStatus.FAILED.value: "Failed",
    OperationStatus.INTERRUPTED.value: "Interrupted",
    OperationStatus.IN_FLIGHT.value: "Sent, outcome unknown (a killed run)",
    OperationStatus.PLANNED.value: "Not attempted",
}


class Html(str):
    """Markup this module built; `Page.text` passes it through unescaped."""

    __slots__ = ()


def _join(parts: Iterable[str]) -> Html:
    return Html("".join(parts))


class Page:
    """One rendering: every dynamic value goes through `text`, scrubbed, then escaped."""

    def __init__(self, snapshot: StatusSnapshot, scrub: Callable[[str], str]) -> None:
        self.snapshot = snapshot
        self.now = snapshot.generated_at
        self._scrub = scrub

    def text(self, value: object) -> Html:
        if isinstance(value, Html):
            return value
        return Html(escape(self._scrub(str(value)), quote=True))

    def badge(self, label: str, tone: str) -> Html:
        # `tone` is one of this module's constants, never data.
        return Html(f'<span class="badge {tone}">{self.text(label)}</span>')

    def when(self, moment: datetime | None, *, empty: str = "-") -> Html:
        if moment is None:
            return self.text(empty)
        moment = moment.astimezone(UTC)
        stamp = f"{moment:%Y-%m-%d %H:%M:%S} UTC"
        return Html(
            f'<time datetime="{self.text(moment.isoformat())}">{self.text(stamp)}</time> '
            f'<span class="muted">({self.text(_relative(moment - self.now))})</span>'
        )

    def render(self, refresh: int) -> str:
        snap = self.snapshot
        banner = (
            Html(
                '<p class="banner" role="alert">The state database could not be read: '
                f"{self.text(snap.error)}</p>"
            )
            if snap.error
            else Html("")
        )
        if snap.behind:
            banner = Html(
                f'{banner}<p class="banner" role="alert">Syncs are refused: the '
                f"{self.text(snap.behind)}.</p>"
            )
        targets = _join(self.target(t) for t in snap.targets) or Html(
            '<p class="muted">No targets are configured.</p>'
        )
        return (
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="refresh" content="{int(refresh)}">'
            '<meta name="referrer" content="no-referrer">'
            "<title>orgsync status</title>"
            f"<style>{STYLE}</style></head><body>"
            "<header><h1>orgsync</h1>"
            f"<p>status at {self.when(self.now)} · refreshes every {int(refresh)} s · "
            f"version {self.text(snap.version)}</p></header>"
            f"<main>{banner}{targets}{self.recent(snap.recent)}</main>"
            "<footer>Read-only. <code>orgsync status --json</code> and "
            "<code>orgsync runs</code> show everything, held operations included.</footer>"
            "</body></html>\n"
        )

    # ------------------------------------------------------------------ one target

    def target(self, t: TargetStatus) -> Html:
        if t.stalled is not None:
            state = self.badge("stalled", "bad")
        elif t.blocked is not None:
            state = self.badge("blocked", "bad")
        elif t.quarantine.quarantined:
            state = self.badge("quarantined", "bad")
        elif t.running is not None:
            state = self.badge("running", "info")
        elif t.last_sync is not None:
            state = self.badge(t.last_sync.status, _RUN_BADGES.get(t.last_sync.status, "none"))
        else:
            state = self.badge("never synced", "none")
        rows = [
            ("Organization", self.identity(t.identity)),
            ("Last sync", self.last_sync(t.last_sync)),
            ("Now", self.now_line(t)),
            ("Next full reconcile", self.next_line(t)),
        ]
        if not t.quarantine.quarantined and t.quarantine.failures:
            rows.append(("Failed runs in a row", self.text(t.quarantine.failures)))
        fields = _join(f"<dt>{self.text(k)}</dt><dd>{v}</dd>" for k, v in rows)
        return Html(
            f'<article class="target" aria-label="target {self.text(t.name)}">'
            f'<h2><span class="name">{self.text(t.name)}</span>'
            f'<span class="kind">{self.text(t.kind)}</span>{state}</h2>'
            f"{self.quarantine(t.quarantine)}<dl>{fields}</dl>"
            f"{self.operations(t)}{self.waiting(t)}</article>"
        )

    def identity(self, recorded: Recorded | None) -> Html:
        if recorded is None:
            return Html('<span class="muted">not recorded yet (the first sync records it)</span>')
        return Html(
            f'<span class="identity">{self.text(recorded.identity.describe())}</span> '
            f'<span class="muted">recorded {self.when(recorded.recorded_at)}</span>'
        )

    def last_sync(self, run: RunRecord | None) -> Html:
        if run is None:
            return Html('<span class="muted">no sync has finished yet</span>')
        status = self.badge(run.status, _RUN_BADGES.get(run.status, "none"))
        took = (
            f" in {_duration(run.finished_at - run.started_at)}"
            if run.finished_at is not None
            else ""
        )
        changes = ", ".join(f"{n} {op}" for op, n in sorted(run.summary.items())) or (
            "nothing applied" if run.held or run.failed else "no changes"
        )
        counts = [f"{n} {what}" for n, what in ((run.held, "held"), (run.failed, "failed")) if n]
        error = (
            Html(f'<br><span class="error">{self.text(run.error)}</span>')
            if run.error
            else Html("")
        )
        return Html(
            f"{status} finished {self.when(run.finished_at)}{self.text(took)}, "
            f"{self.text(run.trigger)} ({self.text(run.origin)})<br>"
            f"{self.text(changes)}{self.text('; ' + ', '.join(counts) if counts else '')}"
            f"{error}"
        )

    def now_line(self, t: TargetStatus) -> Html:
        parts: list[str] = []
        if t.stalled is not None:
            parts.append(
                f"{self.badge('stalled', 'bad')} no progress for "
                f"{self.text(_duration(timedelta(seconds=t.stalled)))} (no answer from the "
                "source, the target or the state database): the daemon is unhealthy and "
                "its watchdog stopped, so systemd or the orchestrator restarts it"
            )
        if t.blocked is not None:
            parts.append(
                f"{self.badge('blocked', 'bad')} no run can start: "
                f'<span class="error">{self.text(t.blocked)}</span>'
            )
        if t.running is not None:
            parts.append(
                f"{self.badge('running', 'info')} since {self.when(t.running.started_at)}, "
                f"{self.text(t.running.trigger)}"
            )
        if t.queued is not None:
            people = len(t.queued.emails) + len(t.queued.source_ids)
            scope = "full reconcile" if t.queued.full else f"{people} people"
            parts.append(f"queued: {self.text(t.queued.trigger)} ({self.text(scope)})")
        return Html("<br>".join(parts)) if parts else Html('<span class="muted">idle</span>')

    def next_line(self, t: TargetStatus) -> Html:
        line = self.when(t.next_run_at, empty="not scheduled")
        standing = t.quarantine
        if standing.quarantined and standing.next_run_at is not None:
            line = Html(f"{line}; quarantine: not before {self.when(standing.next_run_at)}")
        return line

    def quarantine(self, standing: Quarantine) -> Html:
        if not standing.quarantined:
            return Html("")
        error = (
            Html(f'<br>Last error: <span class="error">{self.text(standing.last_error)}</span>')
            if standing.last_error
            else Html("")
        )
        return Html(
            '<p class="quarantine"><strong>Quarantined</strong> after '
            f"{self.text(_count(standing.failures, 'failed run'))} in a row; the next "
            f"attempt is not before {self.when(standing.next_run_at)}, and one clean run "
            f"ends it.{error}</p>"
        )

    def operations(self, t: TargetStatus) -> Html:
        if t.unsettled is None:
            return Html("")
        parts: list[str] = []
        held = t.unsettled.get(OperationStatus.HELD.value)
        if held is not None and held.total:
            parts.append(
                f"<h3>Held by the safety gate ({self.text(held.total)})</h3>"
                '<table class="held"><thead><tr><th>Operation</th><th>Who or what</th>'
                "<th>Held because</th><th>Reason for the operation</th></tr></thead><tbody>"
                + _join(
                    f"<tr><td><code>{self.text(r.kind)}</code></td>"
                    f"<td>{self.text(_describe(r))}</td><td>{self.text(r.guard or '-')}</td>"
                    f"<td>{self.text(r.payload.get('reason', ''))}</td></tr>"
                    for r in held.items
                )
                + "</tbody></table>"
                + self.more(held, "held operations")
                + '<p class="more">Nothing held is applied until a person lets it through: '
                "<code>orgsync sync --dry-run</code> shows the plan and the flag that does.</p>"
            )
        for status, title in _UNSETTLED_TITLES.items():
            listed = t.unsettled.get(status)
            if listed is None or not listed.total:
                continue
            parts.append(
                f"<h3>{self.text(title)} ({self.text(listed.total)})</h3>"
                "<table><thead><tr><th>Operation</th><th>Who or what</th><th>Detail</th>"
                "<th>Reason for the operation</th></tr></thead><tbody>"
                + _join(
                    f"<tr><td>{self.badge(r.kind, _OP_BADGES.get(status, 'none'))}</td>"
                    f"<td>{self.text(_describe(r))}</td><td>{self.text(r.detail or '-')}</td>"
                    f"<td>{self.text(r.payload.get('reason', ''))}</td></tr>"
                    for r in listed.items
                )
                + "</tbody></table>"
                + self.more(listed, "operations")
            )
        return _join(parts)

    def waiting(self, t: TargetStatus) -> Html:
        known = t.waiting
        if known is None:
            count = t.last_sync.waiting if t.last_sync is not None else 0
            if not count:
                return Html("")
            return Html(
                f'<h3>Waiting ({self.text(count)})</h3><p class="more">The list is shown '
                "after this daemon's next full reconcile; <code>orgsync sync --dry-run</code> "
                "shows it now.</p>"
            )
        if not known.waiting.total:
            return Html("")
        return Html(
            f"<h3>Waiting ({self.text(known.waiting.total)})</h3>"
            f'<p class="muted">as of the full reconcile at {self.when(known.at)}</p>'
            '<table class="waiting"><thead><tr><th>Operation</th><th>Who</th><th>Group</th>'
            "<th>Until</th><th>Reason</th></tr></thead><tbody>"
            + _join(
                f"<tr><td><code>{self.text(w.op)}</code></td><td>{self.text(w.email)}</td>"
                f"<td>{self.text(w.group or '-')}</td><td>{self.when(w.until)}</td>"
                f"<td>{self.text(w.reason)}</td></tr>"
                for w in known.waiting.items
            )
            + "</tbody></table>"
            + self.more(known.waiting, "waiting")
        )

    def more(self, listed: Listed[T], what: str) -> Html:
        hidden = listed.total - len(listed.items)
        if hidden <= 0:
            return Html("")
        return Html(
            f'<p class="more">… and {self.text(hidden)} more {self.text(what)} not listed '
            "here (<code>orgsync status --json</code> lists them all).</p>"
        )

    # ------------------------------------------------------------------ the history

    def recent(self, runs: Sequence[RunRecord]) -> Html:
        if not runs:
            body = Html('<p class="muted">No runs yet.</p>')
        else:
            body = Html(
                "<table><thead><tr><th>Started</th><th>Target</th><th>Mode</th>"
                "<th>Trigger</th><th>Status</th><th>Took</th><th>Changes</th><th>Held</th>"
                "<th>Failed</th></tr></thead><tbody>"
                + _join(self.run_row(run) for run in runs)
                + "</tbody></table>"
            )
        return Html(
            f'<section class="runs"><h2>Recent runs (newest first, at most {RECENT_RUNS})</h2>'
            f"{body}</section>"
        )

    def run_row(self, run: RunRecord) -> Html:
        took = _duration(run.finished_at - run.started_at) if run.finished_at else "-"
        changes = ", ".join(f"{n} {op}" for op, n in sorted(run.summary.items())) or "-"
        error = Html(f'<br><span class="error">{self.text(run.error)}</span>') if run.error else ""
        return Html(
            f"<tr><td>{self.when(run.started_at)}</td><td>{self.text(run.target)}</td>"
            f'<td>{self.text(run.mode)} <span class="muted">{self.text(run.origin)}</span></td>'
            f"<td>{self.text(run.trigger)}</td>"
            f"<td>{self.badge(run.status, _RUN_BADGES.get(run.status, 'none'))}{error}</td>"
            f"<td>{self.text(took)}</td><td>{self.text(changes)}</td>"
            f"<td>{self.text(run.held or '-')}</td><td>{self.text(run.failed or '-')}</td></tr>"
        )


def render(
    snapshot: StatusSnapshot,
    *,
    scrub: Callable[[str], str] = lambda text: text,
    refresh: int = REFRESH_SECONDS,
) -> str:
    """The page for `snapshot`; `scrub` removes secrets from each value before escaping."""
    return Page(snapshot, scrub).render(refresh)


def _describe(record: OperationRecord) -> str:
    """Who or what an operation is about, in a few words (from its journaled payload)."""
    payload = record.payload
    what = record.subject
    email = payload.get("email")
    if isinstance(email, str) and email and email not in what:
        what = f"{what}: {email}"
    name = payload.get("name")
    if isinstance(name, str) and name:
        what = f"{what} ({name})"
    role, previous = payload.get("role"), payload.get("previous_role")
    if isinstance(role, str) and role:
        what = f"{what}, {previous} → {role}" if isinstance(previous, str) else f"{what}, {role}"
    return what


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(delta: timedelta) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _relative(delta: timedelta) -> str:
    """`delta` = moment - now, as "in 5 min" or "3 h ago"."""
    seconds = delta.total_seconds()
    if abs(seconds) < 1:
        return "now"
    words = _duration(abs(delta))
    return f"in {words}" if seconds > 0 else f"{words} ago"


# --------------------------------------------------------------------------- collecting


def secret_values(config: BaseModel, environ: Mapping[str, str]) -> set[str]:
    """Every secret the configuration names (`*_env` variables, `*_file` files except CA
    certificates) that can be read now: what the page must never show."""
    found: set[str] = set()

    def visit(model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                visit(value)
            elif isinstance(value, list | tuple):
                for item in value:
                    if isinstance(item, BaseModel):
                        visit(item)
            elif name.endswith("_env") and isinstance(value, str):
                secret = environ.get(value, "").strip()
                if secret:
                    found.add(secret)
            elif name.endswith("_file") and name != "ca_file" and isinstance(value, Path):
                found.update(_file_secret(value, environ))

    visit(config)
    return {_secret_part(secret) for secret in found}


def _secret_part(secret: str) -> str:
    """A URL given as a secret (a Slack webhook) is secret in its path, not in
    `https://host`, whose fragments would otherwise hide every URL on the page."""
    parts = urlsplit(secret)
    if parts.scheme in ("http", "https") and parts.netloc:
        rest = secret[len(f"{parts.scheme}://{parts.netloc}") :]
        if len(rest.strip("/")) >= MIN_FRAGMENT:
            return rest
    return secret


def _file_secret(path: Path, environ: Mapping[str, str]) -> set[str]:
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and credentials:
        path = Path(credentials) / path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return set()
    try:
        document = json.loads(text)
    except ValueError:
        return {text}
    if not isinstance(document, dict):
        return {text}
    # A JSON key file (Google's): its key fields. Not the whole text, whose fragments
    # ("https://", "googleapis") would hide every URL on the page.
    return {
        value
        for name, value in document.items()
        if isinstance(value, str) and ("key" in name or "secret" in name) and value
    }


class StatusPage:
    """Builds and caches the page from the daemon's memory and the state database."""

    def __init__(
        self,
        targets: Sequence[tuple[str, str]],
        *,
        open_store: Callable[[], StateStore],
        standing: Callable[[str], Quarantine],
        next_run: Callable[[str], datetime | None],
        queued: Callable[[str], SyncRequest | None],
        stalled: Callable[[str], float | None] = lambda _target: None,
        blocked: Callable[[str], str | None] = lambda _target: None,
        scrub: Callable[[str], str] = lambda text: text,
        clock: Callable[[], datetime] | None = None,
        cache_seconds: float = CACHE_SECONDS,
        timeout: float = RENDER_TIMEOUT,
    ) -> None:
        """`clock`: what the page's "now" is; None: the state store's clock (the
        server's on PostgreSQL, which every run time there is written in), with the
        times this host keeps (the schedule's next run, when a waiting list was known)
        moved onto it, so that ages read right on a host whose clock is off."""
        self._targets = tuple(targets)
        self._open_store = open_store
        self._standing = standing
        self._next_run = next_run
        self._queued = queued
        self._stalled = stalled
        self._blocked = blocked
        self._scrub = scrub
        self._clock = clock or (lambda: datetime.now(UTC))
        self._on_store_clock = clock is None
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._pending: Future[str] | None = None
        # These locks are the page's own: a run never waits on them.
        self._lock = threading.Lock()
        self._store: StateStore | None = None
        self._cached: tuple[float, str] | None = None
        self._waiting: dict[str, KnownWaiting] = {}
        self._waiting_lock = threading.Lock()
        self._unsettled_cache: dict[str, tuple[str, Mapping[str, Listed[OperationRecord]]]] = {}
        """Target -> (its newest finished sync's run id, what that run left undone)."""

    def run_finished(self, result: TargetResult, options: RunOptions) -> None:
        """Engine callback: keep the waiting list of each full sync (a targeted run's
        plan covers a few people, so it would hide everybody else's)."""
        if options.dry_run or options.only_emails or options.only_source_ids:
            return
        if result.plan is None:
            return
        known = KnownWaiting(Listed.of(result.plan.waiting), self._clock())
        with self._waiting_lock:
            self._waiting[result.target] = known

    def html(self) -> str:
        """The page, rendered at most once per `cache_seconds`; from memory only, with a
        banner, when the state database does not answer within `timeout` (one render
        at a time: a database that never answers holds one thread, not one per reload,
        which took the pool `/readyz` runs in)."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            if self._pending is None:
                pending: Future[str] = Future()
                self._pending = pending
                threading.Thread(
                    target=self._fill, args=(pending,), name="status-page", daemon=True
                ).start()
            pending = self._pending
        try:
            return pending.result(timeout=self._timeout)
        except FutureTimeout:
            error = f"the state database did not answer within {self._timeout:.0f} s"
            memory = StatusSnapshot(self._clock(), tuple(self._memory().values()), error=error)
            return render(memory, scrub=self._scrub)

    def _fill(self, pending: Future[str]) -> None:
        try:
            page = render(self._snapshot(), scrub=self._scrub)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting request
            with self._lock:
                self._pending = None
            pending.set_exception(error)
            return
        with self._lock:
            self._cached = (time.monotonic(), page)
            self._pending = None
        pending.set_result(page)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _memory(self) -> dict[str, TargetStatus]:
        """What the daemon knows without the state database."""
        with self._waiting_lock:
            waiting = dict(self._waiting)
        return {
            name: TargetStatus(
                name=name,
                kind=kind,
                queued=self._queued(name),
                next_run_at=self._next_run(name),
                quarantine=self._standing(name),
                waiting=waiting.get(name),
                stalled=self._stalled(name),
                blocked=self._blocked(name),
            )
            for name, kind in self._targets
        }

    def _snapshot(self) -> StatusSnapshot:
        memory = self._memory()
        try:
            store = self._connected()
            shift = store.clock() - self._clock() if self._on_store_clock else timedelta(0)
            targets = tuple(
                self._from_store(store, memory[name], shift) for name, _ in self._targets
            )
            recent = tuple(store.runs(limit=RECENT_RUNS))
            behind = store.behind()
        except OrgsyncError as error:
            self._drop_store()
            return StatusSnapshot(self._clock(), tuple(memory.values()), error=str(error))
        return StatusSnapshot(
            self._clock() + shift,
            targets,
            recent,
            behind=behind.summary if behind is not None else None,
        )

    def _from_store(
        self, store: StateStore, memory: TargetStatus, shift: timedelta
    ) -> TargetStatus:
        # A handful of syncs back is enough to find the newest finished one: one target
        # has at most one run in progress, plus any a killed process left `running`.
        syncs = store.runs(limit=5, target=memory.name, mode="sync")
        running = next((r for r in syncs if r.status == "running"), None)
        last = next((r for r in syncs if r.status != "running"), None)
        return TargetStatus(
            name=memory.name,
            kind=memory.kind,
            last_sync=last,
            running=running
            if running is not None and (last is None or _newer(running, last))
            else None,
            queued=memory.queued,
            next_run_at=memory.next_run_at + shift if memory.next_run_at else None,
            quarantine=memory.quarantine,
            unsettled=self._unsettled(store, memory.name, last.run_id) if last else None,
            waiting=KnownWaiting(memory.waiting.waiting, memory.waiting.at + shift)
            if memory.waiting
            else None,
            identity=store.identity(memory.name),
            stalled=memory.stalled,
            blocked=memory.blocked,
        )

    def _unsettled(
        self, store: StateStore, target: str, run_id: str
    ) -> Mapping[str, Listed[OperationRecord]]:
        """What a finished run left undone, read once per run: its journal no longer
        changes, and counting a mass hold reads every row of it."""
        cached = self._unsettled_cache.get(target)
        if cached is not None and cached[0] == run_id:
            return cached[1]
        unsettled = store.unsettled(run_id, MAX_LISTED)
        by_status: dict[str, list[OperationRecord]] = {}
        for record in unsettled.records:
            by_status.setdefault(record.status.value, []).append(record)
        listed = {
            status: Listed(tuple(by_status.get(status, ())), total)
            for status, total in unsettled.counts.items()
        }
        self._unsettled_cache[target] = (run_id, listed)
        return listed

    def _connected(self) -> StateStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _drop_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(OrgsyncError):
                store.close()


def _newer(a: RunRecord, b: RunRecord) -> bool:
    return (a.started_at, a.run_id) > (b.started_at, b.run_id)
