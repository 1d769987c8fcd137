"""Any SCIM 2.0 service provider as an orgsync target: users, groups, group members.

RFC 7644 shapes everything here; the departures of real servers are dialect switches
(`orgsync.targets.scim.dialect`):
- the server's features are read once from `/ServiceProviderConfig` (patch, filter, bulk,
  etag): without PATCH, every change is a read-modify-write PUT of the whole resource,
  guarded by `If-Match` where the server has ETags; without filtering, lookups walk the
  list; bulk is noted but not used, since every operation is journaled on its own;
- people are created directly (`userName` = the email, `externalId` = the IdP's id),
  suspended with `active = false`, re-enabled with `active = true`, deleted with DELETE;
  there are no invitations and no roles;
- groups are created, renamed (PATCH replace `displayName`, or PUT) and deleted; members
  change by PATCH `add`/`remove` on `members`, many per request and at most
  `max_patch_operations` changes each (`orgsync.targets.scim.members`);
- after a 409 or a lost response, a user is found again by `userName eq "…"`, a group by
  `displayName eq "…"`, a membership by reading the group;
- lists are index pages (`startIndex`/`count`) checked for consistency: a total that
  changes, a resource seen twice or a short walk is an error, never a partial snapshot.

Only `orgsync.core`, `orgsync.retrying`, `orgsync.targets.http` and third-party libraries
are imported here (besides this package).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import structlog
from scim2_models import Group, PatchOperation, Resource

from orgsync.core.errors import NotFoundError, RequestRejected, TargetError, TransientError
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    RoleCatalog,
    TargetGroup,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    Operation,
    RemoveGroupMember,
    RemoveMember,
    RenameGroup,
    SuspendMember,
    UpdateUser,
)
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient, network_transport
from orgsync.targets.scim import wire
from orgsync.targets.scim.dialect import DIALECTS, Dialect
from orgsync.targets.scim.members import Change, MemberChanges

__all__ = ["CAPABILITIES", "ScimTarget", "ServerFeatures"]

log = structlog.get_logger(__name__)

CAPABILITIES: Final = Capabilities(
    invites=False, create_users=True, suspend=True, roles=False, groups=True, change_emails=True
)
PAGE_SIZE: Final = 200
"""Resources asked for per list page (servers cap it at their maxResults, often 1000)."""
USER_ATTRIBUTES: Final = "id,userName,emails,name,displayName,active,externalId"
GROUP_ATTRIBUTES: Final = "id,displayName,members,externalId"
PUT_ATTEMPTS: Final = 5
"""Read-modify-write rounds of the PUT fallback before a 412 (someone else keeps
changing the resource) is given up."""

R = TypeVar("R", bound=Resource[Any])


@dataclass(frozen=True, slots=True)
class ServerFeatures:
    """What `/ServiceProviderConfig` says the server supports."""

    patch: bool
    filter: bool
    etag: bool
    bulk: bool
    bulk_max_operations: int | None = None
    filter_max_results: int | None = None


_ASSUMED: Final = ServerFeatures(patch=True, filter=True, etag=False, bulk=False)
"""Used when a server has no `/ServiceProviderConfig` (RFC 7644 makes it mandatory, but
some providers answer 404): PATCH and filtering are what every such provider known does."""


class ScimTarget:
    """The `orgsync.core.ports.Target` for one SCIM 2.0 service provider.

    Args:
        client: the HTTP client (bearer token, SCIM media types); owned from now on.
        dialect: the server's known quirks (`DIALECTS`).
        max_patch_operations: the most member changes one request carries.
        retry: retry knobs for member changes, which retry here (see `_send_members`).
        page_size: the `count` asked for per list page.
        sleep: how to wait between retries; tests pass a fake.
    """

    def __init__(
        self,
        client: ApiClient,
        *,
        dialect: Dialect = DIALECTS["strict"],
        max_patch_operations: int = 100,
        retry: RetrySettings,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._client = client
        self._dialect = dialect
        self._retry = retry
        self._page_size = page_size
        self._sleep = sleep
        self._changes = MemberChanges(max_patch_operations)
        self._discovery = threading.Lock()
        self._features: ServerFeatures | None = None
        self._group_locks: dict[str, threading.Lock] = {}

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        token: str,
        system: str,
        retry: RetrySettings,
        dialect: str = "strict",
        max_patch_operations: int = 100,
        timeout: float = 30.0,
        verify: bool | str = True,
        requests_per_second: float | None = None,
        on_response: Callable[[str, int], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        interrupt: ReadInterrupt | None = None,
        page_size: int = PAGE_SIZE,
    ) -> ScimTarget:
        """A target authenticating with a bearer token; `transport` replaces the network."""
        inner = transport or network_transport(_ssl_context(verify), interrupt)
        client = ApiClient(
            base_url.rstrip("/"),
            bearer_token=token,
            system=system,
            timeout=timeout,
            requests_per_second=requests_per_second,
            retry=retry,
            user_agent="orgsync",
            transport=wire.ScimTransport(inner),
            on_response=on_response,
            interrupt=interrupt,
            error_parser=wire.error_message,
        )
        return cls(
            client,
            dialect=DIALECTS[dialect],
            max_patch_operations=max_patch_operations,
            retry=retry,
            page_size=page_size,
        )

    def __repr__(self) -> str:
        return f"ScimTarget(client={self._client!r}, dialect={self._dialect.name!r})"

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def features(self) -> ServerFeatures:
        """The server's features, discovered on first use."""
        with self._discovery:
            if self._features is None:
                self._features = self._discover()
            return self._features

    def prepare(self, operations: Sequence[Operation]) -> None:
        """Learn the plan before it is applied, so member changes share requests."""
        self._changes.prepare(operations)

    # ------------------------------------------------------------------ reading

    def read(self) -> TargetSnapshot:
        """Every user (with `active`) and every group with its user members."""
        features = self.features
        users = self._walk("/Users", wire.ScimUser, _attrs(self._dialect, USER_ATTRIBUTES))
        group_attrs = GROUP_ATTRIBUTES if self._dialect.groups_list_members else None
        groups = self._walk("/Groups", Group, _attrs(self._dialect, group_attrs))
        if not self._dialect.groups_list_members:
            # The list left members out (AWS): read each group on its own.
            groups = [self._get_group(g.id or "") for g in groups]
        group_ids = {g.id for g in groups}
        snapshot = TargetSnapshot(
            members=tuple(_member(u) for u in users),
            invites=(),
            roles=RoleCatalog(order=()),
            key_owner_id=None,
            groups=tuple(_group(g, group_ids) for g in groups),
        )
        log.debug(
            "scim.read",
            system=self._client.system,
            users=len(snapshot.members),
            inactive=sum(1 for m in snapshot.members if not m.active),
            groups=len(snapshot.groups),
            patch=features.patch,
        )
        return snapshot

    def find_invite(self, email: str) -> TargetInvite | None:
        return None  # SCIM has no invitations

    def find_existing(self, operation: Operation) -> str | None:
        """For a creation: the user, group or membership that already satisfies it."""
        if isinstance(operation, CreateUser):
            user_id = self._find_user(operation.email)
            if user_id is not None:
                self._changes.user_created(operation.email, user_id)
            return user_id
        if isinstance(operation, CreateGroup):
            return self._find_group(operation.group)
        if isinstance(operation, AddGroupMember):
            if operation.group_id is None or operation.user_id is None:
                return None
            members = self._member_values(operation.group_id)
            return operation.user_id if operation.user_id in members else None
        return None

    # ------------------------------------------------------------------ writing

    def execute(self, operation: Operation) -> str | None:
        """Perform one operation; return the id of a created user or group."""
        if isinstance(operation, CreateUser):
            return self._create_user(operation)
        if isinstance(operation, UpdateUser):
            if operation.previous_email is not None:
                self._set_email(operation.user_id, operation.email)
            self._set_active(operation.user_id, active=operation.active)
            return None
        if isinstance(operation, SuspendMember):
            self._set_active(operation.user_id, active=False)
            return None
        if isinstance(operation, RemoveMember):
            self._client.request("DELETE", f"/Users/{_segment(operation.user_id)}", idempotent=True)
            return None
        if isinstance(operation, CreateGroup):
            body = wire.new_group(name=operation.group, external_id=operation.source_group_id)
            created = self._client.request("POST", "/Groups", json=body, idempotent=False)
            return _created_id(wire.parse(Group, created.json(), "POST /Groups"), "POST /Groups")
        if isinstance(operation, AdoptGroup):
            return operation.group_id  # ownership is recorded by the engine; no call
        if isinstance(operation, RenameGroup):
            self._rename_group(_group_id(operation.group_id), operation.group)
            return None
        if isinstance(operation, DeleteGroup):
            path = f"/Groups/{_segment(_group_id(operation.group_id))}"
            self._client.request("DELETE", path, idempotent=True)
            return None
        if isinstance(operation, AddGroupMember | RemoveGroupMember):
            self._changes.apply(operation, self._send_members)
            return operation.user_id if isinstance(operation, AddGroupMember) else None
        raise TargetError(
            f"operation {operation.op!r} is not supported by SCIM targets "
            "(no invitations, no organization or group roles)"
        )

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ discovery

    def _discover(self) -> ServerFeatures:
        try:
            response = self._client.request("GET", "/ServiceProviderConfig", idempotent=True)
        except NotFoundError:
            log.warning(
                "scim.discovery.missing",
                system=self._client.system,
                assumed="patch and filter supported, no etag",
            )
            return _ASSUMED
        config = wire.parse_config(response.json(), "GET /ServiceProviderConfig")
        features = ServerFeatures(
            patch=bool(config.patch and config.patch.supported),
            filter=bool(config.filter and config.filter.supported),
            etag=bool(config.etag and config.etag.supported),
            bulk=bool(config.bulk and config.bulk.supported),
            bulk_max_operations=config.bulk.max_operations if config.bulk else None,
            filter_max_results=config.filter.max_results if config.filter else None,
        )
        log.info(
            "scim.discovered",
            system=self._client.system,
            patch=features.patch,
            filter=features.filter,
            etag=features.etag,
            bulk=features.bulk,
            dialect=self._dialect.name,
        )
        return features

    # ------------------------------------------------------------------ users

    def _create_user(self, operation: CreateUser) -> str:
        body = wire.new_user(
            email=operation.email, name=operation.name, external_id=operation.source_id
        )
        # Not idempotent: after a lost response the applier looks the user up first.
        response = self._client.request("POST", "/Users", json=body, idempotent=False)
        user = wire.parse(wire.ScimUser, response.json(), "POST /Users")
        user_id = _created_id(user, "POST /Users")
        self._changes.user_created(operation.email, user_id)
        return user_id

    def _set_active(self, user_id: str, *, active: bool) -> None:
        path = f"/Users/{_segment(user_id)}"
        if self.features.patch:
            operation = PatchOperation[wire.ScimUser](
                op=PatchOperation.Op.replace_, path="active", value=active
            )
            body = wire.user_patch([operation])
            self._client.request("PATCH", path, json=body, idempotent=True)
            return

        def change(resource: dict[str, Any]) -> None:
            resource["active"] = active

        self._put_modified(path, change)

    def _set_email(self, user_id: str, email: str) -> None:
        """The IdP changed this person's email: rename the user in place (same id)."""
        path = f"/Users/{_segment(user_id)}"
        emails = [{"value": email, "type": "work", "primary": True}]
        if self.features.patch:
            operations = [
                PatchOperation[wire.ScimUser](
                    op=PatchOperation.Op.replace_, path="userName", value=email
                ),
                PatchOperation[wire.ScimUser](
                    op=PatchOperation.Op.replace_, path="emails", value=emails
                ),
            ]
            self._client.request("PATCH", path, json=wire.user_patch(operations), idempotent=True)
            return

        def change(resource: dict[str, Any]) -> None:
            resource["userName"] = email
            resource["emails"] = emails

        self._put_modified(path, change)

    def _find_user(self, email: str) -> str | None:
        key = normalize_email(email)
        if self.features.filter:
            query = f"userName eq {_quoted(email)}"
            found = self._search("/Users", wire.ScimUser, query)
            for user in found:
                if user.id and _user_key(user) == key:
                    return user.id
        # No filter support, or a case-sensitive filter (SCIMMY) missed a userName that
        # differs in case only: walk the list (rare: only after a 409 or a lost response).
        for user in self._walk("/Users", wire.ScimUser, _attrs(self._dialect, USER_ATTRIBUTES)):
            if user.id and _user_key(user) == key:
                return user.id
        return None

    # ------------------------------------------------------------------ groups

    def _find_group(self, name: str) -> str | None:
        if self.features.filter:
            found = self._search("/Groups", Group, f"displayName eq {_quoted(name)}")
        else:
            found = self._walk("/Groups", Group, _attrs(self._dialect, "id,displayName"))
        matches = sorted(g.id for g in found if g.id and g.display_name == name)
        return matches[0] if matches else None

    def _get_group(self, group_id: str) -> Group:
        path = f"/Groups/{_segment(group_id)}"
        response = self._client.request("GET", path, idempotent=True)
        return wire.parse(Group, response.json(), f"GET {path}")

    def _member_values(self, group_id: str) -> set[str]:
        return {m.value for m in self._get_group(group_id).members or [] if m.value}

    def _rename_group(self, group_id: str, name: str) -> None:
        path = f"/Groups/{_segment(group_id)}"
        if self.features.patch:
            operation = PatchOperation[Group](
                op=PatchOperation.Op.replace_, path="displayName", value=name
            )
            self._client.request("PATCH", path, json=wire.group_patch([operation]), idempotent=True)
            return

        def change(resource: dict[str, Any]) -> None:
            resource["displayName"] = name

        with self._group_lock(group_id):
            self._put_modified(path, change)

    def _send_members(
        self, group_id: str, change: Change, members: Mapping[EmailKey, str], verify: bool
    ) -> None:
        """One request carrying `members`' changes, retried here on transient failures.

        A PATCH that failed may have been applied (a lost response); re-adding a member
        duplicates it on some servers (SCIMMY) and re-removing one is a 400 `noTarget`
        on strict ones, so every retry, and a first attempt with `verify`, re-reads the
        group and sends only what is still to do.
        """
        policy = self._retry.policy(sleep=self._sleep)
        for attempt in policy:
            with attempt:
                pending = dict(members)
                if self.features.patch and (verify or attempt.retry_state.attempt_number > 1):
                    present = self._member_values(group_id)
                    pending = {
                        e: u for e, u in members.items() if (u in present) == (change == "remove")
                    }
                    if not pending:
                        return
                if self.features.patch:
                    self._patch_members(group_id, change, list(pending.values()))
                else:
                    with self._group_lock(group_id):
                        self._put_members(group_id, change, set(pending.values()))

    def _patch_members(self, group_id: str, change: Change, user_ids: list[str]) -> None:
        operations: list[PatchOperation[Group]]
        values = [{"value": user_id} for user_id in user_ids]
        if change == "add":
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.add, path="members", value=values)
            ]
        elif self._dialect.remove_by_value:
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.remove, path="members", value=values)
            ]
        else:
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.remove, path=wire.members_filter(u))
                for u in user_ids
            ]
        path = f"/Groups/{_segment(group_id)}"
        # Not idempotent (see `_send_members`): the retries are ours, with a re-read.
        self._client.request("PATCH", path, json=wire.group_patch(operations), idempotent=False)

    def _put_members(self, group_id: str, change: Change, user_ids: set[str]) -> None:
        def edit(resource: dict[str, Any]) -> None:
            current = [m for m in resource.get("members") or [] if isinstance(m, dict)]
            if change == "add":
                have = {m.get("value") for m in current}
                current += [{"value": u, "type": "User"} for u in sorted(user_ids - have)]
            else:
                current = [m for m in current if m.get("value") not in user_ids]
            resource["members"] = current

        self._put_modified(f"/Groups/{_segment(group_id)}", edit)

    def _group_lock(self, group_id: str) -> threading.Lock:
        # Two of our own read-modify-write rounds on one group must not interleave, or
        # the second PUT would drop what the first added (servers without ETags).
        with self._discovery:
            return self._group_locks.setdefault(group_id, threading.Lock())

    # ------------------------------------------------------------------ PUT fallback

    def _put_modified(self, path: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Read the resource, change it, and PUT it back whole (servers without PATCH).

        The resource is edited as the server sent it, so attributes orgsync does not know
        (extensions) survive the replacement. With ETags, `If-Match` makes a concurrent
        change elsewhere a 412, after which the round starts over.
        """
        for _ in range(PUT_ATTEMPTS):
            response = self._client.request("GET", path, idempotent=True)
            resource = response.json()
            if not isinstance(resource, dict):
                raise TargetError(f"GET {path}: not a SCIM resource")
            etag = response.headers.get("etag") or _meta_version(resource)
            change(resource)
            resource.pop("meta", None)  # read-only (RFC 7643 §3.1)
            try:
                with wire.if_match(etag if self.features.etag else None):
                    self._client.request("PUT", path, json=resource, idempotent=True)
            except RequestRejected as error:
                if error.status == 412:
                    continue  # changed since we read it: read again
                raise
            return
        raise TransientError(f"PUT {path}: the resource kept changing (412 {PUT_ATTEMPTS} times)")

    # ------------------------------------------------------------------ lists

    def _search(self, path: str, model: type[R], query: str) -> list[R]:
        response = self._client.request(
            "GET", path, params={"filter": query, "count": self._page_size}, idempotent=True
        )
        page = wire.parse_list(model, response.json(), f"GET {path}?filter")
        return list(page.resources or [])

    def _walk(self, path: str, model: type[R], attributes: str | None) -> list[R]:
        """Every resource of a list, page by page; an inconsistent walk is an error."""
        seen: dict[str, R] = {}
        start, total = 1, -1
        while True:
            params: dict[str, str | int] = {"startIndex": start, "count": self._page_size}
            if attributes:
                params["attributes"] = attributes
            response = self._client.request("GET", path, params=params, idempotent=True)
            where = f"GET {path} (startIndex={start})"
            page = wire.parse_list(model, response.json(), where)
            resources = page.resources or []
            reported = page.total_results if page.total_results is not None else len(resources)
            if total == -1:
                total = reported
            elif reported != total:
                raise TransientError(f"{where}: totalResults changed from {total} to {reported}")
            for resource in resources:
                if not resource.id:
                    raise TargetError(f"{where}: a resource without an id")
                if resource.id in seen:
                    raise TransientError(f"{where}: {resource.id} listed twice (list changed)")
                seen[resource.id] = resource
            if len(seen) >= total:
                return list(seen.values())
            if not resources:
                raise TransientError(f"{where}: empty page after {len(seen)} of {total}")
            start += len(resources)


# --------------------------------------------------------------------------- mapping


def _member(user: wire.ScimUser) -> TargetMember:
    assert user.id is not None  # checked by the walk
    name = user.display_name or (user.name.formatted if user.name else None) or ""
    return TargetMember(
        id=user.id,
        email=wire.pick_email(user),
        role=None,
        name=name,
        # RFC 7643 makes `active` optional: a server without it has no disabled users.
        active=user.active is not False,
    )


def _group(group: Group, group_ids: set[str | None]) -> TargetGroup:
    assert group.id is not None  # checked by the walk
    members = frozenset(
        m.value
        for m in group.members or []
        if m.value and (m.type or "User") == "User" and m.value not in group_ids
    )
    return TargetGroup(id=group.id, name=group.display_name or group.id, member_ids=members)


def _user_key(user: wire.ScimUser) -> EmailKey | None:
    email = user.user_name if user.user_name and "@" in user.user_name else wire.pick_email(user)
    return normalize_email(email) if email else None


def _created_id(resource: Resource[Any], where: str) -> str:
    if not resource.id:
        raise TargetError(f"{where}: the created resource has no id")
    return resource.id


def _group_id(group_id: str | None) -> str:
    if group_id is None:
        raise TargetError("group operation without a group id")
    return group_id


def _attrs(dialect: Dialect, attributes: str | None) -> str | None:
    return attributes if dialect.attributes else None


def _meta_version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    version = meta.get("version") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _quoted(value: str) -> str:
    """A filter's string literal: JSON string syntax (RFC 7644 §3.4.2.2)."""
    return json.dumps(value)


def _segment(identifier: str) -> str:
    """An id as one path segment: ids come from the server, but a '/' must not escape."""
    return quote(identifier, safe="")


def _ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
