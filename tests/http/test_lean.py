"""`orgsync.http.lean`, the way `HttpClient` sends its plain calls, against a scripted
HTTP/1.1 server on a loopback socket: the bytes on the wire are httpx's, every way of
delimiting a body is read, keep-alive connections are reused but never one the server
closed, a malformed or cut answer is a transient failure, a stalled read ends at its
timeout or at a stop request, and a header value httpx would refuse is refused."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from orgsync.core.errors import Interrupted, TransientError
from orgsync.http.auth import HeaderAuth
from orgsync.http.client import HttpClient, request_id
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings

ONCE = RetrySettings(max_attempts=1, base=0.0, cap=0.0)
TOKEN = "sk-lean-test-0123456789"

Answer = Callable[[bytes], bytes | None]
"""Given a request's bytes, the raw answer to send (None: send nothing, keep waiting)."""


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Scripted:
    """A one-thread-per-connection HTTP/1.1 server answering each request with the next
    scripted answer; it records every request's bytes and counts connections. An answer
    ending in `CLOSE` closes the connection after it is sent."""

    CLOSE = b"<close>"

    def __init__(self, answers: list[bytes | Answer]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                answer = self.answers.pop(0) if self.answers else ok()
                raw = answer(request) if callable(answer) else answer
                if raw is None:
                    self._stop.wait(60)
                    return
                close = raw.endswith(self.CLOSE)
                conn.sendall(raw.removesuffix(self.CLOSE))
                if close:
                    conn.shutdown(socket.SHUT_RDWR)
                    return


@pytest.fixture
def scripted() -> Iterator[Callable[[list[bytes | Answer]], Scripted]]:
    servers: list[Scripted] = []

    def start(answers: list[bytes | Answer]) -> Scripted:
        server = Scripted(answers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def client(url: str, **options: object) -> HttpClient:
    return HttpClient(
        f"{url}/v1",
        system="lean",
        retry=ONCE,
        auth=HeaderAuth.bearer(TOKEN),
        **options,  # type: ignore[arg-type]
    )


def head_of(request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def test_the_bytes_on_the_wire_are_httpx_s(scripted: Callable[..., Scripted]) -> None:
    server = scripted([])
    calls = [
        (
            "GET",
            "/organization/users",
            {"limit": 100, "after": None, "emails": ["a@x.org", "b c"]},
            None,
        ),
        ("POST", "/organization/invites", None, {"email": "ü@x.org", "role": "reader", "n": 1.5}),
        ("POST", "/organization/groups/g%2F1/users", None, None),
        ("DELETE", "/organization/users/user_1", {"flag": True}, None),
    ]
    lean = client(server.url)
    through_httpx = client(server.url, transport=httpx.HTTPTransport())
    with lean, through_httpx:
        for method, path, params, body in calls:
            for each in (lean, through_httpx):
                each.send(
                    method, path, params=params, json=body, idempotent=True, parse=lambda r: r
                )
    pairs = list(zip(server.requests[0::2], server.requests[1::2], strict=True))
    assert len(pairs) == len(calls)
    for mine, theirs in pairs:
        line, headers, body = head_of(mine)
        their_line, their_headers, their_body = head_of(theirs)
        assert line == their_line
        assert body == their_body
        # Accept-Encoding lists only what the lean way decodes.
        assert headers.pop(b"accept-encoding") == b"gzip, deflate"
        their_headers.pop(b"accept-encoding")
        assert headers == their_headers
    assert head_of(pairs[0][0])[0] == (
        b"GET /v1/organization/users?limit=100&emails=a%40x.org&emails=b+c HTTP/1.1"
    )
    assert head_of(pairs[0][0])[1][b"authorization"] == f"Bearer {TOKEN}".encode()


def test_every_way_of_delimiting_a_body_is_read(scripted: Callable[..., Scripted]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    packed = gzip.compress(b'{"a": 2}')
    zipped = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(packed)}\r\n\r\n".encode()
        + packed
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"a": 3}')
    to_the_end = b'HTTP/1.1 200 OK\r\n\r\n{"a": 4}' + Scripted.CLOSE
    server = scripted([chunked, zipped, interim, ok(b'{"a": 5}'), to_the_end, ok(b'{"a": 6}')])
    with client(server.url) as lean:
        found = [
            lean.send("GET", "/things", idempotent=True, parse=lambda r: r.json()["a"])
            for _ in range(6)
        ]
    assert found == [1, 2, 3, 5, 4, 6]
    # One connection for the first four answers; the body read to the end closes it.
    assert server.connections == 2


def test_a_connection_the_server_closed_is_not_reused(scripted: Callable[..., Scripted]) -> None:
    server = scripted([ok() + Scripted.CLOSE, ok(), ok()])
    with client(server.url) as lean:
        lean.send("GET", "/a", idempotent=False, parse=lambda r: r)
        time.sleep(0.1)  # the server's FIN arrives
        lean.send("GET", "/b", idempotent=False, parse=lambda r: r)
        lean.send("GET", "/c", idempotent=False, parse=lambda r: r)
    assert server.connections == 2
    assert len(server.requests) == 3


def test_connection_close_is_honoured(scripted: Callable[..., Scripted]) -> None:
    server = scripted([ok(b"{}", "Connection: close"), ok()])
    with client(server.url) as lean:
        lean.send("GET", "/a", idempotent=False, parse=lambda r: r)
        lean.send("GET", "/b", idempotent=False, parse=lambda r: r)
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}" + Scripted.CLOSE, "expected 50"),
        (b"SMTP ready\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (Scripted.CLOSE, "without sending a response"),
    ],
)
def test_a_malformed_or_cut_answer_is_transient(
    scripted: Callable[..., Scripted], answer: bytes, why: str
) -> None:
    server = scripted([answer])
    with client(server.url) as lean, pytest.raises(TransientError, match=why):
        lean.send("GET", "/things", idempotent=True, parse=lambda r: r)


def test_a_stalled_read_ends_at_its_timeout(scripted: Callable[..., Scripted]) -> None:
    server = scripted([lambda _: None])
    started = time.monotonic()
    with (
        client(server.url, timeout=0.5) as lean,
        pytest.raises(TransientError, match="ReadTimeout"),
    ):
        lean.send("GET", "/slow", idempotent=True, parse=lambda r: r)
    assert 0.4 < time.monotonic() - started < 5


def test_a_stop_request_ends_a_stalled_read(scripted: Callable[..., Scripted]) -> None:
    server = scripted([lambda _: None])
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with (
        client(server.url, timeout=30, interrupt=ReadInterrupt(stop)) as lean,
        pytest.raises(Interrupted),
    ):
        lean.send("GET", "/slow", idempotent=True, parse=lambda r: r)
    assert time.monotonic() - started < 3


def test_header_values_httpx_would_refuse_are_left_to_httpx(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted([])
    with (
        HttpClient(
            f"{server.url}/v1",
            system="lean",
            retry=ONCE,
            auth=HeaderAuth("Bearer a\r\nX-Injected: 1"),
        ) as refused,
        pytest.raises(Exception, match="header"),
    ):
        refused.send("GET", "/things", idempotent=True, parse=lambda r: r)
    assert server.requests == []


def test_headers_read_the_lean_way_are_httpx_s(scripted: Callable[..., Scripted]) -> None:
    """A lean answer builds its `httpx.Headers` only when they are read, and the request id
    (read for every debug line) comes from the raw headers: both as httpx gives them,
    repeated headers joined, names in any case."""
    answers = [
        ok(b"{}", "X-Request-Id: req_1", "x-request-id: req_2", "Retry-After: 3"),
        ok(b"{}"),
        ok(b"{}", "X-Request-ID: r\u00e9q"),
    ]
    server = scripted(answers)
    lean = client(server.url)
    through_httpx = client(server.url, transport=httpx.HTTPTransport())
    seen: list[list[tuple[str | None, list[tuple[str, str]]]]] = []
    with lean, through_httpx, capture_logs() as logs:
        for each in (lean, through_httpx):
            server.answers = list(answers)
            responses = [
                each.send("GET", "/things", idempotent=True, parse=lambda r: r) for _ in answers
            ]
            seen.append([(request_id(r), r.headers.multi_items()) for r in responses])
    assert seen[0] == seen[1]
    assert [found for found, _ in seen[0]] == ["req_1, req_2", None, "réq"]
    ids = [line.get("request_id") for line in logs if line["event"] == "http.request"]
    assert ids == ["req_1, req_2", None, "réq"] * 2
