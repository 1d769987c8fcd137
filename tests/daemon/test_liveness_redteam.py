"""Red team: a daemon that silently stops reconciling, or stops and nobody can tell.

The harm: the organization drifts from the identity provider for weeks (leavers keep
their access, joiners get none) while `orgsync daemon` looks alive. Each test is one way
to get there, tried against the real `orgsync daemon` process over loopback (the OpenAI
emulator as the target, servers that never answer, a state database locked from
outside), and judged by what an operator can see: the organization, the run history,
`/healthz`, `/readyz`, `/metrics`, the status page, the systemd notifications.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import DaemonRig, wait_for
from tests.daemon.test_daemon_process import with_people
from tests.servers import free_port


def _read_until_started(fd: int) -> int:
    """The port from the `daemon.started` line read off the pipe `fd`."""
    seen = b""
    while b"daemon.started" not in seen or not seen.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        assert chunk, f"the daemon closed its output before starting: {seen[-2000:]!r}"
        seen += chunk
    line = next(x for x in seen.splitlines() if b'"daemon.started"' in x)
    return int(json.loads(line)["port"])


def test_a_log_reader_that_goes_away_does_not_stop_reconciling(tmp_path: Path) -> None:
    """`orgsync daemon 2>&1 | head`, journald restarted, a container's log pipe lost: the
    next log line meets a broken pipe. It used to raise BrokenPipeError in the thread that
    logged, and the daemon exited 1 before running a single pass."""
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s")
        rig.write(document)
        reader, writer = os.pipe()
        process = cli.start(
            rig.config_path, "daemon", env=rig.environ(), stdout=writer, stderr=writer
        )
        os.close(writer)
        try:
            port = _read_until_started(reader)
            os.close(reader)  # the reader is gone: every write now fails with EPIPE
            later = with_people(document, 7)
            rig.write(later)  # a joiner: the next scheduled pass must invite them
            wait_for(
                lambda: rig.holdings() == wanted_roles(later) or process.poll() is not None,
                timeout=30,
                what="the joiner invited",
            )
            assert process.poll() is None, f"the daemon died: exit {process.returncode}"
            assert rig.holdings() == wanted_roles(later)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_a_daemon_started_with_stdout_and_stderr_closed_still_reconciles(
    tmp_path: Path,
) -> None:
    """A service manager (or a careless `nohup ... >&-`) that starts the daemon with file
    descriptors 1 and 2 closed: Python then has no `sys.stderr` at all."""
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s")
        rig.write(document)
        port = free_port()
        text = rig.config_path.read_text(encoding="utf-8")
        rig.config_path.write_text(
            text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'),
            encoding="utf-8",
        )

        def close_output() -> None:
            os.close(1)
            os.close(2)

        process = cli.start(
            rig.config_path,
            "daemon",
            env=rig.environ(),
            stdout=None,
            stderr=None,
            preexec_fn=close_output,
        )
        try:
            wait_for(
                lambda: rig.holdings() == wanted_roles(document) or process.poll() is not None,
                timeout=30,
                what="the first pass",
            )
            assert process.poll() is None, f"the daemon died: exit {process.returncode}"

            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).is_success
                except httpx.TransportError:
                    return False

            wait_for(ready, timeout=20, what="/readyz 200")
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
