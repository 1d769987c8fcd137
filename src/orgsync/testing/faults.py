"""Fault injection and request recording for the vendor emulators (an ASGI middleware).

This module owns the *transport-level* misbehaviour an emulator can show, independent of
any vendor: added latency, a token-bucket rate limit, and randomly injected faults
(500, 429, connection reset, stalled request answered by 504). It also records every
request it saw, so tests can assert on what a client did ("zero writes", "one retry").

Faults are drawn from a ``random.Random(seed)``: the same seed and the same sequence of
requests give the same faults. A fault lands either *before* the wrapped app runs (nothing
happened on the server) or *after* it (the mutation happened, the client never learns),
because a sync engine must survive both: the second kind is the one that turns a blind
retry of a create into a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FaultKind = Literal["500", "429", "reset", "timeout"]
FaultPhase = Literal["before", "after"]
FAULT_KINDS: tuple[str, ...] = ("500", "429", "reset", "timeout")
FAULT_PHASES: tuple[str, ...] = ("before", "after")

#: Builds a vendor-shaped JSON error body for an injected fault. The argument is the fault
#: kind ("500", "429", "timeout" or "rate_limit"); the emulator picks message/type/code.
ErrorBody = Callable[[str], bytes]


@dataclass
class Faults:
    """What an emulator does wrong, all off by default. Fields are read on every request."""

    latency: float = 0.0
    """Seconds added to every request."""
    rate_limit: float | None = None
    """Requests per second allowed over all requests (token bucket, burst = one second's
    worth, at least 1); above it the answer is 429 with an integer ``Retry-After`` >= 1."""
    error_rate: float = 0.0
    """Probability that a request (one that passed the rate limit) gets an injected fault."""
    kinds: tuple[str, ...] = FAULT_KINDS
    """Which faults to draw from, uniformly."""
    timeout_seconds: float = 5.0
    """How long a "timeout" fault stalls before answering 504."""
    seed: int = 0
    """Seed of the fault draw; assigning a new ``Faults`` restarts the sequence."""
    phases: tuple[str, ...] = FAULT_PHASES
    """When a fault may land: "before" handling (no side effect) or "after" it (the
    mutation happened). "429" always lands before: a rate limiter answers unprocessed."""

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}, got {self.kinds}")
        bad_phases = set(self.phases) - set(FAULT_PHASES)
        if bad_phases or not self.phases:
            raise ValueError(f"phases must be a non-empty subset of {FAULT_PHASES}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive (or None for no limit)")
        if self.latency < 0 or self.timeout_seconds < 0:
            raise ValueError("latency and timeout_seconds must not be negative")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it."""

    method: str
    path: str
    status: int | None
    """Status the client was sent; None when the connection was reset mid-response."""
    injected_fault: str | None
    """"500", "429", "reset", "timeout", "rate_limit" (the rate limiter said no), or None."""
    handled_status: int | None = None
    """Status the vendor handler produced, None if it never ran (fault before handling,
    rate limited). A write with ``handled_status`` 2xx took effect, whatever ``status`` says."""

    @property
    def fault_phase(self) -> FaultPhase | None:
        if self.injected_fault is None:
            return None
        return "before" if self.handled_status is None else "after"


class InjectedResetError(Exception):
    """Raised inside the ASGI app after the response head is sent: uvicorn then closes the
    connection mid-response, which is the closest an ASGI app gets to a TCP reset."""


class _DropInjectedResets(logging.Filter):
    # uvicorn logs "Exception in ASGI application" with a traceback for every reset we
    # inject on purpose; that is noise, while any other exception must stay visible.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedResetError)


_filter_lock = threading.Lock()
_filter_installed = False


def install_reset_log_filter() -> None:
    """Silence uvicorn's traceback for injected resets (idempotent, process-wide)."""
    global _filter_installed  # noqa: PLW0603 - one filter per process, not per emulator
    with _filter_lock:
        if not _filter_installed:
            logging.getLogger("uvicorn.error").addFilter(_DropInjectedResets())
            _filter_installed = True


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take one token; return 0.0 on success, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class FaultInjector:
    """ASGI middleware: applies `Faults` around ``app`` and records every request."""

    def __init__(
        self, app: ASGIApp, *, error_body: ErrorBody, faults: Faults | None = None
    ) -> None:
        self.app = app
        self.error_body = error_body
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.faults = faults if faults is not None else Faults()

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        with self._lock:
            self._faults = value
            self._rng = random.Random(value.seed)  # noqa: S311 - reproducible faults, not secrets
            self._bucket = _TokenBucket(value.rate_limit) if value.rate_limit else None
            self._bucket_rate = value.rate_limit

    def writes(self) -> list[RecordedRequest]:
        """Recorded requests whose method is not GET (attempted writes, faulted or not)."""
        with self._lock:
            return [r for r in self.requests if r.method != "GET"]

    def release_stalls(self) -> None:
        """End pending latency/timeout stalls now (used on shutdown so it is prompt)."""
        self._stopping.set()

    def arm(self) -> None:
        self._stopping.clear()

    # -- internals -------------------------------------------------------------------

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _rate_limited(self, faults: Faults) -> float:
        with self._lock:
            if faults.rate_limit is None:
                return 0.0
            if self._bucket is None or self._bucket_rate != faults.rate_limit:
                # The field was changed in place: start a fresh bucket at the new rate.
                self._bucket = _TokenBucket(faults.rate_limit)
                self._bucket_rate = faults.rate_limit
            return self._bucket.take()

    def _draw(self, faults: Faults) -> tuple[str, FaultPhase] | None:
        with self._lock:
            # One draw per request, two more only when it faults: the sequence depends on
            # nothing but the seed and the order of requests, so a seed replays a scenario.
            if faults.error_rate <= 0.0 or self._rng.random() >= faults.error_rate:
                return None
            kind = self._rng.choice(faults.kinds)
            phase: FaultPhase = "before" if self._rng.choice(faults.phases) == "before" else "after"
        if kind == "429":
            phase = "before"
        return kind, phase

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.05))

    async def _send_json(
        self, send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        faults = self._faults

        if faults.latency > 0:
            await self._sleep(faults.latency)

        wait = self._rate_limited(faults)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait))).encode()
            # Record before answering, everywhere below too: a test that reads `requests`
            # right after its response must find the request already there.
            self._record(RecordedRequest(method, path, 429, "rate_limit"))
            await self._send_json(
                send, 429, self.error_body("rate_limit"), [(b"retry-after", retry_after)]
            )
            return

        decision = self._draw(faults)
        if decision is None:
            recorded = False

            async def send_recording(message: Message) -> None:
                nonlocal recorded
                if message["type"] == "http.response.start" and not recorded:
                    status = int(message["status"])
                    self._record(RecordedRequest(method, path, status, None, status))
                    recorded = True
                await send(message)

            try:
                await self.app(scope, receive, send_recording)
            finally:
                if not recorded:  # the app died without answering
                    self._record(RecordedRequest(method, path, None, None, None))
            return

        kind, phase = decision
        handled: list[Message] = []
        if phase == "after":

            async def send_buffered(message: Message) -> None:
                handled.append(message)

            await self.app(scope, receive, send_buffered)
        handled_status = int(handled[0]["status"]) if handled else None
        await self._emit(
            kind,
            faults,
            send,
            handled=handled,
            method=method,
            path=path,
            handled_status=handled_status,
        )

    async def _emit(
        self,
        kind: str,
        faults: Faults,
        send: Send,
        *,
        handled: list[Message],
        method: str,
        path: str,
        handled_status: int | None,
    ) -> None:
        if kind == "reset":
            self._record(RecordedRequest(method, path, None, kind, handled_status))
            if handled:
                # The handler's own head goes out, then the connection dies: a lost response.
                await send(handled[0])
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"64"),
                        ],
                    }
                )
            raise InjectedResetError(f"injected reset of {method} {path}")
        if kind == "timeout":
            # Recorded when the stall starts: the client may give up long before the 504.
            self._record(RecordedRequest(method, path, 504, kind, handled_status))
            await self._sleep(faults.timeout_seconds)
            await self._send_json(send, 504, self.error_body("timeout"))
            return
        if kind == "429":
            self._record(RecordedRequest(method, path, 429, kind, handled_status))
            await self._send_json(send, 429, self.error_body("429"), [(b"retry-after", b"1")])
            return
        self._record(RecordedRequest(method, path, 500, kind, handled_status))
        await self._send_json(send, 500, self.error_body("500"))
