"""Real receivers on loopback for notification tests: an HTTP endpoint and an SMTP server.

`HttpReceiver` is a stdlib HTTP server that records every request, checks the
`X-Orgsync-Signature` with the daemon's own verifier (`orgsync.daemon.webhooks`), and
answers from a script: a status, `("429", seconds)` with Retry-After, or `"hang"` (read
the request, never answer, until the receiver stops). Hostile answers: `"echo-path"` (a
404 page quoting the request path, as Apache's does), `"trickle"` (a 200 whose header
lines come one every 0.1 s for 5 s), `"endless"` (a 500 whose body never ends, 1 KiB
every 5 ms for 5 s; `"endless-ok"` the same as a 200), `("redirect", url)` (a 307 to `url`). With `tls`, it serves HTTPS. `SmtpReceiver` is aiosmtpd with
STARTTLS, implicit TLS or none, and optional AUTH, recording each message.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from orgsync.daemon.webhooks import Refused, verify_signature
from tests.sources.servers import TlsFiles, free_port

Answer = int | str | tuple[int, int] | tuple[str, str]
HOSTILE_SECONDS = 5.0
"""How long a trickling or endless answer goes on (bounded, so a failing test ends)."""
T = TypeVar("T")


def _wait_for(
    lock: threading.Lock, items: list[T], count: int, timeout: float, what: str
) -> list[T]:
    """A copy of `items` once it holds `count`; an AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if len(items) >= count:
                return list(items)
        time.sleep(0.02)
    raise AssertionError(f"{len(items)} {what} after {timeout}s, wanted {count}")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    signature_ok: bool | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers `script` in order, then `default`; records every request."""

    secret: bytes | None = None
    script: list[Answer] = field(default_factory=list)
    default: Answer = 200
    received: list[Received] = field(default_factory=list)
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/hook"

    def _next_answer(self) -> Answer:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                signature_ok = None
                if receiver.secret is not None:
                    try:
                        verify_signature(
                            headers.get("x-orgsync-signature"), body, receiver.secret, time.time()
                        )
                        signature_ok = True
                    except Refused:
                        signature_ok = False
                receiver._record(Received(self.path, headers, body, time.monotonic(), signature_ok))
                answer = receiver._next_answer()
                if answer == "hang":
                    receiver._released.wait(120)
                    return
                if isinstance(answer, str) or (
                    isinstance(answer, tuple) and answer[0] == "redirect"
                ):
                    with contextlib.suppress(OSError):  # the client gave up: that is the point
                        self._hostile(answer)
                    return
                if signature_ok is False:
                    answer = 401
                status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
                assert isinstance(status, int)
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                reply = b"ok" if status < 300 else b"no"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _hostile(self, answer: Answer) -> None:
                deadline = time.monotonic() + HOSTILE_SECONDS
                if isinstance(answer, tuple):
                    self.send_response(307)
                    self.send_header("Location", str(answer[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif answer == "echo-path":
                    page = f"<p>The requested URL {self.path} was not found here.</p>".encode()
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                elif answer == "trickle":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while time.monotonic() < deadline and not receiver._released.is_set():
                        self.wfile.write(b"X-Slow: 1\r\n")
                        self.wfile.flush()
                        time.sleep(0.1)
                elif answer in ("endless", "endless-ok"):
                    status = b"200 OK" if answer == "endless-ok" else b"500 Oops"
                    self.wfile.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\n\r\n" % status)
                    while time.monotonic() < deadline and not receiver._released.is_set():
                        self.wfile.write(b"e" * 1024)
                        self.wfile.flush()
                        time.sleep(0.005)
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            # The handshake runs at accept; one a client refuses is an OSError there,
            # which the server drops without recording a request.
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.received]

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        return _wait_for(self._lock, self.received, count, timeout, "request(s)")


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/hook"


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: str | None


class _Handler:
    def __init__(self, sink: Callable[[Mail], None], reply: Callable[[], str]) -> None:
        self._sink = sink
        self._reply = reply

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        answer = self._reply()
        if not answer.startswith("250"):
            return answer
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        self._sink(
            Mail(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                parsed,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                authenticated=login,
            )
        )
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd on loopback; `tls`: "starttls" (required), "implicit", "none", or
    "offers-none" (plain, without STARTTLS on offer)."""

    def __init__(
        self,
        tls_files: TlsFiles | None,
        *,
        tls: str = "starttls",
        users: Mapping[str, str] | None = None,
        replies: list[str] | None = None,
    ) -> None:
        self.messages: list[Mail] = []
        self.port = free_port()
        self._replies = list(replies or [])
        self._lock = threading.Lock()
        self._users = dict(users or {})
        context = None
        if tls_files is not None and tls in ("starttls", "implicit"):
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls_files.cert, tls_files.key)
        kwargs: dict[str, Any] = {}
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif tls == "implicit":
            kwargs.update(ssl_context=context)
        if self._users:
            # aiosmtpd offers AUTH only after STARTTLS (not over implicit TLS).
            assert tls == "starttls", "AUTH is tested over STARTTLS"
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self._controller = Controller(
            _Handler(self._store, self._reply), hostname="127.0.0.1", port=self.port, **kwargs
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = self._users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=data)

    def _reply(self) -> str:
        with self._lock:
            return self._replies.pop(0) if self._replies else "250 OK"

    def _store(self, mail: Mail) -> None:
        with self._lock:
            self.messages.append(mail)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout: float = 10) -> list[Mail]:
        return _wait_for(self._lock, self.messages, count, timeout, "message(s)")


class SlowSmtp:
    """A TCP server on loopback that greets like SMTP one continuation line every 0.1 s
    (`220-slow`) for `HOSTILE_SECONDS` and never finishes the greeting."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()

    def _greet(self, connection: socket.socket) -> None:
        deadline = time.monotonic() + HOSTILE_SECONDS
        with connection, contextlib.suppress(OSError):
            while time.monotonic() < deadline and not self._stop.is_set():
                connection.sendall(b"220-slow\r\n")
                time.sleep(0.1)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                connection, _ = self._socket.accept()
                threading.Thread(target=self._greet, args=(connection,), daemon=True).start()

    def __enter__(self) -> SlowSmtp:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        self._socket.close()
