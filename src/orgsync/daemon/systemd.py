"""sd_notify over `$NOTIFY_SOCKET`: READY, STOPPING, STATUS and the watchdog heartbeat.

The protocol is one datagram of newline-separated `KEY=VALUE` lines sent to a Unix
socket (a path, or an abstract name written with a leading `@`). It is small enough to
speak directly, so orgsync needs no systemd library. Outside systemd (no
`NOTIFY_SOCKET`) every call is a no-op. A send that fails is logged once and never
stops the daemon: supervision is a courtesy, the work is the point.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Talks to the service manager named by `NOTIFY_SOCKET`, if any."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._warned = False
        self.watchdog_interval: float | None = None
        """Seconds between heartbeats (half of `WATCHDOG_USEC`), or None without watchdog."""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        if usec.isdigit() and int(usec) > 0 and for_us:
            self.watchdog_interval = int(usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Send `lines` as one message; True if it was sent."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(lines).encode())
        except OSError as error:
            if not self._warned:
                log.warning("systemd.notify_failed", error=str(error))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "stopping: finishing the operations in flight") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")
