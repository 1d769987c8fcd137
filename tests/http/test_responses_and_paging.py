"""`orgsync.http.responses` and `orgsync.http.paging`: Retry-After in every form a server
sends it, the side-independent classification (501 never retried), and the page guard."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from orgsync.core.errors import (
    ApiError,
    SourceError,
    TargetError,
    TransientError,
    UnsupportedRequest,
)
from orgsync.http.paging import MAX_EMPTY_PAGES, PageGuard
from orgsync.http.responses import error_for_response, parse_retry_after

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class TestRetryAfter:
    def test_delay_seconds(self) -> None:
        assert parse_retry_after(httpx.Headers({"Retry-After": "12"})) == 12.0
        assert parse_retry_after(httpx.Headers({"Retry-After": " 1.5 "})) == 1.5

    def test_an_http_date_is_measured_from_now(self) -> None:
        headers = httpx.Headers({"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"})
        assert parse_retry_after(headers, now=NOW) == 30.0

    def test_a_date_in_the_past_is_zero(self) -> None:
        headers = httpx.Headers({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"})
        assert parse_retry_after(headers, now=NOW) == 0.0

    @pytest.mark.parametrize("value", ["soon", "-5", "inf", "nan", "", "Thu, 99 Foo"])
    def test_garbage_is_absent(self, value: str) -> None:
        assert parse_retry_after(httpx.Headers({"Retry-After": value}), now=NOW) is None

    def test_milliseconds_come_first(self) -> None:
        headers = httpx.Headers({"Retry-After": "9", "retry-after-ms": "250"})
        assert parse_retry_after(headers) == 0.25

    def test_no_header_is_absent(self) -> None:
        assert parse_retry_after(httpx.Headers()) is None


class TestClassification:
    def test_501_is_never_transient_whatever_the_vendor_says(self) -> None:
        error = error_for_response(
            httpx.Response(501), context="GET /x", is_transient=lambda _r: True
        )
        assert isinstance(error, UnsupportedRequest)
        assert not error.retryable

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_transient_statuses_carry_the_requested_delay(self, status: int) -> None:
        response = httpx.Response(status, headers={"Retry-After": "7"})
        error = error_for_response(response, context="GET /x")
        assert isinstance(error, TransientError)
        assert error.retryable
        assert error.retry_after == 7.0

    def test_one_tree_for_both_sides(self) -> None:
        """A source's transient error and a target's are the same class, and neither is
        a 'target' error by accident of history: `TargetError` names `ApiError`."""
        assert TargetError is ApiError
        assert not issubclass(ApiError, SourceError)
        assert issubclass(TransientError, ApiError)


class TestPageGuard:
    def test_a_repeated_cursor_is_refused(self) -> None:
        guard = PageGuard("GET /users")
        guard.page(5, "a")
        guard.page(5, "b")
        with pytest.raises(TransientError, match=r"page 3 points back.*repeats cursors"):
            guard.page(5, "a")

    def test_a_cycle_through_many_cursors_is_refused(self) -> None:
        guard = PageGuard("GET /users")
        for n in range(50):
            guard.page(1, f"c{n}")
        with pytest.raises(TransientError, match="page 51"):
            guard.page(1, "c7")

    def test_endless_empty_pages_are_refused(self) -> None:
        guard = PageGuard("GET /users", error=SourceError)
        for n in range(MAX_EMPTY_PAGES):
            guard.page(0, f"cursor-{n}")
        with pytest.raises(SourceError, match="empty pages in a row"):
            guard.page(0, "fresh-cursor")

    def test_a_listing_beyond_the_page_cap_is_refused(self) -> None:
        guard = PageGuard("GET /users", max_pages=10)
        for n in range(9):
            guard.page(1, f"c{n}")
        with pytest.raises(TransientError, match="still more after 10 pages"):
            guard.page(1, "c9")

    def test_a_normal_sequence_passes_and_the_last_page_ends_it(self) -> None:
        guard = PageGuard("GET /users", max_pages=60)
        for n in range(50):
            guard.page(0 if n % 5 else 3, f"c{n}")
        guard.page(2, None)
        assert guard.pages == 51
