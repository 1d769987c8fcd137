"""`orgsync validate`: the configuration, the secrets, the source and each target, checked.

Reads, never writes. Offline, it checks the file, that every secret resolves, that the
source parses, and that the state path is usable (its directory exists and is writable,
and a database already there is a sound orgsync one); online, it also reads each target
and checks that every role the configuration names exists in that target's catalog, and
that it answers as the organization the state database's memory of it is about (the
organization fence of `orgsync.store.identity`: what it reads is what a sync compares,
so no call of its own). Whenever the source was read (online, or a file source), every
group pattern of a target (`scope_groups`, role rules, `[[targets.groups]]`) must match a
group the source has: one that matches none is a typo until shown otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from orgsync import connectors
from orgsync.config import Config, TargetConfig
from orgsync.core.errors import OrgsyncError
from orgsync.core.text import visible
from orgsync.factories import build_source, build_target, check_state, open_state_store

# What only an online check or a configured notification uses is imported there:
# `validate --offline` pays for neither the operation models, the notification senders
# nor the state database's modules (bench/startup.py, tests/cli/test_startup_imports.py).
if TYPE_CHECKING:
    from orgsync.core.forms import LearnedForm
    from orgsync.core.model import SourceSnapshot
    from orgsync.core.ports import Target
    from orgsync.store.identity import Identity


def _check_source(
    config: Config, environ: Mapping[str, str], *, offline: bool
) -> tuple[list[str], bool, list[str] | None]:
    """The report lines for the source, whether it is usable, and the names of its groups
    (None: not read). Online, the second line is its change probe's."""
    label = f"source {config.source.type}"
    try:
        source = build_source(config, environ)  # resolves the source's secrets
        if offline and not connectors.source(config.source.type).reads_offline:
            return [f"{label}: credentials present (not contacted: --offline)"], True, None
        snapshot = source.read()
    except OrgsyncError as error:
        return [f"{label}: FAILED: {error}"], False, None
    inactive = sum(1 for p in snapshot.people if not p.active)
    lines = [
        f"{label}: {len(snapshot.people)} people ({inactive} inactive), "
        f"{len(snapshot.groups)} groups"
    ]
    if not offline:
        lines.append(_probe_line(config, environ, snapshot))
    return lines, True, [group.name for group in snapshot.groups]


def _probe_line(config: Config, environ: Mapping[str, str], snapshot: SourceSnapshot) -> str:
    """What an incremental pass over the source, as configured, would cost: the change
    probe available, degraded (why, and what to enable) or not applicable. A warning at
    most: the source reads, so every sync works, only each pass costs more."""
    from orgsync.core.ports import DetectsChanges, ProbeState, ReportsProbeStatus

    label = "  change probe"
    # A source of its own, as a pass probes with: a read may close its source (SCIM's).
    source = build_source(config, environ)
    if not isinstance(source, ReportsProbeStatus):
        if isinstance(source, DetectsChanges):
            return f"{label}: not checked (the source does not report its probe's status)"
        return f"{label}: none; each incremental pass reads the source whole and compares it"
    people = len(snapshot.people) + len(snapshot.rejected)
    try:
        status = source.change_probe_status(people, len(snapshot.groups))
    except OrgsyncError as error:
        return f"{label}: WARNING: not checked: {visible(str(error))}"
    finally:
        closer = getattr(source, "close", None)  # a probe leaves SCIM's client open
        if callable(closer):
            closer()
    if status.state is ProbeState.DEGRADED:
        enable = f"; to enable: {status.enable}" if status.enable else ""
        return f"{label}: WARNING: degraded: {visible(status.reason)}; {status.cost}{enable}"
    return f"{label}: {status.state.value}; {status.cost}"


def validate(
    config: Config, *, environ: Mapping[str, str], offline: bool
) -> tuple[list[str], bool]:
    """Return report lines and whether everything checked is usable."""
    source_lines, ok, group_names = _check_source(config, environ, offline=offline)
    lines = [f"configuration: ok ({len(config.targets)} target(s))", *source_lines]
    try:
        lines.append(f"state {check_state(config.state, environ, offline=offline)}")
    except OrgsyncError as error:
        ok = False
        lines.append(f"state: FAILED: {error}")
    for target_config in config.targets:
        label = f"target {target_config.name} ({target_config.type})"
        target_lines, target_ok = _check_target(config, target_config, environ, offline=offline)
        lines.extend(target_lines)
        unmatched = _unmatched(target_config, group_names)
        lines.extend(f"{label}: FAILED: {visible(problem)}" for problem in unmatched)
        ok = ok and target_ok and not unmatched
    server_lines, server_ok = _check_server_secrets(config, environ)
    lines.extend(server_lines)
    ok = ok and server_ok
    for entry in config.notify:
        from orgsync.notify import check_secrets

        label = f"notify {entry.name} ({entry.type})"
        try:
            check_secrets(entry, environ)
            lines.append(f"{label}: credentials present (not contacted)")
        except OrgsyncError as error:
            ok = False
            lines.append(f"{label}: FAILED: {error}")
    lines.extend(connector_lines())
    return lines, ok


SERVER_SECRETS = ("webhook_secret", "okta_authorization", "entra_client_state")
SHORT_SECRET = 16
"""Characters below which a webhook secret is said to be guessable."""


def _check_server_secrets(config: Config, environ: Mapping[str, str]) -> tuple[list[str], bool]:
    """The `[server]` secrets, resolved as the daemon's start resolves them: one that is
    missing stopped the daemon at its start while `validate` had said all was well."""
    lines: list[str] = []
    ok = True
    for key in SERVER_SECRETS:
        ref = config.server.secret(key)
        if ref is None:
            continue
        try:
            value = ref.resolve(environ).get_secret_value()
        except OrgsyncError as error:
            ok = False
            lines.append(f"server {key}: FAILED: {error}")
            continue
        if len(value) < SHORT_SECRET:
            lines.append(
                f"server {key}: WARNING: shorter than {SHORT_SECRET} characters: whoever "
                "guesses it can send webhooks; use a random one (openssl rand -hex 32)"
            )
        else:
            lines.append(f"server {key}: present")
    return lines, ok


def _unmatched(target: TargetConfig, group_names: list[str] | None) -> list[str]:
    if group_names is None:  # the source was not read (--offline)
        return []
    from orgsync.rule_groups import unmatched_rules

    return [problem.message for problem in unmatched_rules(target, group_names)]


def _check_target(
    config: Config, target_config: TargetConfig, environ: Mapping[str, str], *, offline: bool
) -> tuple[list[str], bool]:
    """The report lines of one target, and whether a sync of it could go on."""
    label = f"target {target_config.name} ({target_config.type})"
    lines: list[str] = []
    ok = True
    try:
        connector = connectors.target(target_config.type)
        for ref in connector.credentials(target_config):
            ref.resolve(environ)
        if offline:
            lines.append(f"{label}: credentials present (not contacted: --offline)")
            return lines, ok
        from orgsync.policy import check_capabilities, check_roles  # online only
        from orgsync.store.identity import seen as seen_identity

        target = build_target(target_config, environ)
        check_capabilities(target_config, target.capabilities)
        try:
            observed = target.read()
            learned = _learned_forms(config, target_config, target, environ)
            report = connector.probe(target_config, target, observed, learned)
            seen = seen_identity(target_config.type, target_config.base_url, target)
        finally:
            target.close()
        check_roles(target_config, observed.roles)
        pending = sum(1 for i in observed.invites if i.status.value == "pending")
        roles = ", ".join(observed.roles.order) or "none (scope alone decides)"
        line = (
            f"{label}: reachable; {len(observed.members)} members, {pending} pending "
            f"invitations, {len(observed.groups)} groups; roles {roles}"
        )
        lines.append("; ".join((line, *report.notes)))
        lines.extend(report.details)
        fence, fence_ok = _check_organization(config, target_config.name, seen, environ)
        ok = ok and fence_ok
        fence = visible(fence)  # the organization is what the server said
        lines.append(fence if fence_ok else f"{label}: FAILED: {fence}")
    except OrgsyncError as error:
        ok = False
        lines.append(f"{label}: FAILED: {error}")
    return lines, ok


def _check_organization(
    config: Config, target: str, seen: Identity, environ: Mapping[str, str]
) -> tuple[str, bool]:
    """Whether `target`, as just read (`seen`), is the organization the state database's
    memory of it is about: the check every sync makes before planning, with the sync's
    refusal (and its way out) when it is not. A line, and whether a sync would go on."""
    from orgsync.store import NoStateDatabase
    from orgsync.store.identity import OrganizationChanged, judge

    if config.state.url is None and not config.state.path.is_file():
        return f"  memory: none yet; the first sync records {seen.describe()}", True
    try:
        with open_state_store(config.state, environ, create=False) as store:
            recorded = store.identity(target)
            twin = store.twin_of(target, seen) if recorded is None else None
    except NoStateDatabase:
        return f"  memory: none yet; the first sync records {seen.describe()}", True
    except OrgsyncError as error:  # the state line above says what is wrong with it
        return f"  memory: not checked (state database: {error})", False
    if twin is not None:
        return str(twin), False
    if recorded is None:
        return (
            f"  memory: which organization it is about is not recorded yet; the next sync "
            f"records {seen.describe()}",
            True,
        )
    when = recorded.recorded_at.strftime("%Y-%m-%d %H:%M UTC")
    about = f"  memory: about {recorded.identity.describe()} (recorded {when})"
    try:
        update = judge(target, recorded, seen)
    except OrganizationChanged as refusal:
        return str(refusal), False
    if update is None:
        return f"{about}; it answers as that", True
    return f"{about}; it answers as {seen.describe()}, which the next sync records", True


def _learned_forms(
    config: Config, target_config: TargetConfig, target: Target, environ: Mapping[str, str]
) -> list[LearnedForm]:
    """For a target that learns request forms (SCIM): what earlier runs learned, from the
    state database if there is one, handed to it as a run would (validate records nothing)."""
    from orgsync.core.ports import LearnsForms
    from orgsync.store import NoStateDatabase

    if not isinstance(target, LearnsForms):
        return []
    learned: list[LearnedForm] = []
    if config.state.url is not None or config.state.path.is_file():
        try:
            with open_state_store(config.state, environ, create=False) as store:
                learned = store.learned_forms(target_config.name)
        except NoStateDatabase:
            pass  # an empty database has learned nothing yet
    target.use_learned_forms(learned, lambda _: None)
    return learned


def connector_lines() -> list[str]:
    """The connectors installed: built-in ones, and each package's, with its version."""
    found = connectors.found()
    sources = [f.type for f in found if f.kind == "source" and f.origin == "built-in"]
    targets = [f.type for f in found if f.kind == "target" and f.origin == "built-in"]
    lines = [f"connectors: sources {', '.join(sources)}; targets {', '.join(targets)} (built-in)"]
    for item in found:
        if item.origin == "built-in":
            continue
        why = f" (IGNORED: {item.ignored})" if item.ignored else ""
        lines.append(f"  {item.kind} {item.type} from {item.origin}{why}")
    return lines
