"""GitHubClient and ConditionalCache against a scripted loopback server (and the replay server)."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from issue_assets.github.client import (
    AuthError,
    BadResponseError,
    ClientStats,
    GitHubClient,
    GitHubError,
    NotFoundError,
    Page,
    RateLimitedError,
)
from issue_assets.github.clock import FakeClock
from issue_assets.github.conditional_cache import ConditionalCache

TOKEN = "ghp_TopSecretToken0123456789abcdef"
REPO = "octo/widgets"


# ---- a scripted stub server -----------------------------------------------------------------------


class StubServer:
    """Answers each GET with the next queued response: status/headers/body, optional delay, or an
    action: "reset" (connection dropped with RST, no response) or "truncate" (half the declared body)."""

    def __init__(self):
        self.responses: deque[dict] = deque()
        self.routes: dict[str, deque[dict]] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with stub.lock:
                    stub.inflight += 1
                    stub.max_inflight = max(stub.max_inflight, stub.inflight)
                    stub.requests.append({"path": self.path, "at": time.monotonic(),
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                    routed = stub.routes.get(urlsplit(self.path).path)
                    queue = routed if routed else stub.responses
                    resp = queue.popleft() if queue else {"status": 500, "body": {"message": "stub queue empty"}}
                try:
                    self._answer(resp)
                finally:
                    with stub.lock:
                        stub.inflight -= 1

            def _answer(self, resp):
                if resp.get("delay"):
                    time.sleep(resp["delay"])
                action = resp.get("action")
                if action == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                body = resp.get("body", [])
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                status = resp.get("status", 200)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **resp.get("headers", {})}.items():
                    self.send_header(key, str(value))
                if status == 304:
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(raw)))
                if action == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(raw[: len(raw) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def queue(self, *responses: dict) -> None:
        self.responses.extend(responses)

    def queue_for(self, path: str, *responses: dict) -> None:
        """Responses for one URL path only, whatever order requests arrive in."""
        self.routes.setdefault(path, deque()).extend(responses)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.stop()


@pytest.fixture
def clock():
    return FakeClock()


def make_client(stub, clock, **kwargs) -> GitHubClient:
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("timeout", 5.0)
    return GitHubClient(kwargs.pop("api_url", stub.url), clock=clock, **kwargs)


def items(start: int, count: int) -> list[dict]:
    return [{"id": 1000 + n, "number": n, "title": f"issue {n}"} for n in range(start, start + count)]


def ok(body, *, next_url=None, etag=None, headers=None, **extra) -> dict:
    hdrs = dict(headers or {})
    if next_url:
        hdrs["Link"] = f'<{next_url}>; rel="next", <{next_url}&last=1>; rel="last"'
    if etag:
        hdrs["ETag"] = etag
    return {"status": 200, "body": body, "headers": hdrs, **extra}


def collect(pages) -> list[Page]:
    return list(pages)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "github-prefetch" and t.is_alive()]


# ---- paging -----------------------------------------------------------------------------------------


def test_issue_pages_follow_link_next_with_documented_query_and_headers(stub, clock):
    page2 = f"{stub.url}/repositories/42/issues?state=all&page=2"
    page3 = f"{stub.url}/repositories/42/issues?state=all&page=3"
    stub.queue(ok(items(1, 100), next_url=page2), ok(items(101, 100), next_url=page3), ok(items(201, 7)))
    with make_client(stub, clock) as client:
        pages = collect(client.iter_issue_pages(REPO, since="2024-05-01T00:00:00Z"))

    assert [p.number for p in pages] == [1, 2, 3]
    assert [len(p.items) for p in pages] == [100, 100, 7]
    assert [p.has_next for p in pages] == [True, True, False]
    assert [p.items[0]["number"] for p in pages] == [1, 101, 201]
    assert not any(p.not_modified for p in pages)
    first = urlsplit(stub.requests[0]["path"])
    assert first.path == "/repos/octo/widgets/issues"
    assert dict(parse_qsl(first.query)) == {"state": "all", "sort": "updated", "direction": "asc",
                                            "per_page": "100", "since": "2024-05-01T00:00:00Z"}
    assert stub.paths()[1:] == ["/repositories/42/issues?state=all&page=2",
                                "/repositories/42/issues?state=all&page=3"]
    for request in stub.requests:
        headers = request["headers"]
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["accept"] == "application/vnd.github+json"
        assert headers["x-github-api-version"] == "2022-11-28"
        assert headers["user-agent"] == "issue-assets"
    assert client.stats.requests == 3
    assert client.stats.by_status == {200: 3}


def test_comment_pages_query_and_no_token_means_no_authorization(stub, clock):
    stub.queue(ok([{"id": 5, "issue_url": "x"}]))
    with make_client(stub, clock, token=None, user_agent="probe/1") as client:
        pages = collect(client.iter_comment_pages(REPO))
    assert pages[0].items == [{"id": 5, "issue_url": "x"}]
    request = stub.requests[0]
    assert urlsplit(request["path"]).path == "/repos/octo/widgets/issues/comments"
    assert dict(parse_qsl(urlsplit(request["path"]).query)) == {"sort": "updated", "direction": "asc",
                                                                 "per_page": "100"}
    assert "authorization" not in request["headers"]
    assert request["headers"]["user-agent"] == "probe/1"


def test_get_json_get_repo_get_issue(stub, clock):
    stub.queue(ok({"full_name": REPO}), ok({"number": 9}), ok({"resources": {}}))
    with make_client(stub, clock) as client:
        assert client.get_repo(REPO) == {"full_name": REPO}
        assert client.get_issue(REPO, 9) == {"number": 9}
        assert client.get_json("/rate_limit", {"x": "1"}) == {"resources": {}}
    assert stub.paths() == ["/repos/octo/widgets", "/repos/octo/widgets/issues/9", "/rate_limit?x=1"]


@pytest.mark.parametrize("bad", ["octo", "octo/widgets/extra", "../widgets", "octo/..", "/widgets", "octo/",
                                 "", "octo/wid gets", "octo/w?x=1"])
def test_bad_repo_string_is_a_value_error_naming_it(bad):
    client = GitHubClient("http://127.0.0.1:9", clock=FakeClock())
    for call in (lambda: client.iter_issue_pages(bad), lambda: client.iter_comment_pages(bad),
                 lambda: client.get_repo(bad), lambda: client.get_issue(bad, 1)):
        with pytest.raises(ValueError) as info:
            call()
        assert repr(bad) in str(info.value)
    client.close()


class RecordingAdapter(requests.adapters.BaseAdapter):
    """Answers every request in-process (no socket) and records the URL and headers."""

    def __init__(self):
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"ok": true}'
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


@pytest.mark.parametrize(("api_url", "expected"), [
    ("https://api.github.com", "https://api.github.com/repos/octo/widgets"),
    ("https://api.github.com/", "https://api.github.com/repos/octo/widgets"),
    ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/v3/repos/octo/widgets"),
    ("https://ghe.example.com/api/v3/", "https://ghe.example.com/api/v3/repos/octo/widgets"),
    ("http://127.0.0.1:8123", "http://127.0.0.1:8123/repos/octo/widgets"),
    ("http://127.0.0.1:8123//", "http://127.0.0.1:8123/repos/octo/widgets"),
])
def test_api_url_joining_for_github_enterprise_and_replay(api_url, expected):
    adapter = RecordingAdapter()
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    with GitHubClient(api_url, TOKEN, session=session, clock=FakeClock()) as client:
        client.get_repo(REPO)
        client.get_json("repos/octo/widgets")
    assert [r.url for r in adapter.sent] == [expected, expected]
    assert adapter.sent[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_ghe_prefix_against_a_live_server(stub, clock):
    page2 = f"{stub.url}/api/v3/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 2), next_url=page2), ok(items(3, 1)))
    with make_client(stub, clock, api_url=f"{stub.url}/api/v3/") as client:
        pages = collect(client.iter_issue_pages(REPO))
    assert [len(p.items) for p in pages] == [2, 1]
    assert urlsplit(stub.paths()[0]).path == "/api/v3/repos/octo/widgets/issues"
    assert stub.paths()[1] == "/api/v3/repositories/1/issues?page=2"


def test_invalid_api_url_is_rejected():
    with pytest.raises(ValueError):
        GitHubClient("api.github.com")


def test_token_is_not_sent_to_a_link_on_another_origin(stub, clock):
    port = urlsplit(stub.url).port
    foreign = f"http://localhost:{port}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 1), next_url=foreign), ok(items(2, 1)))
    with make_client(stub, clock) as client:
        pages = collect(client.iter_issue_pages(REPO))
    assert len(pages) == 2
    assert stub.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in stub.requests[1]["headers"]


def test_pagination_that_loops_back_is_a_bad_response(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 1), next_url=page2), ok(items(2, 1), next_url=page2))
    with make_client(stub, clock, prefetch=False) as client, pytest.raises(BadResponseError) as info:
        collect(client.iter_issue_pages(REPO))
    assert "loops back" in str(info.value)
    assert len(stub.requests) == 2


# ---- conditional requests ---------------------------------------------------------------------------


def test_no_change_poll_is_one_304_and_the_cache_survives_a_new_client(stub, clock, tmp_path):
    cache_file = tmp_path / "etags" / "github.json"
    stub.queue(ok(items(1, 3), etag='W/"v1"', headers={"Last-Modified": "Wed, 01 May 2024 00:00:00 GMT"}))
    with make_client(stub, clock, cache=ConditionalCache(cache_file)) as client:
        first = collect(client.iter_issue_pages(REPO, since="2024-05-01T00:00:00Z"))
    assert len(first[0].items) == 3 and first[0].etag == 'W/"v1"'
    assert "if-none-match" not in stub.requests[0]["headers"]
    assert cache_file.exists()

    stub.queue({"status": 304, "headers": {"ETag": 'W/"v1"'}})
    with make_client(stub, clock, cache=ConditionalCache(cache_file)) as client:
        second = collect(client.iter_issue_pages(REPO, since="2024-05-01T00:00:00Z"))
    assert second == [Page(url=second[0].url, number=1, items=[], not_modified=True, etag='W/"v1"',
                           has_next=False)]
    assert client.stats.requests == 1
    assert client.stats.not_modified == 1
    assert client.stats.by_status == {304: 1}
    conditional = stub.requests[1]["headers"]
    assert conditional["if-none-match"] == 'W/"v1"'
    assert conditional["if-modified-since"] == "Wed, 01 May 2024 00:00:00 GMT"


def test_304_chain_continues_with_the_cached_next_url(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    cache = ConditionalCache()
    stub.queue(ok(items(1, 100), next_url=page2, etag='"p1"'), ok(items(101, 5), etag='"p2"'))
    with make_client(stub, clock, cache=cache) as client:
        collect(client.iter_issue_pages(REPO))
    assert cache.get(page2) == {"etag": '"p2"', "last_modified": None, "item_count": 5, "next_url": None}

    stub.queue({"status": 304}, {"status": 304})
    with make_client(stub, clock, cache=cache) as client:
        pages = collect(client.iter_issue_pages(REPO))
    assert [(p.number, p.not_modified, p.has_next, p.etag) for p in pages] == [
        (1, True, True, '"p1"'), (2, True, False, '"p2"')]
    assert stub.paths()[3] == "/repositories/1/issues?page=2"
    assert stub.requests[3]["headers"]["if-none-match"] == '"p2"'
    assert client.stats.not_modified == 2


def test_changed_first_page_refreshes_the_cache_entry(stub, clock):
    cache = ConditionalCache()
    stub.queue(ok(items(1, 1), etag='"a"'), ok(items(1, 2), etag='"b"'), {"status": 304})
    with make_client(stub, clock, cache=cache) as client:
        collect(client.iter_issue_pages(REPO))
        second = collect(client.iter_issue_pages(REPO))
        third = collect(client.iter_issue_pages(REPO))
    assert len(second[0].items) == 2 and not second[0].not_modified
    assert stub.requests[1]["headers"]["if-none-match"] == '"a"'
    assert stub.requests[2]["headers"]["if-none-match"] == '"b"'
    assert third[0].not_modified


def test_page_without_validators_drops_the_stale_entry(stub, clock):
    cache = ConditionalCache()
    stub.queue(ok(items(1, 1), etag='"old"'), ok(items(1, 2)), ok(items(1, 2)))
    with make_client(stub, clock, cache=cache) as client:
        for _ in range(3):
            collect(client.iter_issue_pages(REPO))
    assert len(cache) == 0
    assert stub.requests[1]["headers"]["if-none-match"] == '"old"'
    assert "if-none-match" not in stub.requests[2]["headers"]


def test_abandoned_iteration_commits_no_validators(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    cache = ConditionalCache()
    stub.queue(ok(items(1, 100), next_url=page2, etag='"p1"'), ok(items(101, 1), etag='"p2"'))
    with make_client(stub, clock, cache=cache) as client:
        for _ in client.iter_issue_pages(REPO):
            break
    assert len(cache) == 0


def test_get_json_is_not_conditional(stub, clock):
    cache = ConditionalCache()
    stub.queue(ok({"a": 1}, etag='"x"'), ok({"a": 1}, etag='"x"'))
    with make_client(stub, clock, cache=cache) as client:
        client.get_json("/repos/octo/widgets")
        client.get_json("/repos/octo/widgets")
    assert all("if-none-match" not in r["headers"] for r in stub.requests)


def test_cache_flush_is_atomic_and_reload_round_trips(tmp_path):
    path = tmp_path / "cache.json"
    cache = ConditionalCache(path)
    cache.put("http://h/a", etag='"1"', last_modified=None, item_count=3, next_url="http://h/a?page=2")
    cache.put("http://h/b", etag=None, last_modified="Wed, 01 May 2024 00:00:00 GMT", item_count=0, next_url=None)
    cache.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]
    reloaded = ConditionalCache(path)
    assert reloaded.get("http://h/a") == {"etag": '"1"', "last_modified": None, "item_count": 3,
                                          "next_url": "http://h/a?page=2"}
    assert reloaded.get("http://h/b")["last_modified"] == "Wed, 01 May 2024 00:00:00 GMT"
    assert reloaded.get("http://h/missing") is None
    before = path.stat().st_mtime_ns
    reloaded.flush()
    assert path.stat().st_mtime_ns == before


def test_cache_tolerates_corrupt_and_missing_files(tmp_path, caplog):
    missing = ConditionalCache(tmp_path / "nope" / "cache.json")
    assert len(missing) == 0
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": 1, "entries": {"http://h/a": {"etag": "x"')
    with caplog.at_level(logging.WARNING, logger="issue_assets.github"):
        cache = ConditionalCache(corrupt)
    assert len(cache) == 0
    assert "corrupt" in caplog.text and str(corrupt) in caplog.text
    cache.put("http://h/a", etag='"1"', last_modified=None, item_count=1, next_url=None)
    cache.flush()
    assert ConditionalCache(corrupt).get("http://h/a")["etag"] == '"1"'


def test_cache_evicts_least_recently_used_beyond_max_entries():
    cache = ConditionalCache(max_entries=2)
    for name in "abc":
        if name == "c":
            cache.get("http://h/a")
        cache.put(f"http://h/{name}", etag=f'"{name}"', last_modified=None, item_count=1, next_url=None)
    assert cache.get("http://h/b") is None
    assert cache.get("http://h/a") is not None and cache.get("http://h/c") is not None
    with pytest.raises(ValueError):
        ConditionalCache(max_entries=0)


# ---- rate limits ------------------------------------------------------------------------------------


def test_primary_limit_exhausted_waits_until_reset(stub, clock, caplog):
    reset = int(clock.time()) + 100
    stub.queue({"status": 403, "body": {"message": "API rate limit exceeded for user ID 1."},
                "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}},
               ok(items(1, 2)))
    events = []
    with caplog.at_level(logging.INFO, logger="issue_assets.github"):
        with make_client(stub, clock, on_event=lambda kind, info: events.append((kind, info))) as client:
            pages = collect(client.iter_issue_pages(REPO))
    assert len(pages[0].items) == 2
    assert clock.sleeps == [101.0]
    assert client.stats.rate_limit_waits == 1 and client.stats.retries == 0
    assert client.stats.wait_seconds == 101.0
    assert "rate limit exhausted: waiting 101.0 s until reset" in caplog.text
    waits = [info for kind, info in events if kind == "wait"]
    assert waits and waits[0]["seconds"] == 101.0 and waits[0]["kind"] == "primary"
    assert [kind for kind, _ in events].count("page") == 1


def test_remaining_zero_on_success_waits_before_the_next_request(stub, clock):
    reset = int(clock.time()) + 50
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2,
                  headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}),
               ok(items(101, 1), headers={"x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(reset + 3600)}))
    pages = []
    with make_client(stub, clock) as client:
        for page in client.iter_issue_pages(REPO):
            pages.append(page)
            if page.number == 1:
                time.sleep(0.05)
                assert len(stub.requests) == 1  # no prefetch while the budget is exhausted
                assert clock.sleeps == []
        stub.queue(ok({"full_name": REPO}))
        client.get_repo(REPO)  # remaining was 4999 on page 2: no further wait
    assert [len(p.items) for p in pages] == [100, 1]
    assert clock.sleeps == [51.0]
    assert client.stats.rate_limit_waits == 1


def test_primary_limit_waits_are_bounded(stub, clock):
    reset = int(clock.time()) + 10
    limited = {"status": 429, "body": {"message": "API rate limit exceeded"},
               "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}}
    stub.queue(*[dict(limited) for _ in range(11)])
    with make_client(stub, clock) as client, pytest.raises(GitHubError) as info:
        client.get_repo(REPO)
    assert info.value.status == 429
    assert len(clock.sleeps) == 10
    assert len(stub.requests) == 11
    assert "still rate limited" in str(info.value) and REPO in str(info.value)


def test_secondary_limit_honours_retry_after(stub, clock, caplog):
    stub.queue({"status": 403, "headers": {"retry-after": "7", "x-ratelimit-remaining": "4000"},
                "body": {"message": "You have exceeded a secondary rate limit."}},
               {"status": 429, "headers": {"retry-after": "3"}, "body": {"message": "slow down"}},
               ok(items(1, 1)))
    with caplog.at_level(logging.INFO, logger="issue_assets.github"):
        with make_client(stub, clock) as client:
            pages = collect(client.iter_issue_pages(REPO))
    assert len(pages[0].items) == 1
    assert clock.sleeps == [7.0, 3.0]
    assert client.stats.secondary_waits == 2 and client.stats.retries == 0
    assert "secondary rate limit: waiting 7.0 s (retry-after)" in caplog.text


def test_secondary_limit_without_retry_after_waits_a_minute_and_backs_off(stub, clock, caplog):
    secondary = {"status": 403, "headers": {"x-ratelimit-remaining": "4000"},
                 "body": {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}}
    stub.queue(dict(secondary), dict(secondary), {"status": 429, "body": {"message": "Too Many Requests"}},
               ok({"full_name": REPO}))
    with caplog.at_level(logging.INFO, logger="issue_assets.github"):
        with make_client(stub, clock) as client:
            assert client.get_repo(REPO) == {"full_name": REPO}
    assert clock.sleeps == [60.0, 120.0, 240.0]
    assert client.stats.secondary_waits == 3
    assert "secondary rate limit: waiting 60.0 s" in caplog.text


def test_forbidden_without_rate_limit_fails_at_once(stub, clock):
    stub.queue({"status": 403, "headers": {"x-ratelimit-remaining": "4999"},
                "body": {"message": "Resource not accessible by personal access token"}})
    with make_client(stub, clock) as client, pytest.raises(GitHubError) as info:
        client.get_issue(REPO, 3)
    assert info.value.status == 403
    assert "Resource not accessible" in str(info.value) and REPO in str(info.value)
    assert len(stub.requests) == 1 and clock.sleeps == []


# ---- retries ----------------------------------------------------------------------------------------


def test_transient_failures_are_retried_with_jittered_backoff(stub, clock, caplog):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2),
               {"status": 502, "body": {"message": "Server Error"}},
               {"action": "reset"},
               ok(items(101, 50), action="truncate"),
               ok(b"<html>unicorn</html>"),
               {"status": 503, "body": b""},
               ok(items(101, 50)))
    events = []
    with caplog.at_level(logging.INFO, logger="issue_assets.github"):
        with make_client(stub, clock, max_retries=6, on_event=lambda k, i: events.append((k, i))) as client:
            pages = collect(client.iter_issue_pages(REPO))
    assert [len(p.items) for p in pages] == [100, 50]
    assert pages[1].items == items(101, 50)
    assert client.stats.retries == 5
    assert len(clock.sleeps) == 5
    for attempt, delay in enumerate(clock.sleeps):
        assert 0.0 <= delay <= min(60.0, 1.0 * 2 ** attempt)
    assert "502 from GET /repositories/1/issues page 2: retry 1/6 in" in caplog.text
    assert "ConnectionError from GET /repositories/1/issues page 2: retry 2/6" in caplog.text
    assert "truncated body from GET /repositories/1/issues page 2: retry 3/6" in caplog.text
    assert "invalid JSON from GET /repositories/1/issues page 2: retry 4/6" in caplog.text
    assert "503 from GET /repositories/1/issues page 2: retry 5/6" in caplog.text
    retries = [info for kind, info in events if kind == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert retries[0]["reason"] == "502" and retries[0]["number"] == 2


def test_backoff_is_reproducible_with_a_seed(stub):
    sleeps = []
    for _ in range(2):
        clock = FakeClock()
        stub.queue({"status": 500}, {"status": 500}, {"status": 500}, ok({"ok": True}))
        with make_client(stub, clock, seed=123, backoff_base=2.0, backoff_max=3.0) as client:
            client.get_json("/repos/octo/widgets")
        sleeps.append(clock.sleeps)
    assert sleeps[0] == sleeps[1]
    assert all(0 <= s <= 3.0 for s in sleeps[0])


def test_non_json_after_all_retries_is_a_bad_response_naming_url_and_page(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2), *[ok(b"not json at all") for _ in range(3)])
    with make_client(stub, clock, max_retries=2) as client:
        pages = client.iter_issue_pages(REPO)
        assert len(next(pages).items) == 100
        with pytest.raises(BadResponseError) as info:
            next(pages)
    message = str(info.value)
    assert page2 in message and "page 2" in message and "invalid JSON" in message
    assert info.value.url == page2 and info.value.page == 2
    assert len(stub.requests) == 4 and len(clock.sleeps) == 2


def test_truncated_after_all_retries_is_a_bad_response(stub, clock):
    stub.queue(*[ok(items(1, 20), action="truncate") for _ in range(2)])
    with make_client(stub, clock, max_retries=1) as client, pytest.raises(BadResponseError) as info:
        collect(client.iter_issue_pages(REPO))
    assert "truncated body" in str(info.value)
    assert "page 1" in str(info.value) and "/repos/octo/widgets/issues" in str(info.value)


def test_persistent_5xx_is_a_github_error_with_status(stub, clock):
    stub.queue(*[{"status": 502, "body": {"message": "Server Error"}} for _ in range(3)])
    with make_client(stub, clock, max_retries=2) as client, pytest.raises(GitHubError) as info:
        client.get_repo(REPO)
    assert not isinstance(info.value, BadResponseError)
    assert info.value.status == 502 and "after 2 retries" in str(info.value)


def test_non_array_listing_is_a_bad_response(stub, clock):
    stub.queue(ok({"message": "surprise"}))
    with make_client(stub, clock) as client, pytest.raises(BadResponseError) as info:
        collect(client.iter_issue_pages(REPO))
    assert "expected a JSON array" in str(info.value)


# ---- errors and secrets -----------------------------------------------------------------------------


def test_404_names_the_repository(stub, clock):
    stub.queue({"status": 404, "body": {"message": "Not Found"}})
    with make_client(stub, clock) as client, pytest.raises(NotFoundError) as info:
        collect(client.iter_issue_pages(REPO))
    assert str(info.value) == f"repository {REPO} not found at {stub.url} (404)"
    assert info.value.status == 404 and info.value.url.startswith(stub.url)


def test_401_is_an_auth_error_without_the_token(stub, clock):
    stub.queue({"status": 401, "body": {"message": "Bad credentials"}})
    with make_client(stub, clock) as client, pytest.raises(AuthError) as info:
        client.get_repo(REPO)
    assert str(info.value) == f"GitHub rejected the credentials (401 Bad credentials) for {REPO}"
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


def test_422_carries_githubs_message(stub, clock):
    stub.queue({"status": 422, "body": {"message": "Validation Failed",
                                        "errors": [{"field": "since", "code": "invalid",
                                                    "message": "since must be an ISO 8601 timestamp"}]}})
    with make_client(stub, clock) as client, pytest.raises(GitHubError) as info:
        collect(client.iter_issue_pages(REPO, since="yesterday"))
    assert info.value.status == 422
    assert "Validation Failed" in str(info.value) and "since must be an ISO 8601 timestamp" in str(info.value)


def test_token_never_leaks(stub, clock, tmp_path, caplog):
    cache_file = tmp_path / "cache.json"
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    reset = int(clock.time()) + 5
    stub.queue(ok(items(1, 100), next_url=page2, etag='"e1"'),
               {"status": 502, "body": {"message": f"echoing {TOKEN}"}},
               {"status": 403, "body": {"message": "API rate limit exceeded"},
                "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}},
               ok(items(101, 1), etag='"e2"'),
               {"status": 401, "body": {"message": f"Bad credentials {TOKEN}"}},
               {"status": 404, "body": {"message": "Not Found"}},
               {"status": 418, "body": {"message": f"teapot {TOKEN}"}})
    events = []
    errors = []
    with caplog.at_level(logging.DEBUG):
        client = make_client(stub, clock, cache=ConditionalCache(cache_file),
                             on_event=lambda kind, info: events.append((kind, info)))
        collect(client.iter_issue_pages(REPO))
        for call in (lambda: client.get_repo(REPO), lambda: client.get_repo("octo/other"),
                     lambda: client.get_json("/repos/octo/widgets/teapot")):
            with pytest.raises(GitHubError) as info:
                call()
            errors.append(info.value)
        client.close()
    assert {type(e) for e in errors} == {AuthError, NotFoundError, GitHubError}
    assert "***" in str(errors[0]) and "teapot ***" in str(errors[2])
    texts = [caplog.text, repr(client), str(vars(client)), json.dumps(client.stats.as_dict()),
             repr(events), cache_file.read_text(), *(str(e) for e in errors), *(repr(e) for e in errors),
             *(str(e.url) for e in errors)]
    assert all(TOKEN not in text for text in texts)
    assert "authenticated=True" in repr(client)
    assert stub.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_stats_as_dict_is_json_ready():
    stats = ClientStats(requests=3, by_status={200: 2, 304: 1}, wait_seconds=1.23456)
    assert stats.as_dict() == {"requests": 3, "not_modified": 0, "retries": 0, "rate_limit_waits": 0,
                               "secondary_waits": 0, "wait_seconds": 1.235, "bytes_received": 0,
                               "by_status": {"200": 2, "304": 1}}


# ---- prefetch ---------------------------------------------------------------------------------------


def test_prefetch_overlaps_processing_with_one_request_in_flight(stub, clock):
    urls = [f"{stub.url}/repositories/1/issues?page={n}" for n in range(2, 6)]
    stub.queue(*[ok(items(100 * n, 100), next_url=(urls[n] if n < 4 else None), delay=0.03)
                 for n in range(5)])
    done_at = []
    with make_client(stub, clock) as client:
        for page in client.iter_issue_pages(REPO):
            assert len(page.items) == 100
            time.sleep(0.1)  # the consumer's work on this page
            done_at.append(time.monotonic())
    assert len(done_at) == 5
    assert stub.max_inflight == 1
    for n in range(1, 5):
        # page n+1 was requested while the consumer was still working on page n
        assert stub.requests[n]["at"] < done_at[n - 1]
    assert prefetch_threads() == []


def test_without_prefetch_the_next_request_waits_for_the_consumer(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2), ok(items(101, 3)))
    done_at = []
    with make_client(stub, clock, prefetch=False) as client:
        for _ in client.iter_issue_pages(REPO):
            assert prefetch_threads() == []
            time.sleep(0.02)
            done_at.append(time.monotonic())
    assert stub.requests[1]["at"] > done_at[0]


def test_two_interleaved_iterations_share_one_request_in_flight(stub, clock):
    for kind, path in (("issues", "/repos/octo/widgets/issues"), ("comments", "/repos/octo/widgets/issues/comments")):
        nxt = f"{stub.url}/repositories/1/{kind}"
        stub.queue_for(path, ok(items(1, 100), next_url=f"{nxt}?page=2", delay=0.02))
        stub.queue_for(f"/repositories/1/{kind}", ok(items(101, 1), delay=0.02))
    with make_client(stub, clock) as client:
        issues = client.iter_issue_pages(REPO)
        comments = client.iter_comment_pages(REPO)
        first_issue = next(issues)
        first_comment = next(comments)
        rest = list(issues) + list(comments)
    assert len(first_issue.items) == 100 and len(first_comment.items) == 100
    assert sorted(len(p.items) for p in rest) == [1, 1]
    assert stub.max_inflight == 1


def test_early_break_finishes_the_background_request_and_leaves_no_thread(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2), ok(items(101, 100), delay=0.2))
    with make_client(stub, clock) as client:
        for page in client.iter_issue_pages(REPO):
            assert page.number == 1
            break
        assert prefetch_threads() == []
        assert len(stub.requests) == 2  # the prefetch happened and was discarded

        stub.queue(ok(items(1, 100), next_url=page2), ok(items(101, 100), delay=0.1))
        pages = client.iter_issue_pages(REPO)
        next(pages)
        pages.close()
        assert prefetch_threads() == []
    assert client.stats.requests == 4


def test_error_in_prefetched_page_surfaces_in_the_consumer(stub, clock):
    page2 = f"{stub.url}/repositories/1/issues?page=2"
    stub.queue(ok(items(1, 100), next_url=page2), {"status": 404, "body": {"message": "Not Found"}})
    with make_client(stub, clock) as client:
        pages = client.iter_issue_pages(REPO)
        next(pages)
        with pytest.raises(NotFoundError) as info:
            next(pages)
    assert REPO in str(info.value)
    assert prefetch_threads() == []


# ---- against the replay server ------------------------------------------------------------------------


def replay_data(n_issues: int = 900, n_comments: int = 600) -> tuple[list[dict], list[dict]]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    api = f"https://api.github.com/repos/{REPO}"

    def iso(ts: datetime) -> str:
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")

    issues = []
    for n in range(1, n_issues + 1):
        created = base + timedelta(hours=n)
        issues.append({"id": 10_000 + n, "number": n, "repository_url": api, "url": f"{api}/issues/{n}",
                       "title": f"issue {n}", "state": "open" if n % 3 else "closed",
                       "created_at": iso(created), "updated_at": iso(created + timedelta(minutes=(n * 37) % 900)),
                       "comments": 0})
    comments = []
    for k in range(n_comments):
        created = base + timedelta(hours=k, minutes=5)
        comments.append({"id": 50_000 + k, "issue_url": f"{api}/issues/{1 + k % n_issues}",
                         "created_at": iso(created), "updated_at": iso(created + timedelta(minutes=k % 61)),
                         "body": f"comment {k}"})
    return issues, comments


def sweep(client: GitHubClient, since: str | None = None) -> tuple[list[dict], list[dict]]:
    issues = [item for page in client.iter_issue_pages(REPO, since=since) for item in page.items]
    comments = [item for page in client.iter_comment_pages(REPO, since=since) for item in page.items]
    return issues, comments


def test_replay_sweep_under_faults_and_tiny_rate_limit_matches_a_clean_sweep():
    replay = pytest.importorskip("issue_assets.github.replay")
    issues, comments = replay_data(2000, 1000)
    with replay.ReplayServer(issues, comments, token=TOKEN) as clean_server:
        with GitHubClient(clean_server.url, TOKEN, clock=FakeClock()) as client:
            clean = sweep(client)
    assert [i["id"] for i in clean[0]] == [i["id"] for i in sorted(
        issues, key=lambda i: (i["updated_at"], i["id"]))]
    assert sorted(c["id"] for c in clean[1]) == sorted(c["id"] for c in comments)
    assert client.stats.retries == 0 and client.stats.rate_limit_waits == 0

    clock = FakeClock()
    with replay.ReplayServer(issues, comments, fault_rate=0.1, seed=6, rate_limit=4, rate_limit_window=60.0,
                             secondary_limit_rate=0.1, token=TOKEN, clock=clock) as server:
        with GitHubClient(server.url, TOKEN, clock=clock, seed=1, max_retries=10) as client:
            faulty = sweep(client)
        served = server.stats()
    assert faulty == clean
    # this seed injects every fault kind and secondary limits; 30 pages under 4 requests/minute
    assert set(served["faults_by_kind"]) == {"502", "reset", "truncated"}
    assert client.stats.retries == served["faults"]
    assert client.stats.secondary_waits == served["secondary_limited"] > 0
    # the client waits for the reset as soon as a response says the budget is spent
    assert client.stats.rate_limit_waits >= 30 // 4 - 1
    assert clock.sleeps and all(s >= 0 for s in clock.sleeps)


def test_replay_no_change_poll_costs_one_304_across_clients(tmp_path):
    replay = pytest.importorskip("issue_assets.github.replay")
    issues, comments = replay_data(250, 50)
    cursor = max(i["updated_at"] for i in issues[:-20])
    cache_file = tmp_path / "etag-cache.json"
    with replay.ReplayServer(issues, comments, token=TOKEN) as server:
        with GitHubClient(server.url, TOKEN, cache=ConditionalCache(cache_file), clock=FakeClock()) as client:
            first = list(client.iter_issue_pages(REPO, since=cursor))
            full = list(client.iter_issue_pages(REPO))
        assert len(first) == 1 and 0 < len(first[0].items) < 100 and not first[0].not_modified
        assert len(full) == 3
        server.reset_stats()

        with GitHubClient(server.url, TOKEN, cache=ConditionalCache(cache_file), clock=FakeClock()) as client:
            poll = list(client.iter_issue_pages(REPO, since=cursor))
            assert client.stats.requests == 1
            again = list(client.iter_issue_pages(REPO))
        assert [p.not_modified for p in poll] == [True]
        assert [(p.number, p.not_modified) for p in again] == [(1, True), (2, True), (3, True)]
        assert server.stats()["by_status"] == {"304": 4}

        server.add_issues([{**issues[0], "title": "edited", "updated_at": "2030-01-01T00:00:00Z"}])
        with GitHubClient(server.url, TOKEN, cache=ConditionalCache(cache_file), clock=FakeClock()) as client:
            changed = list(client.iter_issue_pages(REPO, since=cursor))
        assert changed[0].not_modified is False
        assert changed[0].items[-1]["title"] == "edited"


def test_replay_errors_name_the_repository():
    replay = pytest.importorskip("issue_assets.github.replay")
    issues, comments = replay_data(3, 1)
    with replay.ReplayServer(issues, comments, token=TOKEN) as server:
        url = server.url
        with GitHubClient(server.url, TOKEN, clock=FakeClock()) as client:
            assert client.get_issue(REPO, 2)["number"] == 2
            with pytest.raises(NotFoundError) as missing:
                client.get_repo("octo/absent")
        with GitHubClient(server.url, "ghp_wrong", clock=FakeClock()) as client:
            with pytest.raises(AuthError) as denied:
                list(client.iter_issue_pages(REPO))
    assert str(missing.value) == f"repository octo/absent not found at {url} (404)"
    assert str(denied.value) == f"GitHub rejected the credentials (401 Bad credentials) for {REPO}"


def test_max_wait_raises_instead_of_sleeping_until_the_reset(stub, clock):
    reset = int(clock.time()) + 1800
    stub.queue({"status": 403, "body": {"message": "API rate limit exceeded for user ID 1."},
                "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}})
    with make_client(stub, clock, max_wait=30.0) as client, pytest.raises(RateLimitedError) as info:
        collect(client.iter_issue_pages(REPO))
    assert clock.sleeps == []
    assert info.value.seconds == 1801.0
    assert "max_wait of 30 s" in str(info.value) and f"/repos/{REPO}/issues" in str(info.value)
    assert client.stats.rate_limit_waits == 0 and len(stub.requests) == 1


def test_max_wait_keeps_the_reset_for_the_next_request_and_allows_short_waits(stub, clock):
    reset = int(clock.time()) + 600
    stub.queue(ok({"full_name": REPO}, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}),
               {"status": 429, "headers": {"retry-after": "5"}, "body": {"message": "slow down"}},
               ok({"full_name": REPO}))
    with make_client(stub, clock, max_wait=60.0) as client:
        client.get_repo(REPO)
        for _ in range(2):  # the exhausted budget is remembered: no request goes out before the reset
            with pytest.raises(RateLimitedError):
                client.get_repo(REPO)
        assert len(stub.requests) == 1
        clock.sleep(600)
        assert client.get_repo(REPO)["full_name"] == REPO  # 5 s secondary wait is within max_wait
    assert clock.sleeps == [600, 1.0, 5.0]  # the reset itself (+1 s margin), then retry-after
    with pytest.raises(ValueError, match="max_wait"):
        GitHubClient("http://127.0.0.1:9", max_wait=-1)
