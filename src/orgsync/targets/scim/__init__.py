"""The generic SCIM 2.0 target (users, groups and group members of any RFC 7644 server).

`CONNECTOR` describes the type to orgsync; the target itself (and scim2-models, slow to
import) is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from orgsync.targets.scim.connector import CAPABILITIES, CONNECTOR

if TYPE_CHECKING:
    from orgsync.targets.scim.dialect import DIALECTS, Dialect
    from orgsync.targets.scim.target import ScimTarget, ServerFeatures

__all__ = ["CAPABILITIES", "CONNECTOR", "DIALECTS", "Dialect", "ScimTarget", "ServerFeatures"]


def __getattr__(name: str) -> Any:
    if name in {"DIALECTS", "Dialect"}:
        from orgsync.targets.scim import dialect

        return getattr(dialect, name)
    if name in {"ScimTarget", "ServerFeatures"}:
        from orgsync.targets.scim import target

        return getattr(target, name)
    raise AttributeError(name)
