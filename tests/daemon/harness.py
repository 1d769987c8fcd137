"""`orgsync daemon` as a real process on loopback, and what tests need around it.

`DaemonRig` writes a directory file and a configuration (schedule, server, webhook
secret) into a folder; `Daemon` is one `python -m orgsync ... daemon` process whose
JSON log goes to a file (never a pipe a busy test could leave unread), whose port is read
from its `daemon.started` line, and which is stopped by its pid. The state database is
read with sqlite3 in read-only mode, as any outside observer could.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from orgsync.daemon.webhooks import sign
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, holdings, pending_invites_per_email
from tests.postgres import PASSWORD, PASSWORD_ENV, state_keys

SECRET = "daemon-test-webhook-secret-0123456789"
SECRET_ENV = "ORGSYNC_TEST_WEBHOOK_SECRET"
OKTA_AUTH = "okta-test-authorization-value"
OKTA_ENV = "ORGSYNC_TEST_OKTA_AUTH"
GRAPH_STATE = "graph-test-client-state"
GRAPH_ENV = "ORGSYNC_TEST_GRAPH_STATE"

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


@dataclass
class DaemonRig:
    folder: Path
    emulator: OpenAIEmulator
    interval: str = "1h"
    jitter: str = "0s"
    debounce: str = "300ms"
    quarantine: str = ""
    server_extra: str = ""
    """More `[server]` lines (health_listen, timeouts, connection limits)."""
    safety_extra: str = ""
    """More `[safety]` lines (addition limits, removal_grace)."""
    env: dict[str, str] = field(default_factory=dict)
    state: str = 'path = "state.db"'
    """The `[state]` lines; `on_postgres` puts the state on PostgreSQL."""
    target_keys: str = ""
    """More lines of the target's table (`requests_per_second`)."""

    def on_postgres(self, url: str, *more: str) -> None:
        """The state on the PostgreSQL database at `url` (password from PASSWORD_ENV),
        with `more` `[state]` lines (`lease_ttl`); write() afterwards."""
        self.state = "\n".join([state_keys(url), *more])
        self.env[PASSWORD_ENV] = PASSWORD

    @property
    def config_path(self) -> Path:
        return self.folder / "orgsync.toml"

    @property
    def state_db(self) -> Path:
        return self.folder / "state.db"

    def write(self, document: dict[str, Any]) -> None:
        (self.folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")
        self.config_path.write_text(
            f"""
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{self.emulator.start()}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
timeout = "5s"
max_attempts = 2
max_retry_delay = "1s"
{self.target_keys}
[[targets.roles]]
group = "openai-owners"
role = "owner"

[safety]
max_removals = 100
max_removal_ratio = 1.0
{self.safety_extra}

[state]
{self.state}

[schedule]
interval = "{self.interval}"
jitter = "{self.jitter}"
{self.quarantine}

[server]
listen = "127.0.0.1:0"
webhook_secret_env = "{SECRET_ENV}"
okta_authorization_env = "{OKTA_ENV}"
entra_client_state_env = "{GRAPH_ENV}"
debounce = "{self.debounce}"
{self.server_extra}
""",
            encoding="utf-8",
        )

    def environ(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            KEY_ENV: API_KEY,
            SECRET_ENV: SECRET,
            OKTA_ENV: OKTA_AUTH,
            GRAPH_ENV: GRAPH_STATE,
            **self.env,
            **extra,
        }

    def start(self, name: str = "daemon", **extra_env: str) -> Daemon:
        return start_daemon(
            self.config_path, self.folder / f"{name}.log", self.environ(**extra_env)
        )

    def orgsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli.run(self.config_path, *args, env=self.environ())

    # ------------------------------------------------------------------ the state database

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        if not self.state_db.exists():
            return []
        try:
            with sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=5) as db:
                db.row_factory = sqlite3.Row
                return list(db.execute(sql, params))
        except sqlite3.OperationalError:
            return []  # not created yet, or tables not migrated yet

    def runs(self) -> list[sqlite3.Row]:
        """Every run, oldest first."""
        return self.query("SELECT * FROM runs ORDER BY started_at")

    def finished_runs(self) -> list[sqlite3.Row]:
        return [r for r in self.runs() if r["status"] != "running"]

    def operations(self, run_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM operations WHERE run_id = ? ORDER BY seq", (run_id,))

    # ------------------------------------------------------------------ the organization

    def holdings(self) -> dict[str, str]:
        return holdings(self.emulator)

    def pending_invites(self) -> dict[str, int]:
        return pending_invites_per_email(self.emulator)


def start_daemon(config: Path, log_path: Path, env: dict[str, str]) -> Daemon:
    """`orgsync --config CONFIG daemon`, its output (the JSON log) into `log_path`."""
    with log_path.open("wb") as log:
        process = cli.start(config, "daemon", env=env, stdout=log, stderr=log)
    return Daemon(process, log_path)


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    log_path: Path
    port: int | None = None
    health_port: int | None = None
    """The `[server] health_listen` port, when configured."""

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (non-JSON lines, e.g. uvicorn's, skipped)."""
        found = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line being written right now
        return found

    def wait_started(self, timeout: float = 60) -> int:
        def started() -> int | None:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited {self.process.returncode}: {self.log()}")
            for event in self.events():
                if event.get("event") == "daemon.started":
                    if "health_port" in event:
                        self.health_port = int(event["health_port"])
                    return int(event["port"])
            return None

        self.port = wait_for(started, timeout=timeout, what="daemon.started")
        return self.port

    def url(self, path: str) -> str:
        assert self.port is not None, "wait_started() first"
        return f"http://127.0.0.1:{self.port}{path}"

    def probe_url(self, path: str) -> str:
        """Where `/healthz`, `/readyz` and `/metrics` are: `health_listen`, else `listen`."""
        assert self.port is not None, "wait_started() first"
        return f"http://127.0.0.1:{self.health_port or self.port}{path}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url(path), timeout=10)

    def post_generic(
        self,
        document: dict[str, Any] | None = None,
        *,
        body: bytes | None = None,
        timestamp: int | None = None,
        secret: str = SECRET,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        content = body if body is not None else json.dumps(document).encode()
        at = int(time.time()) if timestamp is None else timestamp
        headers = {
            "X-Orgsync-Signature": sign(secret.encode(), at, content),
            "Content-Type": "application/json",
        }
        if client is not None:
            return client.post(self.url("/webhooks/generic"), content=content, headers=headers)
        return httpx.post(self.url("/webhooks/generic"), content=content, headers=headers)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (by pid) and wait; returns the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
