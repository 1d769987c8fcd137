"""Plan files: what `sync --plan-out FILE` writes and `sync --plan FILE` applies.

A plan file is `{"targets": [plan document, ...]}`, one plan document (reference "Plan JSON") per
target: the same shape as `sync --json` whatever the number of targets. Files written
before that (one bare plan document, or a list of them) still read. Reading refuses
anything `--plan-out` would not have written: a document that is not a plan, a checksum or
summary that does not match the operations (an edited file), two plans for one target.
`check_reviewed` then lets the engine apply a fresh plan only when it is the reviewed one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orgsync.core.errors import OrgsyncError
from orgsync.core.plan import Plan, PlanDocumentError, _json_kind
from orgsync.core.text import visible


class PlanFileError(OrgsyncError):
    """The file given to `--plan` cannot be applied; the message says why."""


def plan_file_text(plans: Sequence[Plan]) -> str:
    """The file's text: `{"targets": [...]}` with each plan's document, in order."""
    return json.dumps({"targets": [plan.to_json() for plan in plans]}, indent=2) + "\n"


def _documents(document: Any) -> list[Any]:
    """The plan documents in a file's JSON, in any form `--plan-out` has written."""
    if isinstance(document, list):
        return document  # several targets, as written before the `targets` object
    if not isinstance(document, dict) or "targets" not in document:
        return [document]  # one target, as written before the `targets` object
    unknown = sorted(str(key) for key in document if key != "targets")
    if unknown:
        hint = (
            " (this is `sync --json` output, not a plan file: write one with "
            "`orgsync sync --dry-run --plan-out FILE`)"
            if "exit_code" in document or "dry_run" in document
            else ""
        )
        raise PlanFileError(f"not a plan written by --plan-out: unknown key '{unknown[0]}'{hint}")
    targets = document["targets"]
    if not isinstance(targets, list):
        found = _json_kind(targets)
        raise PlanFileError(
            f"not a plan written by --plan-out: targets: expected a list, found {found}"
        )
    return targets


def read_plan_file(text: str) -> dict[str, Plan]:
    """The reviewed plans in a plan file, by target; `PlanFileError` for anything else."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise PlanFileError(f"not a plan written by --plan-out: not JSON ({error})") from None
    documents = _documents(document)
    if not documents:
        raise PlanFileError("not a plan written by --plan-out: an empty list, no plan in it")
    plans: dict[str, Plan] = {}
    for index, item in enumerate(documents):
        where = f"plan {index + 1} of {len(documents)}: " if len(documents) > 1 else ""
        try:
            plan = Plan.from_json(item)
        except PlanDocumentError as error:
            raise PlanFileError(f"not a plan written by --plan-out: {where}{error}") from None
        if visible(plan.target) != plan.target:
            raise PlanFileError(
                f"not a plan written by --plan-out: {where}target {_shown(plan.target)} holds "
                "control characters, which no configured target's name has"
            )
        written = item["checksum"]
        if written != plan.checksum:
            raise PlanFileError(
                f"{where}the checksum in the file ({_shown(written)}) does not match its "
                f"operations ({plan.checksum}): the file was edited; nothing was applied"
            )
        if item["summary"] != plan.summary:
            raise PlanFileError(
                f"{where}the summary in the file ({_shown(item['summary'])}) does not match "
                f"its operations ({json.dumps(plan.summary)}): the file was edited; nothing "
                "was applied"
            )
        if plan.target in plans:
            raise PlanFileError(
                f"{where}a second plan for target {plan.target}; a plan file holds one per "
                "target: nothing was applied"
            )
        plans[plan.target] = plan
    return plans


def check_reviewed(reviewed: Plan, fresh: Plan) -> None:
    """Refuse to apply `fresh` unless it is exactly the plan a person reviewed."""
    if reviewed.target != fresh.target or reviewed.checksum != fresh.checksum:
        raise PlanFileError(
            f"the reviewed plan for {fresh.target} ({reviewed.checksum}) no longer matches a "
            f"fresh plan ({fresh.checksum}); nothing was applied: review again"
        )


def _shown(value: object) -> str:
    """A value from the file, short enough for one line of an error message."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
