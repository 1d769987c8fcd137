"""A stop request ends an HTTP read in flight at once and sends nothing more (issue 9, item 2).

Both HTTP layers (the targets' `ApiClient`, the sources' `SourceHttp`) against a real
HTTP server on loopback that records when each request *arrives* and answers slowly, or
asks for a retry much later. Paused (the apply phase), the same signal leaves a call in
flight alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orgsync.core.errors import Interrupted
from orgsync.interrupt import SLICE, ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.sources._http import SourceHttp
from orgsync.targets.http import ApiClient

SLOW = 5.0
"""Seconds the server takes to answer: far longer than any prompt stop."""


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrivals: list[str] = []
        self.delay = SLOW
        self.status = 200
        self.headers: dict[str, str] = {}
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: SlowServer

    def do_GET(self) -> None:
        self.server.arrivals.append(self.path)
        self.server.released.wait(self.server.delay)
        body = b'{"data": []}'
        try:
            self.send_response(self.server.status)
            for name, value in self.server.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away: that is the point

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def server() -> Iterator[SlowServer]:
    running = SlowServer()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.released.set()
        running.shutdown()
        running.server_close()


def target_client(server: SlowServer, interrupt: ReadInterrupt) -> ApiClient:
    return ApiClient(
        server.url,
        bearer_token="sk-test-0123456789",
        system="t",
        timeout=30.0,
        retry=RetrySettings(max_attempts=5, max_delay=60.0),
        user_agent="orgsync-test",
        interrupt=interrupt,
    )


def source_client(server: SlowServer, interrupt: ReadInterrupt) -> SourceHttp:
    return SourceHttp(
        server.url,
        system="okta",
        retry=RetrySettings(max_attempts=5, max_delay=60.0),
        timeout=30.0,
        interrupt=interrupt,
    )


def stop_after(stop: threading.Event, seconds: float) -> None:
    threading.Timer(seconds, stop.set).start()


def read_stopped_after(server: SlowServer, layer: str, seconds: float) -> float:
    """Read through `layer`'s client, stopped after `seconds`; how long the read took."""
    stop = threading.Event()
    interrupt = ReadInterrupt(stop)
    stop_after(stop, seconds)
    started = time.monotonic()
    if layer == "target":
        with target_client(server, interrupt) as client, pytest.raises(Interrupted):
            client.request("GET", "/organization/users", idempotent=True)
    else:
        with source_client(server, interrupt) as http, pytest.raises(Interrupted):
            http.get_json("/api/v1/users")
    return time.monotonic() - started


@pytest.mark.parametrize("layer", ["target", "source"])
def test_a_read_in_flight_ends_at_once_and_is_not_sent_again(
    server: SlowServer, layer: str
) -> None:
    took = read_stopped_after(server, layer, 0.3)
    assert took < 0.3 + 5 * SLICE, took
    time.sleep(0.5)  # a retry, had there been one, would have arrived by now
    assert len(server.arrivals) == 1


@pytest.mark.parametrize("layer", ["target", "source"])
def test_a_retry_wait_ends_at_once_without_the_retry(server: SlowServer, layer: str) -> None:
    server.delay = 0.0
    server.status = 503
    server.headers = {"Retry-After": "30"}
    assert read_stopped_after(server, layer, 0.5) < 2.0
    assert len(server.arrivals) == 1


def test_a_paused_interrupt_lets_the_call_in_flight_finish(server: SlowServer) -> None:
    """The apply phase: a stop lets the calls in flight end by themselves."""
    server.delay = 1.0
    stop = threading.Event()
    interrupt = ReadInterrupt(stop)
    interrupt.pause()
    stop_after(stop, 0.2)
    with target_client(server, interrupt) as client:
        response = client.request("GET", "/organization/users", idempotent=True)
    assert response.status_code == 200
    assert stop.is_set()


def test_a_stop_before_the_call_sends_nothing(server: SlowServer) -> None:
    stop = threading.Event()
    stop.set()
    with target_client(server, ReadInterrupt(stop)) as client, pytest.raises(Interrupted):
        client.request("GET", "/organization/users", idempotent=True)
    assert server.arrivals == []
