"""SCIM dialects: the known ways real service providers depart from RFC 7644, as switches.

Each switch exists because a class of servers needs it (research/anchors.md §3.5):

* `groups_list_members` — whether a `/Groups` list page carries `members`. AWS IAM
  Identity Center leaves members out of list answers (authentik #23005 and idp-scim-sync
  work around it), so the membership of each group is read with `GET /Groups/{id}`;
  the `attributes` parameter is dropped too, since such servers often reject it.
* `remove_by_value` — how a member is removed. RFC 7644 §3.5.2.2 selects the value with a
  path filter, `{"op": "remove", "path": "members[value eq \"ID\"]"}`, one operation per
  member; strict servers (scim2-server) refuse anything else. Servers built for Microsoft
  Entra ID and AWS expect what Entra sends instead, `{"op": "remove", "path": "members",
  "value": [{"value": "ID"}, ...]}`, and some mishandle the filter form (authentik
  #24173/#25686, agent-bom #3533).
* `attributes` — whether list calls send `attributes=` to keep pages small.

The number of member changes per request is not a dialect switch but the target's
`max_patch_operations` (AWS accepts 100, the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    groups_list_members: bool
    remove_by_value: bool
    attributes: bool


DIALECTS: Final = {
    "strict": Dialect("strict", groups_list_members=True, remove_by_value=False, attributes=True),
    "aws": Dialect("aws", groups_list_members=False, remove_by_value=True, attributes=False),
    "azure": Dialect("azure", groups_list_members=True, remove_by_value=True, attributes=True),
    "loose": Dialect("loose", groups_list_members=False, remove_by_value=True, attributes=False),
}
"""`strict`: RFC 7644 as written (scim2-server). `aws`: AWS IAM Identity Center. `azure`:
servers built to receive Microsoft Entra ID provisioning. `loose`: the most forgiving
combination, for servers whose quirks are unknown (one extra GET per group per run)."""
