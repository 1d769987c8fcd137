"""Red team: a daemon that silently stops reconciling, or stops and nobody can tell.

The harm: the organization drifts from the identity provider for weeks (leavers keep
their access, joiners get none) while `orgsync daemon` looks alive. Each test is one way
to get there, tried against the real `orgsync daemon` process over loopback (the OpenAI
emulator as the target, servers that never answer, a state database locked from
outside), and judged by what an operator can see: the organization, the run history,
`/healthz`, `/readyz`, `/metrics`, the status page, the systemd notifications.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, directory, wanted_roles
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import NotifySocket, with_people
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


class StuckServer:
    """A TCP server that takes every connection and then never finishes an answer:
    `silent` reads the request and says nothing; `trickle` sends the head of a large
    answer and then one byte `every` seconds, within any read timeout, for ever."""

    def __init__(self, mode: str, *, every: float = 1.0) -> None:
        self.mode = mode
        self.every = every
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def start(self) -> str:
        """The base URL (what `DaemonRig` asks an emulator for)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._hold, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            if self.mode == "trickle":
                with contextlib.suppress(OSError):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000000\r\n\r\n["
                    )
            while not self._stop.wait(self.every):
                if self.mode == "trickle":
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        return

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        self._sock.close()


def test_a_target_trickling_its_answer_is_a_visible_stall_and_stops_the_watchdog(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """A target (or a proxy in front of it) that accepts the call and sends its answer a
    byte a second: each read is within `timeout`, so no timeout ever fires and the run
    never ends. It used to look healthy everywhere: the worker thread alive (`/healthz`
    200, the systemd watchdog fed), `/readyz` 200 (it judged finished runs only), the
    status page "running". Now, past `stall_after` without progress, `/healthz` is 503,
    the watchdog heartbeat stops (systemd restarts the daemon), `/readyz` and the status
    page say stalled; when the server lets go the daemon is healthy again, and SIGTERM
    still stops it at once while a call trickles."""
    stuck = StuckServer("trickle")
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=stuck,  # type: ignore[arg-type]  # it only needs start()
            quarantine='stall_after = "3s"',
            env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "600000"},
        )
        rig.write(directory(3, owners=1))
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: notify.saw("WATCHDOG=1"), timeout=10, what="a first heartbeat")

        def health() -> dict[str, Any] | None:
            response = daemon.get("/healthz")
            return response.json() if response.status_code == 503 else None

        sick = wait_for(health, timeout=30, what="/healthz 503")
        assert sick["components"]["progress:openai-test"] is False
        assert sick["components"]["worker:openai-test"] is True
        ready = daemon.get("/readyz")
        assert ready.status_code == 503
        assert "stalled" in ready.json()["failed_targets"]["openai-test"]
        page = daemon.get("/").text
        assert "stalled" in page and "no progress for" in page

        # No heartbeat while it lasts (systemd's WatchdogSec then restarts the daemon).
        beats = sum("WATCHDOG=1" in m for m in notify.messages)
        time.sleep(2.0)  # more than three heartbeat intervals
        assert sum("WATCHDOG=1" in m for m in notify.messages) == beats
        assert any(e.get("event") == "daemon.unhealthy" for e in daemon.events())
        assert notify.saw("STATUS=unhealthy: progress:openai-test")  # systemctl status
        # stall_after = 3s is shorter than one call may be silent (4 x 5s + 1s): said.
        short = [e for e in daemon.events() if e.get("event") == "schedule.stall_after_short"]
        assert short and short[0]["of"] == "targets.openai-test", short

        # The operator stops it: SIGTERM ends the call in flight, and exits 0.
        assert daemon.terminate() == 0
        assert rig.finished_runs()[-1]["status"] in {"interrupted", "failed"}
    finally:
        stuck.close()
        notify.close()


LDAP_SOURCE = """[source]
type = "ldap"
url = "ldap://127.0.0.1:{port}"
allow_plaintext = true
bind_dn = "cn=admin,dc=example,dc=org"
bind_password_env = "ORGSYNC_TEST_LDAP_PASSWORD"
users_base = "ou=people,dc=example,dc=org"
groups_base = "ou=groups,dc=example,dc=org"
timeout = "1s"
max_attempts = 2
max_retry_delay = "1s"
"""


@pytest.mark.parametrize("silent", ["target", "ldap source"])
def test_a_server_that_accepts_and_never_answers_fails_each_pass_and_the_next_runs(
    tmp_path: Path, started: list[Daemon], silent: str
) -> None:
    """The target's API, or the LDAP server (which then never answers the bind), takes
    the TCP connection and says nothing. Each call's timeout ends the pass (failed,
    recorded, `/readyz` 503 naming the timeout), the next scheduled pass runs, and the
    daemon stays healthy: nothing hangs and nothing is silent."""
    stuck = StuckServer("silent")
    try:
        with OpenAIEmulator(api_key=API_KEY) as emulator:
            rig = DaemonRig(
                folder=tmp_path,
                emulator=stuck if silent == "target" else emulator,  # type: ignore[arg-type]
                interval="1s",
                quarantine="quarantine_after = 10",
                env={"ORGSYNC_TEST_LDAP_PASSWORD": "not-a-real-password"},
            )
            rig.write(directory(3, owners=1))
            text = rig.config_path.read_text(encoding="utf-8")
            # A short timeout: each pass then ends in seconds (the point is that it ends).
            assert 'timeout = "5s"' in text
            rig.config_path.write_text(text.replace('timeout = "5s"', 'timeout = "1s"'), "utf-8")
            if silent == "ldap source":
                text = rig.config_path.read_text(encoding="utf-8")
                file_source = '[source]\ntype = "file"\npath = "directory.json"\n'
                assert file_source in text
                rig.config_path.write_text(
                    text.replace(file_source, LDAP_SOURCE.format(port=stuck.port)),
                    encoding="utf-8",
                )
            daemon = rig.start()
            started.append(daemon)
            daemon.wait_started()
            wait_for(lambda: len(rig.finished_runs()) >= 2, timeout=90, what="two passes ended")
            runs = rig.finished_runs()
            assert {r["status"] for r in runs} == {"failed"}
            assert stuck.connections >= 2
            verdict = daemon.get("/readyz")
            assert verdict.status_code == 503
            reason = verdict.json()["failed_targets"]["openai-test"]
            assert "time" in reason.lower(), reason  # timed out / timeout
            assert daemon.get("/healthz").status_code == 200
            assert daemon.terminate() == 0
    finally:
        stuck.close()


def _holds(rig: DaemonRig, wanted: dict[str, str]) -> bool:
    return rig.holdings() == wanted


def test_a_target_stuck_for_ever_does_not_starve_the_other_targets(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """Two targets; the second one's API trickles its answers for ever. The first one
    is reconciled on every pass as if nothing were wrong (each target has its own
    worker, and no lock of the engine is held across a call), while the stuck one is
    named stalled."""
    stuck = StuckServer("trickle")
    try:
        with OpenAIEmulator(api_key=API_KEY) as emulator:
            rig = DaemonRig(
                folder=tmp_path, emulator=emulator, interval="1s", quarantine='stall_after = "3s"'
            )
            document = directory(3, owners=1)
            rig.write(document)
            text = rig.config_path.read_text(encoding="utf-8")
            second = (
                f'[[targets]]\nname = "openai-stuck"\ntype = "openai"\n'
                f'base_url = "{stuck.start()}"\napi_key_env = "{KEY_ENV}"\n'
                'allow_plaintext = true\ndefault_role = "reader"\nscope_groups = ["openai-*"]\n'
                'timeout = "5s"\n\n'
            )
            rig.config_path.write_text(text.replace("[safety]", second + "[safety]"), "utf-8")
            daemon = rig.start()
            started.append(daemon)
            daemon.wait_started()

            def verdict() -> dict[str, Any] | None:
                response = daemon.get("/readyz")
                body: dict[str, Any] = response.json()
                return body if "openai-stuck" in body.get("failed_targets", {}) else None

            assert (
                "stalled"
                in wait_for(verdict, timeout=30, what="stalled")["failed_targets"]["openai-stuck"]
            )
            for i in (20, 21):
                document = with_people(document, i)
                rig.write(document)
                wanted = wanted_roles(document)
                wait_for(
                    partial(_holds, rig, wanted),
                    timeout=30,
                    what=f"person{i} invited while the other target is stuck",
                )
            good = [r for r in rig.finished_runs() if r["target"] == "openai-test"]
            assert len(good) >= 3 and {r["status"] for r in good} == {"ok"}
            assert "openai-test" not in (verdict() or {}).get("failed_targets", {})
            assert daemon.terminate() == 0
    finally:
        stuck.close()


def _metric(daemon: Daemon, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(daemon.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total


def test_a_guard_that_holds_every_pass_is_visible_not_a_silent_no_op(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """The source comes back truncated on every pass, for weeks. Below `min_source_users`
    each pass is refused before any change: a failed run, `/readyz` 503 with the reason,
    then quarantine (`orgsync_quarantined`). Above it but removing more than
    `max_removals`: each pass holds the removals (exit 3 in a shell): the runs say `held`,
    `orgsync_held_operations` stays at the count and the status page lists each one with
    the guard's reason. Either way nobody is removed, and it shows."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=emulator,
            interval="1s",
            safety_extra="min_source_users = 4",
            quarantine="quarantine_after = 2",
        )
        document = directory(10, owners=1)
        rig.write(document)
        text = rig.config_path.read_text(encoding="utf-8")
        rig.config_path.write_text(
            text.replace("max_removals = 100", "max_removals = 2"), encoding="utf-8"
        )
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=30, what="synced")
        before = rig.holdings()

        # Six people missing: more removals than max_removals, held on every pass.
        rig.write(directory(4, owners=1))
        wait_for(
            lambda: _metric(daemon, "orgsync_runs_total", target="openai-test", result="held") >= 3,
            timeout=30,
            what="three held passes",
        )
        assert _metric(daemon, "orgsync_held_operations", target="openai-test") == 6
        page = daemon.get("/").text
        assert "Held by the safety gate (6)" in page and "max_removals" in page
        assert rig.holdings() == before

        # Truncated below min_source_users: each pass refused, then quarantined.
        rig.write(directory(2, owners=1))

        def quarantined() -> bool:
            return _metric(daemon, "orgsync_quarantined", target="openai-test") == 1

        wait_for(quarantined, timeout=30, what="quarantined")
        verdict = daemon.get("/readyz")
        assert verdict.status_code == 503
        assert "min_source_users" in json.dumps(verdict.json())
        assert "quarantined" in daemon.get("/").text.lower()
        assert rig.holdings() == before
        assert daemon.terminate() == 0


def test_an_unexpected_error_before_a_run_does_not_end_the_target_s_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver raising something that is not orgsync's own error (a psycopg or sqlite3
    exception a store method did not translate, a bug) while the worker decides whether
    to run: it ended the worker thread, and with it every pass of that target for the
    life of the process (`/healthz` 503 then, but outside systemd or Kubernetes nobody
    restarts it). Now it is logged and the request tried again."""
    import orgsync.daemon.worker as worker_module
    from orgsync.config import load_config
    from orgsync.daemon.queue import Mailbox, SyncRequest
    from orgsync.daemon.worker import TargetWorker
    from orgsync.engine import Engine

    monkeypatch.setattr(worker_module, "LEASE_RETRY_MAX", 0.2)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        document = directory(3, owners=1)
        rig.write(document)
        config = load_config(rig.config_path)
        stop = threading.Event()
        engine = Engine(config, environ=rig.environ(), stop=stop, origin="daemon")
        mailbox = Mailbox(debounce=0.0)
        worker = TargetWorker(
            "openai-test",
            config=config,
            engine=engine,
            store=engine.store,
            mailbox=mailbox,
            stop=stop,
            on_quarantine=lambda target, standing: None,
        )
        real_runs = engine.store.runs
        failures = iter([RuntimeError("an exception no layer translated")])

        def runs(*args: Any, **kwargs: Any) -> Any:
            error = next(failures, None)
            if error is not None:
                raise error
            return real_runs(*args, **kwargs)

        worker.start()
        monkeypatch.setattr(engine.store, "runs", runs)
        try:
            mailbox.put(SyncRequest("startup"))
            wait_for(lambda: worker.runs >= 1 or not worker.alive, timeout=30, what="a run")
            assert worker.alive
            assert rig.holdings() == wanted_roles(document)
        finally:
            stop.set()
            mailbox.close()
            worker.join(30)
            engine.close()


def test_an_answer_trickled_for_ever_times_out_and_the_next_pass_runs(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """The same trickling target, with the default `stall_after`: the call itself now
    ends. A whole answer must arrive within four read timeouts (`lean`), so each attempt
    ends as a read timeout, the pass fails and is recorded (`/readyz` 503 naming it),
    and the next pass runs; nothing stalls. It used to wait for ever."""
    stuck = StuckServer("trickle", every=0.2)
    try:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=stuck,  # type: ignore[arg-type]  # it only needs start()
            interval="1s",
            quarantine="quarantine_after = 10",
        )
        rig.write(directory(3, owners=1))
        text = rig.config_path.read_text(encoding="utf-8")
        rig.config_path.write_text(text.replace('timeout = "5s"', 'timeout = "1s"'), "utf-8")
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: len(rig.finished_runs()) >= 2, timeout=40, what="two passes ended")
        runs = rig.finished_runs()
        assert {r["status"] for r in runs} == {"failed"}
        assert all(
            "did not arrive" in (r["error"] or "") or "timed out" in (r["error"] or "")
            for r in runs
        ), [r["error"] for r in runs]
        assert daemon.get("/readyz").status_code == 503
        assert daemon.get("/healthz").status_code == 200
        assert daemon.terminate() == 0
    finally:
        stuck.close()


def test_a_webhook_flood_during_scheduled_passes_drains_and_runs_stay_few(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """Eight senders post 320 signed deliveries naming 1,600 different people while a
    pass is scheduled every second. Nothing queues up without bound: each delivery is
    answered 202, the people waiting are merged (past 1,000 into one full reconcile),
    the runs are a handful rather than one per delivery, the queue drains to nothing
    open, and a joiner written during the flood is invited."""
    document = directory(5, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s")
        rig.write(document)
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=30, what="the startup run")
        runs_before = len(rig.finished_runs())

        def sender(first: int) -> list[int]:
            codes = []
            with httpx.Client(timeout=30) as client:
                for n in range(40):
                    emails = [f"flood{first}-{n}-{k}@example.com" for k in range(5)]
                    codes.append(daemon.post_generic({"emails": emails}, client=client).status_code)
            return codes

        later = with_people(document, 30)
        with ThreadPoolExecutor(8) as pool:
            results = [pool.submit(sender, i) for i in range(8)]
            rig.write(later)
            codes = [code for result in results for code in result.result()]
        assert codes.count(202) == len(codes) == 320, sorted(set(codes))

        def drained() -> bool:
            rows = rig.query("SELECT count(*) AS n FROM webhook_queue WHERE done = 0")
            return bool(rows) and rows[0]["n"] == 0

        wait_for(drained, timeout=60, what="the queue drained")
        wait_for(lambda: rig.holdings() == wanted_roles(later), timeout=30, what="the joiner")
        runs = len(rig.finished_runs()) - runs_before
        assert runs < 20, runs  # one when measured: merged, never one per delivery
        # The defaults leave room for the slowest call: no warning about stall_after.
        assert not any(e.get("event") == "schedule.stall_after_short" for e in daemon.events())
        assert daemon.get("/healthz").status_code == 200
        assert daemon.terminate() == 0


def test_an_oauth_token_call_trickled_for_ever_times_out_too(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """The calls that do not go the lean way (an OAuth client-credentials flow: Keycard's
    token request and every call after it go through httpx) had the same hole: a token
    endpoint sending its answer a byte within each read timeout held the pass for ever.
    The whole answer must now arrive within four read timeouts there too."""
    stuck = StuckServer("trickle", every=0.2)
    try:
        rig = DaemonRig(
            folder=tmp_path,
            emulator=stuck,  # type: ignore[arg-type]  # it only needs start()
            interval="1s",
            quarantine="quarantine_after = 10",
            env={"ORGSYNC_TEST_KEYCARD_SECRET": "not-a-real-secret"},
        )
        rig.write(directory(3, owners=1))
        text = rig.config_path.read_text(encoding="utf-8")
        start, end = text.index("[[targets]]"), text.index("[safety]")
        keycard = f"""[[targets]]
name = "openai-test"
type = "keycard"
base_url = "{stuck.start()}"
client_id = "orgsync-test"
client_secret_env = "ORGSYNC_TEST_KEYCARD_SECRET"
organization_id = "org-test"
allow_plaintext = true
scope_groups = ["openai-*"]
timeout = "1s"
max_attempts = 2
max_retry_delay = "1s"

"""
        rig.config_path.write_text(text[:start] + keycard + text[end:], encoding="utf-8")
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: len(rig.finished_runs()) >= 2, timeout=60, what="two passes ended")
        runs = rig.finished_runs()
        assert {r["status"] for r in runs} == {"failed"}
        assert daemon.get("/healthz").status_code == 200
        assert daemon.terminate() == 0
    finally:
        stuck.close()
