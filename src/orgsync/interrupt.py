"""How a stop request (SIGTERM, SIGINT) ends the HTTP reads in flight, for sources and targets.

A read can take minutes (a large directory, a slow or rate-limited API). Asked to stop,
orgsync must not sit in it until the server answers or the timeout fires, and must not
send another attempt afterwards. `ReadInterrupt` is the signal a source or target HTTP
client watches: while it is set, a read in flight ends within `SLICE` seconds with
`Interrupted`, a retry wait ends at once, and no further attempt is sent.

During the apply phase the engine pauses it: the calls of an apply (lookups included) are
the operations in flight, which a stop lets finish (the journal relies on it).

A blocked socket read cannot be woken from another thread (closing the socket does not
interrupt it), so `interruptible_transport` reads in slices of `SLICE` seconds and checks
the signal between slices; the request's own timeout still applies to the whole wait.
It reaches the connections through httpcore's network-backend interface, which httpx's
`HTTPTransport` does not expose: the one private attribute used is checked when the
transport is built, so an httpx upgrade that moves it fails loudly, not silently.

This module may import only httpx, httpcore, the standard library and `orgsync.core`.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from orgsync.core.errors import Interrupted

__all__ = ["SLICE", "ReadInterrupt", "answer_within", "interruptible_transport"]

SLICE = 0.1
"""Seconds between two looks at the signal while a read waits for the server."""

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


_answer = threading.local()
"""`deadline`: when the answer the calling thread waits for must be complete (monotonic
clock), or None. Thread-local: httpx's synchronous client reads on the caller's thread."""


@contextlib.contextmanager
def answer_within(seconds: float | None) -> Iterator[None]:
    """The reads of this thread (through `interruptible_transport`) must be done within
    `seconds`, in all: a read timeout bounds one wait for bytes, and a server sending a
    byte within each would otherwise hold the call for ever (`orgsync.http.lean` bounds
    the calls it makes alike)."""
    previous = getattr(_answer, "deadline", None)
    _answer.deadline = None if seconds is None else time.monotonic() + seconds
    try:
        yield
    finally:
        _answer.deadline = previous


class ReadInterrupt:
    """Set while reads must stop: `stop` (the process is shutting down) and not paused."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop if stop is not None else threading.Event()
        self._paused = False

    def is_set(self) -> bool:
        return self._stop.is_set() and not self._paused

    def unpausable(self) -> ReadInterrupt:
        """The same stop request, never paused: for what an apply's call waits on before
        it is sent (an OAuth token fetch), which changes nothing anywhere, so ending it
        at a stop leaves no write half done (the operation is then not sent)."""
        return ReadInterrupt(self._stop)

    def pause(self) -> None:
        """From now on the calls are an apply's: they run to their end (see module doc)."""
        self._paused = True

    def check(self, what: str) -> None:
        """Raise `Interrupted` instead of starting `what` if reads must stop."""
        if self.is_set():
            raise Interrupted(f"stopped before {what}: orgsync is shutting down")

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if reads must stop meanwhile (a retry's wait)."""
        deadline = time.monotonic() + seconds
        while not self.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._paused:
                time.sleep(remaining)
                return
            self._stop.wait(remaining)


def interruptible_transport(
    interrupt: ReadInterrupt,
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits | None = None,
    proxy: str | None = None,
) -> httpx.HTTPTransport:
    """An `httpx.HTTPTransport` (through `proxy` when given) whose reads end with
    `Interrupted` once `interrupt` is set."""
    transport = httpx.HTTPTransport(verify=verify, limits=limits or httpx.Limits(), proxy=proxy)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        backend, httpcore.NetworkBackend
    ):
        raise TypeError(
            "this httpx/httpcore version keeps its connection pool elsewhere: "
            "orgsync.interrupt needs updating"
        )
    pool._network_backend = _Backend(backend, interrupt)  # private: see the module doc
    return transport


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, interrupt: ReadInterrupt) -> None:
        self._inner = inner
        self._interrupt = interrupt

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        self._interrupt.check(f"connecting to {host}:{port}")
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _Stream(stream, self._interrupt)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        self._interrupt.check(f"connecting to {path}")
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(stream, self._interrupt)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    """A connection whose reads wait in slices, looking at the signal in between."""

    def __init__(self, inner: httpcore.NetworkStream, interrupt: ReadInterrupt) -> None:
        self._inner = inner
        self._interrupt = interrupt

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        answer_by: float | None = getattr(_answer, "deadline", None)
        if answer_by is not None:
            if now >= answer_by:
                raise httpcore.ReadTimeout(
                    "the answer did not arrive in time (a server sending it a little at a time)"
                )
            deadline = answer_by if deadline is None else min(deadline, answer_by)
        while True:
            self._interrupt.check("the server answered")
            wait = SLICE
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpcore.ReadTimeout("timed out")
                wait = min(SLICE, left)
            try:
                return self._inner.read(max_bytes, wait)
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._interrupt
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
