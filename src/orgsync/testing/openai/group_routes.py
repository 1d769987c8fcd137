"""HTTP routes of the OpenAI Admin API emulator for groups and role assignments.

Owns the URL map and query defaults of ``/organization/groups`` (with ``/users`` and
``/roles`` below a group) and ``/organization/users/{user_id}/roles``; the rules live in
`orgsync.testing.openai.groups` and `orgsync.testing.openai.user_roles`.

List defaults follow the spec where it states them: groups and group users 100 a page,
groups ``asc``, group users **``desc``**. For role-assignment lists the spec states no
default; the emulator uses 100 and ``asc``. Every ``limit`` may be 0 to 1000.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orgsync.testing.openai.requests import cursor_listing, json_body
from orgsync.testing.openai.state import OrgState

GROUPS_DEFAULT_LIMIT = 100
GROUP_USERS_DEFAULT_LIMIT = 100
ASSIGNMENTS_DEFAULT_LIMIT = 100

Handler = Callable[[Request], Awaitable[Response]]


def group_routes(
    prefix: str, state: Callable[[], OrgState], *, allow_duplicate_names: Callable[[], bool]
) -> list[Route]:
    """The routes under ``prefix`` (``/v1/organization``), reading the organization through
    ``state`` and the emulator's duplicate-name switch through ``allow_duplicate_names``
    at each request (both may change while the server runs)."""

    def path(request: Request, name: str) -> str:
        return str(request.path_params[name])

    # -- groups ------------------------------------------------------------------------

    async def list_groups(request: Request) -> Response:
        listing = cursor_listing(request, default_limit=GROUPS_DEFAULT_LIMIT, default_order="asc")
        return JSONResponse(state().directory.api_list_groups(**listing))

    async def create_group(request: Request) -> Response:
        body = await json_body(request)
        created = state().directory.api_create_group(body, allow_duplicates=allow_duplicate_names())
        return JSONResponse(created)

    async def get_group(request: Request) -> Response:
        return JSONResponse(state().directory.api_get_group(path(request, "group_id")))

    async def update_group(request: Request) -> Response:
        body = await json_body(request)
        updated = state().directory.api_update_group(
            path(request, "group_id"), body, allow_duplicates=allow_duplicate_names()
        )
        return JSONResponse(updated)

    async def delete_group(request: Request) -> Response:
        return JSONResponse(state().directory.api_delete_group(path(request, "group_id")))

    # -- group users -------------------------------------------------------------------

    async def list_group_users(request: Request) -> Response:
        listing = cursor_listing(
            request, default_limit=GROUP_USERS_DEFAULT_LIMIT, default_order="desc"
        )
        users = state().directory.api_list_group_users(path(request, "group_id"), **listing)
        return JSONResponse(users)

    async def add_group_user(request: Request) -> Response:
        body = await json_body(request)
        return JSONResponse(state().directory.api_add_group_user(path(request, "group_id"), body))

    async def get_group_user(request: Request) -> Response:
        member = state().directory.api_get_group_user(
            path(request, "group_id"), path(request, "user_id")
        )
        return JSONResponse(member)

    async def remove_group_user(request: Request) -> Response:
        removed = state().directory.api_remove_group_user(
            path(request, "group_id"), path(request, "user_id")
        )
        return JSONResponse(removed)

    # -- group roles -------------------------------------------------------------------

    async def list_group_roles(request: Request) -> Response:
        listing = cursor_listing(
            request, default_limit=ASSIGNMENTS_DEFAULT_LIMIT, default_order="asc"
        )
        roles = state().directory.api_list_group_roles(path(request, "group_id"), **listing)
        return JSONResponse(roles)

    async def assign_group_role(request: Request) -> Response:
        body = await json_body(request)
        assigned = state().directory.api_assign_group_role(path(request, "group_id"), body)
        return JSONResponse(assigned)

    async def get_group_role(request: Request) -> Response:
        role = state().directory.api_get_group_role(
            path(request, "group_id"), path(request, "role_id")
        )
        return JSONResponse(role)

    async def unassign_group_role(request: Request) -> Response:
        removed = state().directory.api_unassign_group_role(
            path(request, "group_id"), path(request, "role_id")
        )
        return JSONResponse(removed)

    # -- user roles --------------------------------------------------------------------

    async def list_user_roles(request: Request) -> Response:
        listing = cursor_listing(
            request, default_limit=ASSIGNMENTS_DEFAULT_LIMIT, default_order="asc"
        )
        return JSONResponse(state().user_roles.api_list(path(request, "user_id"), **listing))

    async def assign_user_role(request: Request) -> Response:
        body = await json_body(request)
        return JSONResponse(state().user_roles.api_assign(path(request, "user_id"), body))

    async def get_user_role(request: Request) -> Response:
        role = state().user_roles.api_get(path(request, "user_id"), path(request, "role_id"))
        return JSONResponse(role)

    async def unassign_user_role(request: Request) -> Response:
        removed = state().user_roles.api_unassign(
            path(request, "user_id"), path(request, "role_id")
        )
        return JSONResponse(removed)

    group = f"{prefix}/groups/{{group_id}}"
    user_roles = f"{prefix}/users/{{user_id}}/roles"
    table: list[tuple[str, str, Handler]] = [
        ("GET", f"{prefix}/groups", list_groups),
        ("POST", f"{prefix}/groups", create_group),
        ("GET", group, get_group),
        ("POST", group, update_group),
        ("DELETE", group, delete_group),
        ("GET", f"{group}/users", list_group_users),
        ("POST", f"{group}/users", add_group_user),
        ("GET", f"{group}/users/{{user_id}}", get_group_user),
        ("DELETE", f"{group}/users/{{user_id}}", remove_group_user),
        ("GET", f"{group}/roles", list_group_roles),
        ("POST", f"{group}/roles", assign_group_role),
        ("GET", f"{group}/roles/{{role_id}}", get_group_role),
        ("DELETE", f"{group}/roles/{{role_id}}", unassign_group_role),
        ("GET", user_roles, list_user_roles),
        ("POST", user_roles, assign_user_role),
        ("GET", f"{user_roles}/{{role_id}}", get_user_role),
        ("DELETE", f"{user_roles}/{{role_id}}", unassign_user_role),
    ]
    return [Route(url, handler, methods=[method]) for method, url, handler in table]
