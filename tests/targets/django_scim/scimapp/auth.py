"""Bearer-token authentication for the test provider: a request carrying the token is
made by an authenticated (non-database) client; any other gets django-scim2's 401."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse


@dataclass(frozen=True)
class Client:
    is_authenticated: bool


class BearerTokenMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.expected = f"Bearer {os.environ['SCIM_TEST_TOKEN']}"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("Authorization", "")
        request.user = Client(is_authenticated=given == self.expected)  # type: ignore[assignment]
        return self.get_response(request)
