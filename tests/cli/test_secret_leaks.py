"""A refused credential, quoted back by the server in every way servers do, reaches no
output: not stdout, not `--json`, not the logs on stderr, not `status`, not `runs`, not
the bytes of the state database. And a key pasted where its variable's name belongs is
refused without being shown, before anything is stored."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import cli
from tests.leaks import ECHOES, echo, traces

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

KEY = "sk-admin-Ab+/c=d~EFGH0123456789ijklmnop"
KEY_ENV = "ORGSYNC_LEAK_TEST_KEY"


class EchoingServer(ThreadingHTTPServer):
    """Answers every request 401 with the credential it was sent, quoted in each of the
    ways `how` names, in an OpenAI-shaped error body (and Okta's fields, for the source)."""

    how: tuple[str, ...] = ("exact",)


class _Handler(BaseHTTPRequestHandler):
    server: EchoingServer

    def do_GET(self) -> None:
        credential = self.headers.get("Authorization", "").partition(" ")[2]
        quoted = " ".join(echo(credential, how) for how in self.server.how)
        message = f"Incorrect API key provided: {quoted}. Find your key in the dashboard."
        body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                },
                "errorSummary": message,
                "errorCode": "E0000011",
                "detail": message,
            }
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("WWW-Authenticate", f'Bearer error="invalid_token", hint="{quoted}"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[EchoingServer]:
    running = EchoingServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def orgsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run(config, *args, env={**os.environ, KEY_ENV: KEY}, timeout=60)


def state_bytes(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.glob("state.db*"))


# Three echoes per answer keep the message under the length kept for a refused credential,
# so that what is tested is the scrubbing, not the cut.
ECHO_GROUPS = [ECHOES[i : i + 3] for i in range(0, len(ECHOES), 3)]

TARGET_CONFIG = """
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "leaky"
type = "{kind}"
base_url = "{url}"
api_key_env = "{key_env}"
allow_plaintext = true
timeout = "5s"
max_attempts = 1

[state]
path = "state.db"
"""


@pytest.mark.parametrize("kind", ["openai", "scim"])
def test_a_target_echoing_the_key_leaks_it_nowhere(
    tmp_path: Path, server: EchoingServer, kind: str
) -> None:
    (tmp_path / "directory.json").write_text(
        json.dumps({"people": [{"id": "p1", "email": "ada@example.com"}]}), encoding="utf-8"
    )
    config = tmp_path / "orgsync.toml"
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    config.write_text(TARGET_CONFIG.format(kind=kind, url=url, key_env=KEY_ENV), encoding="utf-8")
    seen = []
    for group in ECHO_GROUPS:
        server.how = group
        result = orgsync(config, "sync", "--json")
        assert result.returncode == 1, result.stderr
        assert "HTTP 401" in result.stdout + result.stderr
        seen.append((group, "sync", result.stdout + result.stderr))
    explained = orgsync(config, "explain", "ada@example.com", "--json")
    assert explained.returncode == 1 and "HTTP 401" in explained.stderr
    seen.append((group, "explain", explained.stdout + explained.stderr))
    status = orgsync(config, "status")
    runs = orgsync(config, "runs", "--json")
    assert len(json.loads(runs.stdout)) == len(ECHO_GROUPS)  # explain records no run
    seen += [(group, "status", status.stdout), (group, "runs", runs.stdout)]
    seen.append((group, "state.db", state_bytes(tmp_path)))
    leaks = [(how, where, traces(KEY, text)) for how, where, text in seen if traces(KEY, text)]
    assert leaks == []
    assert "invalid_api_key" in runs.stdout or "Incorrect API key" in runs.stdout


SOURCE_CONFIG = """
[source]
type = "okta"
url = "{url}"
token_env = "{key_env}"
allow_plaintext = true
max_attempts = 1

[[targets]]
name = "t"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "UNUSED_KEY"

[state]
path = "state.db"
"""


def test_a_source_echoing_the_token_leaks_it_nowhere(tmp_path: Path, server: EchoingServer) -> None:
    config = tmp_path / "orgsync.toml"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config.write_text(SOURCE_CONFIG.format(url=url, key_env=KEY_ENV), encoding="utf-8")
    server.how = ("url", "basic", "masked")
    result = orgsync(config, "sync", "--json")
    assert result.returncode == 1
    assert "HTTP 401" in result.stdout + result.stderr
    assert traces(KEY, result.stdout + result.stderr) == []
    assert traces(KEY, state_bytes(tmp_path)) == []


def test_a_key_pasted_into_api_key_env_is_refused_unshown(tmp_path: Path) -> None:
    (tmp_path / "directory.json").write_text('{"people": []}', encoding="utf-8")
    config = tmp_path / "orgsync.toml"
    config.write_text(
        TARGET_CONFIG.format(kind="openai", url="https://api.openai.com/v1", key_env=KEY),
        encoding="utf-8",
    )
    for command in (["sync"], ["status"]):
        result = orgsync(config, *command)
        assert result.returncode == 1
        assert "targets[0].api_key_env: must be the NAME of an environment variable" in (
            result.stderr
        )
        assert traces(KEY, result.stdout + result.stderr) == []
    assert not (tmp_path / "state.db").exists()
