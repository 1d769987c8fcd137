"""The daemon's HTTP side: a Starlette app on uvicorn, in a thread of its own.

Routes: `/healthz` (liveness: the workers and the scheduler are alive; no I/O, so a busy
database never gets the process killed), `/readyz` (the state database answers, and no
target's last write run by this daemon failed, nor is any quarantined; computed at most
every two seconds behind a lock, so a probe storm costs nothing, kopf's probing
pattern), `/metrics` (Prometheus text), and the webhook routes. Handlers never run a
sync: they read state or enqueue.

The listening socket is bound before uvicorn starts, so a port in use fails the start
at once with a clear message, and `listen = "127.0.0.1:0"` gets a free port (logged).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from orgsync.core.errors import OrgsyncError
from orgsync.daemon.quarantine import DAEMON_WRITES, Quarantine
from orgsync.metrics import CONTENT_TYPE, Metrics
from orgsync.store import StateStore

log = structlog.get_logger(__name__)

READY_CACHE_SECONDS = 2.0


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
    ) -> None:
        self._store = store
        self._targets = tuple(targets)
        self._instance = instance
        self._standing = standing
        self._lock = threading.Lock()
        self._cached: tuple[float, Verdict] | None = None

    def verdict(self) -> Verdict:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < READY_CACHE_SECONDS:
                return self._cached[1]
            verdict = self._compute()
            self._cached = (now, verdict)
            return verdict

    def _compute(self) -> Verdict:
        failing: dict[str, str | None] = {}
        try:
            for target in self._targets:
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
        if failing:
            return Verdict(False, {"status": "not ready", "failed_targets": failing})
        return Verdict(True, {"status": "ready"})


def build_app(
    *,
    metrics: Metrics,
    readiness: Readiness,
    alive: Callable[[], dict[str, bool]],
    webhook_routes: Sequence[BaseRoute],
) -> Starlette:
    """The ASGI app; `alive()` names each component that must be running for liveness."""

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

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *webhook_routes,
    ]
    return Starlette(routes=routes)


class HttpServer:
    """uvicorn serving `app` on (host, port) in a daemon thread."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._app = app
        self._host, self._port = host, port
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
                f"server.listen = {self._host}:{self._port}: cannot listen: {error.strerror}"
            ) from error
        sock.set_inheritable(True)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            log_config=None,  # leave logging to orgsync
            access_log=False,  # webhooks log their own outcome; probes would flood
            lifespan="off",
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            # Above it uvicorn answers 503 at once instead of queueing without bound.
            limit_concurrency=512,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
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
