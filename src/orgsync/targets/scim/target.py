"""Any SCIM 2.0 service provider as an orgsync target: users, groups, group members.

RFC 7644 shapes everything here; the departures of real servers are dialect switches
(`orgsync.targets.scim.dialect`) and learned request forms (`orgsync.targets.scim.forms`):
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
- each change is asked in the form the server accepts: a refusal as unsupported (501, or
  a 400 `invalidPath`...) falls back to the next form meaning the same change, and what
  worked is remembered per target in the state database (`use_learned_forms`);
- a group member is a user or a nested group by its `type`, else its `$ref`, and only then
  by which ids it matches (`orgsync.core.member_kinds`): servers numbering users and
  groups from separate sequences give user 2 and group 2 the same id;
- after a 409 or a lost response, a user is found again by `userName eq "…"`, a group by
  `displayName eq "…"`, a membership by reading the group; a group is also looked up
  before it is created (names are rarely unique: a group a read skipped is adopted);
- lists are index pages (`startIndex`/`count`) checked for consistency: a total that
  changes, a resource seen twice or a short walk is an error, never a partial snapshot.

Only `orgsync.core`, `orgsync.retrying`, `orgsync.http`, `orgsync.targets.http` and
third-party libraries are imported here (besides this package).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx
import structlog
from pydantic_core import from_json
from scim2_models import Group, PatchOperation, Resource

from orgsync.core.errors import (
    ConflictError,
    NotFoundError,
    RequestRejected,
    TargetError,
    TransientError,
    UnsupportedRequest,
)
from orgsync.core.forms import CHANGE_LABELS, LearnedForm
from orgsync.core.member_kinds import member_kind, user_ids_of
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
from orgsync.http.client import network_transport, ssl_verify
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.targets._common import check_created, segment
from orgsync.targets.http import ApiClient, json_body
from orgsync.targets.scim import wire
from orgsync.targets.scim.connector import CAPABILITIES
from orgsync.targets.scim.dialect import DIALECTS, Dialect
from orgsync.targets.scim.forms import CHAINS, Form, FormBook
from orgsync.targets.scim.forms import Change as FormChange
from orgsync.targets.scim.members import Change, MemberChanges

__all__ = ["CAPABILITIES", "ScimTarget", "ServerFeatures"]

log = structlog.get_logger(__name__)

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
    announced: bool = True
    """False when the server has no `/ServiceProviderConfig` and these are assumed."""


_ASSUMED: Final = ServerFeatures(patch=True, filter=True, etag=False, bulk=False, announced=False)
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
        dialect: Dialect = DIALECTS["auto"],
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
        self._forms = FormBook(client.base_url, fixed=dialect.forms, dialect=dialect.name)
        # The ids of the last read, to tell a member without `type` and `$ref` apart.
        self._user_ids: frozenset[str] = frozenset()
        self._group_ids: frozenset[str] = frozenset()

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        token: str,
        system: str,
        retry: RetrySettings,
        dialect: str = "auto",
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
        inner = transport or network_transport(ssl_verify(verify), interrupt)
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
            form_refusal=wire.refuses_form,
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

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def prepare(self, operations: Sequence[Operation]) -> None:
        """Learn the plan before it is applied, so member changes share requests."""
        self._changes.prepare(operations)

    def use_learned_forms(
        self, learned: Sequence[LearnedForm], record: Callable[[LearnedForm], None]
    ) -> None:
        """Ask first in the forms earlier runs learned; `record` each new finding."""
        self._forms.use(learned, record)

    def describe_forms(self, learned: Sequence[LearnedForm]) -> str:
        """How each change will be asked for, and why (for `validate`)."""
        if self._dialect.forms is not None:
            fixed = ", ".join(f"{CHANGE_LABELS[c]} {f}" for c, f in self._dialect.forms.items())
            return f'fixed by scim_dialect = "{self._dialect.name}": {fixed}'
        patch = self.features.patch
        mine = {r.change: r for r in learned if r.server == self._forms.server}
        parts = []
        for change in CHAINS:
            form = self._forms.forms(change, patch=patch)[0]
            record = mine.get(change)
            if record is not None and record.form == form:
                why = record.reason
            elif not patch:
                why = "the server announces no PATCH"
            else:
                why = "not needed yet; RFC 7644 form first"
            parts.append(f"{CHANGE_LABELS[change]} {form} ({why})")
        return "; ".join(parts)

    def describe_features(self) -> str:
        """`/ServiceProviderConfig` as `validate` reports it."""
        features = self.features

        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        bulk = yes(features.bulk)
        if features.bulk and features.bulk_max_operations:
            bulk += f" (at most {features.bulk_max_operations} operations; not used)"
        found = (
            f"PATCH {yes(features.patch)}, filter {yes(features.filter)}, "
            f"ETag {yes(features.etag)}, bulk {bulk}"
        )
        return found if features.announced else f"none served; assumed {found}"

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
        user_ids = frozenset(u.id for u in users if u.id)
        group_ids = frozenset(g.id for g in groups if g.id)
        with self._discovery:
            self._user_ids, self._group_ids = user_ids, group_ids
        snapshot = TargetSnapshot(
            members=tuple(_member(u) for u in users),
            invites=(),
            roles=RoleCatalog(order=()),
            key_owner_id=None,
            groups=tuple(_group(g, user_ids, group_ids) for g in groups),
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
            found = self._find_groups(operation.group)
            if len(found) > 1:
                # As the planner: of several namesakes none is adopted, since any one
                # may be a group made by hand that the IdP team must not be put in.
                log.warning(
                    "scim.group.namesakes_not_adopted",
                    system=self._client.system,
                    group=operation.group,
                    count=len(found),
                )
                return None
            return found[0] if found else None
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
            changes: dict[str, Any] = {"active": operation.active}
            if operation.previous_email is not None:
                changes["userName"] = operation.email
                changes["emails"] = [{"value": operation.email, "type": "work", "primary": True}]
            self._update_user(operation.user_id, changes)
            return None
        if isinstance(operation, SuspendMember):
            self._update_user(operation.user_id, {"active": False})
            return None
        if isinstance(operation, RemoveMember):
            self._client.request("DELETE", f"/Users/{segment(operation.user_id)}", idempotent=True)
            return None
        if isinstance(operation, CreateGroup):
            # Planned because the read did not list a group of this name. Most servers do
            # not keep names unique (scim2-server and SCIMMY create a second one), so a
            # group the read skipped (a page shifted during the walk) would be duplicated,
            # and the one orgsync owned left to its members. One look-up first; a group
            # found is taken as a 409 would be (the applier adopts it).
            if self._find_groups(operation.group):
                raise ConflictError(
                    f"a group named {operation.group!r} exists, which the read did not list"
                )
            body = wire.new_group(name=operation.group, external_id=operation.source_group_id)
            created = self._client.request("POST", "/Groups", json=body, idempotent=False)
            group = wire.parse(Group, json_body(created, "POST /Groups"), "POST /Groups")
            check_created("POST /Groups", "name", operation.group, group.display_name)
            return _created_id(group, "POST /Groups")
        if isinstance(operation, AdoptGroup):
            return operation.group_id  # ownership is recorded by the engine; no call
        if isinstance(operation, RenameGroup):
            self._rename_group(_group_id(operation.group_id), operation.group)
            return None
        if isinstance(operation, DeleteGroup):
            path = f"/Groups/{segment(_group_id(operation.group_id))}"
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
            body = self._client.request_json("GET", "/ServiceProviderConfig", idempotent=True)
        except (NotFoundError, UnsupportedRequest):
            log.warning(
                "scim.discovery.missing",
                system=self._client.system,
                assumed="patch and filter supported, no etag",
            )
            return _ASSUMED
        config = wire.parse_config(body, "GET /ServiceProviderConfig")
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
        user = wire.parse(wire.ScimUser, json_body(response, "POST /Users"), "POST /Users")
        check_created("POST /Users", "email", operation.email, _user_key(user))
        user_id = _created_id(user, "POST /Users")
        self._changes.user_created(operation.email, user_id)
        return user_id

    def _update_user(self, user_id: str, changes: dict[str, Any]) -> None:
        """Replace these attributes of a user, in the form the server accepts."""
        path = f"/Users/{segment(user_id)}"

        def made(resource: dict[str, Any]) -> bool:
            # Only what the answer shows; userName is not case-exact (RFC 7643).
            active = "active" not in resource or resource["active"] == changes["active"]
            name = changes.get("userName")
            renamed = name is None or str(resource.get("userName", name)).casefold() == (
                name.casefold()
            )
            return active and renamed

        def send(form: Form) -> None:
            if form == "put":

                def edit(resource: dict[str, Any]) -> None:
                    resource.update(changes)

                self._put_modified(path, edit, made)
                return
            operations = (
                [
                    PatchOperation[wire.ScimUser](
                        op=PatchOperation.Op.replace_, path=key, value=value
                    )
                    for key, value in changes.items()
                ]
                if form == "path"
                else [PatchOperation[wire.ScimUser](op=PatchOperation.Op.replace_, value=changes)]
            )
            answer = self._client.request(
                "PATCH", path, json=wire.user_patch(operations), idempotent=True
            )
            # A server that answers 200 and ignores the change (a suspension that leaves
            # the leaver active) would be journaled done on every run while nothing
            # changes: the next form is tried, and failing all, the operation fails.
            _check_made("PATCH", path, answer, made)

        self._forms.attempt("update_user", send, patch=self.features.patch)

    def _find_user(self, email: str) -> str | None:
        key = normalize_email(email)
        if self.features.filter:
            query = f"userName eq {_quoted(email)}"
            try:
                found = self._search("/Users", wire.ScimUser, query)
            except UnsupportedRequest:
                found = []  # a filter the server does not take after all: walk
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

    def _find_groups(self, name: str) -> list[str]:
        """The ids of the groups named exactly `name`, sorted."""
        found: list[Group] | None = None
        if self.features.filter:
            try:
                found = self._search("/Groups", Group, f"displayName eq {_quoted(name)}")
            except UnsupportedRequest:
                found = None  # a filter the server does not take after all: walk
        if found is None:
            found = self._walk("/Groups", Group, _attrs(self._dialect, "id,displayName"))
        return sorted(g.id for g in found if g.id and g.display_name == name)

    def _get_group(self, group_id: str) -> Group:
        path = f"/Groups/{segment(group_id)}"
        return wire.parse(
            Group, self._client.request_json("GET", path, idempotent=True), f"GET {path}"
        )

    def _member_values(self, group_id: str) -> frozenset[str]:
        """The ids of the group's user members (nested groups left out)."""
        with self._discovery:
            user_ids, group_ids = self._user_ids, self._group_ids
        members = self._get_group(group_id).members or []
        return user_ids_of(
            ((m.value, m.type, m.ref) for m in members), user_ids=user_ids, group_ids=group_ids
        )

    def _rename_group(self, group_id: str, name: str) -> None:
        path = f"/Groups/{segment(group_id)}"

        def send(form: Form) -> None:
            if form == "put":

                def edit(resource: dict[str, Any]) -> None:
                    resource["displayName"] = name

                with self._group_lock(group_id):
                    self._put_modified(path, edit, lambda r: r.get("displayName") == name)
                return
            operation = (
                PatchOperation[Group](op=PatchOperation.Op.replace_, path="displayName", value=name)
                if form == "path"
                else PatchOperation[Group](
                    op=PatchOperation.Op.replace_, value={"displayName": name}
                )
            )
            answer = self._client.request(
                "PATCH", path, json=wire.group_patch([operation]), idempotent=True
            )
            _check_made("PATCH", path, answer, lambda r: r.get("displayName", name) == name)

        self._forms.attempt("rename_group", send, patch=self.features.patch)

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
                user_ids = list(pending.values())

                def send(form: Form, user_ids: list[str] = user_ids) -> None:
                    if form == "put":
                        with self._group_lock(group_id):
                            self._put_members(group_id, change, set(user_ids))
                    else:
                        self._patch_members(group_id, change, user_ids, form)

                kind: FormChange = "add_members" if change == "add" else "remove_members"
                self._forms.attempt(kind, send, patch=self.features.patch)

    def _patch_members(
        self, group_id: str, change: Change, user_ids: list[str], form: Form
    ) -> None:
        operations: list[PatchOperation[Group]]
        values = [{"value": user_id} for user_id in user_ids]
        if change == "add":
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.add, path="members", value=values)
            ]
        elif form == "value_array":
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.remove, path="members", value=values)
            ]
        else:
            operations = [
                PatchOperation[Group](op=PatchOperation.Op.remove, path=wire.members_filter(u))
                for u in user_ids
            ]
        path = f"/Groups/{segment(group_id)}"
        # Not idempotent (see `_send_members`): the retries are ours, with a re-read.
        answer = self._client.request(
            "PATCH", path, json=wire.group_patch(operations), idempotent=False
        )
        # A server answering 200 with the group unchanged ignored the form (a value-array
        # removal some servers do not take): journaled done, the leaver would stay in the
        # group on every run. The next form is tried instead.
        _check_made("PATCH", path, answer, self._members_made(change, set(user_ids)))

    def _members_made(self, change: Change, user_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
        """Whether a group resource an answer shows holds the member change."""

        def made(resource: dict[str, Any]) -> bool:
            if "members" not in resource:
                return True  # a server that leaves members out of its answer: not shown
            users = self._user_values(resource.get("members"))
            return user_ids <= users if change == "add" else not (user_ids & users)

        return made

    def _put_members(self, group_id: str, change: Change, user_ids: set[str]) -> None:
        """Add or remove user members by PUT; nested groups (even one whose id equals a
        user's) are kept as they are."""

        def edit(resource: dict[str, Any]) -> None:
            current = [m for m in resource.get("members") or [] if isinstance(m, dict)]
            users = self._user_values(resource.get("members"))
            if change == "add":
                current += [{"value": u, "type": "User"} for u in sorted(user_ids - users)]
            else:
                current = [
                    m for m in current if not (m.get("value") in user_ids and self._is_user(m))
                ]
            resource["members"] = current

        self._put_modified(
            f"/Groups/{segment(group_id)}", edit, self._members_made(change, user_ids)
        )

    def _is_user(self, member: dict[str, Any]) -> bool:
        value, type_, ref = member.get("value"), member.get("type"), member.get("$ref")
        if not isinstance(value, str):
            return False
        with self._discovery:
            user_ids, group_ids = self._user_ids, self._group_ids
        kind = member_kind(
            value,
            type_=type_ if isinstance(type_, str) else None,
            ref=ref if isinstance(ref, str) else None,
            user_ids=user_ids,
            group_ids=group_ids,
        )
        return kind == "User"

    def _user_values(self, members: object) -> frozenset[str]:
        if not isinstance(members, list):
            return frozenset()
        return frozenset(m["value"] for m in members if isinstance(m, dict) and self._is_user(m))

    def _group_lock(self, group_id: str) -> threading.Lock:
        # Two of our own read-modify-write rounds on one group must not interleave, or
        # the second PUT would drop what the first added (servers without ETags).
        with self._discovery:
            return self._group_locks.setdefault(group_id, threading.Lock())

    # ------------------------------------------------------------------ PUT fallback

    def _put_modified(
        self,
        path: str,
        change: Callable[[dict[str, Any]], None],
        made: Callable[[dict[str, Any]], bool],
    ) -> None:
        """Read the resource, change it, and PUT it back whole (servers without PATCH).

        The resource is edited as the server sent it, so attributes orgsync does not know
        (extensions) survive the replacement. With ETags, `If-Match` makes a concurrent
        change elsewhere a 412, after which the round starts over. The server's answer is
        checked with `made`: some servers answer 200 to a PUT and ignore part of it
        (django-scim2 keeps a group's members as they were), which is an
        `UnsupportedRequest`, not a success.
        """
        for _ in range(PUT_ATTEMPTS):
            response = self._client.request("GET", path, idempotent=True)
            resource = json_body(response, f"GET {path}")
            if not isinstance(resource, dict):
                raise TargetError(f"GET {path}: not a SCIM resource")
            etag = response.headers.get("etag") or _meta_version(resource)
            change(resource)
            resource.pop("meta", None)  # read-only (RFC 7643 §3.1)
            try:
                with wire.if_match(etag if self.features.etag else None):
                    answer = self._client.request("PUT", path, json=resource, idempotent=True)
            except RequestRejected as error:
                if error.status == 412:
                    continue  # changed since we read it: read again
                raise
            _check_made("PUT", path, answer, made)
            return
        raise TransientError(f"PUT {path}: the resource kept changing (412 {PUT_ATTEMPTS} times)")

    # ------------------------------------------------------------------ lists

    def _search(self, path: str, model: type[R], query: str) -> list[R]:
        body = self._client.request_json(
            "GET", path, params={"filter": query, "count": self._page_size}, idempotent=True
        )
        page = wire.parse_list(model, body, f"GET {path}?filter")
        return list(page.resources or [])

    def _walk(self, path: str, model: type[R], attributes: str | None) -> list[R]:
        """Every resource of a list, page by page; an inconsistent walk is an error.

        The walk ends at `totalResults`, so a server that under-reports it would end the
        read early and leave people out (each read as absent: created again). More
        resources than the total is refused; reaching it on a full page asks for the page
        after, which must be empty (some servers report the page's size as the total).
        """
        seen: dict[str, R] = {}
        start, total = 1, -1
        confirming = False
        while True:
            params: dict[str, str | int] = {"startIndex": start, "count": self._page_size}
            if attributes:
                params["attributes"] = attributes
            body = self._client.request_json("GET", path, params=params, idempotent=True)
            where = f"GET {path} (startIndex={start})"
            page = wire.parse_list(model, body, where)
            resources = page.resources or []
            reported = page.total_results if page.total_results is not None else len(resources)
            if total == -1:
                total = reported
            elif reported != total:
                raise TransientError(f"{where}: totalResults changed from {total} to {reported}")
            if confirming:
                if all(r.id in seen for r in resources):
                    return list(seen.values())  # empty, or startIndex ignored: all read
                raise TargetError(
                    f"{where}: the list goes on past its totalResults ({total}): the server "
                    "under-reports it, and a read ending there would leave people out"
                )
            for resource in resources:
                if not resource.id:
                    raise TargetError(f"{where}: a resource without an id")
                if resource.id in seen:
                    raise TransientError(f"{where}: {resource.id} listed twice (list changed)")
                seen[resource.id] = resource
            if len(seen) > total:
                raise TargetError(
                    f"{where}: {len(seen)} resources listed, more than totalResults ({total})"
                )
            if len(seen) == total:
                if confirming or not resources or len(resources) < self._page_size:
                    return list(seen.values())
                confirming = True  # a full last page: the next one must be empty
            elif not resources:
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


def _group(group: Group, user_ids: frozenset[str], group_ids: frozenset[str]) -> TargetGroup:
    assert group.id is not None  # checked by the walk
    members = user_ids_of(
        ((m.value, m.type, m.ref) for m in group.members or []),
        user_ids=user_ids,
        group_ids=group_ids,
    )
    return TargetGroup(id=group.id, name=group.display_name or group.id, member_ids=members)


def _check_made(
    method: str, path: str, answer: httpx.Response, made: Callable[[dict[str, Any]], bool]
) -> None:
    """Raise `UnsupportedRequest` when the resource a PUT or PATCH answered lacks the
    change (an answer without a body, 204, has nothing to check)."""
    if not answer.content:
        return  # 204: nothing to check
    try:
        resource = from_json(answer.content)
    except ValueError:
        return
    if isinstance(resource, dict) and not made(resource):
        raise UnsupportedRequest(
            f"{method} {path}: the server answered {answer.status_code} but did not make "
            f"the change (it ignores that attribute in a {method})",
            status=answer.status_code,
        )


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
