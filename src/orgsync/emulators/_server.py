"""Runs an ASGI app under uvicorn on 127.0.0.1 in a background thread (for emulators).

Owns the socket and the thread: the port is chosen by the OS when the socket is bound, so
it is known before uvicorn starts and two emulators never race for a port.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from orgsync.emulators.faults import install_reset_log_filter


class BackgroundServer:
    """One uvicorn server in a daemon thread; `start` returns the port, `stop` joins."""

    def __init__(self, app: ASGIApp, *, name: str = "emulator", graceful_seconds: float = 1.0):
        self._app = app
        self._name = name
        self._graceful = graceful_seconds
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    def start(self, timeout: float = 10.0) -> int:
        install_reset_log_filter()
        # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted
        # sockets whose proto says TCP, and without it every keep-alive response waits
        # ~40 ms on Nagle + delayed ACK (uvicorn writes head and body separately).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            # None: leave the host application's logging configuration alone.
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(self._graceful)),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"{self._name}:{port}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"{self._name} did not start on 127.0.0.1:{port}")
            time.sleep(0.005)
        self._server, self._thread, self._sock, self.port = server, thread, sock, port
        return port

    def stop(self, timeout: float = 5.0) -> None:
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        self.port = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # Graceful shutdown waits on open connections; force_exit cancels them.
            server.force_exit = True
            thread.join(timeout)
        if sock is not None:
            sock.close()
        if thread.is_alive():
            raise RuntimeError(f"{self._name} server thread did not stop within {2 * timeout}s")
