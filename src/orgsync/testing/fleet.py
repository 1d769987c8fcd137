"""A fleet for rehearsing replicas: many emulated OpenAI organizations behind one loopback
server (`ManyOrgs`, `/o<i>/v1` is organization i), and the configuration of `orgsync
daemon` replicas sharing them on one PostgreSQL state database (`replicas_config`).

The replica test (tests/daemon/test_replicas.py) and its benchmark (bench/replicas.py)
both build their fleet here, so what is measured is what is tested.

One emulator serves one organization; a test with 30 targets would otherwise start 30
servers (30 threads with an event loop each, on a machine with two cores). The emulators'
own apps (faults, auth, routes) answer, each seeing the path without its `/o<i>` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Receive, Scope, Send

from orgsync.testing._server import BackgroundServer, Served
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator


class ManyOrgs(Served):
    def __init__(self, count: int, *, api_key: str, faults: Faults | None = None) -> None:
        # Duplicates allowed, so that a second invitation or group is seen, not refused.
        self.orgs = [
            OpenAIEmulator(
                api_key=api_key,
                faults=faults,
                allow_duplicate_invites=True,
                allow_duplicate_group_names=True,
            )
            for _ in range(count)
        ]
        self._server = BackgroundServer(self, name="openai-orgs")
        self._origin: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: uvicorn tells ASGI 3 from 2 by a coroutine `__call__`."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        head, _, rest = path.lstrip("/").partition("/")
        index = int(head[1:]) if head.startswith("o") and head[1:].isdigit() else -1
        if not 0 <= index < len(self.orgs):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        inner = dict(scope, path=f"/{rest}", raw_path=f"/{rest}".encode())
        await self.orgs[index].asgi_app(inner, receive, send)

    def url(self, index: int) -> str:
        assert self._origin is not None
        return f"{self._origin}/o{index}/v1"

    def start(self) -> None:
        for org in self.orgs:
            org._injector.arm()
        port = self._server.start()
        self._origin = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.stop()


def replicas_config(
    target_urls: Sequence[str],
    *,
    key_env: str,
    state_url: str,
    password_env: str,
    lease_ttl: str,
    interval: str,
    target_keys: str = "",
    target_tables: str = "",
    server_keys: str = "",
) -> str:
    """The configuration every replica runs: a file source (`directory.json` beside it),
    one OpenAI target per URL (`t00`, `t01`... or `t000`... from 100 on) with the same
    rules (`openai-*` in scope, `openai-owners` owners, `max_concurrency = 2`), the state
    on PostgreSQL (password from `password_env`), every target every `interval`.
    `target_keys` go into each target's table, `target_tables` after it (groups), and
    `server_keys` into `[server]`."""
    width = max(2, len(str(len(target_urls) - 1)))
    targets = "".join(
        f"""
[[targets]]
name = "t{i:0{width}d}"
type = "openai"
base_url = "{url}"
api_key_env = "{key_env}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
max_concurrency = 2
{target_keys}
[[targets.roles]]
group = "openai-owners"
role = "owner"
{target_tables}"""
        for i, url in enumerate(target_urls)
    )
    return f"""
[source]
type = "file"
path = "directory.json"
{targets}
[safety]
max_removals = 100
max_removal_ratio = 1.0

[state]
url = "{state_url}"
password_env = "{password_env}"
lease_ttl = "{lease_ttl}"

[schedule]
interval = "{interval}"
jitter = "0s"

[server]
listen = "127.0.0.1:0"
{server_keys}
"""
