"""The generic SCIM 2.0 target (users, groups and group members of any RFC 7644 server)."""

from orgsync.targets.scim.dialect import DIALECTS, Dialect
from orgsync.targets.scim.target import CAPABILITIES, ScimTarget, ServerFeatures

__all__ = ["CAPABILITIES", "DIALECTS", "Dialect", "ScimTarget", "ServerFeatures"]
