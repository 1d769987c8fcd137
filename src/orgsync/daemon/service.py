"""The daemon's lifecycle: start every part, serve, and stop cleanly on SIGTERM.

Start: refuse a bad start early (secrets unresolvable, state database unusable, port in
use: exit 1 before anything runs); start one worker per target, the HTTP server, the
scheduler and the relay (webhooks reach the worker through the state database's queue,
whichever replica received them: `relay.py`); queue a full reconcile of every target
(the start is when drift accumulated while the daemon was down gets repaired); tell
systemd READY.

Run: the main thread only waits for a signal and, under a systemd watchdog, sends the
heartbeat while every part is alive (a wedged daemon is then restarted by systemd).

Stop (SIGTERM or SIGINT): tell systemd STOPPING, refuse new webhooks (503), stop the
scheduler, set the shared stop event, which ends a source or target read in flight at
once (no retry) and lets each applier finish the calls in flight and start no more, wait
for the workers to record their runs (`interrupted`, with the operations not started
listed as skipped), then stop the HTTP server. Exit 0. A second signal exits at once
with 1: the journal is crash-safe, so this loses nothing but time.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from types import FrameType

import structlog

from orgsync.config import Config, parse_listen
from orgsync.core.errors import EXIT_ERROR, EXIT_OK, ConfigError, OrgsyncError
from orgsync.core.quarantine import Quarantine
from orgsync.core.redaction import Scrubber
from orgsync.daemon.http import (
    ConnectionLimits,
    HttpServer,
    Readiness,
    build_app,
    reserve_open_files,
)
from orgsync.daemon.liveness import Activity
from orgsync.daemon.queue import SCHEDULED, Mailbox, SyncRequest
from orgsync.daemon.relay import Relay
from orgsync.daemon.scheduler import ReconcileSchedule
from orgsync.daemon.status_page import StatusPage, secret_values
from orgsync.daemon.systemd import Notifier
from orgsync.daemon.webhooks import WebhookReceiver, WebhookSecrets
from orgsync.daemon.worker import TargetWorker
from orgsync.engine import Engine
from orgsync.factories import open_state_store
from orgsync.metrics import Metrics
from orgsync.notify import DRAIN_SECONDS, Standing, build_dispatcher
from orgsync.results import RunOptions, TargetResult

log = structlog.get_logger(__name__)

OTHER_OPEN_FILES = 256
"""Room for what is not a client connection: the state database, the connections to the
identity provider and the targets, logs, the listening sockets."""
_IDLE_TICK = 1.0
"""Seconds between checks of the main loop when systemd asks for no heartbeat."""


def resolve_secrets(config: Config, environ: Mapping[str, str]) -> WebhookSecrets:
    """Read the webhook secrets now, so that a missing one stops the start, not a delivery."""
    server = config.server

    def value(key: str) -> str | None:
        ref = server.secret(key)
        return ref.resolve(environ).get_secret_value() if ref is not None else None

    generic = value("webhook_secret")
    return WebhookSecrets(
        generic=generic.encode() if generic is not None else None,
        okta_authorization=value("okta_authorization"),
        entra_client_state=value("entra_client_state"),
    )


# How far back a restart looks for the last good run; older history reads as none.
RECENT_RUNS_SCANNED = 50


def _on_hangup(signum: int, frame: FrameType | None) -> None:
    """`kill -HUP` by habit (a reload elsewhere): orgsync reads its configuration at start
    only, so the daemon keeps serving, as it was, and says how to apply a change."""
    del signum, frame
    log.warning(
        "daemon.sighup",
        note="the configuration is read at start only; nothing was reloaded: restart "
        "the daemon (systemctl restart orgsync) to apply a changed file",
    )


class Service:
    """Every part of one daemon process; `run()` blocks until it has stopped."""

    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        if str(config.state.path) == ":memory:":
            raise ConfigError("state.path = ':memory:' cannot be used by the daemon")
        self.config = config
        self.stop = threading.Event()
        self.metrics = Metrics()
        self.notifier = Notifier(env)
        self.secrets = resolve_secrets(config, env)
        self.notifications = build_dispatcher(
            config, env, strict=True, count=self.metrics.notification
        )
        # Opened (and migrated) now: an unusable database stops the start. The engine runs
        # on it (and closes it); the workers, readiness and the metrics read it directly.
        self.store = open_state_store(config.state, env)
        names = [t.name for t in config.targets]
        _warn_if_stall_after_is_short(config)
        # The engine reports to the metrics through it, and it clocks each target's run.
        self.activity = Activity(
            names, self.metrics, stall_after=config.schedule.stall_after.total_seconds()
        )
        self.engine = Engine(
            config,
            environ=env,
            store=self.store,
            stop=self.stop,
            observer=self.activity,
            progress=self.activity,
            on_finished=self._run_finished,
            origin="daemon",
            on_lease=self.metrics.lease,
        )
        debounce = config.server.debounce.total_seconds()
        self.mailboxes = {name: Mailbox(debounce=debounce) for name in names}
        # Webhooks go through the state database's queue to the replica running the
        # target; a connection of its own, so a delivery never waits on a run's writes.
        self.relay_store = open_state_store(config.state, env, create=False)
        self.relay = Relay(
            store=self.relay_store,
            instance=self.engine.instance,
            mailboxes=self.mailboxes,
            runnable=self._runnable,
            count=self.metrics.queued_request,
        )
        self.workers = [
            TargetWorker(
                name,
                config=config,
                engine=self.engine,
                store=self.store,
                mailbox=self.mailboxes[name],
                stop=self.stop,
                on_quarantine=self._quarantine_changed,
                share=self._share,
                on_ran=self.relay.finished,
                preferred=partial(self._preferred, name),
                grace=config.state.lease_ttl.total_seconds(),
                activity=self.activity,
            )
            for name in names
        ]
        self._workers_by_target = {w.target: w for w in self.workers}
        self.schedule = ReconcileSchedule(
            names,
            interval=config.schedule.interval,
            jitter=config.schedule.jitter,
            enqueue=self._scheduled,
        )
        self.status_page = StatusPage(
            [(t.name, t.type) for t in config.targets],
            # A connection of its own: the page never waits on (or holds up) the engine's.
            open_store=lambda: open_state_store(config.state, env, create=False),
            standing=lambda target: self._workers_by_target[target].standing,
            next_run=self.schedule.next_run,
            queued=lambda target: self.mailboxes[target].pending(),
            stalled=self.activity.stalled,
            blocked=lambda target: self._workers_by_target[target].blocked,
            scrub=Scrubber(secret_values(config, env)),
        )
        server = config.server
        self.receiver = WebhookReceiver(
            secrets=self.secrets,
            enqueue=self.relay.submit,
            count=self.metrics.webhook,
            known_targets=frozenset(names),
            body_timeout=server.body_timeout.total_seconds(),
        )
        readiness = Readiness(
            self.store,
            names,
            instance=self.engine.origin.instance,
            standing=lambda target: self._workers_by_target[target].standing,
            holders=self.lease_holders,
            stalled=self.activity.stalled,
            blocked=lambda target: self._workers_by_target[target].blocked,
        )
        limits = ConnectionLimits(
            header_timeout=server.header_timeout.total_seconds(),
            write_timeout=server.body_timeout.total_seconds(),
            max_connections=server.max_connections,
            max_per_client=server.max_connections_per_client,
        )
        probes_apart = server.health_listen is not None
        page = self.status_page.html if server.status_page else None
        listeners = 2 if probes_apart else 1
        reserve_open_files(listeners * server.max_connections + OTHER_OPEN_FILES)
        app = build_app(
            metrics=self.metrics,
            readiness=readiness,
            alive=self.alive,
            webhook_routes=self.receiver.routes(),
            probes=not probes_apart,
            status_page=page,
        )
        host, port = parse_listen(server.listen)
        self.http = HttpServer(
            app, host, port, limits=limits, on_drop=self.metrics.connection_dropped
        )
        self.health_http: HttpServer | None = None
        if server.health_listen is not None:
            probes = build_app(
                metrics=self.metrics,
                readiness=readiness,
                alive=self.alive,
                webhook_routes=[],
                status_page=page,
            )
            self.health_http = HttpServer(
                probes,
                *parse_listen(server.health_listen),
                name="health",
                key="server.health_listen",
                limits=limits,
                on_drop=self.metrics.connection_dropped,
            )
        self._signals = 0
        for name in names:
            self.metrics.declare_target(name, last_success=self._last_success(name))

    def _last_success(self, target: str) -> float | None:
        """When the target's newest good write run (ok or held, any process) finished."""
        for run in self.store.runs(RECENT_RUNS_SCANNED, target, mode="sync"):
            if run.status in {"ok", "held"} and run.finished_at is not None:
                return run.finished_at.timestamp()
        return None

    # ------------------------------------------------------------------ replicas

    def _share(self) -> int:
        """How many targets this replica may hold at once (`LeaseKeeper.fair_share`)."""
        return self.engine.leases.fair_share(len(self.workers))

    def _runnable(self) -> list[str]:
        """The targets whose queued webhook requests this replica takes now: those it
        holds, and those nobody holds that fall to it (`_preferred`; when a replica
        dies, its targets fall to the others once its registration expired). A target
        another replica holds gets its requests from that replica's relay."""
        mine = self.engine.leases.held_targets()
        holders = self.store.lease_holders()
        return [t for t in self.mailboxes if t in mine or (t not in holders and self._preferred(t))]

    def _preferred(self, target: str) -> bool:
        return self.engine.leases.preferred(target)

    def lease_holders(self) -> dict[str, str | None]:
        """Who holds each configured target's lease now (None: nobody)."""
        held = self.store.lease_holders()
        return {name: (held[name].holder if name in held else None) for name in self.mailboxes}

    # ------------------------------------------------------------------ the pieces' callbacks

    def _run_finished(self, result: TargetResult, options: RunOptions) -> None:
        self.status_page.run_finished(result, options)
        self.notifications.run_finished(result, options)

    def _scheduled(self, target: str) -> None:
        self.mailboxes[target].put(SyncRequest(SCHEDULED))

    def _quarantine_changed(self, target: str, standing: Quarantine) -> None:
        self.metrics.quarantine(
            target, quarantined=standing.quarantined, failures=standing.failures
        )
        self.notifications.quarantine(
            target,
            Standing(
                standing.quarantined, standing.failures, standing.next_run_at, standing.last_error
            ),
        )

    def alive(self) -> dict[str, bool]:
        """Each part that must be running, and whether it is (for `/healthz`)."""
        parts = {f"worker:{w.target}": w.alive for w in self.workers}
        # A run that gets nowhere is as dead as its thread (`daemon.liveness`).
        parts.update({f"progress:{t}": self.activity.stalled(t) is None for t in self.mailboxes})
        parts["scheduler"] = self.schedule.running
        parts["relay"] = self.relay.alive
        parts["http"] = self.http.alive
        if self.health_http is not None:
            parts["http:health"] = self.health_http.alive
        return parts

    # ------------------------------------------------------------------ lifecycle

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # Python's default for SIGHUP ends the process on the spot, mid-apply too.
            signal.signal(signal.SIGHUP, _on_hangup)
        try:
            host, port = self.http.start()
            health = self.health_http.start() if self.health_http is not None else None
        except OrgsyncError as error:
            log.error("daemon.failed", error=str(error))
            self.http.stop()
            self.relay_store.close()
            self.engine.close()
            return EXIT_ERROR
        try:
            # Counted among the replicas sharing the targets before any worker takes one.
            self.engine.leases.join()
        except OrgsyncError as error:
            log.error("daemon.failed", error=str(error))
            self.http.stop()
            self.relay_store.close()
            self.engine.close()
            return EXIT_ERROR
        for worker in self.workers:
            worker.start()
        # On a shared database, replicas started together (a rollout) register first, so
        # that the fair share of the first pass counts them all.
        settle = (
            self.config.state.lease_ttl.total_seconds() / 3 if self.store.db.leases_expire else 0.0
        )
        for mailbox in self.mailboxes.values():
            mailbox.put(SyncRequest("startup"), delay=settle)
        self.relay.start()
        self.schedule.start()
        log.info(
            "daemon.started",
            listen=f"{host}:{port}",
            port=port,
            **(
                {"health_listen": f"{health[0]}:{health[1]}", "health_port": health[1]}
                if health is not None
                else {}
            ),
            targets=list(self.mailboxes),
            interval_seconds=self.config.schedule.interval.total_seconds(),
            webhooks=[
                kind
                for kind, secret in (
                    ("generic", self.secrets.generic),
                    ("okta", self.secrets.okta_authorization),
                    ("entra", self.secrets.entra_client_state),
                )
                if secret is not None
            ],
        )
        serving = f"serving on {host}:{port}"
        self.notifier.ready(serving)
        tick = self.notifier.watchdog_interval or _IDLE_TICK
        dead: list[str] = []
        while not self.stop.wait(tick):
            parts = self.alive()
            if all(parts.values()):
                self.notifier.watchdog()
                if dead:
                    log.info("daemon.healthy_again", were=dead)
                    self.notifier.status(serving)
                    dead = []
                continue
            # No heartbeat: systemd's watchdog restarts a daemon with a dead part or a
            # stalled run. Said when it changes, not every tick.
            now_dead = [k for k, v in parts.items() if not v]
            if now_dead != dead:
                dead = now_dead
                # What `systemctl status orgsync` shows while it lasts.
                self.notifier.status(f"unhealthy: {', '.join(dead)}")
                log.error(
                    "daemon.unhealthy",
                    dead=dead,
                    stalled={
                        t: round(s)
                        for t in self.mailboxes
                        if (s := self.activity.stalled(t)) is not None
                    },
                    note="no watchdog heartbeat while this lasts: under systemd's "
                    "WatchdogSec the daemon is restarted",
                )
        return self._shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._signals += 1
        if self._signals > 1:
            log.warning("daemon.forced_exit", signal=signal.Signals(signum).name)
            os._exit(EXIT_ERROR)
        log.info("daemon.signal", signal=signal.Signals(signum).name)
        self.stop.set()

    def _shutdown(self) -> int:
        self.notifier.stopping()
        log.info("daemon.stopping")
        self.receiver.accepting = False
        self.schedule.shutdown()
        self.relay.stop()
        for mailbox in self.mailboxes.values():
            mailbox.close()
        for worker in self.workers:
            worker.join()
        self.notifications.close(DRAIN_SECONDS)
        self.http.stop()
        if self.health_http is not None:
            self.health_http.stop()
        self.status_page.close()
        self.relay_store.close()
        self.engine.close()
        log.info("daemon.stopped")
        return EXIT_OK


def _warn_if_stall_after_is_short(config: Config) -> None:
    """A call may be silent for up to four timeouts (its whole answer), then wait out a
    retry delay: a `stall_after` shorter than that would call a slow but moving run
    stalled (and have it restarted). Said at start, with the keys to change."""
    waits = [(f"targets.{t.name}", 4 * t.timeout + t.max_retry_delay) for t in config.targets]
    timeout = getattr(config.source, "timeout", None)
    retry = getattr(config.source, "max_retry_delay", None)
    if isinstance(timeout, timedelta) and isinstance(retry, timedelta):
        waits.append(("source", 4 * timeout + retry))
    stall_after = config.schedule.stall_after
    longer = [(where, wait) for where, wait in waits if wait >= stall_after]
    if longer:
        where, wait = max(longer, key=lambda item: item[1])
        log.warning(
            "schedule.stall_after_short",
            stall_after_seconds=stall_after.total_seconds(),
            longest_wait_seconds=wait.total_seconds(),
            of=where,
            note="one call of it may be silent longer than [schedule] stall_after (four "
            "times its timeout, plus max_retry_delay): a slow run may be called stalled "
            "and restarted; raise stall_after, or lower that timeout",
        )


def run_daemon(config: Config, *, environ: Mapping[str, str] | None = None) -> int:
    """`orgsync daemon`: serve until SIGTERM; 0 after a clean stop, 1 if it cannot start."""
    try:
        service = Service(config, environ=environ)
    except OrgsyncError as error:
        log.error("daemon.failed", error=str(error))
        return EXIT_ERROR
    return service.run()
