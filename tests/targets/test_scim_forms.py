"""`FormBook`: which form of a SCIM change to ask in, and what it learns from refusals.

Unit tests of one class with a scripted `send` (the real servers are in
test_scim_dialect.py and the CLI scenarios in test_scim_e2e.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orgsync.core.errors import RequestRejected, TransientError, UnsupportedRequest
from orgsync.core.forms import LearnedForm
from orgsync.targets.scim.dialect import DIALECTS
from orgsync.targets.scim.forms import RFC_FORMS, Form, FormBook

SERVER = "https://scim.example.com/v2"


def answering(answers: dict[str, Exception | None], sent: list[str]) -> Callable[[Form], None]:
    def send(form: Form) -> None:
        sent.append(form)
        error = answers.get(form)
        if error is not None:
            raise error

    return send


def not_implemented() -> UnsupportedRequest:
    return UnsupportedRequest("PATCH /Groups/1: not implemented", status=501)


def book(recorded: list[LearnedForm], *, learned: list[LearnedForm] | None = None) -> FormBook:
    forms = FormBook(SERVER, fixed=None, dialect="auto")
    forms.use(learned or [], recorded.append)
    return forms


def test_the_walk_stops_at_the_first_accepted_form_and_remembers_it() -> None:
    recorded: list[LearnedForm] = []
    forms = book(recorded)
    sent: list[str] = []
    forms.attempt("remove_members", answering({"filter": not_implemented()}, sent), patch=True)
    assert sent == ["filter", "value_array"]
    assert recorded == [
        LearnedForm("remove_members", "value_array", SERVER, "filter refused: HTTP 501")
    ]
    sent.clear()
    forms.attempt("remove_members", answering({}, sent), patch=True)
    assert sent == ["value_array"]
    assert len(recorded) == 1  # nothing new to record


def test_a_plain_refusal_of_the_first_form_is_the_contents_fault() -> None:
    """A 400 without a form scimType (a bad member id, say) fails at once: no fallback and
    nothing learned, or one bad value would teach orgsync the wrong form."""
    recorded: list[LearnedForm] = []
    sent: list[str] = []
    refusal = RequestRejected("no such user [invalidValue]", status=400)
    with pytest.raises(RequestRejected) as raised:
        book(recorded).attempt("remove_members", answering({"filter": refusal}, sent), patch=True)
    assert raised.value is refusal
    assert sent == ["filter"]
    assert recorded == []


def test_a_refused_fallback_moves_on_to_put() -> None:
    recorded: list[LearnedForm] = []
    sent: list[str] = []
    answers: dict[str, Exception | None] = {
        "filter": not_implemented(),
        "value_array": RequestRejected("a remove carries no value [invalidValue]", status=400),
    }
    book(recorded).attempt("remove_members", answering(answers, sent), patch=True)
    assert sent == ["filter", "value_array", "put"]
    assert recorded[0].reason == "filter refused: HTTP 501; value_array refused: HTTP 400"


def test_every_form_refused_names_each_refusal() -> None:
    sent: list[str] = []
    answers: dict[str, Exception | None] = {
        f: not_implemented() for f in ("path", "no_path", "put")
    }
    with pytest.raises(UnsupportedRequest, match="rename_group refused in every form") as raised:
        book([]).attempt("rename_group", answering(answers, sent), patch=True)
    assert sent == ["path", "no_path", "put"]
    assert raised.value.status == 501


def test_a_learned_form_goes_first_and_is_relearned_when_refused() -> None:
    """The server changed (an upgrade, or a proxy in front): the learned form is refused,
    the chain is walked again from the RFC form, and the new answer replaces the old."""
    recorded: list[LearnedForm] = []
    earlier = [LearnedForm("rename_group", "put", SERVER, "path refused: HTTP 501")]
    forms = book(recorded, learned=earlier)
    assert forms.forms("rename_group", patch=True) == ("put", "path", "no_path")
    sent: list[str] = []
    forms.attempt("rename_group", answering({"put": not_implemented()}, sent), patch=True)
    assert sent == ["put", "path"]
    assert [(r.form, r.reason) for r in recorded] == [("path", "put refused: HTTP 501")]


def test_transient_errors_are_not_refusals() -> None:
    """A 503 is retried by the caller, never taken to mean "ask another way"."""
    recorded: list[LearnedForm] = []
    sent: list[str] = []
    with pytest.raises(TransientError):
        book(recorded).attempt(
            "update_user", answering({"path": TransientError("busy", status=503)}, sent), patch=True
        )
    assert sent == ["path"]
    assert recorded == []


def test_what_another_server_taught_or_a_corrupt_record_is_ignored() -> None:
    """A target pointed at another server starts from RFC 7644 again; a record naming an
    unknown change or form (a foreign write, a newer orgsync) is skipped, not fatal."""
    learned = [
        LearnedForm("remove_members", "value_array", "https://other.example.com/v2", "x"),
        LearnedForm("rename_group", "bulk", SERVER, "x"),
        LearnedForm("frobnicate", "put", SERVER, "x"),
        LearnedForm("update_user", "value_array", SERVER, "x"),  # not a form of this change
    ]
    forms = book([], learned=learned)
    assert forms.known() == {}
    assert {c: forms.forms(c, patch=True)[0] for c in RFC_FORMS} == dict(RFC_FORMS)


def test_credentials_in_the_base_url_never_reach_a_record() -> None:
    recorded: list[LearnedForm] = []
    forms = FormBook(
        "https://user:hunter2@scim.example.com:8443/v2/?token=abc", fixed=None, dialect="auto"
    )
    forms.use([], recorded.append)
    forms.attempt("add_members", answering({}, []), patch=True)
    assert recorded[0].server == "https://scim.example.com:8443/v2"


def test_a_named_dialect_fixes_the_form_learns_nothing_and_says_so() -> None:
    recorded: list[LearnedForm] = []
    dialect = DIALECTS["azure"]
    forms = FormBook(SERVER, fixed=dialect.forms, dialect=dialect.name)
    forms.use([LearnedForm("remove_members", "put", SERVER, "x")], recorded.append)
    assert forms.forms("remove_members", patch=True) == ("value_array",)
    sent: list[str] = []
    with pytest.raises(UnsupportedRequest, match='scim_dialect = "azure" fixes the request'):
        forms.attempt(
            "remove_members", answering({"value_array": not_implemented()}, sent), patch=True
        )
    assert sent == ["value_array"]
    assert recorded == []


def test_without_patch_every_change_is_a_put() -> None:
    recorded: list[LearnedForm] = []
    forms = book(recorded)
    sent: list[str] = []
    forms.attempt("rename_group", answering({}, sent), patch=False)
    assert sent == ["put"]
    assert recorded[0].reason == "the server announces no PATCH"
