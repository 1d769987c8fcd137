"""`orgsync` behind an egress proxy named by the environment (a real tinyproxy).

Many companies let servers reach SaaS APIs only through a proxy (`HTTPS_PROXY`,
`HTTP_PROXY`, `NO_PROXY`, as curl and every HTTP tool read them). orgsync must go
through it, never around it when it is down (traffic bypassing a mandated proxy is a
policy breach, and a failure must say so), and must send `NO_PROXY` hosts direct.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Rig, directory
from tests.servers import free_port, require_binary

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class Tinyproxy:
    def __init__(self, folder: Path) -> None:
        binary = require_binary("tinyproxy")
        self.log = folder / "tinyproxy.log"
        for _ in range(5):  # another process may take the port between pick and bind
            self.port = free_port()
            config = folder / "tinyproxy.conf"
            config.write_text(
                f'Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{self.log}"\n'
                "LogLevel Info\nMaxClients 20\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
                encoding="utf-8",
            )
            self.process = subprocess.Popen(
                [binary, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                except OSError:
                    time.sleep(0.05)
                else:
                    return
            self.stop()
        raise RuntimeError(f"tinyproxy did not start; see {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines the proxy forwarded."""
        if not self.log.exists():
            return []
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if "Request (file descriptor" in line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    server = Tinyproxy(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def behind(rig: Rig, proxy_url: str, no_proxy: str = "") -> None:
    for name in PROXY_VARIABLES:  # both spellings: the lower case wins where both are set
        rig.env[name] = rig.env[name.upper()] = ""
    rig.env["http_proxy"] = rig.env["HTTP_PROXY"] = proxy_url
    rig.env["no_proxy"] = rig.env["NO_PROXY"] = no_proxy


def test_every_call_goes_through_the_proxy_the_environment_names(
    rig: Rig, proxy: Tinyproxy
) -> None:
    rig.write(directory(5, owners=1))
    behind(rig, proxy.url)
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stderr
    forwarded = proxy.requests()
    calls = [r for r in rig.emulator.requests if r.path.startswith("/v1/")]
    assert calls and len(forwarded) >= len(calls), (forwarded, len(calls))
    assert any("/v1/organization/invites" in line for line in "\n".join(forwarded).split("\n"))


def test_no_proxy_hosts_are_reached_direct(rig: Rig, proxy: Tinyproxy) -> None:
    rig.write(directory(3))
    behind(rig, proxy.url, no_proxy="127.0.0.1")
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stderr
    assert proxy.requests() == []
    assert rig.emulator.writes()


def test_a_proxy_that_is_down_fails_the_run_and_nothing_goes_around_it(rig: Rig) -> None:
    rig.write(directory(3))
    behind(rig, f"http://proxyuser:proxy-secret-1234@127.0.0.1:{free_port()}")
    result = rig.orgsync("sync")
    assert result.returncode == 1, result.stdout + result.stderr
    assert rig.emulator.requests == [], "a call went around the proxy"
    assert "proxy-secret-1234" not in result.stdout + result.stderr
