"""Red team: SIGHUP to the daemon, as an operator used to `kill -HUP` reloading a
service's configuration (nginx, Prometheus) sends it.

orgsync installed no handler for it, so Python's default ended the process at once,
mid-apply too, with no stop sequence: the call in flight unrecorded, the run left
`running` for the next start's recovery, and the service down until systemd's restart.
orgsync reads its configuration at start only; the daemon now keeps serving and logs
that a restart applies a changed file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.daemon.harness import DaemonRig, wait_for


def test_sighup_keeps_the_daemon_serving_and_says_how_to_reload(tmp_path: Path) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(directory(3))
        daemon = rig.start()
        try:
            daemon.wait_started()
            wait_for(rig.finished_runs, timeout=60, what="the start-up run")
            os.kill(daemon.process.pid, signal.SIGHUP)
            wait_for(
                lambda: any(e.get("event") == "daemon.sighup" for e in daemon.events()),
                timeout=10,
                what="the SIGHUP log line",
            )
            time.sleep(0.5)
            assert daemon.process.poll() is None, daemon.log()
            assert daemon.get("/healthz").status_code == 200
            (line,) = [e for e in daemon.events() if e.get("event") == "daemon.sighup"]
            assert "restart" in line["note"]
            assert daemon.terminate() == 0, daemon.log()
        finally:
            daemon.kill()
