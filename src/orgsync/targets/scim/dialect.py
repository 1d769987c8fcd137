"""SCIM dialects: the known ways real service providers depart from RFC 7644, as switches.

Each switch exists because a class of servers needs it (research/anchors.md §3.5):

* `groups_list_members` — whether a `/Groups` list page carries `members`. AWS IAM
  Identity Center leaves members out of list answers (authentik #23005 and idp-scim-sync
  work around it), so the membership of each group is read with `GET /Groups/{id}`;
  the `attributes` parameter is dropped too, since such servers often reject it.
* `attributes` — whether list calls send `attributes=` to keep pages small.
* `forms` — how each change is asked for (`orgsync.targets.scim.forms`). `auto`, the
  default, learns it: it asks as RFC 7644 says, falls back to the next form that means the
  same change when the server refuses one as unsupported (501, or a 400 whose `scimType`
  names the path, filter or syntax), and remembers per target what worked. A named dialect
  fixes every form instead, as an override for servers whose answer to an unsupported form
  is misleading: `strict` asks RFC 7644's way (scim2-server refuses anything else); the
  others remove members with the value array servers built for Microsoft Entra ID and AWS
  expect, `{"op": "remove", "path": "members", "value": [{"value": "ID"}, ...]}` (some
  mishandle the filter form: authentik #24173/#25686, agent-bom #3533).

The number of member changes per request is not a dialect switch but the target's
`max_patch_operations` (AWS accepts 100, the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from orgsync.targets.scim.forms import RFC_FORMS, Change, Form


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    groups_list_members: bool
    attributes: bool
    forms: Mapping[Change, Form] | None
    """The form of every change, fixed; None to learn them."""


_VALUE_ARRAY_REMOVAL: Final[Mapping[Change, Form]] = MappingProxyType(
    {**RFC_FORMS, "remove_members": "value_array"}
)

DIALECTS: Final = {
    "auto": Dialect("auto", groups_list_members=True, attributes=True, forms=None),
    "strict": Dialect("strict", groups_list_members=True, attributes=True, forms=RFC_FORMS),
    "aws": Dialect("aws", groups_list_members=False, attributes=False, forms=_VALUE_ARRAY_REMOVAL),
    "azure": Dialect(
        "azure", groups_list_members=True, attributes=True, forms=_VALUE_ARRAY_REMOVAL
    ),
    "loose": Dialect(
        "loose", groups_list_members=False, attributes=False, forms=_VALUE_ARRAY_REMOVAL
    ),
}
"""`auto` (default): RFC 7644 lists, forms learned. `strict`: RFC 7644 as written
(scim2-server). `aws`: AWS IAM Identity Center. `azure`: servers built to receive Microsoft
Entra ID provisioning. `loose`: the most forgiving combination, for servers whose quirks
are unknown (one extra GET per group per run)."""
