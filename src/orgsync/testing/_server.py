"""Runs an ASGI app under uvicorn on 127.0.0.1 in a background thread (for emulators),
and the lifecycle every emulator shares (`LoopbackEmulator`, `Served`).

Owns the socket and the thread: the port is chosen by the OS when the socket is bound, so
it is known before uvicorn starts and two emulators never race for a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import formatdate
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orgsync.testing.faults import (
    FaultInjector,
    Faults,
    RecordedRequest,
    install_reset_log_filter,
)


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopping as soon as it is told to.

    uvicorn looks at `should_exit` once every 0.1 s, then sleeps 0.1 s more before it
    shuts down, even with no connection open: about 0.15 s a stop, which every test with
    an emulator pays (hundreds in a run of the suite). `request_exit` wakes the main loop
    at once, and a shutdown with no connection and no task left skips the sleep; with any
    left, uvicorn's own graceful shutdown runs, unchanged."""

    _loop: asyncio.AbstractEventLoop | None = None
    _waiter: asyncio.Future[None] | None = None

    async def main_loop(self) -> None:
        # uvicorn's loop, whose 0.1 s sleep (a future and a timer, as asyncio.sleep is)
        # `request_exit` may end early; the tick, and so the Date header's refresh, keep
        # their cadence.
        loop = asyncio.get_running_loop()
        self._loop = loop
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            timer = loop.call_later(0.1, _resolve, waiter)
            await waiter
            timer.cancel()
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        self.should_exit = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class BackgroundServer:
    """One uvicorn server in a daemon thread; `start` returns the port, `stop` joins."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "emulator",
        graceful_seconds: float = 1.0,
        date_header: bool = True,
    ):
        self._app = app
        self._name = name
        self._graceful = graceful_seconds
        self._date_header = date_header
        self._server: _PromptServer | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    def start(self, timeout: float = 10.0, *, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind `host:port` (port 0: one the OS chooses) and serve; return the port."""
        install_reset_log_filter()
        # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted
        # sockets whose proto says TCP, and without it every keep-alive response waits
        # ~40 ms on Nagle + delayed ACK (uvicorn writes head and body separately).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            # None: leave the host application's logging configuration alone.
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(self._graceful)),
            date_header=self._date_header,
        )
        server = _PromptServer(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"{self._name}:{port}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"{self._name} did not start on {host}:{port}")
            time.sleep(0.005)
        self._server, self._thread, self._sock, self.port = server, thread, sock, port
        return port

    def stop(self, timeout: float = 5.0) -> None:
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        self.port = None
        if server is None or thread is None:
            return
        server.request_exit()
        thread.join(timeout)
        if thread.is_alive():
            # Graceful shutdown waits on open connections; force_exit cancels them.
            server.force_exit = True
            thread.join(timeout)
        if sock is not None:
            sock.close()
        if thread.is_alive():
            raise RuntimeError(f"{self._name} server thread did not stop within {2 * timeout}s")


class Served:
    """Served for the length of a `with` block: `start()` on entering, `stop()` on
    leaving it, whatever happened inside."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackEmulator(Served):
    """What every vendor emulator shares: a fault-injecting app served on loopback.

    Subclasses build their Starlette app, wrap it in a `FaultInjector`, pass it here, and
    name the URL clients use with `_public_url` (the origin plus the API's base path).
    State and recorded requests outlive `stop()`; `start()` again serves them anew.
    """

    def __init__(
        self,
        injector: FaultInjector,
        *,
        name: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`clock`, when given, is the vendor's clock: every response's `Date` is read
        from it (a test that moves the vendor's time moves its Date too), not from
        uvicorn's, which also lags by up to a second."""
        self._injector = injector
        self._name = name
        self._clock = clock
        self._server: BackgroundServer | None = None
        self._origin: str | None = None
        self._lifecycle = threading.Lock()

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._injector.faults = value

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._injector.requests

    def writes(self) -> list[RecordedRequest]:
        """Recorded requests with a method other than GET (faulted ones included)."""
        return self._injector.writes()

    @property
    def asgi_app(self) -> ASGIApp:
        """The whole stack (faults, auth, routes), e.g. for ``httpx.ASGITransport``."""
        return self._injector

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` while serving."""
        if self._origin is None:
            raise RuntimeError(f"{self._name} not started")
        return self._origin

    def _public_url(self, origin: str) -> str:
        """The URL `start` returns; the origin unless the API lives under a path."""
        return origin

    def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port`, by default loopback with an OS-chosen port (idempotent:
        once serving, the address given first stays); return the API's URL."""
        with self._lifecycle:
            if self._server is None:
                self._injector.arm()
                server = (
                    BackgroundServer(self._injector, name=self._name)
                    if self._clock is None
                    else BackgroundServer(
                        DatedBy(self._injector, self._clock), name=self._name, date_header=False
                    )
                )
                bound = server.start(host=host, port=port)
                shown = f"[{host}]" if ":" in host else host
                self._origin = f"http://{shown}:{bound}"
                self._server = server
            return self._public_url(self.origin)

    def stop(self) -> None:
        """Stop serving (idempotent); a stalled "timeout" fault is released at once."""
        with self._lifecycle:
            server, self._server, self._origin = self._server, None, None
            if server is not None:
                self._injector.release_stalls()
                server.stop()


class DatedBy:
    """ASGI middleware: every response's `Date` header from `clock` (HTTP-date, GMT)."""

    def __init__(self, app: ASGIApp, clock: Callable[[], datetime]) -> None:
        self._app = app
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                stamp = formatdate(self._clock().timestamp(), usegmt=True).encode("ascii")
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", stamp)]}
            await send(message)

        await self._app(scope, receive, dated)
