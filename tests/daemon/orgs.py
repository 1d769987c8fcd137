"""Many emulated OpenAI organizations behind one loopback server: `/o<i>/v1` is org i.

One emulator serves one organization; a test with 30 targets would otherwise start 30
servers (30 threads with an event loop each, on a machine with two cores). The emulators'
own apps (faults, auth, routes) answer, each seeing the path without its `/o<i>` prefix.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from starlette.types import Receive, Scope, Send

from orgsync.testing._server import BackgroundServer
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator


class ManyOrgs:
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
