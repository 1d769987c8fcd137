"""Following the OpenAI Admin API's opaque-cursor lists to the end.

Roles, groups, group users and role-assignment lists page with `after=<next>` while
`has_more`. A server that contradicts itself (`has_more` without a `next`, a cursor seen
before: `orgsync.http.paging`) is refused with a `TransientError` rather than followed
forever: a read that cannot be completed must not become a partial snapshot.
"""

from __future__ import annotations

from operator import itemgetter

from orgsync.core.errors import TransientError
from orgsync.http.paging import PageGuard
from orgsync.targets._common import Item
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import wire


def list_by_next(
    client: ApiClient, path: str, page_model: type[wire.NextPage[Item]], *, limit: int
) -> list[Item]:
    """Every item of the list at `path`, in server order, each id once."""
    items: dict[str, Item] = {}
    after: str | None = None
    guard = PageGuard(f"GET {path}")
    while True:
        page = client.request_model(
            "GET", path, page_model, params={"limit": limit, "after": after}, idempotent=True
        )
        for item in page.data:
            items.setdefault(item.id, item)
        if not page.has_more:
            return list(items.values())
        if not page.next:
            raise TransientError(f"GET {path}: has_more without a next cursor")
        guard.page(len(page.data), page.next)
        after = page.next


_ID = itemgetter("id")


def ids_by_next(client: ApiClient, path: str, *, limit: int) -> list[str]:
    """The ids of every entry of a group's user list at `path`, in server order, each
    once: `list_by_next` over plain dictionaries (`wire.GROUP_USER_IDS`)."""
    ids: dict[str, None] = {}
    after: str | None = None
    guard = PageGuard(f"GET {path}")
    while True:
        page = client.request_adapted(
            "GET",
            path,
            wire.GROUP_USER_IDS,
            params={"limit": limit, "after": after},
            idempotent=True,
        )
        ids.update(dict.fromkeys(map(_ID, page["data"])))
        following = page.get("next")
        if not page["has_more"]:
            return list(ids)
        if not following:
            raise TransientError(f"GET {path}: has_more without a next cursor")
        guard.page(len(page["data"]), following)
        after = following
