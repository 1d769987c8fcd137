"""The status page shows which organization each target's memory is about.

`orgsync status` shows it (`identity`, from `orgsync.store.identity`); an operator looking
at the daemon's page must see the same: a target pointed at another organization is
refused by every run, and the page is where one looks first. A real daemon syncs the
OpenAI emulator (whose API names its organization), and a real headless Chromium reads
the page.
"""

from __future__ import annotations

import json
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.daemon.browser import Browser, Dom
from tests.daemon.harness import Daemon, DaemonRig, wait_for


def test_each_target_shows_the_organization_its_memory_is_about(
    tmp_path: Path, started: list[Daemon]
) -> None:
    browser = Browser(tmp_path)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.write(directory(3, owners=1))
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=60, what="the startup run")
        assert rig.finished_runs()[0]["status"] == "ok"

        status = json.loads(rig.orgsync("status", "--json").stdout)
        identity = status[0]["identity"]
        assert identity is not None and identity["organization"], identity

        dom = Dom(browser.dom(daemon.url("/")))
        assert browser.csp_violations() == []
        text = " ".join(dom.text.split())
        assert "Organization" in text
        wanted = f"organization {identity['organization']} at {identity['address']}"
        assert wanted in text, text
        assert daemon.terminate() == 0
