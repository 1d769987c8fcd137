"""The daemon's HTTP side: a Starlette app on uvicorn, in a thread of its own.

Routes: `/` (the read-only status page, `status_page.py`), `/healthz` (liveness: the
workers and the scheduler are alive; no I/O, so a busy database never gets the process
killed), `/readyz` (the state database answers, and no target's last write run by this
daemon failed, nor is any quarantined; computed at most every two seconds behind a lock,
so a probe storm costs nothing, kopf's probing pattern), `/metrics` (Prometheus text),
and the webhook routes. Handlers never run a sync: they read state or enqueue.

The listening socket is bound before uvicorn starts, so a port in use fails the start
at once with a clear message, and `listen = "127.0.0.1:0"` gets a free port (logged).
With `[server] health_listen`, the probes and `/metrics` get a listener (and a thread,
and an event loop) of their own, so no flood of the webhook listener reaches them.

What a hostile client can hold is bounded per listener, below uvicorn (whose h11
protocol has no header timeout, and whose `limit_concurrency` counts idle connections,
so 512 idle sockets turned every probe into a 503), by `GuardedH11Protocol`:
- connections: at most `max_connections`, and `max_per_client` per address (IPv6: per
  /64); one more is answered 503 and closed at once, before anything is read;
- the request line and headers must arrive within `header_timeout` of the connection
  (or of the previous response): else 408 and closed (slowloris); a head over 16 KiB is
  refused with 431;
- the rest of a body its handler answered without reading must also come within
  `header_timeout` (and `UNREAD_BODY_BYTES`), so it cannot be trickled in forever
  (webhook handlers read bodies under their own `body_timeout`);
- a response the client does not read (a pipelining flood never read) is dropped with
  its connection after `write_timeout`.
Each connection closed unserved (and each request h11 cannot parse: 400) is counted in
`orgsync_http_connections_dropped_total` and logged, at most once every
`DROP_LOG_INTERVAL`, in one summary line; uvicorn's own per-request warnings are off.
No route redirects and nothing echoes a request header, so no answer carries a Host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import ClassVar, Final

import h11
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from orgsync.core.errors import OrgsyncError
from orgsync.core.quarantine import DAEMON_WRITES, Quarantine
from orgsync.daemon.status_page import HEADERS as STATUS_HEADERS
from orgsync.metrics import CONTENT_TYPE, Metrics
from orgsync.store import StateStore

log = structlog.get_logger(__name__)

READY_CACHE_SECONDS = 2.0
READY_TIMEOUT_SECONDS: Final = 5.0
"""How long `/readyz` waits for the state database before it answers 503: a database
server that does not answer at all (frozen, its host paused) held every probe, and each
held probe a thread of the pool that also serves the status page."""
MAX_HEAD_BYTES: Final = 16 * 1024
"""Request line plus headers; a longer head is refused with 431 and the connection closed."""
DROP_LOG_INTERVAL: Final = 10.0
"""Seconds between two `http.connections_dropped` lines: a flood is one line, not 10,000."""
KEEP_ALIVE_SECONDS: Final = 5
UNREAD_BODY_BYTES: Final = 256 * 1024
"""Of a body its handler answered without reading, this much is read and dropped (so the
client sees the answer, not a reset); beyond, the connection is closed."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: dict[str, object]


class Readiness:
    """`/readyz`: the state database is usable, and no target is failing for this daemon.

    A target fails when this daemon's newest finished write run of it failed, or when it
    is quarantined (the standing the worker acts on, which daemons share through the run
    history and which survives a restart). Nothing else moves it: an operator's dry run
    or `orgsync sync` (failing in their shell, refused as busy) and another daemon's runs
    are not this daemon's.
    """

    def __init__(
        self,
        store: StateStore,
        targets: Sequence[str],
        *,
        instance: str | None,
        standing: Callable[[str], Quarantine] = lambda _target: Quarantine(),
        holders: Callable[[], Mapping[str, str | None]] | None = None,
        stalled: Callable[[str], float | None] = lambda _target: None,
        blocked: Callable[[str], str | None] = lambda _target: None,
        timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        """`holders()`: who holds each target's lease now, shown in the answer's
        `leases` (replicas sharing the targets); it never decides readiness."""
        self._store = store
        self._holders = holders
        self._targets = tuple(targets)
        self._instance = instance
        self._standing = standing
        self._stalled = stalled
        self._blocked = blocked
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cached: tuple[float, Verdict] | None = None
        self._pending: Future[Verdict] | None = None

    def verdict(self) -> Verdict:
        """The cached verdict, or a fresh one; 503 after `READY_TIMEOUT_SECONDS` when the
        state database does not answer. One computation at a time: probes that come
        while it is under way wait for it, so a hung database holds one thread."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < READY_CACHE_SECONDS:
                return self._cached[1]
            if self._pending is None:
                pending: Future[Verdict] = Future()
                self._pending = pending
                threading.Thread(
                    target=self._fill, args=(pending,), name="readiness", daemon=True
                ).start()
            pending = self._pending
        try:
            return pending.result(timeout=self._timeout)
        except FutureTimeout:
            return Verdict(
                False,
                {
                    "status": "not ready",
                    "state_database": f"did not answer within {self._timeout:.0f} s",
                },
            )

    def _fill(self, pending: Future[Verdict]) -> None:
        try:
            verdict = self._compute()
        except Exception as error:  # noqa: BLE001 - the probe must get an answer
            verdict = Verdict(False, {"status": "not ready", "error": type(error).__name__})
        with self._lock:
            self._cached = (time.monotonic(), verdict)
            self._pending = None
        pending.set_result(verdict)

    def _compute(self) -> Verdict:
        failing: dict[str, str | None] = {}
        # First, and from memory: a stall may be the state database itself not answering.
        for target in self._targets:
            idle = self._stalled(target)
            if idle is not None:
                failing[target] = f"stalled: its run has shown no progress for {idle:.0f} s"
            elif (why := self._blocked(target)) is not None:
                # Reads still work (an outside program holding SQLite's write lock leaves
                # WAL readers alone), so without this the daemon looked ready while no
                # run could start.
                failing[target] = f"cannot start a run: {why}"
        try:
            behind = self._store.behind()
            if behind is not None:
                # Every sync is refused until `state accept-restore` (`store/marks.py`),
                # and a refused run leaves no run row to fail the check below.
                return Verdict(False, {"status": "not ready", "state_database": behind.summary})
            for target in self._targets:
                if target in failing:
                    continue
                standing = self._standing(target)
                if standing.quarantined:
                    failing[target] = f"quarantined: {standing.last_error}"
                    continue
                mine = self._store.runs(
                    limit=5, target=target, **DAEMON_WRITES, instance=self._instance
                )
                # The newest *finished* run: one in progress says nothing yet.
                for run in mine:
                    if run.status == "running":
                        continue
                    if run.status == "failed":
                        failing[target] = run.error
                    break
        except OrgsyncError as error:
            return Verdict(False, {"status": "not ready", "state_database": str(error)})
        shown: dict[str, object] = {}
        if self._holders is not None:
            try:
                shown = {"instance": self._instance, "leases": dict(self._holders())}
            except OrgsyncError as error:
                return Verdict(False, {"status": "not ready", "state_database": str(error)})
        if failing:
            return Verdict(False, {"status": "not ready", "failed_targets": failing, **shown})
        return Verdict(True, {"status": "ready", **shown})


def build_app(
    *,
    metrics: Metrics,
    readiness: Readiness,
    alive: Callable[[], dict[str, bool]],
    webhook_routes: Sequence[BaseRoute],
    probes: bool = True,
    status_page: Callable[[], str] | None = None,
) -> Starlette:
    """The ASGI app; `alive()` names each component that must be running for liveness.

    `probes`: serve `/healthz`, `/readyz` and `/metrics` (False on the webhook listener
    when they have a listener of their own). `status_page`: renders `GET /` (blocking:
    it reads the state database, so it runs in the thread pool).
    """

    async def healthz(request: Request) -> Response:
        components = alive()
        ok = all(components.values())
        body = {"status": "ok" if ok else "unhealthy", "components": components}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def readyz(request: Request) -> Response:
        verdict = await run_in_threadpool(readiness.verdict)
        return JSONResponse(verdict.detail, status_code=200 if verdict.ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    probe_routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]

    async def status(request: Request) -> Response:
        assert status_page is not None
        page = await run_in_threadpool(status_page)
        return HTMLResponse(page, headers=dict(STATUS_HEADERS))

    page_routes: list[BaseRoute] = (
        [Route("/", status, methods=["GET"])] if status_page is not None else []
    )
    app = Starlette(routes=[*page_routes, *(probe_routes if probes else []), *webhook_routes])
    # Starlette would answer `/metrics/` with a redirect to an absolute URL built from the
    # Host header: a path is served exactly as spelled, or not found.
    app.router.redirect_slashes = False
    return app


# --------------------------------------------------------------------------- connections


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one listener gives its clients, in seconds and connections (from `[server]`:
    `header_timeout`, `body_timeout` as `write_timeout`, `max_connections`,
    `max_connections_per_client`)."""

    header_timeout: float = 10.0
    write_timeout: float = 30.0
    max_connections: int = 256
    max_per_client: int = 32


def _plain(status: str, text: str, *extra_headers: str) -> bytes:
    """A complete `connection: close` response, written before (or instead of) h11."""
    head = [
        f"HTTP/1.1 {status}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(text)}",
        "connection: close",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + text).encode("ascii")


_TOO_MANY: Final = _plain("503 Service Unavailable", "too many connections", "retry-after: 5")
_HEADER_TIMEOUT: Final = _plain("408 Request Timeout", "request head too slow")
_HEAD_TOO_LARGE: Final = _plain(
    "431 Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes"
)


def client_key(host: str) -> str:
    """Whom a connection counts against: its address, or for IPv6 its /64 (what one
    host is usually given)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionGuard:
    """The open connections of one listener, by client; only its event loop touches it."""

    def __init__(
        self, listener: str, limits: ConnectionLimits, on_drop: Callable[[str, str], None]
    ) -> None:
        self.listener = listener
        self.limits = limits
        self._on_drop = on_drop
        self.total = 0
        self.by_client: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._next_log = 0.0

    def admit(self, client: str) -> str | None:
        """Count a new connection in; or the reason it is refused."""
        if self.total >= self.limits.max_connections:
            return "too_many"
        if self.by_client[client] >= self.limits.max_per_client:
            return "too_many_from_client"
        self.total += 1
        self.by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    def dropped(self, reason: str) -> None:
        self._on_drop(self.listener, reason)
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now >= self._next_log:
            log.warning(
                "http.connections_dropped",
                listener=self.listener,
                dropped=dict(self._unlogged),
                open=self.total,
                clients=len(self.by_client),
            )
            self._unlogged.clear()
            self._next_log = now + DROP_LOG_INTERVAL


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the bounds its configuration does not offer.

    One clock, `header_timeout`, runs whenever the client owes bytes that no handler is
    waiting for: a request's head (from the connection, or from the previous response),
    or the rest of a body the handler answered without reading. The latter is read and
    dropped (up to `UNREAD_BODY_BYTES`), so that a client still sending it sees the answer
    instead of a reset; past either bound the connection is closed.
    """

    guard: ClassVar[ConnectionGuard]

    _client_key: str | None = None
    """Set while the connection counts against its client (admitted, not yet lost)."""
    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _unread: int = 0
    """Bytes of an answered request's body dropped so far."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        key = client_key(self.client[0] if self.client else "")
        refusal = self.guard.admit(key)
        if refusal is not None:
            transport.write(_TOO_MANY)
            transport.close()
            self.guard.dropped(refusal)
            return
        self._client_key = key
        self._watch_client()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client_key is not None:
            self.guard.release(self._client_key)
            self._client_key = None
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self.transport.write(_HEAD_TOO_LARGE)
            self._drop("head_too_large")
            return
        if self._answered_before_body():
            self._unread += len(data)
            if self._unread > UNREAD_BODY_BYTES:
                self._drop("unread_body")
                return
        super().data_received(data)
        self._watch_client()

    def on_response_complete(self) -> None:
        self._unread = 0
        super().on_response_complete()
        self._watch_client()

    def send_400_response(self, msg: str) -> None:
        # uvicorn logs each one at warning level; counted and summed up instead, so that a
        # stream of garbage is one line every DROP_LOG_INTERVAL, not one per request.
        super().send_400_response(msg)
        self.guard.dropped("bad_request")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.guard.limits.write_timeout, self._write_timed_out
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the awaited head runs past `MAX_HEAD_BYTES`. (h11's own bound only
        applies to a head still incomplete: one that comes in one read is not bounded.)"""
        buffered = self.conn.trailing_data[0]
        if len(buffered) + len(data) <= MAX_HEAD_BYTES:
            return False
        head = (buffered + data)[: MAX_HEAD_BYTES + 4]
        return b"\r\n\r\n" not in head and b"\n\n" not in head

    def _answered_before_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE

    def _watch_client(self) -> None:
        """Run the clock while the client owes bytes nobody waits for; stop it otherwise."""
        owing = not self.transport.is_closing() and (
            self.conn.their_state is h11.IDLE or self._answered_before_body()
        )
        if owing and self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.guard.limits.header_timeout, self._head_timed_out
            )
        elif not owing and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.transport.write(_HEADER_TIMEOUT)  # part of a head came: say why it ends
        self._drop("header_timeout")

    def _write_timed_out(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self._drop("write_timeout")

    def _drop(self, reason: str) -> None:
        if reason == "write_timeout":
            self.transport.abort()  # close() would wait for the buffer nobody reads
        else:
            self.transport.close()
        self.guard.dropped(reason)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for one listener (uvicorn instantiates it per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def reserve_open_files(needed: int) -> None:
    """Raise the soft open-file limit to `needed` if it is lower; `OrgsyncError` if the
    hard limit does not allow it. (Past the limit, accept() fails with EMFILE and asyncio
    stops accepting on every listener for a second at a time, with a traceback each.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OrgsyncError(
            f"server.max_connections needs about {needed} open files, but this process may "
            f"open only {hard} (ulimit -n; LimitNOFILE= in systemd): lower max_connections "
            "or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class HttpServer:
    """uvicorn serving `app` on (host, port) in a daemon thread of its own."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        *,
        name: str = "main",
        key: str = "server.listen",
        limits: ConnectionLimits | None = None,
        on_drop: Callable[[str, str], None] = lambda listener, reason: None,
    ) -> None:
        self._app = app
        self._host, self._port = host, port
        self._name, self._key = name, key
        self.guard = ConnectionGuard(name, limits or ConnectionLimits(), on_drop)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        """Bind, serve, and return the address actually bound."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as error:
            sock.close()
            raise OrgsyncError(
                f"{self._key} = {self._host}:{self._port}: cannot listen: {error.strerror}"
            ) from error
        sock.set_inheritable(True)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            self._app,
            # uvicorn's warnings are per request (a malformed one, an upgrade attempt):
            # the guard counts and sums those up. Errors (a handler's bug) still show.
            log_level="error",
            log_config=None,  # leave logging to orgsync
            access_log=False,  # webhooks log their own outcome; probes would flood
            lifespan="off",
            server_header=False,
            # The client is the TCP peer: no header may claim another address.
            proxy_headers=False,
            http=guarded_protocol(self.guard),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=5,
            # The guard bounds connections (so requests: one at a time on each); uvicorn's
            # own limit would count idle sockets against the probes.
            limit_concurrency=None,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"http-{self._name}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise OrgsyncError(f"the HTTP server did not start on {host}:{port}")
            time.sleep(0.01)
        self._server, self._thread, self._sock = server, thread, sock
        return str(host), int(port)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if sock is not None:
            sock.close()
