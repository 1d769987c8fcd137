"""The status page of a real `orgsync daemon` process, opened in a real headless Chromium.

The daemon syncs the OpenAI emulator from a directory whose scope group is named like a
script; a second pass holds invitations (`max_additions`) and keeps someone waiting out
`removal_grace`. The browser then shows what an administrator would see: the target,
its last result, the held invitations with the guard's reason, the waiting removal, the
recent runs, and the hostile group name as text (the script never ran: the title is
unchanged and the DOM holds no script element). No configured secret is anywhere on
the page.

Set `ORGSYNC_STATUS_SCREENSHOT=docs/status-page.png` to keep the screenshot taken here
(that is how the README's picture is made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY
from tests.daemon.browser import Browser, Dom
from tests.daemon.harness import GRAPH_STATE, OKTA_AUTH, SECRET, Daemon, DaemonRig, wait_for
from tests.leaks import traces

EVIL_GROUP = "openai-<script>document.title='pwned'</script>"


def person(i: int, name: str | None = None) -> dict[str, Any]:
    return {
        "id": f"p{i}",
        "email": f"person{i}@example.com",
        "name": name or f"Person {i}",
        "active": True,
    }


def document(regulars: list[int], newcomers: list[int]) -> dict[str, Any]:
    """`regulars` in openai-users (p0 an owner), `newcomers` in the hostile-named group."""
    return {
        "people": [person(i) for i in regulars]
        + [person(i, name="<script>alert('name')</script>") for i in newcomers],
        "groups": [
            {"id": "g-users", "name": "openai-users", "members": [f"p{i}" for i in regulars]},
            {"id": "g-owners", "name": "openai-owners", "members": ["p0"]},
            {"id": "g-evil", "name": EVIL_GROUP, "members": [f"p{i}" for i in newcomers]},
        ],
    }


def test_a_person_sees_targets_results_held_and_waiting_and_no_script_runs(
    tmp_path: Path, started: list[Daemon]
) -> None:
    browser = Browser(tmp_path)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            safety_extra='max_additions = 3\nremoval_grace = "1h"',
            server_extra='health_listen = "127.0.0.1:0"',
        )
        rig.write(document([0, 1, 2], []))
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=60, what="the startup run")
        assert rig.finished_runs()[0]["status"] == "ok"

        # Person 2 leaves the IdP (kept for the grace: waiting); five people join, more
        # than max_additions: their invitations are held.
        rig.write(document([0, 1], [10, 11, 12, 13, 14]))
        assert daemon.post_generic({}).status_code == 202
        wait_for(
            lambda: len(rig.finished_runs()) == 2, timeout=60, what="the run the webhook asked"
        )
        assert rig.finished_runs()[1]["status"] == "held"

        url = daemon.url("/")
        dom = Dom(browser.dom(url))
        assert browser.csp_violations() == []  # the stylesheet applies under the policy
        screenshot = browser.screenshot(url, tmp_path / "status-page.png")
        if keep := os.environ.get("ORGSYNC_STATUS_SCREENSHOT"):
            shutil.copyfile(screenshot, keep)

        # The script in the group name never ran, and is shown as the text it is.
        assert dom.title == "orgsync status"
        assert "script" not in dom.tags
        text = dom.text
        assert f"member of {EVIL_GROUP}" in text
        assert "pwned" not in dom.title

        # What an administrator came for.
        assert "openai-test" in text
        assert "held" in text and "Held by the safety gate (5)" in text
        assert "max_additions" in text  # the guard's reason
        for i in range(10, 15):
            assert f"person{i}@example.com" in text
        assert "Waiting (1)" in text and "person2@example.com" in text
        assert "pending removal" in text
        assert "Recent runs" in text and "startup" in text and "webhook:generic" in text
        assert "Next full reconcile" in text and "in 60 min" in text

        # Served on the probe listener too, the same way.
        assert daemon.health_port is not None
        health = httpx.get(f"http://127.0.0.1:{daemon.health_port}/", timeout=10)
        assert health.status_code == 200 and "Held by the safety gate (5)" in health.text

        # Headers: HTML, no sniffing, no caching, no script allowed.
        response = daemon.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "no-store" in response.headers["cache-control"]
        policy = response.headers["content-security-policy"]
        assert policy.startswith("default-src 'none';") and "script-src" not in policy
        # Read-only: anything but GET (and HEAD) is refused.
        assert httpx.post(url, content=b"{}", timeout=10).status_code == 405

        # No secret the daemon was given, in any form, in the page or its headers.
        seen = response.text + str(response.headers) + health.text
        for secret in (API_KEY, SECRET, OKTA_AUTH, GRAPH_STATE):
            assert traces(secret, seen) == [], secret

        assert daemon.terminate() == 0


def test_a_failing_target_shows_failed_and_quarantined_without_its_key(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """The organization refuses the daemon's key and quotes it back (masked, as OpenAI
    does): the page says failed and quarantined, with the server's message, and no part
    of the key."""
    browser = Browser(tmp_path)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            quarantine='quarantine_after = 1\nquarantine_max_interval = "1h"',
        )
        rig.write(document([0, 1], []))
        emulator.api_key = "sk-admin-rotated-elsewhere-0000000000000000000"  # every call: 401
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=60, what="the failed startup run")

        page = browser.dom(daemon.url("/"))
        assert browser.csp_violations() == []
        text = Dom(page).text
        assert "quarantined" in text and "Quarantined after 1 failed run in a row" in text
        assert "failed" in text and "Incorrect API key" in text
        assert traces(API_KEY, page) == []
        assert traces(API_KEY, daemon.get("/").text) == []
        assert daemon.terminate() == 0


def test_status_page_false_serves_no_page(tmp_path: Path, started: list[Daemon]) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            server_extra='status_page = false\nhealth_listen = "127.0.0.1:0"',
        )
        rig.write(document([0, 1], []))
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        assert daemon.get("/").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{daemon.health_port}/", timeout=10).status_code == 404
        assert daemon.get("/healthz").status_code == 404  # probes are on health_listen
        assert httpx.get(daemon.probe_url("/healthz"), timeout=10).status_code == 200
        assert daemon.terminate() == 0
