"""The one launcher of the suite's third-party servers in child processes (SCIM servers
from npm and PyPI, the Django SCIM app), whatever folder's tests use them.

* `require_binary`: the path of a tool; a skip on a workstation, a failure in CI;
* `free_port`: a loopback port nobody listens on right now;
* `ChildServer`: a server process with its base URL, stopped politely then killed;
* `start_printing_port`: start a server that prints `PORT <n>` once it listens (SCIMMY,
  the seeded scim2-server wrapper, django-scim2), reading the port without a fixed sleep;
* `start_polled`: start a server that cannot tell its port (the `scim2-server` command),
  on a free port, polling one of its URLs until it answers;
* `ensure_npm_installed`: `npm ci` in a folder whose node_modules are missing.

A server's stderr goes to a log file in the test's folder (a pipe nobody drains could
fill up and stall the server); a server that dies before it listens fails the test with
where that log is.

A missing tool skips on a workstation but fails under CI=true or scripts/test
(ORGSYNC_REQUIRE_SERVERS=1): CI must never pass by running less.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest


def require_binary(name: str) -> str:
    """The path of `name` (on PATH, or in /usr/sbin); a skip on a workstation, a failure
    in CI."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        message = f"{name} is not installed (scripts/setup-system installs it)"
        if os.environ.get("CI") == "true" or os.environ.get("ORGSYNC_REQUIRE_SERVERS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChildServer:
    """A server in a child process: its base `url`, its `port`, and the ids it was seeded
    with (key -> server id), when it was."""

    process: subprocess.Popen[str]
    port: int
    url: str
    ids: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._close_pipes()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_printing_port(
    argv: Sequence[str],
    log: Path,
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> tuple[subprocess.Popen[str], int]:
    """Start a server that prints `PORT <n>` on stdout once it listens; return it and n.

    Fails (killing it) when it exits or stays silent for `timeout` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as errors:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=cwd,
            env=None if env is None else dict(env),
        )
    assert process.stdout is not None
    found: list[int] = []

    def reader(stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("PORT "):
                found.append(int(line.split()[1]))
                return

    thread = threading.Thread(target=reader, args=(process.stdout,), daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        process.kill()
        process.wait(5)
        raise RuntimeError(f"{what} did not start (exit {process.returncode}); see {log}")
    return process, found[0]


def start_polled(
    argv: Sequence[str],
    log: Path,
    *,
    what: str,
    port_option: str,
    probe: str,
    attempts: int = 5,
    timeout: float = 30,
) -> tuple[subprocess.Popen[str], int]:
    """Start a server that cannot tell its port: on a free port (given after
    `port_option`), polling `probe` (a path) until it answers below 500. Another process
    may take the port between the pick and the bind, so a server that dies is started
    again on another port, `attempts` times."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    for _ in range(attempts):
        port = free_port()
        command[command.index(port_option) + 1] = str(port)
        with log.open("w") as errors:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        if wait_http(f"http://127.0.0.1:{port}{probe}", process, timeout):
            return process, port
        process.kill()
        process.wait(5)
    raise RuntimeError(f"{what} did not start; see {log}")


def wait_http(url: str, process: subprocess.Popen[str], timeout: float = 30) -> bool:
    """Whether `url` answered (below 500) before `timeout`, or the process exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def ensure_npm_installed(folder: Path, marker: str) -> None:
    """`npm ci` in `folder` when `node_modules/<marker>` is missing (its package-lock.json
    pins every package; scripts/setup-system does it ahead of the suite)."""
    require_binary("node")
    npm = require_binary("npm")
    if (folder / "node_modules" / marker).is_dir():
        return
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        check=True,
        timeout=300,
        capture_output=True,
    )
