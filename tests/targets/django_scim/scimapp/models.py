"""The service provider's own tables: a user and a group model, each with its integer
primary key, so users and groups are numbered from separate sequences (user 2 and group 2
are both `"2"`), as in many Django, Rails and SQL-backed SCIM providers.

django-scim2 asks the application for exactly these fields (see its adapters); the mixins
add `scim_id` (set to the primary key on creation) and `scim_external_id`.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone
from django_scim.models import AbstractSCIMGroupMixin, AbstractSCIMUserMixin


class ScimGroup(AbstractSCIMGroupMixin):
    name = models.CharField(max_length=255)

    class Meta:
        app_label = "scimapp"


class ScimUser(AbstractSCIMUserMixin):
    username = models.CharField(max_length=255, unique=True)
    first_name = models.CharField(max_length=255, blank=True, default="")
    last_name = models.CharField(max_length=255, blank=True, default="")
    email = models.CharField(max_length=255, blank=True, default="")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    scim_groups = models.ManyToManyField(ScimGroup, related_name="user_set", blank=True)  # type: ignore[assignment]

    class Meta:
        app_label = "scimapp"

    def set_password(self, raw: Any) -> None:
        """Provisioned users sign in elsewhere; a password sent over SCIM is dropped."""


def user_model() -> type[ScimUser]:
    return ScimUser
