"""orgsync's one HTTP layer, below the source and target adapters.

* `client`: `new_client` (every `httpx.Client` orgsync opens) and `HttpClient` (one
  call: stop request, rate limit, auth, error mapping, scrubbing, metrics, retries);
* `responses`: what an answer means (`error_for_response`, `parse_retry_after`);
* `auth`: credentials as `httpx.Auth` flows (a fixed header; an OAuth token cached and
  renewed once on 401, for the client credentials and JWT bearer grants);
* `paging`: `PageGuard`, which every cursor walk runs its pages through;
* `ratelimit`: `TokenBucket`, the client-side rate limit.

Adapters import it; it imports only httpx, structlog, tenacity, the standard library,
`orgsync.core`, `orgsync.retrying` and `orgsync.interrupt` (import-linter checks it).
"""
