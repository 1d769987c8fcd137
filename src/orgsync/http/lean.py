"""A lean HTTP/1.1 exchange for the calls that make up a large read, beside httpx.

A full read of a large organization is tens of thousands of small requests (one list
call per group and per list). Through httpx and httpcore each costs about 1-2 ms of CPU
(URL parsing, request and response models, a cookie jar, the h11 state machine, the
connection pool's bookkeeping): at 100k people that was most of a dry run's CPU. This
module sends one request and reads one response on a keep-alive connection with the
standard library only, in a small fraction of that.

What it does, so that a call behaves as it does through httpx:
- a pool of keep-alive connections per client (at most `max_connections` open, 20 kept
  idle, an idle one dropped after `KEEPALIVE_EXPIRY` seconds or when the server has
  closed it: the same checks httpcore makes before reusing one);
- TLS with the context the client would give httpx (certificate and host name checked);
- bodies delimited by Content-Length, chunked or the connection's end; interim 1xx
  answers skipped; gzip and deflate decoded (the only encodings it asks for);
- the connect, read, write and pool timeouts of `httpx.Timeout`, each failure raised as
  the `httpx` exception httpcore would raise (`orgsync.http.responses` maps them), and a
  read that waits in slices of `orgsync.interrupt.SLICE` seconds when a stop signal is
  given, so that a stop request ends it as it ends a read through httpx.

What it does not do (the client sends those calls through httpx): proxies, absolute URLs,
form bodies, auth flows other than a fixed header, redirects (never followed anyway).

This module imports only httpx (for its exception types and TLS context), the standard
library and `orgsync.interrupt`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from orgsync.interrupt import SLICE, ReadInterrupt

__all__ = ["KEEPALIVE_EXPIRY", "MAX_BODY", "Exchange", "LeanPool", "body_too_large", "decode_body"]

KEEPALIVE_EXPIRY: Final = 4.0
"""Seconds an idle connection is kept. Below the common server default of 5 s (uvicorn,
many proxies), so that a reused connection is rarely one the server is closing."""
MAX_IDLE: Final = 20
"""Idle connections kept per pool (httpx's default `max_keepalive_connections`)."""
MAX_HEAD: Final = 64 * 1024
"""Bytes of status line and headers accepted before the response is called malformed."""
MAX_BODY = 128 * 1024 * 1024
"""Bytes of a response body accepted, as sent and once decoded (httpx's way too: see
`orgsync.http.client`). Ten times the largest answer a real server gives orgsync (a SCIM
group of 100k members read whole); beyond it a hostile or broken server (an endless
body, a gzip bomb) would take the daemon's memory, and every target's sync with it."""


def body_too_large(limit: int) -> httpx.DecodingError:
    """The error of a response body beyond `limit`: refused, and never retried (a
    `DecodingError`, which `orgsync.http.responses` counts as permanent)."""
    return httpx.DecodingError(f"the response body exceeds {limit} bytes; refused")


_RECV: Final = 256 * 1024
_NO_BODY_STATUSES: Final = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the server answered: status, reason phrase, raw headers (names as sent) and
    the decoded body."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection:
    __slots__ = ("buffer", "idle_since", "sock", "timeout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.idle_since = 0.0
        self.timeout: float | None = None

    def set_timeout(self, seconds: float | None) -> None:
        # A system call each time: skipped when the value is already in place.
        if seconds != self.timeout:
            self.sock.settimeout(seconds)
            self.timeout = seconds

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a socket the peer reset
            self.sock.close()


class LeanPool:
    """Keep-alive connections to one origin and the exchange of one request on them.

    Args:
        scheme: "http" or "https".
        host, port: the origin.
        tls: the TLS context for https (None for http).
        timeout: connect, read, write and pool timeouts, as httpx applies them (read and
            write per socket operation).
        max_connections: connections open at once; a request waits for one, up to the
            pool timeout.
        interrupt: when given, reads wait in slices and end with `Interrupted` once set.
    """

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        timeout: httpx.Timeout,
        max_connections: int,
        interrupt: ReadInterrupt | None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls if scheme == "https" else None
        self._connect_timeout = timeout.connect
        self._read_timeout = timeout.read
        self._write_timeout = timeout.write
        self._pool_timeout = timeout.pool
        self._interrupt = interrupt
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._closed = False

    # ------------------------------------------------------------------ the pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _acquire(self) -> _Connection:
        if not self._slots.acquire(timeout=self._pool_timeout):
            raise httpx.PoolTimeout("timed out waiting for a connection from the pool")
        try:
            return self._idle_connection() or self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _idle_connection(self) -> _Connection | None:
        """The most recently used idle connection still fit to carry a request."""
        now = time.monotonic()
        while True:
            with self._lock:
                if self._closed:
                    raise httpx.ConnectError("the client is closed")
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if now - connection.idle_since > KEEPALIVE_EXPIRY or _readable(connection.sock):
                # Expired, or the server closed it (readable while idle: its end or bytes
                # nobody asked for); either way it cannot carry a request.
                connection.close()
                continue
            return connection

    def _release(self, connection: _Connection, reusable: bool) -> None:
        try:
            if reusable:
                connection.idle_since = time.monotonic()
                with self._lock:
                    if not self._closed and len(self._idle) < MAX_IDLE:
                        self._idle.append(connection)
                        return
            connection.close()
        finally:
            self._slots.release()

    def _connect(self) -> _Connection:
        if self._interrupt is not None:
            self._interrupt.check(f"connecting to {self._host}:{self._port}")
        try:
            sock = socket.create_connection((self._host, self._port), self._connect_timeout)
        except TimeoutError as error:
            raise httpx.ConnectTimeout(str(error) or "timed out") from error
        except OSError as error:
            raise httpx.ConnectError(str(error)) from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(self._connect_timeout)
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except TimeoutError as error:
            sock.close()
            raise httpx.ConnectTimeout(str(error) or "timed out") from error
        except OSError as error:  # ssl.SSLError included: a refused certificate
            sock.close()
            raise httpx.ConnectError(str(error)) from error
        connection = _Connection(sock)
        connection.timeout = sock.gettimeout()
        return connection

    # ------------------------------------------------------------------ one exchange

    def exchange(self, request: bytes, *, head: bool = False) -> Exchange:
        """Send `request` (request line, headers and body, ready for the wire) and read
        the answer. `head`: the request was a HEAD (its answer has no body)."""
        connection = self._acquire()
        reusable = False
        try:
            self._send(connection, request)
            answer, reusable = self._receive(connection, head=head)
            return answer
        finally:
            self._release(connection, reusable)

    def _send(self, connection: _Connection, request: bytes) -> None:
        connection.set_timeout(self._write_timeout)
        try:
            connection.sock.sendall(request)
        except TimeoutError as error:
            raise httpx.WriteTimeout(str(error) or "timed out") from error
        except OSError as error:
            raise httpx.WriteError(str(error)) from error

    def _fill(self, connection: _Connection) -> bool:
        """Read more bytes into the connection's buffer; False at the end of the stream.

        The read timeout applies to this one read, as in httpcore. With a stop signal the
        wait goes in slices, looking at the signal in between."""
        interrupt = self._interrupt
        limit = self._read_timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            wait = limit
            if interrupt is not None:
                interrupt.check("the server answered")
                wait = SLICE if limit is None else min(SLICE, limit)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise httpx.ReadTimeout("timed out")
                    wait = min(wait, left)
            connection.set_timeout(wait)
            try:
                chunk = connection.sock.recv(_RECV)
            except TimeoutError as error:
                if interrupt is not None:
                    continue
                raise httpx.ReadTimeout(str(error) or "timed out") from error
            except OSError as error:
                raise httpx.ReadError(str(error)) from error
            if not chunk:
                return False
            connection.buffer += chunk
            return True

    def _receive(self, connection: _Connection, *, head: bool) -> tuple[Exchange, bool]:
        while True:
            version, status, reason, headers = self._read_head(connection)
            if status >= 200 or status == 101:
                break
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
        keep_alive = version == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        encodings: list[bytes] = []
        for name, value in headers:
            key = name.lower()
            if key == b"content-length":
                length = _content_length(value, length)
            elif key == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
                if not chunked:
                    raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {value!r}")
            elif key == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = keep_alive or version == b"HTTP/1.0"
            elif key == b"content-encoding":
                encodings += [t.strip().lower() for t in value.split(b",") if t.strip()]
        if head or status in _NO_BODY_STATUSES or status == 101:
            body = b""
            keep_alive = keep_alive and status != 101
        elif chunked:
            body = self._read_chunked(connection)
        elif length is not None:
            if length > MAX_BODY:
                raise body_too_large(MAX_BODY)
            body = self._read_exactly(connection, length)
        else:
            body = self._read_to_end(connection)
            keep_alive = False
        if connection.buffer:
            keep_alive = False  # bytes beyond the answer: nothing we can trust on it
        return Exchange(status, reason, headers, decode_body(body, encodings)), keep_alive

    def _read_head(
        self, connection: _Connection
    ) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
        buffer = connection.buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end >= 0:
                break
            if len(buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError("the response's headers are too long")
            start = max(0, len(buffer) - 3)
            if not self._fill(connection):
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                    if not buffer
                    else "the server closed the connection in the middle of the headers"
                )
            buffer = connection.buffer
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                # A missing colon, a space before it, or an obsolete folded line: h11
                # refuses all three, and so does this.
                raise httpx.RemoteProtocolError(f"malformed header line {line[:100]!r}")
            headers.append((name, value.strip(b" \t")))
        return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers

    def _read_exactly(self, connection: _Connection, size: int) -> bytes:
        while len(connection.buffer) < size:
            if not self._fill(connection):
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body: "
                    f"received {len(connection.buffer)} bytes, expected {size}"
                )
        body = bytes(connection.buffer[:size])
        del connection.buffer[:size]
        return body

    def _read_line(self, connection: _Connection) -> bytes:
        while True:
            end = connection.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(connection.buffer[:end])
                del connection.buffer[: end + 2]
                return line
            if len(connection.buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError("a chunk header is too long")
            if not self._fill(connection):
                raise httpx.RemoteProtocolError("peer closed connection in a chunked body")

    def _read_chunked(self, connection: _Connection) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line(connection).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"malformed chunk size {size_text[:20]!r}"
                ) from None
            if size < 0:
                raise httpx.RemoteProtocolError("negative chunk size")
            if size == 0:
                while self._read_line(connection):
                    pass  # trailers: read and dropped, as httpx does
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise body_too_large(MAX_BODY)
            parts.append(self._read_exactly(connection, size))
            if self._read_exactly(connection, 2) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk does not end with CRLF")

    def _read_to_end(self, connection: _Connection) -> bytes:
        while self._fill(connection):
            if len(connection.buffer) > MAX_BODY:
                raise body_too_large(MAX_BODY)
        body = bytes(connection.buffer)
        connection.buffer.clear()
        return body


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read (the server closed it). `poll`,
    not `select`: a daemon may hold descriptors beyond select's limit of 1024."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _content_length(value: bytes, seen: int | None) -> int:
    # A list of identical values is allowed (RFC 9110 §8.6); anything else is refused.
    values = {v.strip() for v in value.split(b",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise httpx.RemoteProtocolError(f"malformed Content-Length {value[:40]!r}")
    length = int(next(iter(values)))
    if seen is not None and seen != length:
        raise httpx.RemoteProtocolError("conflicting Content-Length headers")
    return length


def decode_body(body: bytes, encodings: Sequence[bytes]) -> bytes:
    """`body` as sent with these `Content-Encoding`s, decoded (gzip, deflate), at most
    `MAX_BODY` bytes of it; another encoding is a `httpx.DecodingError`."""
    for encoding in reversed(encodings):
        try:
            if encoding in (b"gzip", b"x-gzip"):
                body = _inflate(body, zlib.MAX_WBITS | 16)
            elif encoding == b"deflate":
                try:
                    body = _inflate(body, zlib.MAX_WBITS)
                except zlib.error:
                    body = _inflate(body, -zlib.MAX_WBITS)  # raw deflate, as httpx
            elif encoding != b"identity":
                raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
        except zlib.error as error:
            raise httpx.DecodingError(f"the body is not valid {encoding.decode()}") from error
    return body


def _inflate(body: bytes, wbits: int) -> bytes:
    """`body` decompressed, at most `MAX_BODY` bytes of it (a small body may expand a
    thousandfold)."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, MAX_BODY + 1)
    if len(out) > MAX_BODY or inflater.unconsumed_tail:
        raise body_too_large(MAX_BODY)
    return out + inflater.flush()
