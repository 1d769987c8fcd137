"""The webhook receivers: verify, parse, de-duplicate, enqueue, answer at once.

Three senders, one rule: nothing is trusted before it is verified, nothing is run inline
(a request only enqueues work, so the answer comes in milliseconds whatever the target's
API does), and every refusal has its status, a log line and a count in
`orgsync_webhooks_total{kind,result}`.

- `POST /webhooks/generic`: `X-Orgsync-Signature: t=<unix>,v1=<hex>` where the hex is
  HMAC-SHA256(secret, "<t>.<body>"); several `v1` are accepted (secret rotation). A
  timestamp more than 300 s away from now is refused; an event `id` (or, without one, the
  signature) seen before is a replay and refused with 409, so a captured request cannot
  be sent again. Body: `{"id"?, "emails"?, "source_ids"?, "targets"?}`; naming people
  asks for a targeted reconcile of only them.
- `GET`/`POST /webhooks/okta`: Okta event hooks. Every request must carry the
  Authorization header value configured on the hook (constant-time comparison). GET
  answers the one-time verification challenge; POST takes events, whose `User` targets
  name the people. Okta delivers at least once and wants an empty 200 or 204: a delivery
  whose events were all seen is acknowledged (204) and not run again.
- `POST /webhooks/entra`: Microsoft Graph change notifications. `?validationToken=`
  is echoed as text/plain (subscription validation); otherwise each notification's
  `clientState` must equal the configured secret, and user resources name the people.

Refusals: body over 1 MiB → 413; body not in full within `body_timeout` → 408; bad or
missing signature/authorization/clientState → 401; stale timestamp → 401; replay → 409;
malformed JSON (not UTF-8, nested deeper than `MAX_DEPTH`, a number too long), shape or
an email or id longer than `MAX_ID` → 400; endpoint without a configured secret → 404;
shutting down, or the state database unable to queue the request
(`orgsync.daemon.relay`) → 503 with Retry-After, and the delivery is not remembered as
seen, so the sender's retry is taken. Each is one log line and one count; a hostile
body never reaches a recursive parser unbounded (a linear pre-scan of the raw bytes
checks the nesting first), so no input gives a 500.

Authentication comes before parsing wherever the protocol allows: the generic HMAC is
checked over the raw bytes, Okta's Authorization header before the body is read. Graph
puts its secret (`clientState`) inside the body: the first one is found in the raw bytes
and compared before the body is parsed (bounded), then every notification's once parsed.

Deliveries seen are remembered where every replica and the next start of this daemon
look (`orgsync.store.deliveries`, through `enqueue`): a delivery's keys are recorded in
the state database in the transaction that queues it, so a replay is refused whichever
process it reaches, one delivery reaching two replicas at once runs once, and a delivery
answered 503 leaves no record. Each process's own `SeenEvents` is a first filter in front.
Nothing is recorded before the delivery is authenticated.

An event naming more than `MAX_TARGETED_PEOPLE` people is accepted as a full reconcile
(answered `"scope": "full"` with the reason): every person it names is reconciled, and
one read of the whole organization costs less than thousands of targeted look-ups.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from orgsync import connectors
from orgsync.core.errors import OrgsyncError
from orgsync.core.webhook import (
    MAX_DEPTH,
    UNNAMED,
    Delivery,
    Refused,
    WebhookEvent,
    WebhookParser,
    first_string_member,
    nesting_problem,
    parse_json,
)
from orgsync.core.webhook import is_text as _is_text
from orgsync.daemon.queue import MAX_TARGETED_PEOPLE

__all__ = [
    "BODY_TIMEOUT",
    "GENERIC_REMEMBERED",
    "MAX_BODY",
    "MAX_DEPTH",
    "REPLAY_WINDOW",
    "SIGNATURE_HEADER",
    "VENDOR_REMEMBERED",
    "Delivery",
    "Refused",
    "SeenEvents",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookSecrets",
    "nesting_problem",
    "parse_generic",
    "parse_graph",
    "parse_json",
    "parse_okta",
    "read_body",
    "sign",
    "verify_signature",
]

log = structlog.get_logger(__name__)

MAX_BODY: Final = 1024 * 1024
"""Larger bodies are refused with 413 (docs/reference.md "Daemon endpoints")."""
_DRAIN_LIMIT: Final = 8 * MAX_BODY
"""An oversized body is read (and dropped) up to this much, so the sender sees a clean 413
instead of a reset; one declared larger is refused before a byte of it is read, and the
connection closed."""
BODY_TIMEOUT: Final = 30.0
"""Default seconds a body may take to arrive after its headers (`[server] body_timeout`)."""
REPLAY_WINDOW: Final = 300
"""Seconds a signed timestamp may be away from now (older: 401, "stale timestamp")."""
GENERIC_REMEMBERED: Final = 3 * REPLAY_WINDOW
"""Seconds a generic delivery's key is remembered (in memory and in the state database):
longer than a signed timestamp is taken either way of now (2 x `REPLAY_WINDOW`), with
one window more for a replica whose clock is off the database's."""
VENDOR_REMEMBERED: Final = 24 * 3600
"""Seconds an Okta event uuid or a Graph notification with an id is remembered (they carry no
timestamp of ours; Okta retries a delivery once, Graph for up to 4 hours)."""
UNNAMED_REMEMBERED: Final = 60
"""Seconds a Graph notification without an id is remembered (`core.webhook.UNNAMED`): long
enough to take a burst of at-least-once copies once, short enough that the next change to
the same person (whose notification is the same body) is not taken for a copy."""
SIGNATURE_HEADER: Final = "x-orgsync-signature"
_MAX_TOKEN: Final = 1024
MAX_ID: Final = 512
"""Characters of a named person's email or id, at most (an address has at most 254): a
longer one names nobody, and the queue's index over people would refuse it."""
QUEUE_WRITERS: Final = 4
"""Deliveries writing to the state database's queue at once (threads); more wait for a
slot without a thread. A database that does not answer (a frozen server) then holds a
few threads, not one per delivery: those held the thread pool that also serves `/readyz`
and the page."""
QUEUE_TIMEOUT: Final = 10.0
"""Seconds a delivery waits for a slot and its queue write before it is answered 503
(the write may still land: the sender's retry then coalesces with it)."""
_SLOT_POLL: Final = 0.005
"""Seconds between two looks for a free writer's slot."""
_SHOWN: Final = 64
_ECHO_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-store",
}
"""Characters of a sender's value quoted back in a refusal, at most."""


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """The configured secrets; a None endpoint is disabled (404)."""

    generic: bytes | None = None
    okta_authorization: str | None = None
    entra_client_state: str | None = None


# --------------------------------------------------------------------------- pure checks


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Orgsync-Signature` header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(header: str | None, body: bytes, secret: bytes, now: float) -> str:
    """Check a generic delivery's signature and age; returns the matching signature.

    Raises `Refused` (401) for a missing, malformed or wrong signature, or a timestamp
    more than `REPLAY_WINDOW` seconds from `now` (in either direction: a clock far ahead
    would otherwise extend the window of a captured request).
    """
    if not header:
        raise Refused(401, "bad_signature", "no X-Orgsync-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and _is_digits(value) and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise Refused(401, "bad_signature", "X-Orgsync-Signature must be t=<unix>,v1=<hex>")
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # compare_digest for every candidate, whatever matched: timing says nothing.
    matched = [hmac.compare_digest(expected, c) for c in candidates]
    if not any(matched):
        raise Refused(401, "bad_signature", "signature does not match the body")
    if abs(now - timestamp) > REPLAY_WINDOW:
        raise Refused(401, "stale", f"timestamp {timestamp} is more than {REPLAY_WINDOW}s away")
    return expected


def _is_digits(value: str) -> bool:
    """ASCII digits only: `str.isdigit` is also true of "²", which `int` refuses."""
    return value.isascii() and value.isdigit()


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "…"


def _strings(document: dict[str, Any], key: str) -> frozenset[str]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(_is_text(v) and v.strip() for v in value):
        raise Refused(400, "malformed", f"{key!r} must be a list of non-empty strings")
    return frozenset(v.strip() for v in value)


def parse_okta(body: bytes) -> tuple[list[str], WebhookEvent]:
    """`(event uuids, event)` of an Okta event hook delivery, read by the `okta` source's
    connector (`orgsync.sources.okta_connector.parse_webhook`)."""
    return _parser("okta")(body, "")


def parse_graph(body: bytes, client_state: str) -> tuple[list[str], WebhookEvent]:
    """`(notification keys, event)` of a Microsoft Graph change notification delivery, read
    by the `entra` source's connector (`orgsync.sources.entra_connector.parse_webhook`)."""
    return _parser("entra")(body, client_state)


def _parser(source_type: str) -> WebhookParser:
    parser = connectors.source(source_type).webhook
    if parser is None:  # a built-in connector lost its parser: a bug, not a bad delivery
        raise RuntimeError(f"the {source_type} source connector reads no webhooks")
    return parser


def parse_generic(body: bytes) -> tuple[str | None, WebhookEvent]:
    """`(event id, event)` of a generic delivery; `Refused` (400) for a wrong shape."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise Refused(400, "malformed", "body must be a JSON object")
    event_id = document.get("id")
    if event_id is not None and (not _is_text(event_id) or not 0 < len(event_id) <= 256):
        raise Refused(400, "malformed", "'id' must be a string of 1 to 256 characters")
    targets = document.get("targets")
    if targets is not None:
        targets = sorted(_strings(document, "targets"))
        if not targets:
            raise Refused(
                400, "malformed", "'targets' is empty: name a target, or leave it out for all"
            )
    return event_id, WebhookEvent(
        kind="generic",
        emails=_strings(document, "emails"),
        source_ids=_strings(document, "source_ids"),
        targets=tuple(targets) if targets is not None else None,
    )


# --------------------------------------------------------------------------- de-duplication


class SeenEvents:
    """Event keys seen recently; thread-safe, bounded in time and in size."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, keys: Iterable[str], now: float) -> list[str]:
        """Record `keys`; return those not seen within the TTL, in order."""
        fresh: list[str] = []
        with self._lock:
            while self._seen and next(iter(self._seen.values())) <= now:
                self._seen.popitem(last=False)
            for key in keys:
                if key in self._seen:
                    continue
                self._seen[key] = now + self._ttl
                fresh.append(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return fresh

    def forget(self, keys: Iterable[str]) -> None:
        """Unrecord `keys`: their delivery was not taken, and its retry must be."""
        with self._lock:
            for key in keys:
                self._seen.pop(key, None)


# --------------------------------------------------------------------------- HTTP


async def read_body(request: Request, timeout: float = BODY_TIMEOUT) -> bytes:
    """The request body, read as it arrives; `Refused` past `MAX_BODY` (declared or
    actual: 413), slower than `timeout` seconds (408), or cut off by the sender (400)."""
    declared = request.headers.get("content-length", "")
    declared_size = int(declared) if _is_digits(declared) else None
    too_large = declared_size is not None and declared_size > MAX_BODY
    if declared_size is not None and declared_size > _DRAIN_LIMIT:
        # Not worth reading to drop: the answer goes out now, and the connection is closed
        # after it, since its body was not read (see daemon.http).
        raise Refused(413, "too_large", f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    too_large = True
                if too_large:
                    chunks.clear()
                    if size > _DRAIN_LIMIT:
                        break
                    continue
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, "timeout", f"the body did not arrive within {timeout:g}s") from None
    except ClientDisconnect:
        raise Refused(400, "incomplete", "the sender closed the connection mid-body") from None
    if too_large:
        raise Refused(413, "too_large", f"body larger than {MAX_BODY} bytes")
    return b"".join(chunks)


@dataclass
class WebhookReceiver:
    """The webhook routes; `enqueue` gets every accepted event."""

    secrets: WebhookSecrets
    enqueue: Callable[[WebhookEvent, Delivery], Collection[str]]
    """Queue an accepted event and record its delivery's keys as seen, both or neither
    (`Relay.submit`): returns the keys nobody had recorded within their window (none of
    those given: a replay, nothing queued); raises `OrgsyncError` when it cannot."""
    count: Callable[[str, str], None]
    """`(kind, result)`: the `orgsync_webhooks_total` counter."""
    known_targets: frozenset[str]
    clock: Callable[[], float] = time.time
    body_timeout: float = BODY_TIMEOUT
    accepting: bool = True
    # This process's memory: a first filter in front of the state database's record,
    # which every replica and the next start of this daemon share (`enqueue`).
    _generic_seen: SeenEvents = field(default_factory=lambda: SeenEvents(GENERIC_REMEMBERED))
    _okta_seen: SeenEvents = field(default_factory=lambda: SeenEvents(VENDOR_REMEMBERED))
    _graph_seen: SeenEvents = field(default_factory=lambda: SeenEvents(VENDOR_REMEMBERED))
    _graph_unnamed_seen: SeenEvents = field(default_factory=lambda: SeenEvents(UNNAMED_REMEMBERED))
    _writers: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(QUEUE_WRITERS)
    )

    def routes(self) -> list[Route]:
        return [
            Route("/webhooks/generic", self.generic, methods=["POST"]),
            Route("/webhooks/okta", self.okta_verify, methods=["GET"]),
            Route("/webhooks/okta", self.okta, methods=["POST"]),
            Route("/webhooks/entra", self.entra, methods=["POST"]),
        ]

    # ------------------------------------------------------------------ endpoints

    async def generic(self, request: Request) -> Response:
        async def handle() -> Response:
            secret = self._enabled(self.secrets.generic, "generic")
            body = await read_body(request, self.body_timeout)
            signature = verify_signature(
                request.headers.get(SIGNATURE_HEADER), body, secret, self.clock()
            )
            event_id, event = parse_generic(body)
            unknown = sorted(set(event.targets or ()) - self.known_targets)
            if unknown:
                named = ", ".join(_shown(name) for name in unknown[:5])
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise Refused(400, "malformed", f"no such target(s): {named}{more}")
            key = f"id:{event_id}" if event_id is not None else f"sig:{signature}"
            shown = _shown(event_id) if event_id is not None else signature[:12]

            def replay() -> Response:
                raise Refused(409, "replay", f"event {shown} seen before")

            if not self._generic_seen.first_time([key], time.monotonic()):
                return replay()
            return await self._accept(
                event,
                event_id=event_id,
                seen=(self._generic_seen, [key]),
                delivery=Delivery("generic", (key,), GENERIC_REMEMBERED),
                replay=replay,
            )

        return await self._guarded("generic", request, handle)

    async def okta_verify(self, request: Request) -> Response:
        async def handle() -> Response:
            self._authorize_okta(request)
            challenge = request.headers.get("x-okta-verification-challenge", "")
            if not challenge or len(challenge) > _MAX_TOKEN:
                raise Refused(400, "malformed", "no X-Okta-Verification-Challenge header")
            self.count("okta", "verification")
            log.info("webhook.verification", kind="okta")
            return JSONResponse({"verification": challenge})

        return await self._guarded("okta", request, handle, check_accepting=False)

    async def okta(self, request: Request) -> Response:
        async def handle() -> Response:
            self._authorize_okta(request)
            body = await read_body(request, self.body_timeout)
            uuids, event = parse_okta(body)
            fresh = self._okta_seen.first_time(uuids, time.monotonic())

            def duplicate() -> Response:
                self.count("okta", "duplicate")
                log.info("webhook.duplicate", kind="okta", events=len(uuids))
                return Response(status_code=204)

            if uuids and not fresh:
                return duplicate()
            accepted = await self._accept(
                event,
                seen=(self._okta_seen, fresh),
                delivery=Delivery("okta", tuple(fresh), VENDOR_REMEMBERED),
                replay=duplicate,
            )
            if accepted.status_code != 202:
                return accepted
            return Response(status_code=204)  # Okta wants an empty 200 or 204

        return await self._guarded("okta", request, handle)

    async def entra(self, request: Request) -> Response:
        async def handle() -> Response:
            client_state = self._enabled(self.secrets.entra_client_state, "entra")
            token = request.query_params.get("validationToken")
            if token is not None:
                if not token or len(token) > _MAX_TOKEN:
                    raise Refused(400, "malformed", "validationToken is empty or too long")
                self.count("entra", "verification")
                log.info("webhook.verification", kind="entra")
                # Anyone can make the daemon say this (Graph cannot sign it), on the origin
                # of the status page: text/plain, nosniff and a sandbox with no sources, so
                # that no browser ever runs it as a page; never cached.
                return PlainTextResponse(token, headers=_ECHO_HEADERS)
            self._check_accepting()
            body = await read_body(request, self.body_timeout)
            # The secret is inside the body: its first `clientState` is looked at before
            # the body is parsed, so a forgery costs a search, not a parse of a mebibyte.
            # (Every notification's is checked again once parsed.)
            first_state = first_string_member(body, "clientState")
            if first_state is None or not hmac.compare_digest(
                first_state.encode(), client_state.encode()
            ):
                raise Refused(401, "bad_client_state", "clientState is missing or does not match")
            keys, event = parse_graph(body, client_state)
            # Notifications without an id are remembered briefly (see `UNNAMED`); a
            # delivery holding one is kept for the shorter window as a whole.
            brief = any(key.startswith(UNNAMED) for key in keys)
            memory = self._graph_unnamed_seen if brief else self._graph_seen
            fresh = memory.first_time(keys, time.monotonic())

            def duplicate() -> Response:
                self.count("entra", "duplicate")
                log.info("webhook.duplicate", kind="entra", notifications=len(keys))
                return Response(status_code=202)

            if not fresh:
                return duplicate()
            return await self._accept(
                event,
                seen=(memory, fresh),
                delivery=Delivery(
                    "entra", tuple(fresh), UNNAMED_REMEMBERED if brief else VENDOR_REMEMBERED
                ),
                replay=duplicate,
            )

        return await self._guarded("entra", request, handle, check_accepting=False)

    # ------------------------------------------------------------------ helpers

    async def _guarded(
        self,
        kind: str,
        request: Request,
        handle: Callable[[], Any],
        *,
        check_accepting: bool = True,
    ) -> Response:
        """Run `handle`, turning a `Refused` into its status, a log line and a count."""
        try:
            if check_accepting:
                self._check_accepting()
            response: Response = await handle()
        except Refused as refusal:
            self.count(kind, refusal.result)
            log.warning(
                "webhook.refused",
                kind=kind,
                status=refusal.status,
                result=refusal.result,
                reason=refusal.message,
                client=request.client.host if request.client else None,
            )
            headers = {"Retry-After": "30"} if refusal.status == 503 else None
            return JSONResponse(
                {"error": refusal.result, "message": refusal.message},
                status_code=refusal.status,
                headers=headers,
            )
        return response

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise Refused(503, "unavailable", "shutting down")

    def _enabled(self, secret: Any, kind: str) -> Any:
        if secret is None:
            raise Refused(404, "disabled", f"the {kind} webhook has no secret configured")
        return secret

    def _authorize_okta(self, request: Request) -> None:
        expected = self._enabled(self.secrets.okta_authorization, "okta")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), str(expected).encode()):
            raise Refused(401, "unauthorized", "Authorization header does not match")

    async def _accept(
        self,
        event: WebhookEvent,
        *,
        delivery: Delivery,
        replay: Callable[[], Response],
        event_id: str | None = None,
        seen: tuple[SeenEvents, list[str]] | None = None,
    ) -> Response:
        """Queue `event`, recording `delivery` as seen in the state database; a delivery
        another process (a replica, this daemon before a restart) recorded is answered
        by `replay()` and not queued."""
        people = len(event.emails) + len(event.source_ids)
        answer: dict[str, str] = {"status": "accepted"}
        if any(len(value) > MAX_ID for value in (*event.emails, *event.source_ids)):
            if seen is not None:
                seen[0].forget(seen[1])
            raise Refused(400, "malformed", f"an email or id longer than {MAX_ID} characters")
        if people > MAX_TARGETED_PEOPLE:
            event = WebhookEvent(event.kind, targets=event.targets)
            answer["reason"] = (
                f"names {people} people, more than the {MAX_TARGETED_PEOPLE} a targeted run "
                "takes: everybody is reconciled"
            )
        # A free writer's slot, waited for without holding a thread (writes take
        # milliseconds: a burst waits its turn; a database that does not answer, 10 s).
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while not self._writers.acquire(blocking=False):
            if time.monotonic() >= deadline:
                if seen is not None:
                    seen[0].forget(seen[1])
                raise Refused(
                    503, "unavailable", "the state database is not answering; send it again"
                )
            await anyio.sleep(_SLOT_POLL)

        # Whoever takes it first decides: the write (it then gives the slot back when it
        # ends), or this handler giving up before the write began (it gives it back now).
        claim = threading.Lock()

        def write() -> Collection[str]:
            if not claim.acquire(blocking=False):
                return ()  # given up before it began: answered 503 already
            try:
                return self.enqueue(event, delivery)
            finally:
                self._writers.release()

        try:
            # The queue is in the state database: a write (and on SQLite an fsync) that
            # must not hold up the event loop serving other deliveries and probes.
            # One transaction records the delivery and queues it: a 503 leaves no record
            # anywhere, and the retry is taken. (A write that lands after its 503, the
            # database answering past QUEUE_TIMEOUT, was taken: its retry is a replay.)
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                fresh = await anyio.to_thread.run_sync(write, abandon_on_cancel=True)
        except (OrgsyncError, TimeoutError):
            if seen is not None:
                seen[0].forget(seen[1])  # the sender's retry must be taken, not a replay
            raise Refused(
                503, "unavailable", "the request could not be queued; send it again"
            ) from None
        finally:
            if claim.acquire(blocking=False):
                self._writers.release()
        if delivery.keys and not fresh:
            return replay()
        self.count(event.kind, "accepted")
        answer["scope"] = "targeted" if event.emails or event.source_ids else "full"
        log.info(
            "webhook.accepted",
            kind=event.kind,
            event_id=event_id,
            scope=answer["scope"],
            people=people,
            **({"reason": answer["reason"]} if "reason" in answer else {}),
        )
        return JSONResponse(answer, status_code=202)
