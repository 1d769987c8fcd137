"""What the REST identity providers (Okta, Microsoft Graph, Google, SCIM) add to the shared
HTTP layer (`orgsync.http`, which owns TLS, auth flows, error mapping, Retry-After,
scrubbing, metrics and retries).

The rule it enforces for the sources above it: a read is complete or it raises
`SourceError`. Every call is a read, so every call is retried; transient failures (429,
408, 5xx but 501, timeouts, resets, a 2xx body that is not JSON) until the retry budget is
spent, then `SourceError`; every other failure is a `SourceError` at once, naming the
credential's configuration key when the server refuses it. Nothing here ever returns a
partial page: next links must stay on the API (or the credential would follow them
elsewhere), page sequences must move forward (`page_guard`), and a bounded worker pool
(`parallel_map`) stops every worker as soon as one fails.

A stop request (`HttpSettings.interrupt`, set on SIGTERM) ends a read in flight within a
fraction of a second and sends nothing more, retries included: the read raises
`Interrupted` (see `orgsync.interrupt`).

Imports only httpx, the standard library, `orgsync.core`, `orgsync.retrying`,
`orgsync.interrupt` and `orgsync.http`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar, Unpack

import httpx

from orgsync.core.errors import (
    ApiError,
    AuthError,
    SourceDataError,
    SourceError,
    TransientError,
)
from orgsync.core.model import SourceGroup, SourceId
from orgsync.http.client import ClientOptions, HttpClient, OnResponse
from orgsync.http.paging import PageGuard
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings

__all__ = [
    "HttpSettings",
    "NewIds",
    "SourceHttp",
    "add_once",
    "check_disjoint",
    "metrics_system",
    "page_guard",
    "parallel_map",
    "require_list",
    "resolve_groups",
    "source_error",
]

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Connection knobs the REST sources take from their configuration."""

    timeout: float = 30.0
    """Seconds for connect, read, write and pool each."""
    verify: bool | str = True
    """True, or a CA bundle to trust instead of the system store (`ca_file`)."""
    retry: RetrySettings = field(default_factory=RetrySettings)
    max_concurrency: int = 4
    """Group member lists fetched at once: bounded so that a directory with thousands of
    groups stays well inside vendor rate limits, parallel so it does not take minutes."""
    interrupt: ReadInterrupt | None = None
    """Set when orgsync is told to stop: the read ends at once (see the module doc)."""
    on_response: OnResponse | None = None
    """Told `(system, status)` of every response: `orgsync_http_requests_total`, where a
    source's `system` is `source:<type>` (`metrics_system`), apart from every target's."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")

    def options(self, **more: Unpack[ClientOptions]) -> ClientOptions:
        """What every client of a source's read takes from these settings, and `more`."""
        return ClientOptions(
            timeout=self.timeout,
            verify=self.verify,
            interrupt=self.interrupt,
            on_response=self.on_response,
            max_connections=self.max_concurrency * 2,
            **more,
        )


def metrics_system(system: str) -> str:
    """The `system` label of a source's HTTP calls in metrics and logs: `source:okta`, so
    that no target's name can collide with it and the target alerts can leave it out."""
    return f"source:{system}"


def source_error(system: str, error: ApiError, *, credential_key: str | None = None) -> SourceError:
    """The `SourceError` a failed call ends a read with: `<system>: <call>: HTTP <status>:
    <the server's message>`, naming `credential_key` if the credential was refused."""
    if isinstance(error, TransientError):
        return SourceError(f"{system}: {error} (gave up after retrying; nothing will be planned)")
    message = f"{system}: {error.message}"
    if error.status is not None:
        call, _, detail = error.message.partition(": ")
        message = f"{system}: {call}: HTTP {error.status}: {detail}"
    if error.request_id:
        message += f" (request id {error.request_id})"
    if isinstance(error, AuthError):
        which = f" ({credential_key})" if credential_key else ""
        message += f" (the credential{which} was refused or lacks permission)"
    return SourceError(message)


def page_guard(system: str, listing: str) -> PageGuard:
    """The `PageGuard` of one source listing: an inconsistent sequence fails the read."""

    def error(message: str) -> SourceError:
        return SourceError(f"{system}: {message}; nothing will be planned")

    return PageGuard(listing, error=error)


class NewIds:
    """Whether a listing still moves forward when its pages are not empty.

    `PageGuard` catches a cursor seen before and a run of empty pages; a server that
    ignores the cursor and answers the first page again under a fresh one each time
    passes both: the read went on for `MAX_PAGES` pages (hours of rate limit), or, if
    the server stopped after a while, ended with the first page's people only. With a
    cursor (Okta's `after`, Graph's `$skiptoken`) no page repeats a whole earlier one, so
    a page that lists objects, only ones already read, and points onward fails the read.
    """

    def __init__(self, system: str, listing: str) -> None:
        self._system = system
        self._listing = listing
        self._seen: set[str] = set()

    def page(self, items: Iterable[Mapping[str, Any]], *, more: bool) -> None:
        """Record one page's objects; `more`: the page points to another."""
        listed = fresh = False
        for item in items:
            listed = True
            key = item.get("id")
            if not isinstance(key, str) or key not in self._seen:
                fresh = True
                if isinstance(key, str):
                    self._seen.add(key)
        if listed and more and not fresh:
            raise SourceError(
                f"{self._system}: {self._listing}: a page lists only objects already read, "
                "yet points to another page (the server ignores the page cursor); nothing "
                "will be planned"
            )


class SourceHttp:
    """One identity provider's HTTP session: reads only, every one retried.

    Args:
        base_url: the API root; relative paths are resolved against it, and absolute URLs
            (next links) must share its scheme, host, port and path prefix.
        system: the name in messages ("okta", "entra", "google", "scim"); in logs and
            metrics it is `metrics_system(system)`.
        credential_key: the configuration key of the credential ("source.token"), named
            when the server refuses it.
        auth: the credential flow (`orgsync.http.auth`, or httpx's Basic).
        secrets: values scrubbed from every message (tokens, passwords).
        options: as `orgsync.http.client.HttpClient` (the vendor's dialect among them:
            `error_parser`, `retry_after`, `is_transient`).

    `stop`, once set, makes the next request raise instead of being sent: a sibling worker
    failed, and finishing this one's pages would only spend rate limit.
    """

    def __init__(
        self,
        base_url: str,
        *,
        system: str,
        retry: RetrySettings,
        credential_key: str | None = None,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        **options: Unpack[ClientOptions],
    ) -> None:
        self.system = system
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._credential_key = credential_key
        self._http = HttpClient(
            system=metrics_system(system), retry=retry, auth=auth, secrets=secrets, **options
        )
        self.stop = self._http.stop

    def __enter__(self) -> SourceHttp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"SourceHttp(system={self.system!r}, base_url={str(self._base)!r})"

    def url(self, path_or_url: str) -> httpx.URL:
        """Resolve a path under the API root, or check that an absolute URL stays on it.

        A next link naming another host would receive our credential: refused.
        """
        if "://" not in path_or_url:
            return self._base.join(path_or_url.lstrip("/"))
        url = httpx.URL(path_or_url)
        same_origin = (url.scheme, url.host, url.port) == (
            self._base.scheme,
            self._base.host,
            self._base.port,
        )
        if not same_origin or not url.path.startswith(self._base.path):
            raise SourceError(
                f"{self.system}: the server's next-page link {self._http.scrubbed(str(url))} "
                f"leaves the API at {self._base}; refusing to send the credential there"
            )
        return url

    def get_json(self, path_or_url: str, params: Mapping[str, object] | None = None) -> Any:
        """GET one page and return its parsed JSON body."""
        body, _ = self.get_page(path_or_url, params)
        return body

    def get_page(
        self, path_or_url: str, params: Mapping[str, object] | None = None
    ) -> tuple[Any, httpx.Response]:
        """GET one page; return its parsed JSON body and the response (for its headers).

        `params` are added to (or replace those of) the URL's query; None values are left
        out, booleans are sent as `true`/`false`.
        """
        url = self.url(path_or_url)
        if params:
            url = url.copy_merge_params(
                {k: _query_value(v) for k, v in params.items() if v is not None}
            )
        try:
            return self._http.send("GET", url, idempotent=True, parse=_json_page)
        except ApiError as error:
            raise source_error(self.system, error, credential_key=self._credential_key) from error


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_page(response: httpx.Response) -> tuple[Any, httpx.Response]:
    try:
        return json.loads(response.content), response
    except RecursionError:
        # Python's parser gives up past about a thousand levels: no directory nests that
        # deep, and the same body would come again, so this is no transient failure.
        raise ApiError(
            f"GET {response.request.url.path}: the body nests JSON too deeply to be a "
            "directory's answer",
            status=response.status_code,
        ) from None
    except ValueError as exc:
        # A truncated transfer or a proxy's HTML page: another attempt may well succeed.
        raise TransientError(
            f"GET {response.request.url.path}: the body is not JSON",
            status=response.status_code,
        ) from exc


def require_list(value: Any, *, system: str, where: str) -> list[Any]:
    """`value` if it is a JSON array of objects, else `SourceDataError` naming `where`."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SourceDataError(f"{system}: {where}: expected a list of objects")
    return value


def add_once(
    found: dict[SourceId, _T], key: SourceId, value: _T, *, system: str, where: str
) -> None:
    """Keep `value` under `key`; the same id listed again with other data fails the read.

    A listing that moves while it is paged, or a server answering one page from a stale
    replica, can show one person twice: active on one page and suspended on the next, or
    in two names. Taking either would plan from a guess (the wrong one grants access or
    removes it), so the read fails and the next one reads again. The same record twice
    is harmless and kept once.
    """
    known = found.get(key)
    if known is None:
        found[key] = value
    elif known != value:
        raise SourceDataError(
            f"{system}: {where}: {key!r} is listed twice with different data (the "
            "directory changed while it was paged, or the server answers inconsistently); "
            "nothing will be planned"
        )


def check_disjoint(system: str, people: Iterable[SourceId], groups: Iterable[SourceId]) -> None:
    """Fail the read when an id names both a person and a group.

    The core reads a group member that is a person's id as that person, and one that is
    a group's id as the group nested: an id naming both would give its group's members
    the access of wherever the person is a member, or the reverse.
    """
    shared = sorted(set(people).intersection(groups))
    if shared:
        raise SourceDataError(
            f"{system}: {len(shared)} id(s) name both a user and a group (first "
            f"{shared[0]!r}); nothing will be planned"
        )


def resolve_groups(
    http: SourceHttp,
    groups: Iterable[tuple[SourceId, str]],
    members: Callable[[tuple[SourceId, str]], tuple[SourceId, ...]],
    *,
    workers: int,
) -> tuple[SourceGroup, ...]:
    """Each `(id, name)` group with the members `members` lists for it, `workers` groups
    at a time; the first failure stops every listing (`parallel_map`)."""
    resolved = parallel_map(members, groups, workers=workers, stop=http.stop)
    return tuple(SourceGroup(id=gid, name=name, members=ids) for (gid, name), ids in resolved)


def parallel_map(
    fn: Callable[[_T], _R], items: Iterable[_T], *, workers: int, stop: threading.Event
) -> Iterator[tuple[_T, _R]]:
    """`(item, fn(item))` for every item, `workers` at a time, in input order.

    On the first failure `stop` is set (so the other workers' next request raises instead
    of being sent), unstarted items are cancelled, and that first failure is raised.
    """
    todo = list(items)
    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orgsync-source") as pool:
        futures: list[Future[_R]] = [pool.submit(fn, item) for item in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            stop.set()
            for future in futures:
                future.cancel()
            error = failed.exception()
            assert error is not None
            raise error
        for item, future in zip(todo, futures, strict=True):
            yield item, future.result()
