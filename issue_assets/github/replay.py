"""A GitHub-compatible REST server that replays issue and comment exports.

Tests, the demo and benchmarks talk to it exactly as they would to api.github.com: paging with
`Link` headers, `since` cursors, ETag/`If-None-Match` and `If-Modified-Since`, primary and secondary
rate limits, and injected faults (502s, connection resets, truncated bodies) drawn from a seeded RNG.

Items are kept as pre-serialized JSON bytes with a small sort record each, so a page is one
`b",".join(...)`; the sorted orders are built lazily per repository and rebuilt after a change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from .clock import Clock, SystemClock
from .export import ExportError, iter_export, reading, repo_of

DOCS = "https://docs.github.com/rest"
ISSUE_SORTS = ("created", "updated", "comments")
COMMENT_SORTS = ("created", "updated")
STATES = ("open", "closed", "all")
DIRECTIONS = ("asc", "desc")
FAULT_KINDS = ("502", "reset", "truncated")
_FILTER_CACHE_SIZE = 32


def _epoch(value) -> float | None:
    """Seconds since the epoch of an ISO-8601 timestamp (naive = UTC); None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _number_of(url) -> int | None:
    """The issue number at the end of an issue_url ('.../issues/42')."""
    if not isinstance(url, str):
        return None
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _dumps(item: dict) -> bytes:
    # ASCII escapes keep lone surrogates (from surrogateescape-decoded exports) representable.
    return json.dumps(item, separators=(",", ":")).encode("ascii")


def _tiebreak(value) -> int:
    return value if isinstance(value, int) else 0


def _iter_export_raw(path: str | Path) -> Iterator[tuple[dict, bytes | None]]:
    """Like iter_export, but also yields each JSON-lines object's own bytes (None when re-encoding is needed).

    Serving the stored line saves re-encoding hundreds of megabytes at load time.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f"export file not found: {path}")
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    lineno = 0
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh, reading(path, lambda: "at its start"):
        head = fh.read(4096).lstrip()
        if head.startswith(b"["):
            for obj in iter_export(path):
                yield obj, None
            return
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh, reading(path, lambda: f"after line {lineno}"):
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            raw: bytes | None = line
            try:
                obj = json.loads(line)
            except UnicodeDecodeError:
                raw = None
                obj = None
            except json.JSONDecodeError as exc:
                raise ExportError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if obj is None:
                try:
                    obj = json.loads(line.decode("utf-8", "surrogateescape"))
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if isinstance(obj, list):
                for sub in obj:
                    yield sub, None
            else:
                yield obj, raw


class _Issue:
    __slots__ = ("key", "id", "number", "state", "created", "updated", "comments", "body")

    def __init__(self, item: dict, raw: bytes | None = None):
        self.id = item.get("id")
        self.number = item.get("number") if isinstance(item.get("number"), int) else None
        self.key = self.id if self.id is not None else ("number", self.number)
        self.state = item.get("state")
        created = _epoch(item.get("created_at"))
        updated = _epoch(item.get("updated_at"))
        self.created = created if created is not None else (updated or 0.0)
        self.updated = updated if updated is not None else self.created
        comments = item.get("comments")
        self.comments = comments if isinstance(comments, int) else 0
        self.body = raw if raw is not None else _dumps(item)


class _Comment:
    __slots__ = ("id", "number", "created", "updated", "body")

    def __init__(self, item: dict, raw: bytes | None = None):
        self.id = item.get("id")
        self.number = _number_of(item.get("issue_url"))
        created = _epoch(item.get("created_at"))
        updated = _epoch(item.get("updated_at"))
        self.created = created if created is not None else (updated or 0.0)
        self.updated = updated if updated is not None else self.created
        self.body = raw if raw is not None else _dumps(item)


def _sort_key(sort: str):
    if sort == "created":
        return lambda e: (e.created, _tiebreak(e.id))
    if sort == "updated":
        return lambda e: (e.updated, _tiebreak(e.id))
    return lambda e: (e.comments, _tiebreak(e.id))


class _View:
    """An ascending run entries[start:] of one sorted order, paged in either direction."""

    __slots__ = ("entries", "start")

    def __init__(self, entries: list, start: int = 0):
        self.entries = entries
        self.start = start

    def __len__(self) -> int:
        return len(self.entries) - self.start

    def page(self, page: int, per_page: int, descending: bool) -> list:
        n = len(self)
        lo, hi = (page - 1) * per_page, page * per_page
        if lo >= n:
            return []
        if descending:
            chunk = self.entries[self.start + max(0, n - hi): self.start + n - lo]
            chunk.reverse()
            return chunk
        return self.entries[self.start + lo: self.start + min(hi, n)]


class _Repository:
    """Everything served for one repository, with lazily built sort orders."""

    def __init__(self, full_name: str):
        self.full_name = full_name
        self.issues: dict = {}
        self.by_number: dict[int, dict] = {}
        self.comments: dict = {}
        self._issue_orders: dict = {}
        self._comment_orders: dict = {}
        self._comments_by_number: dict | None = None
        self._filtered: OrderedDict = OrderedDict()

    def put_issue(self, entry: _Issue) -> None:
        old = self.issues.get(entry.key)
        if old is not None and old.number is not None:
            same = self.by_number.get(old.number)
            if same is not None:
                same.pop(old.key, None)
                if not same:
                    del self.by_number[old.number]
        self.issues[entry.key] = entry
        if entry.number is not None:
            self.by_number.setdefault(entry.number, {})[entry.key] = entry
        self._issue_orders.clear()
        self._filtered.clear()

    def put_comment(self, entry: _Comment) -> None:
        self.comments[entry.id] = entry
        self._comment_orders.clear()
        self._comments_by_number = None
        self._filtered.clear()

    def issue(self, number: int) -> _Issue | None:
        same = self.by_number.get(number)
        if not same:
            return None
        return max(same.values(), key=lambda e: (e.updated, _tiebreak(e.id)))

    def _issue_order(self, state: str, sort: str) -> tuple[list, list]:
        cached = self._issue_orders.get((state, sort))
        if cached is None:
            entries = [e for e in self.issues.values() if state == "all" or e.state == state]
            entries.sort(key=_sort_key(sort))
            cached = (entries, [e.updated for e in entries] if sort == "updated" else [])
            self._issue_orders[(state, sort)] = cached
        return cached

    def _comment_order(self, sort: str) -> tuple[list, list]:
        cached = self._comment_orders.get(sort)
        if cached is None:
            entries = sorted(self.comments.values(), key=_sort_key(sort))
            cached = (entries, [e.updated for e in entries] if sort == "updated" else [])
            self._comment_orders[sort] = cached
        return cached

    def _since(self, cache_key, order: tuple[list, list], since: float | None) -> _View:
        entries, updated_keys = order
        if since is None:
            return _View(entries)
        if updated_keys:
            return _View(entries, bisect_left(updated_keys, since))
        hit = self._filtered.get(cache_key)
        if hit is None:
            hit = [e for e in entries if e.updated >= since]
            self._filtered[cache_key] = hit
            while len(self._filtered) > _FILTER_CACHE_SIZE:
                self._filtered.popitem(last=False)
        else:
            self._filtered.move_to_end(cache_key)
        return _View(hit)

    def issue_view(self, state: str, sort: str, since: float | None) -> _View:
        return self._since(("issues", state, sort, since), self._issue_order(state, sort), since)

    def comment_view(self, sort: str, since: float | None) -> _View:
        return self._since(("comments", sort, since), self._comment_order(sort), since)

    def issue_comment_view(self, number: int, since: float | None) -> _View:
        if self._comments_by_number is None:
            grouped: dict[int, list] = {}
            for entry in self._comment_order("created")[0]:
                if entry.number is not None:
                    grouped.setdefault(entry.number, []).append(entry)
            self._comments_by_number = grouped
        entries = self._comments_by_number.get(number, [])
        if since is None:
            return _View(entries)
        return _View([e for e in entries if e.updated >= since])

    def summary(self) -> dict:
        owner, name = self.full_name.split("/", 1)
        repo_id = zlib.crc32(self.full_name.lower().encode())
        return {
            "id": repo_id,
            "node_id": f"R_replay{repo_id}",
            "name": name,
            "full_name": self.full_name,
            "owner": {"login": owner, "id": zlib.crc32(owner.lower().encode()), "type": "Organization"},
            "private": False,
            "has_issues": True,
            "open_issues_count": sum(1 for e in self.issues.values() if e.state == "open"),
        }


class _ValidationError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class _Response:
    __slots__ = ("status", "body", "headers", "endpoint")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None, endpoint: str = "other"):
        self.status = status
        self.body = body
        self.headers = headers or []
        self.endpoint = endpoint


def _json(status: int, obj, endpoint: str, headers: list | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode(), headers, endpoint)


def _not_found(endpoint: str) -> _Response:
    return _json(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"}, endpoint)


def _param_int(params: dict, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ValidationError(name, f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise _ValidationError(name, f"{name} must be at least 1, got {value}")
    return value


def _param_choice(params: dict, name: str, choices: tuple, default: str) -> str:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise _ValidationError(name, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _param_since(params: dict) -> float | None:
    raw = params.get("since")
    if raw is None or raw == "":
        return None
    value = _epoch(raw.replace(" ", "+"))
    if value is None:
        raise _ValidationError("since", f"since must be an ISO 8601 timestamp, got {raw!r}")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHubReplay/1.0"

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.replay._track(self.request, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.replay._track(self.request, False)

    def do_GET(self):
        self.server.replay._dispatch(self, "GET")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.replay._dispatch(self, "POST")

    def log_message(self, format, *args):
        pass


class ReplayServer:
    """Serve issue and comment exports over the GitHub REST protocol on a local port."""

    def __init__(self, issues: Iterable[dict] = (), comments: Iterable[dict] = (), *, host: str = "127.0.0.1",
                 port: int = 0, latency_ms: float = 0.0, fault_rate: float = 0.0, seed: int = 0,
                 rate_limit: int = 5000, rate_limit_window: float = 3600.0, secondary_limit_rate: float = 0.0,
                 secondary_retry_after: int = 1, token: str | None = None, clock: Clock | None = None):
        self.host = host
        self.port = port
        self.latency_ms = float(latency_ms)
        self.fault_rate = float(fault_rate)
        self.seed = seed
        self.rate_limit = int(rate_limit)
        self.rate_limit_window = float(rate_limit_window)
        self.secondary_limit_rate = float(secondary_limit_rate)
        self.secondary_retry_after = int(secondary_retry_after)
        self.token = token
        self.clock: Clock = clock or SystemClock()
        self.skipped = 0
        self._data_lock = threading.RLock()
        self._limit_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._connections: set = set()
        self._repos: dict[str, _Repository] = {}
        self._fault_rng = random.Random(f"fault:{seed}")
        self._secondary_rng = random.Random(f"secondary:{seed}")
        self._fault_count = 0
        self._secondary_count = 0
        self._window_start: float | None = None
        self._used = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._live_stop = threading.Event()
        self._live_threads: list[threading.Thread] = []
        self.live: dict[str, object] = {}
        self.reset_stats()
        self.add_issues(issues)
        self.add_comments(comments)

    @classmethod
    def from_files(cls, data_files: Iterable[str | Path], comments_files: Iterable[str | Path] = (),
                   **kwargs) -> ReplayServer:
        server = cls(**kwargs)
        for path in data_files:
            server._add(_iter_export_raw(path), _Issue)
        for path in comments_files:
            server._add(_iter_export_raw(path), _Comment)
        return server

    # ---- data -------------------------------------------------------------------------------

    def _repo(self, full_name: str, create: bool = False) -> _Repository | None:
        key = full_name.lower()
        repo = self._repos.get(key)
        if repo is None and create:
            repo = self._repos[key] = _Repository(full_name)
        return repo

    def add_issues(self, items: Iterable[dict]) -> None:
        """Insert issues/pull requests, replacing any stored item with the same (repository, id)."""
        self._add(((item, None) for item in items), _Issue)

    def add_comments(self, items: Iterable[dict]) -> None:
        """Insert comments, replacing any stored comment with the same (repository, id)."""
        self._add(((item, None) for item in items), _Comment)

    def _add(self, pairs: Iterable[tuple[dict, bytes | None]], kind: type) -> None:
        """Items without a repository URL (or comments without an id) cannot be served: counted in skipped."""
        for item, raw in pairs:
            name = repo_of(item) if isinstance(item, dict) else None
            if name is None or (kind is _Comment and item.get("id") is None):
                self.skipped += 1
                continue
            entry = kind(item, raw)
            with self._data_lock:
                repo = self._repo(name, create=True)
                if kind is _Issue:
                    repo.put_issue(entry)
                else:
                    repo.put_comment(entry)

    @property
    def repos(self) -> list[str]:
        with self._data_lock:
            return sorted(r.full_name for r in self._repos.values())

    def counts(self) -> tuple[int, int, int]:
        """(repositories, issues, comments) currently served."""
        with self._data_lock:
            return (len(self._repos), sum(len(r.issues) for r in self._repos.values()),
                    sum(len(r.comments) for r in self._repos.values()))

    # ---- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is not None:
            host, port = self._httpd.server_address[:2]
            return f"http://{host}:{port}"
        if self.port:
            return f"http://{self.host}:{self.port}"
        raise RuntimeError("the replay server binds a free port on start(); start it before reading url")

    def start(self) -> ReplayServer:
        if self._httpd is not None:
            return self
        httpd = _Server((self.host, self.port), _Handler)
        httpd.replay = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"replay-server-{httpd.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def start_live(self, repo: str, *, interval: float = 20.0, seed: int = 0):
        """Keep adding activity to `repo` (new issues, comments, closes stamped with the current time), one
        event every `interval` seconds on average, until stop(). Returns the LiveActivity (its `events`)."""
        from .simulate import LiveActivity

        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        with self._data_lock:
            served = self._repo(repo)
            if served is None:
                raise ValueError(f"the replay server does not serve {repo}")
            issues = [json.loads(e.body) for e in served.issues.values()]
            comments = [{"id": e.id} for e in served.comments.values() if isinstance(e.id, int)]
        live = self.live[served.full_name] = LiveActivity(served.full_name, issues, comments, seed=seed)
        rng = random.Random(f"live-timing:{repo}:{seed}")
        self._live_stop.clear()

        def run() -> None:
            while not self._live_stop.wait(interval * rng.uniform(0.5, 1.5)):
                with self._data_lock:
                    new_issues, new_comments = live.step(self.clock.time())
                    self.add_issues(new_issues)
                    self.add_comments(new_comments)

        thread = threading.Thread(target=run, name=f"replay-live-{repo}", daemon=True)
        thread.start()
        self._live_threads.append(thread)
        return live

    def stop(self) -> None:
        self._live_stop.set()
        for thread in self._live_threads:
            thread.join(timeout=5)
        self._live_threads.clear()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._conn_lock:
            open_connections = list(self._connections)
            self._connections.clear()
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _track(self, conn, opened: bool) -> None:
        with self._conn_lock:
            if opened:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
        if opened:
            with self._stats_lock:
                self._stats["connections"] += 1

    # ---- stats ---------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats = {
                "requests": 0, "by_endpoint": {}, "by_status": {}, "by_endpoint_status": {},
                "faults": 0, "faults_by_kind": {}, "rate_limited": 0, "secondary_limited": 0,
                "connections": 0,
            }

    def stats(self) -> dict:
        """Requests served (API only, not /_replay/*) and TCP connections accepted since the last reset.

        Connection resets and truncated bodies are counted in faults/faults_by_kind, not in by_status.
        """
        with self._stats_lock:
            return json.loads(json.dumps(self._stats))

    def _record(self, endpoint: str, status: str | None, fault: str | None = None,
                rate_limited: bool = False, secondary: bool = False) -> None:
        with self._stats_lock:
            s = self._stats
            s["requests"] += 1
            s["by_endpoint"][endpoint] = s["by_endpoint"].get(endpoint, 0) + 1
            if status is not None:
                s["by_status"][status] = s["by_status"].get(status, 0) + 1
                per = s["by_endpoint_status"].setdefault(endpoint, {})
                per[status] = per.get(status, 0) + 1
            if fault is not None:
                s["faults"] += 1
                s["faults_by_kind"][fault] = s["faults_by_kind"].get(fault, 0) + 1
            if rate_limited:
                s["rate_limited"] += 1
            if secondary:
                s["secondary_limited"] += 1

    # ---- rate limits ---------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if self._window_start is None or now >= self._window_start + self.rate_limit_window:
            self._window_start = now
            self._used = 0

    def _rate_snapshot(self) -> dict:
        now = self.clock.time()
        with self._limit_lock:
            if self._window_start is None or now >= self._window_start + self.rate_limit_window:
                used, reset = 0, now + self.rate_limit_window
            else:
                used, reset = self._used, self._window_start + self.rate_limit_window
        return {"limit": self.rate_limit, "used": used, "remaining": max(0, self.rate_limit - used),
                "reset": int(math.ceil(reset)), "resource": "core"}

    def rate_limit_status(self) -> dict:
        """The primary budget now: limit, used, remaining, reset (what GET /rate_limit answers)."""
        return self._rate_snapshot()

    def _rate_headers(self) -> list:
        snap = self._rate_snapshot()
        return [("x-ratelimit-limit", str(snap["limit"])), ("x-ratelimit-remaining", str(snap["remaining"])),
                ("x-ratelimit-used", str(snap["used"])), ("x-ratelimit-reset", str(snap["reset"])),
                ("x-ratelimit-resource", "core")]

    def _reserve(self) -> bool:
        """Take one request from the primary budget; False when it is exhausted."""
        now = self.clock.time()
        with self._limit_lock:
            self._refill(now)
            if self._used >= self.rate_limit:
                return False
            self._used += 1
            return True

    def _refund(self) -> None:
        with self._limit_lock:
            self._used = max(0, self._used - 1)

    def _secondary_hit(self) -> int | None:
        if self.secondary_limit_rate <= 0:
            return None
        with self._limit_lock:
            if self._secondary_rng.random() >= self.secondary_limit_rate:
                return None
            self._secondary_count += 1
            return 403 if self._secondary_count % 2 == 1 else 429

    def _fault(self) -> str | None:
        if self.fault_rate <= 0:
            return None
        with self._limit_lock:
            if self._fault_rng.random() >= self.fault_rate:
                return None
            kind = FAULT_KINDS[self._fault_count % len(FAULT_KINDS)]
            self._fault_count += 1
            return kind

    # ---- HTTP ----------------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler, method: str) -> None:
        handler.arrived = time.perf_counter()
        path, _, query = handler.path.partition("?")
        path = path.rstrip("/") or "/"
        if path.startswith("/_replay"):
            self._send(handler, self._admin(method, path))
            return
        endpoint, route = self._route(path)
        if method != "GET":
            resp = _json(404, {"message": "Not Found", "documentation_url": DOCS}, endpoint)
            self._finish(handler, resp)
            return
        if self.token is not None and not self._authorized(handler.headers.get("Authorization")):
            resp = _json(401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"},
                         endpoint)
            self._finish(handler, resp)
            return
        if endpoint == "rate_limit":
            snap = self._rate_snapshot()
            self._finish(handler, _json(200, {"resources": {"core": snap}, "rate": snap}, endpoint))
            return
        if not self._reserve():
            msg = ("API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests "
                   "get a higher rate limit. Check out the documentation for more details.)")
            resp = _json(403, {"message": msg, "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"},
                         endpoint)
            self._finish(handler, resp, rate_limited=True)
            return
        secondary = self._secondary_hit()
        if secondary is not None:
            self._refund()
            msg = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                   "If you reach out to GitHub Support for help, please include the request ID.")
            resp = _json(secondary, {"message": msg, "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"},
                         endpoint, [("retry-after", str(self.secondary_retry_after))])
            self._finish(handler, resp, secondary=True)
            return
        fault = self._fault()
        if fault in ("502", "reset"):
            self._fault_response(handler, endpoint, fault, None)
            return
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            resp = route(params, handler, query) if route is not None else _not_found(endpoint)
        except _ValidationError as exc:
            resp = _json(422, {"message": "Validation Failed",
                               "errors": [{"resource": "Issue", "field": exc.field, "code": "invalid",
                                           "message": exc.message}],
                               "documentation_url": DOCS, "status": "422"}, endpoint)
        resp.endpoint = endpoint
        if fault == "truncated":
            self._fault_response(handler, endpoint, fault, resp)
            return
        if resp.status == 304:
            self._refund()
        self._finish(handler, resp)

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() in ("bearer", "token") and value.strip() == self.token

    def _route(self, path: str):
        parts = path.strip("/").split("/")
        if parts == ["rate_limit"]:
            return "rate_limit", None
        if len(parts) < 3 or parts[0] != "repos":
            return "other", None
        with self._data_lock:
            repo = self._repo(f"{parts[1]}/{parts[2]}")
        rest = parts[3:]
        if not rest:
            name = "repo"
        elif rest == ["issues"]:
            name = "issues"
        elif rest == ["issues", "comments"]:
            name = "comments"
        elif len(rest) == 2 and rest[0] == "issues" and rest[1].isdigit():
            name = "issue"
        elif len(rest) == 3 and rest[0] == "issues" and rest[1].isdigit() and rest[2] == "comments":
            name = "issue_comments"
        else:
            return "other", None
        if repo is None:
            return name, None
        if name == "repo":
            return name, lambda params, handler, query: self._conditional(
                handler, json.dumps(repo.summary()).encode(), None, [], name)
        if name == "issues":
            return name, lambda params, handler, query: self._list_issues(repo, params, handler, query, path)
        if name == "comments":
            return name, lambda params, handler, query: self._list_comments(repo, params, handler, query, path)
        number = int(rest[1])
        if name == "issue":
            return name, lambda params, handler, query: self._single_issue(repo, number, handler)
        return name, lambda params, handler, query: self._issue_comments(repo, number, params, handler,
                                                                         query, path)

    def _list_issues(self, repo: _Repository, params: dict, handler, query: str, path: str) -> _Response:
        state = _param_choice(params, "state", STATES, "open")
        sort = _param_choice(params, "sort", ISSUE_SORTS, "created")
        direction = _param_choice(params, "direction", DIRECTIONS, "desc")
        per_page = min(100, _param_int(params, "per_page", 30))
        page = _param_int(params, "page", 1)
        since = _param_since(params)
        with self._data_lock:
            view = repo.issue_view(state, sort, since)
            total = len(view)
            chunk = view.page(page, per_page, direction == "desc")
        return self._page(handler, chunk, total, page, per_page, query, path, "issues")

    def _list_comments(self, repo: _Repository, params: dict, handler, query: str, path: str) -> _Response:
        sort = _param_choice(params, "sort", COMMENT_SORTS, "created")
        direction = _param_choice(params, "direction", DIRECTIONS, "asc")
        if not params.get("sort"):
            direction = "asc"  # GitHub: direction is ignored without the sort parameter.
        per_page = min(100, _param_int(params, "per_page", 30))
        page = _param_int(params, "page", 1)
        since = _param_since(params)
        with self._data_lock:
            view = repo.comment_view(sort, since)
            total = len(view)
            chunk = view.page(page, per_page, direction == "desc")
        return self._page(handler, chunk, total, page, per_page, query, path, "comments")

    def _issue_comments(self, repo: _Repository, number: int, params: dict, handler, query: str,
                        path: str) -> _Response:
        per_page = min(100, _param_int(params, "per_page", 30))
        page = _param_int(params, "page", 1)
        since = _param_since(params)
        with self._data_lock:
            view = repo.issue_comment_view(number, since)
            if since is None and not len(view) and repo.issue(number) is None:
                return _not_found("issue_comments")
            total = len(view)
            chunk = view.page(page, per_page, False)
        return self._page(handler, chunk, total, page, per_page, query, path, "issue_comments")

    def _single_issue(self, repo: _Repository, number: int, handler) -> _Response:
        with self._data_lock:
            entry = repo.issue(number)
        if entry is None:
            return _not_found("issue")
        return self._conditional(handler, entry.body, entry.updated, [], "issue")

    def _page(self, handler, chunk: list, total: int, page: int, per_page: int, query: str, path: str,
              endpoint: str) -> _Response:
        body = b"[" + b",".join(e.body for e in chunk) + b"]"
        headers = []
        link = self._link(handler, path, query, page, max(1, -(-total // per_page)), total)
        if link:
            headers.append(("Link", link))
        last_modified = max((e.updated for e in chunk), default=None)
        return self._conditional(handler, body, last_modified, headers, endpoint)

    def _link(self, handler, path: str, query: str, page: int, last: int, total: int) -> str:
        if total == 0 or (last == 1 and page == 1):
            return ""
        host = handler.headers.get("Host")
        base = f"http://{host}" if host else self.url
        pairs = parse_qsl(query, keep_blank_values=True)

        def url(n: int) -> str:
            out, seen = [], False
            for k, v in pairs:
                if k == "page":
                    if not seen:
                        out.append(("page", str(n)))
                        seen = True
                else:
                    out.append((k, v))
            if not seen:
                out.append(("page", str(n)))
            return f"{base}{path}?{urlencode(out)}"

        rels = []
        if page > 1:
            rels.append((min(page - 1, last), "prev"))
        if page < last:
            rels.append((page + 1, "next"))
            rels.append((last, "last"))
        if page > 1:
            rels.append((1, "first"))
        return ", ".join(f'<{url(n)}>; rel="{rel}"' for n, rel in rels)

    def _conditional(self, handler, body: bytes, last_modified: float | None, headers: list,
                     endpoint: str) -> _Response:
        link = next((v for k, v in headers if k == "Link"), "")
        digest = hashlib.md5(body, usedforsecurity=False)
        digest.update(link.encode())
        etag = f'W/"{digest.hexdigest()}"'
        headers = [*headers, ("ETag", etag), ("Cache-Control", "private, max-age=60, s-maxage=60"),
                   ("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")]
        if last_modified is not None:
            headers.append(("Last-Modified", _http_date(last_modified)))
        inm = handler.headers.get("If-None-Match")
        if inm is not None:
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            if "*" in tags or etag.removeprefix("W/") in tags:
                return _Response(304, b"", headers, endpoint)
        else:
            ims = handler.headers.get("If-Modified-Since")
            if ims and last_modified is not None:
                try:
                    since = parsedate_to_datetime(ims).timestamp()
                except (TypeError, ValueError):
                    since = None
                if since is not None and math.floor(last_modified) <= since:
                    return _Response(304, b"", headers, endpoint)
        return _Response(200, body, headers, endpoint)

    def _admin(self, method: str, path: str) -> _Response:
        if path == "/_replay/stats" and method == "GET":
            return _json(200, self.stats(), "admin")
        if path == "/_replay/reset" and method == "POST":
            self.reset_stats()
            return _json(200, {"reset": True}, "admin")
        return _not_found("admin")

    # ---- writing -------------------------------------------------------------------------------

    def _delay(self, handler) -> None:
        """Answer `latency_ms` after the request arrived: the latency is the API's response time, so the
        server's own work to build the page is part of it, as it is on GitHub."""
        if self.latency_ms > 0:
            arrived = getattr(handler, "arrived", time.perf_counter())
            time.sleep(max(0.0, self.latency_ms / 1000.0 - (time.perf_counter() - arrived)))

    def _finish(self, handler, resp: _Response, rate_limited: bool = False, secondary: bool = False) -> None:
        self._delay(handler)
        self._record(resp.endpoint, str(resp.status), rate_limited=rate_limited, secondary=secondary)
        self._send(handler, resp, self._rate_headers())

    def _fault_response(self, handler, endpoint: str, kind: str, resp: _Response | None) -> None:
        self._delay(handler)
        self._record(endpoint, "502" if kind == "502" else None, fault=kind)
        if kind == "502":
            body = json.dumps({"message": "Server Error", "documentation_url": DOCS, "status": "502"}).encode()
            self._send(handler, _Response(502, body, [], endpoint), self._rate_headers())
            return
        handler.close_connection = True
        conn = handler.connection
        if kind == "truncated":
            if resp is None or resp.status == 304 or len(resp.body) < 2:
                resp = _Response(200, b'[{"replay":"truncated"}]', [], endpoint)
            body = resp.body
            head = self._head(resp.status, resp.headers + self._rate_headers(), len(body))
            try:
                handler.wfile.write(head + body[: len(body) // 2])
                handler.wfile.flush()
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        conn.close()

    def _head(self, status: int, headers: list, length: int | None) -> bytes:
        reason = BaseHTTPRequestHandler.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"Date: {_http_date(self.clock.time())}",
                 "Server: GitHubReplay/1.0"]
        if status != 304:
            lines.append("Content-Type: application/json; charset=utf-8")
            lines.append(f"Content-Length: {length or 0}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, handler, resp: _Response, extra_headers: list | None = None) -> None:
        body = b"" if resp.status == 304 else resp.body
        head = self._head(resp.status, resp.headers + (extra_headers or []), len(body))
        try:
            handler.wfile.write(head + body)
        except OSError:
            handler.close_connection = True


def serve(data_files: Iterable[str | Path], comments_files: Iterable[str | Path] = (), host: str = "127.0.0.1",
          port: int = 8000, *, live_interval: float | None = None, live_seed: int = 0, **kwargs) -> None:
    """Load the exports, serve them until Ctrl-C or SIGTERM; prints the listening line first. With
    `live_interval`, every repository keeps getting new activity (see `start_live`)."""
    server = ReplayServer.from_files(list(data_files), list(comments_files), host=host, port=port, **kwargs)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    if live_interval:
        for repo in server.repos:
            server.start_live(repo, interval=live_interval, seed=live_seed)
    n_repos, n_issues, n_comments = server.counts()
    live = f"; live: an event every {live_interval:g} s per repository" if live_interval else ""
    print(f"replay server listening on {server.url} ({n_repos} repos, {n_issues} issues, {n_comments} comments)"
          f"{live}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        sys.stdout.flush()
