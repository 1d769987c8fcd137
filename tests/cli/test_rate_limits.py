"""A create refused for the rate (429) is retried without a look-up; one that may have
happened (a 500 after the server acted) is looked up first and adopted, never duplicated.

Against the OpenAI emulator over loopback, through `orgsync sync` in its own process. The
emulator allows duplicate invitations, so only orgsync's care keeps them unique.
"""

from __future__ import annotations

from pathlib import Path

from orgsync.testing.faults import Faults, RecordedRequest
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory, wanted_roles

INVITES = "/organization/invites"


def _lookups_after_first_invite(requests: list[RecordedRequest]) -> int:
    """GETs of the invitation list made after the first invitation was sent: read-backs
    (the organization is read, invitations included, before anything is sent)."""
    posts = [i for i, r in enumerate(requests) if r.method == "POST" and _invites(r)]
    assert posts, "no invitation was sent"
    return sum(1 for r in requests[posts[0] :] if r.method == "GET" and _invites(r))


def _invites(request: RecordedRequest) -> bool:
    return request.path.endswith(INVITES)


def _converge(rig: Rig, document: dict[str, object], faults: Faults) -> list[RecordedRequest]:
    rig.emulator.faults = faults
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    requests = list(rig.emulator.requests)
    rig.emulator.faults = Faults()
    assert rig.holdings() == wanted_roles(document)
    duplicates = {e: n for e, n in rig.pending_invites_per_email().items() if n > 1}
    assert duplicates == {}
    return requests


def test_a_create_refused_with_429_is_retried_without_a_lookup(tmp_path: Path) -> None:
    document = directory(12)
    with OpenAIEmulator(api_key=API_KEY, allow_duplicate_invites=True) as emulator:
        rig = Rig(folder=tmp_path, emulator=emulator, extra_target="max_attempts = 10")
        rig.write(document)
        requests = _converge(
            rig, document, Faults(error_rate=0.4, kinds=("429",), seed=5, phases=("before",))
        )
    refused = [
        r for r in requests if r.method == "POST" and _invites(r) and r.injected_fault == "429"
    ]
    assert refused, "the faults must actually have refused invitations"
    assert _lookups_after_first_invite(requests) == 0


def test_a_create_that_may_have_happened_is_looked_up_and_adopted(tmp_path: Path) -> None:
    """The counterpart: after a 500 answered once the server acted, orgsync reads back."""
    document = directory(12)
    with OpenAIEmulator(api_key=API_KEY, allow_duplicate_invites=True) as emulator:
        rig = Rig(folder=tmp_path, emulator=emulator, extra_target="max_attempts = 10")
        rig.write(document)
        requests = _converge(
            rig, document, Faults(error_rate=0.2, kinds=("500",), seed=5, phases=("after",))
        )
    lost = [r for r in requests if r.method == "POST" and _invites(r) and r.injected_fault == "500"]
    assert lost, "the faults must actually have hit invitations"
    assert _lookups_after_first_invite(requests) >= 1
