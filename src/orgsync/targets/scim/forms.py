"""The forms a SCIM change can be asked in, and the book of which ones a server accepts.

Each change has a chain of forms that mean the same thing, the RFC 7644 one first and a
read-modify-write PUT of the whole resource last:

* `remove_members`: `filter`, one `{"op": "remove", "path": "members[value eq \"ID\"]"}`
  per member (§3.5.2.2); `value_array`, `{"op": "remove", "path": "members", "value":
  [{"value": "ID"}, ...]}` (what Entra ID and AWS send); `put`;
* `add_members`: `value_array`, `{"op": "add", "path": "members", "value": [...]}`
  (§3.5.2.1); `put`;
* `rename_group`: `path`, `{"op": "replace", "path": "displayName", "value": "N"}`;
  `no_path`, `{"op": "replace", "value": {"displayName": "N"}}` (§3.5.2.3); `put`;
* `update_user` (`active`, and `userName` and `emails` on an email change): `path`, one
  replace per attribute; `no_path`, all in one value object; `put`.

`FormBook` walks a chain until a form is accepted: a refusal as unsupported (501, or a
400 whose `scimType` names the path, filter or syntax: `UnsupportedRequest`) moves to the
next form, and so does any refusal of a fallback form (a strict server answers the value
array with `invalidValue`); a plain refusal of the first form is the content's fault and
ends the walk. What worked is remembered (and recorded, for the state database), so the
next change of that kind, and the next run, asks that way first. A server announcing no
PATCH gets `put` for every change; a named dialect fixes every form.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final, Literal, get_args

import structlog

from orgsync.core.errors import RequestRejected, TargetError, UnsupportedRequest
from orgsync.core.forms import LearnedForm, server_key

__all__ = ["CHAINS", "RFC_FORMS", "Change", "Form", "FormBook"]

log = structlog.get_logger(__name__)

Change = Literal["add_members", "remove_members", "rename_group", "update_user"]
Form = Literal["filter", "value_array", "path", "no_path", "put"]

CHAINS: Final[Mapping[Change, tuple[Form, ...]]] = MappingProxyType(
    {
        "add_members": ("value_array", "put"),
        "remove_members": ("filter", "value_array", "put"),
        "rename_group": ("path", "no_path", "put"),
        "update_user": ("path", "no_path", "put"),
    }
)
RFC_FORMS: Final[Mapping[Change, Form]] = MappingProxyType(
    {change: chain[0] for change, chain in CHAINS.items()}
)


class FormBook:
    """Which form of each change one server accepts; shared by the applier's threads.

    Args:
        server: the target's base URL (learned records of another server are ignored).
        fixed: every change's form, from a named `scim_dialect`; None to learn them.
        dialect: the dialect's name, for messages.
    """

    def __init__(self, server: str, *, fixed: Mapping[Change, Form] | None, dialect: str) -> None:
        self.server = server_key(server)
        self.fixed = fixed
        self.dialect = dialect
        self._lock = threading.Lock()
        self._known: dict[Change, Form] = {}
        self._record: Callable[[LearnedForm], None] | None = None

    def use(self, learned: Sequence[LearnedForm], record: Callable[[LearnedForm], None]) -> None:
        """Start from what earlier runs learned on this server; record new findings."""
        known: dict[Change, Form] = {}
        for item in learned:
            change, form = _change(item.change), _form(item.form)
            if item.server == self.server and change and form in CHAINS[change]:
                known[change] = form
        with self._lock:
            self._known = known
            self._record = record

    def known(self) -> dict[Change, Form]:
        with self._lock:
            return dict(self._known)

    def forms(self, change: Change, *, patch: bool) -> tuple[Form, ...]:
        """The forms to try for `change`, in order."""
        if not patch:
            return ("put",)
        if self.fixed is not None:
            return (self.fixed[change],)
        chain = CHAINS[change]
        with self._lock:
            first = self._known.get(change)
        if first is None:
            return chain
        return (first, *(form for form in chain if form != first))

    def attempt(self, change: Change, send: Callable[[Form], None], *, patch: bool) -> None:
        """Make `change` with `send(form)`, walking the forms until one is accepted."""
        refused: list[tuple[Form, RequestRejected]] = []
        for form in self.forms(change, patch=patch):
            try:
                send(form)
            except UnsupportedRequest as error:
                refused.append((form, error))
            except RequestRejected as error:
                if not refused:
                    raise  # the first form refused for what it says, not how
                refused.append((form, error))
            else:
                self._worked(change, form, refused, patch=patch)
                return
        raise self._failed(change, refused)

    def _worked(
        self,
        change: Change,
        form: Form,
        refused: list[tuple[Form, RequestRejected]],
        *,
        patch: bool,
    ) -> None:
        if self.fixed is not None:
            return
        with self._lock:
            if self._known.get(change) == form:
                return
            self._known[change] = form
            record = self._record
        if refused:
            reason = "; ".join(f"{f} refused: HTTP {e.status}" for f, e in refused)
        elif not patch:
            reason = "the server announces no PATCH"
        else:
            reason = "accepted"
        log.info("scim.form.learned", server=self.server, change=change, form=form, reason=reason)
        if record is not None:
            record(LearnedForm(change=change, form=form, server=self.server, reason=reason))

    def _failed(self, change: Change, refused: list[tuple[Form, RequestRejected]]) -> TargetError:
        last = refused[-1][1]
        if len(refused) == 1 and self.fixed is not None:
            hint = (
                f' (scim_dialect = "{self.dialect}" fixes the request forms; with "auto" '
                "orgsync falls back to another form of the same change)"
                if isinstance(last, UnsupportedRequest)
                else ""
            )
            message = f"{last.message}{hint}"
        elif len(refused) == 1:
            message = last.message
        else:
            tried = "; ".join(f"{form}: {error}" for form, error in refused)
            message = f"{change} refused in every form the server may accept: {tried}"
        return type(last)(message, status=last.status, request_id=last.request_id)


def _change(name: str) -> Change | None:
    for change in get_args(Change):
        if change == name:
            return change  # type: ignore[no-any-return]
    return None


def _form(name: str) -> Form | None:
    for form in get_args(Form):
        if form == name:
            return form  # type: ignore[no-any-return]
    return None
