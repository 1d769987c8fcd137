"""`orgsync validate`: the configuration, the secrets, the source and each target, checked.

Reads, never writes. Offline, it checks the file, that every secret resolves, that the
source parses, and that the state path is usable (its directory exists and is writable,
and a database already there is a sound orgsync one); online, it also reads each target
and checks that every role the configuration names exists in that target's catalog.
"""

from __future__ import annotations

from collections.abc import Mapping

from orgsync.config import Config, TargetConfig
from orgsync.core.errors import OrgsyncError
from orgsync.core.forms import LearnedForm
from orgsync.core.ports import Target
from orgsync.factories import build_source, build_target, check_state, open_state_store
from orgsync.notify import check_secrets
from orgsync.store import NoStateDatabase


def _check_source(config: Config, environ: Mapping[str, str], *, offline: bool) -> tuple[str, bool]:
    """One report line for the source, and whether it is usable."""
    label = f"source {config.source.type}"
    try:
        source = build_source(config, environ)  # resolves the source's secrets
        if offline and config.source.type != "file":
            return f"{label}: credentials present (not contacted: --offline)", True
        snapshot = source.read()
    except OrgsyncError as error:
        return f"{label}: FAILED: {error}", False
    inactive = sum(1 for p in snapshot.people if not p.active)
    return (
        f"{label}: {len(snapshot.people)} people ({inactive} inactive), "
        f"{len(snapshot.groups)} groups",
        True,
    )


def validate(
    config: Config, *, environ: Mapping[str, str], offline: bool
) -> tuple[list[str], bool]:
    """Return report lines and whether everything checked is usable."""
    source_line, ok = _check_source(config, environ, offline=offline)
    lines = [f"configuration: ok ({len(config.targets)} target(s))", source_line]
    try:
        lines.append(f"state {check_state(config.state, environ, offline=offline)}")
    except OrgsyncError as error:
        ok = False
        lines.append(f"state: FAILED: {error}")
    for target_config in config.targets:
        label = f"target {target_config.name} ({target_config.type})"
        try:
            keycard = target_config.type == "keycard"
            (target_config.client_secret if keycard else target_config.api_key).resolve(environ)
            if offline:
                lines.append(f"{label}: credentials present (not contacted: --offline)")
                continue
            from orgsync.engine import check_capabilities, check_roles  # online only

            target = build_target(target_config, environ)
            check_capabilities(target_config, target.capabilities)
            try:
                observed = target.read()
                details = _scim_lines(config, target_config, target, environ)
            finally:
                target.close()
            check_roles(target_config, observed.roles)
            pending = sum(1 for i in observed.invites if i.status.value == "pending")
            roles = ", ".join(observed.roles.order) or "none (scope alone decides)"
            line = (
                f"{label}: reachable; {len(observed.members)} members, {pending} pending "
                f"invitations, {len(observed.groups)} groups; roles {roles}"
            )
            if target_config.type == "openai":  # the only API that says whose key it is
                found = observed.key_owner_id is not None
                line += "; API key owner " + (
                    "found" if found else "NOT found (it will not be protected)"
                )
            lines.append(line)
            lines.extend(details)
        except OrgsyncError as error:
            ok = False
            lines.append(f"{label}: FAILED: {error}")
    for entry in config.notify:
        label = f"notify {entry.name} ({entry.type})"
        try:
            check_secrets(entry, environ)
            lines.append(f"{label}: credentials present (not contacted)")
        except OrgsyncError as error:
            ok = False
            lines.append(f"{label}: FAILED: {error}")
    return lines, ok


def _scim_lines(
    config: Config, target_config: TargetConfig, target: Target, environ: Mapping[str, str]
) -> list[str]:
    """For a SCIM target: what `/ServiceProviderConfig` announced and the request forms
    orgsync asks in (learned ones from the state database, if there is one)."""
    if target_config.type != "scim":
        return []
    from orgsync.targets.scim import ScimTarget

    if not isinstance(target, ScimTarget):
        return []
    learned: list[LearnedForm] = []
    if config.state.url is not None or config.state.path.is_file():
        try:
            with open_state_store(config.state, environ, create=False) as store:
                learned = store.learned_forms(target_config.name)
        except NoStateDatabase:
            pass  # an empty database has learned nothing yet
    target.use_learned_forms(learned, lambda _: None)  # validate records nothing
    forms = target.describe_forms(learned)
    dialect = target_config.scim_dialect
    return [
        f"  ServiceProviderConfig: {target.describe_features()}",
        f'  request forms (scim_dialect = "{dialect}"): {forms}',
    ]
