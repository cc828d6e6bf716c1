"""GitHub REST client: paging, conditional requests, rate limits, retries and one-ahead prefetch.

Behaviour follows GitHub's REST documentation:

- Paging follows the `Link` header's rel="next" until it is absent.
- Listing pages are conditional GETs (If-None-Match / If-Modified-Since from a `ConditionalCache`).
  A 304 yields an empty `Page(not_modified=True)` and the walk continues with the `next_url` the
  cache remembered; an authorized 304 is free against the primary rate limit. Validators seen during
  an iteration are committed to the cache only once the iteration has been consumed to the end, so
  a consumer that fails half-way never makes the next run skip pages it did not store.
  `get_json` and friends are not conditional: the cache keeps validators, not bodies.
- Primary rate limit: a 403/429 with `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset`
  (+1 s); a successful response with remaining 0 makes the next request wait the same way.
  Secondary rate limit: `retry-after` is honoured as given; without it the client waits 60 s,
  doubling on each consecutive hit up to 16 minutes. Rate-limit waits do not use up `max_retries`;
  instead at most `MAX_RATE_LIMIT_WAITS` of each kind are allowed for one request, then GitHubError.
  Any other 403 (permissions, blocked repository) fails at once. A client built with `max_wait`
  (seconds) raises `RateLimitedError` instead of starting any rate-limit wait longer than that: a
  sensor tick must end within the daemon's timeout, not sleep until the reset.
- 5xx, connection errors and resets, timeouts, and bodies that are truncated (Content-Length
  mismatch) or not JSON are retried with full-jitter exponential backoff
  `uniform(0, min(backoff_max, backoff_base * 2**attempt))`, at most `max_retries` times.
- Prefetch: once a page has arrived, a background reader requests the following pages one after
  another (up to PREFETCH_DEPTH ahead of the caller, growing from one as the caller consumes pages,
  so an early stop wastes little) while the caller works. Only one request per client is ever in
  flight, so read-ahead adds no concurrency that could trip a secondary limit. The reader never
  waits or retries: anything but 200/304 ends it, and every wait and retry happens in the caller's
  thread through the injected `Clock`.

The token is sent only as `Authorization: Bearer ...` to the configured API origin; it never appears
in logs, exceptions, `repr`, stats, events or the cache file.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

import orjson
import requests
from requests.utils import parse_header_links

from issue_assets.lake.keys import check_repo as validate_repo

from .clock import Clock, SystemClock
from .conditional_cache import ConditionalCache

logger = logging.getLogger("issue_assets.github")

API_VERSION = "2022-11-28"
PER_PAGE = 100
PREFETCH_DEPTH = 3  # pages the background reader may be ahead of the caller
SECONDARY_MIN_WAIT = 60.0
SECONDARY_MAX_WAIT = 960.0
MAX_RATE_LIMIT_WAITS = 10
# GitHub's primary window is one hour; a reset further away than this is a broken header, not a plan.
MAX_RESET_WAIT = 3660.0

_RETRYABLE_TRANSPORT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_BROKEN_BODY = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
_REPO_IN_PATH = re.compile(r"^/?repos/([^/?#]+/[^/?#]+)")
_ISSUE_STATES = ("open", "closed", "all")


class GitHubError(Exception):
    """A request GitHub (or the network) would not satisfy; the message names the repo, URL or page."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 page: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.page = page


class NotFoundError(GitHubError):
    """404: the repository (or resource) does not exist, or the token cannot see it."""


class AuthError(GitHubError):
    """401: the credentials were rejected."""


class RateLimitedError(GitHubError):
    """A rate-limit wait longer than the client's `max_wait` was needed; `seconds` is how long it would be."""

    def __init__(self, message: str, *, seconds: float, **kwargs):
        super().__init__(message, **kwargs)
        self.seconds = seconds


class BadResponseError(GitHubError):
    """A body that stayed truncated or undecodable after every retry, or is not the expected shape."""


@dataclass
class Page:
    url: str
    number: int
    items: list[dict]
    not_modified: bool
    etag: str | None
    has_next: bool


@dataclass
class ClientStats:
    requests: int = 0
    not_modified: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    secondary_waits: int = 0
    wait_seconds: float = 0.0
    bytes_received: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain, JSON-ready values (status codes become string keys)."""
        return {
            "requests": self.requests,
            "not_modified": self.not_modified,
            "retries": self.retries,
            "rate_limit_waits": self.rate_limit_waits,
            "secondary_waits": self.secondary_waits,
            "wait_seconds": round(self.wait_seconds, 3),
            "bytes_received": self.bytes_received,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
        }


class _Secret:
    """Holds the token so that no repr, vars() dump or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


@dataclass
class _Attempt:
    """One HTTP exchange: a response, or the transport error that replaced it."""

    status: int | None = None
    headers: Any = None
    body: bytes = b""
    error: BaseException | None = None
    decoded: tuple[str | None, Any] | None = None  # (problem, data), when decoded ahead in the prefetch thread


@dataclass
class _Fetched:
    url: str
    status: int
    data: Any
    etag: str | None
    last_modified: str | None
    next_url: str | None


class _Prefetch:
    """A background reader of the pages that follow `url`, one request at a time.

    It follows each page's `Link: rel="next"` (or, after a 304, the cached next URL) as soon as the
    page has arrived, and stays at most `ahead()` pages in front of the caller, so a slow caller
    never leaves the connection idle and an early stop wastes few requests. Any answer but 200/304,
    a transport error or an exhausted rate limit ends the read-ahead: the caller then fetches (and
    waits, and retries) itself. Every request still goes through the client's in-flight lock.
    """

    def __init__(self, client: GitHubClient, url: str, ahead: Callable[[], int], conditional: bool = True):
        self.url = url
        self._conditional = conditional
        self._client = client
        self._ahead = ahead
        self._cond = threading.Condition()
        self._results: dict[str, _Attempt] = {}
        self._next: str | None = url
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="github-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopped and len(self._results) >= max(1, self._ahead()):
                        self._cond.wait()
                    url = self._next
                    if self._stopped or url is None:
                        return
                try:
                    outcome = self._client._attempt(url, conditional=self._conditional)
                except BaseException as exc:  # surfaced in the caller's thread by _fetch
                    outcome = _Attempt(error=exc)
                following = None
                if outcome.status == 200:
                    # The next request goes out at once; the caller decodes this body meanwhile.
                    following = self._client._next_link(outcome, url)
                    if str(outcome.headers.get("x-ratelimit-remaining", "1")).strip() == "0":
                        following = None
                elif outcome.status == 304:
                    cached = self._client.cache.get(url)
                    following = cached.get("next_url") if cached else None
                if not self._client._may_prefetch():
                    following = None
                with self._cond:
                    self._results[url] = outcome
                    self._next = following
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def covers(self, url: str) -> bool:
        with self._cond:
            return url in self._results or (not self._stopped and self._next == url)

    def result(self, url: str) -> _Attempt | None:
        """The read-ahead answer for `url`, or None if the reader stopped before it."""
        with self._cond:
            while url not in self._results and not self._stopped and self._next == url:
                self._cond.wait()
            outcome = self._results.pop(url, None)
            self._cond.notify_all()
            return outcome

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        self._client._forget_prefetch(self)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _display_url(url: str) -> str:
    """The URL without any user:password@ part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _header_float(headers, name: str) -> float | None:
    value = headers.get(name) if headers is not None else None
    if value is None:
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _retry_after_seconds(headers, now: float) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class GitHubClient:
    """Synchronous GitHub REST client for issue and comment listings (see the module docstring)."""

    def __init__(self, api_url: str = "https://api.github.com", token: str | None = None, *,
                 cache: ConditionalCache | None = None, clock: Clock | None = None,
                 session: requests.Session | None = None, max_retries: int = 6, timeout: float = 30.0,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, seed: int | None = None,
                 prefetch: bool = True, on_event: Callable[[str, dict], None] | None = None,
                 user_agent: str = "issue-assets", max_wait: float | None = None):
        api_url = (api_url or "").strip().rstrip("/")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"api_url must be an http(s) URL, got {_display_url(api_url)!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_wait is not None and not max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0 seconds or None, got {max_wait}")
        self.api_url = api_url
        self._api_origin = _origin(api_url)
        self._token = _Secret(token) if token else None
        self.cache = cache if cache is not None else ConditionalCache()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.prefetch = prefetch
        self.on_event = on_event
        self.user_agent = user_agent
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._inflight = threading.Lock()
        self._state_lock = threading.Lock()
        self._reset_at: float | None = None
        self._prefetches: set[_Prefetch] = set()
        self._closed = False
        self.rate_limit: dict[str, float] | None = None  # the last response's x-ratelimit-* headers

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    def __repr__(self) -> str:
        return (f"GitHubClient(api_url={_display_url(self.api_url)!r}, "
                f"authenticated={self._token is not None}, prefetch={self.prefetch})")

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Finish any background request, flush the cache, close the session this client created."""
        for pending in list(self._prefetches):
            pending.close()
        self._flush_cache()
        if not self._closed and self._own_session:
            self._session.close()
        self._closed = True

    # ---- public reads -------------------------------------------------------------------------

    def get_json(self, path: str, params: dict | None = None) -> Any:
        repo = _repo_in_path(path)
        subject = f"repository {repo}" if repo else f"resource {path}"
        return self._get(path, params, repo=repo, subject=subject)

    def get_repo(self, repo: str) -> dict:
        validate_repo(repo)
        return self._get(f"/repos/{repo}", None, repo=repo, subject=f"repository {repo}")

    def get_issue(self, repo: str, number: int) -> dict:
        validate_repo(repo)
        number = int(number)
        return self._get(f"/repos/{repo}/issues/{number}", None, repo=repo,
                         subject=f"issue #{number} of repository {repo}")

    def iter_pages(self, path: str, params: dict) -> Iterator[Page]:
        repo = _repo_in_path(path)
        subject = f"repository {repo}" if repo else f"resource {path}"
        return self._iter_pages(self._url(path, params), repo=repo, subject=subject)

    def issue_pages_url(self, repo: str, since: str | None = None, state: str = "all") -> str:
        """The first-page URL `iter_issue_pages` requests (the conditional cache's key)."""
        validate_repo(repo)
        if state not in _ISSUE_STATES:
            raise ValueError(f"state must be one of {_ISSUE_STATES}, got {state!r}")
        params = {"state": state, "sort": "updated", "direction": "asc", "per_page": PER_PAGE}
        if since:
            params["since"] = since
        return self._url(f"/repos/{repo}/issues", params)

    def comment_pages_url(self, repo: str, since: str | None = None) -> str:
        """The first-page URL `iter_comment_pages` requests (the conditional cache's key)."""
        validate_repo(repo)
        params = {"sort": "updated", "direction": "asc", "per_page": PER_PAGE}
        if since:
            params["since"] = since
        return self._url(f"/repos/{repo}/issues/comments", params)

    def iter_issue_pages(self, repo: str, since: str | None = None, state: str = "all", *,
                         conditional: bool = True) -> Iterator[Page]:
        """`conditional=False` sends no validators (every page comes back whole) and still records the
        new ones: a full re-read that must not trust what earlier runs stored."""
        return self._iter_pages(self.issue_pages_url(repo, since, state), repo=repo,
                                subject=f"repository {repo}", conditional=conditional)

    def iter_comment_pages(self, repo: str, since: str | None = None, *, conditional: bool = True) -> Iterator[Page]:
        return self._iter_pages(self.comment_pages_url(repo, since), repo=repo,
                                subject=f"repository {repo}", conditional=conditional)

    def expect_unchanged_since(self, url: str, newest: float) -> bool:
        """Remember `newest` (epoch seconds of the newest stored item) as the Last-Modified of a
        page not fetched yet, so polling it sends If-Modified-Since and an unchanged page costs one
        free 304. No-op (False) when the cache already holds validators for `url`."""
        if self.cache.get(url) is not None:
            return False
        self.cache.put(url, etag=None, last_modified=email.utils.formatdate(newest, usegmt=True),
                       item_count=0, next_url=None)
        return True

    # ---- paging -------------------------------------------------------------------------------

    def _iter_pages(self, url: str, *, repo: str | None, subject: str, conditional: bool = True) -> Iterator[Page]:
        staged: dict[str, dict] = {}
        visited = {url}
        pending: _Prefetch | None = None
        completed = False
        number = 1
        served = [0]  # pages handed to the caller: the read-ahead grows with it (1, 2, .. PREFETCH_DEPTH)
        try:
            fetched = self._fetch(url, number, repo=repo, subject=subject, conditional=conditional)
            while True:
                page, next_url = self._page_from(fetched, number, staged)
                if next_url is not None:
                    if next_url in visited:
                        raise BadResponseError(
                            f"pagination of {subject} loops back to {_display_url(next_url)} "
                            f"after page {number}", url=_display_url(next_url), page=number + 1)
                    visited.add(next_url)
                    if self.prefetch and self._may_prefetch() and (pending is None or not pending.covers(next_url)):
                        if pending is not None:
                            pending.close()
                        pending = self._start_prefetch(next_url, lambda: min(PREFETCH_DEPTH, served[0] + 1),
                                                       conditional)
                self._emit("page", {"repo": repo, "url": _display_url(page.url), "number": number,
                                    "items": len(page.items), "not_modified": page.not_modified,
                                    "has_next": page.has_next})
                yield page
                served[0] += 1
                if next_url is None:
                    break
                number += 1
                first = pending.result(next_url) if pending is not None else None
                fetched = self._fetch(next_url, number, repo=repo, subject=subject, conditional=conditional,
                                      first=first)
            completed = True
        finally:
            if pending is not None:
                pending.close()
            if completed:
                for page_url, entry in staged.items():
                    self.cache.put(page_url, **entry)
            self._flush_cache()

    def _page_from(self, fetched: _Fetched, number: int, staged: dict) -> tuple[Page, str | None]:
        if fetched.status == 304:
            cached = self.cache.get(fetched.url)
            next_url = cached.get("next_url") if cached else None
            if cached is None:
                logger.warning("304 for %s page %d without a cached entry: treating it as the last page",
                               _display_url(fetched.url), number)
            etag = fetched.etag or (cached or {}).get("etag")
            return Page(fetched.url, number, [], True, etag, next_url is not None), next_url
        items = fetched.data
        if not isinstance(items, list):
            raise BadResponseError(
                f"expected a JSON array from GET {_display_url(fetched.url)} page {number}, "
                f"got {type(items).__name__}", url=_display_url(fetched.url), status=fetched.status,
                page=number)
        # Staged even without validators: put() then drops a stale entry instead of re-sending it.
        staged[fetched.url] = {"etag": fetched.etag, "last_modified": fetched.last_modified,
                               "item_count": len(items), "next_url": fetched.next_url}
        page = Page(fetched.url, number, items, False, fetched.etag, fetched.next_url is not None)
        return page, fetched.next_url

    def _may_prefetch(self) -> bool:
        with self._state_lock:
            return self._reset_at is None and not self._closed

    def _start_prefetch(self, url: str, ahead: Callable[[], int], conditional: bool = True) -> _Prefetch:
        pending = _Prefetch(self, url, ahead, conditional)
        with self._state_lock:
            self._prefetches.add(pending)
        return pending

    def _forget_prefetch(self, pending: _Prefetch) -> None:
        with self._state_lock:
            self._prefetches.discard(pending)

    def _flush_cache(self) -> None:
        try:
            self.cache.flush()
        except OSError as exc:
            logger.warning("could not write the conditional cache: %s", exc)

    # ---- one request, with waits and retries ---------------------------------------------------

    def _get(self, path: str, params: dict | None, *, repo: str | None, subject: str) -> Any:
        fetched = self._fetch(self._url(path, params), 1, repo=repo, subject=subject, conditional=False)
        return fetched.data

    def _url(self, path: str, params: dict | None) -> str:
        if path.startswith(("http://", "https://")):
            url = path
        else:
            url = f"{self.api_url}/{path.lstrip('/')}"
        pairs = [(k, v) for k, v in (params or {}).items() if v is not None]
        if pairs:
            query = urlencode(pairs, safe=":", quote_via=quote)
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        return url

    def _request_headers(self, url: str) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": self.user_agent,
        }
        if self._token is not None:
            if _origin(url) == self._api_origin:
                headers["Authorization"] = f"Bearer {self._token.reveal()}"
            else:
                logger.warning("not sending the token to %s: it is not the API origin %s",
                               _display_url(url), _display_url(self.api_url))
        return headers

    def _attempt(self, url: str, *, conditional: bool) -> _Attempt:
        """Exactly one GET, body read in full. Safe to run in the prefetch thread: it never waits."""
        headers = self._request_headers(url)
        if conditional:
            cached = self.cache.get(url)
            if cached:
                if cached.get("etag"):
                    headers["If-None-Match"] = cached["etag"]
                if cached.get("last_modified"):
                    headers["If-Modified-Since"] = cached["last_modified"]
        with self._inflight:
            self._bump("requests")
            try:
                response = self._session.get(url, headers=headers, timeout=self.timeout)
                body = response.content
            except requests.RequestException as exc:
                return _Attempt(error=exc)
        limits = {name: _header_float(response.headers, f"x-ratelimit-{name}")
                  for name in ("limit", "remaining", "used", "reset")}
        with self._state_lock:
            if limits["limit"] is not None and limits["remaining"] is not None:
                self.rate_limit = {k: v for k, v in limits.items() if v is not None}
            self.stats.bytes_received += len(body)
            self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
        logger.debug("GET %s -> %d (%d bytes)", _display_url(url), response.status_code, len(body))
        return _Attempt(status=response.status_code, headers=response.headers, body=body)

    def _fetch(self, url: str, number: int, *, repo: str | None, subject: str, conditional: bool,
               first: _Attempt | None = None) -> _Fetched:
        shown = _display_url(url)
        label = f"GET {urlsplit(url).path or '/'} page {number}"
        retries = 0
        limit_waits = {"primary": 0, "secondary": 0}
        while True:
            if first is not None:
                attempt, first = first, None
            else:
                self._wait_for_reset(label)
                attempt = self._attempt(url, conditional=conditional)

            if attempt.error is not None:
                exc = attempt.error
                if not isinstance(exc, requests.RequestException):
                    raise exc
                if not isinstance(exc, _RETRYABLE_TRANSPORT):
                    raise GitHubError(f"{label} for {subject} failed: {self._scrub(str(exc))}",
                                      url=shown, page=number) from None
                # A body cut off mid-read (IncompleteRead, broken chunking) is a truncated page.
                broken_body = isinstance(exc, _BROKEN_BODY)
                reason = "truncated body" if broken_body else type(exc).__name__
                retries = self._retry(retries, reason, label, url=shown, number=number, subject=subject,
                                      bad_body=broken_body, detail=self._scrub(str(exc)))
                continue

            status = attempt.status
            assert status is not None
            self._note_rate_limit(attempt)
            if status == 304:
                self._bump("not_modified")
                return _Fetched(url, 304, None, attempt.headers.get("ETag"),
                                attempt.headers.get("Last-Modified"), None)
            if 200 <= status < 300:
                problem, data = attempt.decoded if attempt.decoded is not None else self._decode(attempt)
                if problem is not None:
                    retries = self._retry(retries, problem, label, url=shown, number=number,
                                          subject=subject, bad_body=True)
                    continue
                return _Fetched(url, status, data, attempt.headers.get("ETag"),
                                attempt.headers.get("Last-Modified"), self._next_link(attempt, url))
            if status in (403, 429):
                wait = self._rate_limit_wait(attempt, limit_waits["secondary"])
                if wait is not None:
                    kind, seconds, text = wait
                    limit_waits[kind] += 1
                    if limit_waits[kind] > MAX_RATE_LIMIT_WAITS:
                        raise GitHubError(
                            f"{label} for {subject} still rate limited ({status}) after "
                            f"{MAX_RATE_LIMIT_WAITS} waits: {self._message(attempt)}",
                            url=shown, status=status, page=number)
                    self._wait(kind, seconds, f"{text} ({label})")
                    continue
            if status == 401:
                hint = "" if self._token is not None else " (no token was configured)"
                raise AuthError(
                    f"GitHub rejected the credentials ({status} {self._message(attempt) or 'Unauthorized'}) "
                    f"for {repo or shown}{hint}", url=shown, status=status, page=number)
            if status == 404:
                raise NotFoundError(f"{subject} not found at {_display_url(self.api_url)} ({status})",
                                    url=shown, status=status, page=number)
            if status >= 500:
                retries = self._retry(retries, str(status), label, url=shown, number=number,
                                      subject=subject, bad_body=False)
                continue
            message = self._message(attempt) or _reason_phrase(status)
            raise GitHubError(f"GitHub refused {label} for {subject} ({status}): {message}",
                              url=shown, status=status, page=number)

    def _retry(self, retries: int, reason: str, label: str, *, url: str, number: int, subject: str,
               bad_body: bool, detail: str | None = None) -> int:
        if retries >= self.max_retries:
            tail = f": {detail}" if detail else ""
            message = (f"{reason} from {label} of {subject} ({url}, page {number}) "
                       f"after {retries} retries{tail}")
            if bad_body:
                raise BadResponseError(message, url=url, page=number)
            status = int(reason) if reason.isdigit() else None
            raise GitHubError(message, url=url, status=status, page=number)
        cap = min(self.backoff_max, self.backoff_base * 2 ** retries)
        delay = self._rng.uniform(0.0, cap) if cap > 0 else 0.0
        retries += 1
        logger.info("%s from %s: retry %d/%d in %.1f s", reason, label, retries, self.max_retries, delay)
        self._bump("retries")
        self._emit("retry", {"reason": reason, "url": url, "number": number, "attempt": retries,
                             "max_retries": self.max_retries, "seconds": delay})
        self._sleep(delay)
        return retries

    def _wait(self, kind: str, seconds: float, text: str) -> None:
        if self.max_wait is not None and seconds > self.max_wait:
            raise RateLimitedError(f"{text}: longer than this client's max_wait of {self.max_wait:g} s, "
                                   f"not waiting", seconds=seconds)
        logger.info("%s", text)
        self._bump("rate_limit_waits" if kind == "primary" else "secondary_waits")
        self._emit("wait", {"reason": "rate limit exhausted" if kind == "primary" else "secondary rate limit",
                            "kind": kind, "seconds": seconds, "message": text})
        self._sleep(seconds)

    def _sleep(self, seconds: float) -> None:
        with self._state_lock:
            self.stats.wait_seconds += seconds
        self.clock.sleep(seconds)

    def _wait_for_reset(self, label: str) -> None:
        with self._state_lock:
            reset_at, self._reset_at = self._reset_at, None
        if reset_at is None:
            return
        seconds = min(MAX_RESET_WAIT, reset_at - self.clock.time() + 1.0)
        if seconds > 0:
            try:
                self._wait("primary", seconds, f"rate limit exhausted: waiting {seconds:.1f} s until reset "
                                               f"(before {label})")
            except RateLimitedError:
                with self._state_lock:  # still exhausted: the client's next request must not go out early
                    self._reset_at = reset_at
                raise

    def _note_rate_limit(self, attempt: _Attempt) -> None:
        """After a successful response with no requests left, the next request waits for the reset."""
        if attempt.status is None or not (200 <= attempt.status < 400):
            return
        remaining = _header_float(attempt.headers, "x-ratelimit-remaining")
        reset = _header_float(attempt.headers, "x-ratelimit-reset")
        if remaining is not None and remaining <= 0 and reset is not None:
            with self._state_lock:
                self._reset_at = reset

    def _rate_limit_wait(self, attempt: _Attempt, secondary_hits: int) -> tuple[str, float, str] | None:
        """(kind, seconds, log text) for a rate-limited 403/429, or None for any other refusal."""
        now = self.clock.time()
        remaining = _header_float(attempt.headers, "x-ratelimit-remaining")
        reset = _header_float(attempt.headers, "x-ratelimit-reset")
        retry_after = _retry_after_seconds(attempt.headers, now)
        if remaining is not None and remaining <= 0:
            seconds = reset - now + 1.0 if reset is not None else SECONDARY_MIN_WAIT
            if retry_after is not None:
                seconds = max(seconds, retry_after)
            seconds = min(MAX_RESET_WAIT, max(1.0, seconds))
            return "primary", seconds, f"rate limit exhausted: waiting {seconds:.1f} s until reset"
        if retry_after is not None:
            return "secondary", retry_after, f"secondary rate limit: waiting {retry_after:.1f} s (retry-after)"
        message = self._message(attempt).lower()
        if attempt.status == 429 or "rate limit" in message or "abuse" in message:
            seconds = min(SECONDARY_MAX_WAIT, SECONDARY_MIN_WAIT * 2 ** secondary_hits)
            return ("secondary", seconds,
                    f"secondary rate limit: waiting {seconds:.1f} s (no retry-after, backing off)")
        return None

    # ---- response bodies ----------------------------------------------------------------------

    @staticmethod
    def _decode(attempt: _Attempt) -> tuple[str | None, Any]:
        body = attempt.body
        length = attempt.headers.get("Content-Length")
        encoding = (attempt.headers.get("Content-Encoding") or "identity").lower()
        if length is not None and encoding == "identity":
            try:
                expected = int(length)
            except ValueError:
                expected = None
            if expected is not None and len(body) != expected:
                return f"truncated body ({len(body)} of {expected} bytes)", None
        if not body.strip():
            return "empty body", None
        try:
            return None, orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        try:  # the stdlib accepts a few things orjson refuses (lone surrogate escapes)
            return None, json.loads(body)
        except ValueError:
            return "invalid JSON", None

    def _message(self, attempt: _Attempt) -> str:
        """GitHub's `message` (plus validation `errors`) from an error body, else its first line."""
        try:
            data = json.loads(attempt.body)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("message"):
            text = str(data["message"])
            errors = data.get("errors")
            if isinstance(errors, list) and errors:
                details = []
                for err in errors[:5]:
                    if isinstance(err, dict):
                        details.append(str(err.get("message") or
                                           " ".join(str(err[k]) for k in ("field", "code") if k in err)))
                    else:
                        details.append(str(err))
                text = f"{text} ({'; '.join(d for d in details if d)})"
        else:
            lines = attempt.body[:200].decode("utf-8", "replace").strip().splitlines()
            text = lines[0] if lines else ""
        return self._scrub(text)

    def _next_link(self, attempt: _Attempt, url: str) -> str | None:
        header = attempt.headers.get("Link")
        if not header:
            return None
        for link in parse_header_links(header):
            rels = str(link.get("rel", "")).split()
            if "next" in rels and link.get("url"):
                return urljoin(url, link["url"])
        return None

    # ---- bookkeeping --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._token is not None:
            text = text.replace(self._token.reveal(), "***")
        return text

    def _bump(self, name: str) -> None:
        with self._state_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _emit(self, kind: str, info: dict) -> None:
        if self.on_event is not None:
            self.on_event(kind, info)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "unexpected status"


def _repo_in_path(path: str) -> str | None:
    if path.startswith(("http://", "https://")):
        path = urlsplit(path).path
        marker = path.find("/repos/")
        path = path[marker:] if marker >= 0 else ""
    match = _REPO_IN_PATH.match(path)
    return match.group(1) if match else None
