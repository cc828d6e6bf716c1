"""The HTTP prediction service: FastAPI over the shared scoring path (`scoring.predict`).

Routes: POST /predict; GET /repos/{owner}/{repo}/issues/{number}/prediction (fetched from the
repository's source, `ingest.sources`); GET /repos/{owner}/{repo}/predictions[.csv]?days=N (the latest batch) or ?numbers=1,2,3
(those issues scored now, at most 100: the lake's rows, the others fetched from the source); GET /model;
GET /models/champion and /models/{version} (the model report, HTML); GET /healthz; GET /metrics
(Prometheus text); /docs and /redoc (served from fastapi-offline's bundled assets: no CDN).
Every probability served goes to the lake's served-prediction log (`monitoring.served`), written by a
background thread.

Context: the repository's event store, the snapshot `issue_features` writes into the lake, loaded once
per version (re-checked at most every `reload_interval_s`): a request costs lookups in it plus its own
rows' features. Model: the registry champion, hot-swapped by a watcher (see `champion.py`). A request of
up to 16 issues is answered on the event loop; larger ones and snapshot loads run in the thread pool.
An issue still inside its 7-day window at the scoring time is scored at its current age; one whose
outcome is known (closed by then, or past its window) is answered as decided, without a probability.
Errors are JSON `{"detail": ...}`: 400 malformed JSON, 413 body or batch too large, 415 a body that is
not `application/json`, 422 invalid fields (out of its declared range (see `schemas`), an issue created after
the scoring time, a pull request, the same id twice), 404 unknown repository/issue/batch, 502 GitHub
failure, 503 no champion yet. A 422 names the field. Anything unexpected is a JSON 500 and the connection
stays open: Starlette's ServerErrorMiddleware re-raises after its 500, and uvicorn then closes the
connection (a keep-alive client's next request was reset), so the outermost middleware answers instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam  # (not pathlib.Path)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from issue_assets import config
from issue_assets.features.catalog import PREDICTION_MEANING
from issue_assets.features.frames import normalize_issues
from issue_assets.features.store import EventStore, raw_columns
from issue_assets.features.table import load_snapshot
from issue_assets.features.text import clean
from issue_assets.features.text_score import period_start
from issue_assets.github.client import GitHubClient, GitHubError, NotFoundError
from issue_assets.ingest.current import load_current
from issue_assets.ingest.layout import current_key, slug_repo
from issue_assets.lake import keys
from issue_assets.lake.store import DamagedFile, KeyNotFound, ObjectStore, open_store
from issue_assets.monitoring.served import ServedBuffer
from issue_assets.registry import ModelRegistry, RegistryError, default_registry
from issue_assets.registry.registry import VERSION_RE
from issue_assets.registry.reports import report_html
from issue_assets.serving.champion import Champion, ChampionHolder
from issue_assets.serving.metrics import Metrics
from issue_assets.serving.schemas import (
    ISSUE_KEY_LIMIT,
    BatchPredictionsResponse,
    ErrorResponse,
    GitHubIssue,
    HealthResponse,
    IssuePrediction,
    ModelResponse,
    PredictRequest,
    PredictResponse,
)
from issue_assets.serving.scoring import (
    Predictions,
    predict,
    read_latest_predictions,
    records_of,
    to_csv_bytes,
)

log = logging.getLogger(__name__)
ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 500, 502, 503)}
#: most issue numbers one GET /repos/{owner}/{repo}/predictions?numbers= may name
MAX_NUMBERS = 100


class Snapshots:
    """Each repository's event store, loaded from its lake snapshot and reloaded when that changes.

    Requests read the loaded store (`peek`: no I/O, never blocks); a watcher thread checks every `interval`
    seconds whether a snapshot changed (a version check reads the file: tens of ms for a large history)
    and swaps the new store in. Only a repository never loaded yet is loaded on a request."""

    def __init__(self, store: ObjectStore, interval: float):
        self.store = store
        self.interval = interval
        self._entries: dict[str, tuple[str | None, float, EventStore | None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.errors: dict[str, str] = {}

    def preload(self) -> list[str]:
        """Load every snapshot the lake holds (at start-up, so no request pays for it); the repositories."""
        repos = []
        for key in self.store.list("features/"):
            if key.endswith(".snapshot.npz"):
                repo = slug_repo(key.removeprefix("features/").removesuffix(".snapshot.npz"))
                try:
                    if self.get(repo) is not None:
                        repos.append(repo)
                except Exception:  # a broken snapshot fails its repository's requests, not the service
                    log.exception("loading the feature snapshot of %s failed", repo)
        return repos

    def peek(self, repo: str) -> EventStore | None:
        """The loaded store (kept current by the watcher); None when the repository was never loaded."""
        entry = self._entries.get(repo)
        return entry[2] if entry is not None else None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="snapshot-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self._stop.set()
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for repo in list(self._entries):
                try:
                    self.get(repo)
                except Exception:  # a store hiccup keeps the loaded snapshot; the next check tries again
                    log.exception("checking the feature snapshot of %s failed", repo)

    def get(self, repo: str) -> EventStore | None:
        """The store, checked against the lake if the last check is older than the interval."""
        entry = self._entries.get(repo)
        if entry is not None and time.monotonic() - entry[1] < self.interval:
            return entry[2]
        with self._guard:
            lock = self._locks.setdefault(repo, threading.Lock())
        with lock:
            entry = self._entries.get(repo)
            if entry is not None and time.monotonic() - entry[1] < self.interval:
                return entry[2]
            token = self.store.version(keys.feature_snapshot_key(repo))
            if entry is not None and entry[0] == token:
                events = entry[2]  # the same file: what it gave before (a damaged one is not read again)
            else:
                try:
                    events = load_snapshot(self.store, repo)
                except KeyNotFound:
                    events = None
                except DamagedFile as exc:  # its requests get a 404 naming the file until it is rewritten
                    log.error("%s", exc)
                    self.errors[repo] = str(exc)
                    events = None
                else:
                    self.errors.pop(repo, None)
                if events is not None and events.scorer is not None:
                    # the period of "now" is the one requests ask for: fitted here, not on a request
                    now = to_us(datetime.now(UTC))
                    events.scorer.model(int(period_start([now], events.scorer.config)[0]))
            self._entries[repo] = (token, time.monotonic(), events)
            return events


class CurrentIssues:
    """Each repository's current issues table from the lake (what `?numbers=` looks issues up in), loaded on
    first use and reloaded when the table changes (checked at most every `interval` seconds)."""

    def __init__(self, store: ObjectStore, interval: float):
        self.store = store
        self.interval = interval
        self._entries: dict[str, tuple[str | None, float, pd.DataFrame]] = {}
        self._lock = threading.Lock()

    def get(self, repo: str) -> pd.DataFrame:
        with self._lock:
            entry = self._entries.get(repo)
            if entry is not None and time.monotonic() - entry[1] < self.interval:
                return entry[2]
            token = self.store.version(current_key("issues", repo))
            table = entry[2] if entry is not None and entry[0] == token else load_current(self.store, "issues", repo)
            self._entries[repo] = (token, time.monotonic(), table)
            return table


def parse_numbers(text: str) -> list[int]:
    """`numbers=1,2,3` as distinct issue numbers in the order given; 422 naming what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    bad = [p for p in parts if not p.isdigit() or not 0 < int(p) < ISSUE_KEY_LIMIT]
    if bad or not parts:
        shown = ", ".join(repr(p) for p in bad[:5]) or "nothing"
        raise HTTPException(422, f"numbers: issue numbers are positive integers separated by commas; got {shown}")
    numbers = list(dict.fromkeys(int(p) for p in parts))
    if len(numbers) > MAX_NUMBERS:
        raise HTTPException(422, f"numbers: at most {MAX_NUMBERS} issue numbers per request, got {len(numbers)}")
    return numbers


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """A request datetime as UTC microseconds (naive = UTC)."""
    return ((dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt) - _EPOCH) // _ONE_US


def request_columns(items: Sequence[GitHubIssue], repo: str) -> dict[str, np.ndarray]:
    """Validated request issues as the raw columns `EventStore.rows` reads (what the lake would hold:
    title/body None -> "", lone surrogates -> '?'; first seen: the stored time, else the request's arrival)."""
    n = len(items)

    def objects(values):
        out = np.empty(n, dtype=object)
        out[:] = values
        return out

    users = [i.user for i in items]
    return {
        "repo": objects([repo] * n), "id": np.array([i.id for i in items], dtype="int64"),
        "number": np.array([i.number for i in items], dtype="int64"),
        "title": objects([clean(i.title) for i in items]), "body": objects([clean(i.body) for i in items]),
        "labels": objects(["[]"] * n), "refc": np.zeros(n),  # read by the reference columns only
        "user_login": objects([clean(u.login) if u is not None and u.login is not None else None for u in users]),
        "user_type": objects([u.type if u is not None else None for u in users]),
        "user_id": np.array([u.id if u is not None and u.id is not None else np.nan for u in users], dtype="float64"),
        "author_association": objects([i.author_association for i in items]),
        "pr": np.zeros(n, dtype=bool),
        "c": np.array([to_us(i.created_at) for i in items], dtype="float64"),
        "cl": np.array([to_us(i.closed_at) if i.closed_at is not None else np.nan for i in items], dtype="float64"),
        "fs": np.full(n, np.nan),
    }


def _check_items(items: Sequence[GitHubIssue], scoring_us: int, single: bool) -> None:
    """422 naming the field: an issue created after the scoring time, a pull request, an id twice."""
    seen: set[int] = set()
    for k, item in enumerate(items):
        where = "issue" if single else f"issues[{k}]"
        if item.pull_request is not None:
            raise HTTPException(422, f"{where}.pull_request: #{item.number} is a pull request; the model scores "
                                     "issues")
        if to_us(item.created_at) > scoring_us:
            raise HTTPException(422, f"{where}.created_at: {item.created_at.isoformat()} is after the scoring time "
                                     f"{(_EPOCH + scoring_us * _ONE_US).isoformat()} (issues created after the "
                                     "scoring time cannot be scored)")
        if item.id in seen:
            raise HTTPException(422, f"{where}.id: issue id {item.id} appears more than once in `issues`")
        seen.add(item.id)


class ErrorJSON(JSONResponse):
    """A JSON error body any Python str can go into: a lone surrogate (a JSON key or string of the request
    can hold one) cannot be encoded as UTF-8 and becomes '?' instead of failing the response."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8",
                                                                                                      "replace")


def _loc_part(part) -> str:
    """A location part as a 422 names it: cut past 80 characters, a lone surrogate written as `\\ud800`."""
    text = str(part)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _surrogate_key(value, key: str) -> tuple | None:
    """The location of `key` in the request body `value`: a key with a lone surrogate (a JSON `\\ud800` escape
    decodes to one), which pydantic reports with no location. Iterative: the JSON may nest ~1000 deep."""
    stack = [(value, ("body",))]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for name, child in node.items():
                if name == key:
                    return (*where, name)
                stack.append((child, (*where, name)))
        elif isinstance(node, list):
            stack.extend((child, (*where, i)) for i, child in enumerate(node))
    return None


def _is_json(content_type: str | None) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _validation_message(errors: list[dict], content_type: str | None = None, body=None) -> tuple[int, str]:
    """(status, one line naming each invalid field): 400 for a body that is not JSON, 415 for one that is not
    sent as JSON, else 422."""
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return 400, f"request body is not valid JSON: {ctx.get('error', 'decode error')}"
    whole_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    if whole_body and whole_body[0].get("type") == "missing":
        return 422, "request body is empty: send a JSON object (Content-Type: application/json)"
    if whole_body and not _is_json(content_type):
        return 415, (f"request body must be JSON sent with Content-Type: application/json, got "
                     f"{_loc_part(content_type) if content_type else 'no Content-Type'}")
    parts = []
    for e in errors[:20]:
        loc = tuple(e.get("loc", ()))
        msg = e.get("msg")
        bad = e.get("input")
        if e.get("type") == "string_unicode" and isinstance(bad, str) and not _is_unicode(bad) \
                and (key := _surrogate_key(body, bad)) is not None:
            loc, msg = key, "the key holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        parts.append(f"{_field_name(loc[1:] if loc[:1] == ('body',) else loc) or 'body'}: {msg}")
    return 422, "invalid request: " + "; ".join(parts)


def _field_name(loc) -> str:
    """A field's location as the 422s name it: `issues[1].user.id`, `query.days`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{_loc_part(part)}" if out else _loc_part(part))
    return out


def _unparsable(cause: BaseException) -> str:
    """Why the JSON decoder gave up on a body in other ways than a syntax error."""
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason} at byte {cause.start})"
    return type(cause).__name__


class _BodyLimitAndMetrics:
    """ASGI middleware, the outermost of the app's own: refuse bodies over the limit (413) before parsing;
    answer an unexpected exception with a JSON 500 itself; count and time every request.

    A body with a valid Content-Length within the limit (and no Transfer-Encoding) passes through untouched:
    the HTTP parser delivers no more than the declared length. Any other body is read here first and
    refused once it passes the limit.

    The 500 is answered here, not by an `exception_handler(Exception)`: that one runs in Starlette's
    ServerErrorMiddleware, which always re-raises after sending it, and uvicorn closes the connection on an
    exception that leaves the app (the keep-alive client's next request is reset). Nothing leaves this
    middleware but an exception raised after a response has started, which no answer can repair."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        try:
            declared, chunked = None, False
            for name, value in scope.get("headers") or ():
                if name == b"content-length":
                    declared = value
                elif name == b"transfer-encoding":
                    chunked = True
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_wrapper, int(declared))
                return
            if declared is not None and declared.isdigit() and not chunked:
                await self.app(scope, receive, send_wrapper)
            elif scope["method"] in ("POST", "PUT", "PATCH"):
                body, more = [], True
                size = 0
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await self._too_large(send_wrapper, size)
                        return
                    body.append(chunk)
                    more = message.get("more_body", False)
                payload = b"".join(body)
                sent = [False]

                async def replay():
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": payload, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started[0]:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await ErrorJSON({"detail": f"internal error ({type(exc).__name__}); the service log has the details"},
                            status_code=500)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status[0], time.perf_counter() - start)

    async def _too_large(self, send, size: int) -> None:
        response = ErrorJSON(
            {"detail": f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"},
            status_code=413)
        await response({"type": "http"}, None, send)


def _source_client_factory(lake_store: ObjectStore):
    """Clients for a repository's own source (its binding in the lake: GitHub, GHE or a replay server),
    with only the token meant for that API and no validator cache (a single GET is answered whole). An
    unbound repository is a 404, never a request to GITHUB_API_URL."""
    from issue_assets.ingest.sources import SourceError, bound_source

    def client(repo: str) -> GitHubClient:
        try:
            source = bound_source(repo, lake_store)
            return GitHubClient(source.api_url, source.token(), max_retries=2, timeout=10.0)
        except SourceError as exc:
            raise HTTPException(404, str(exc)) from None

    return client


def warm(model) -> None:
    """Score once off the request path: compiled contribution kernels load, the booster's tables are built."""
    from issue_assets.serving.scoring import probabilities, top_contributions

    X = np.zeros((1, len(model.feature_names)))
    probabilities(model, X.astype(np.float32))
    top_contributions(model, X, 1, nthread=1)


def create_app(registry: ModelRegistry, lake_store: ObjectStore, *, github_client_factory=None,
               max_body_bytes: int = 1_000_000, max_batch: int = 1000, reload_interval_s: float = 2.0,
               served_flush_s: float = 5.0) -> FastAPI:
    """The prediction service over a registry (champion) and a lake (feature snapshots, latest batches).
    Every probability it serves is appended to the lake's served-prediction log by a background writer
    (flushed every `served_flush_s` seconds and at shutdown), off the request path."""
    metrics = Metrics()
    client_factory = github_client_factory or _source_client_factory(lake_store)

    def on_swap(champion: Champion) -> None:
        if metrics.model_version is not None:
            metrics.model_swaps += 1
        metrics.model_version = champion.version
        log.info("serving model %s", champion.version)
        warm(champion.model)  # in the watcher thread (at start: before serving)

    holder = ChampionHolder(registry, interval=reload_interval_s, on_swap=on_swap)
    snapshots = Snapshots(lake_store, reload_interval_s)
    current_issues = CurrentIssues(lake_store, reload_interval_s)
    served = ServedBuffer(lake_store, flush_interval_s=served_flush_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = await run_in_threadpool(snapshots.preload)
        snapshots.start()
        log.info("feature snapshots loaded: %s", ", ".join(loaded) or "none")
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            snapshots.stop()
            await run_in_threadpool(served.close)

    # /docs and /redoc from fastapi-offline's bundled Swagger UI and ReDoc: they work without a network
    app = FastAPIOffline(
        title="issue-assets prediction service",
        description="Probability that an open GitHub issue is closed within 7 days of its creation. "
                    + PREDICTION_MEANING,
        version="2",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.snapshots = snapshots
    app.state.served = served
    app.add_middleware(_BodyLimitAndMetrics, metrics=metrics, max_body_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        code, message = _validation_message(exc.errors(), request.headers.get("content-type"), exc.body)
        errors = [{"loc": [_loc_part(p) if isinstance(p, str) else p for p in e.get("loc", ())],
                   "msg": str(e.get("msg")), "type": e.get("type")} for e in exc.errors()[:20]]
        return ErrorJSON({"detail": message, "errors": errors}, status_code=code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI's "error parsing the body"
            detail = f"request body is not valid JSON: {_unparsable(exc.__cause__)}"
        return ErrorJSON({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    def champion() -> Champion:
        current = holder.current
        if current is None:
            reason = holder.last_error or "no model has been promoted in the registry yet"
            raise HTTPException(503, f"no champion model to predict with: {reason}")
        return current

    def history(repo: str) -> EventStore:
        try:
            keys.check_repo(repo)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        events = snapshots.peek(repo) or snapshots.get(repo)
        if events is None and repo in snapshots.errors:
            raise HTTPException(404, snapshots.errors[repo])
        if events is None:
            raise HTTPException(404, f"repository {repo} has no feature snapshot in the lake "
                                     f"({keys.feature_snapshot_key(repo)}); ingest it first (then issue_features "
                                     "writes it)")
        return events

    def answer(current: Champion, events: EventStore, items: Sequence[GitHubIssue], repo: str, scoring_us: int,
               top_k: int, with_features: bool, live: bool = True) -> list[dict]:
        """`live`: scored now (no scoring_time asked for), so kept in the served-prediction log; a what-if at
        another time is answered but never judged as a live prediction."""
        _check_items(items, scoring_us, single=False)
        predictions = predict(current.model, current.version, events, request_columns(items, repo), scoring_us,
                              top_k, observed_us=to_us(datetime.now(UTC)), with_features=with_features, nthread=1)
        metrics.count_predictions(len(predictions), int(predictions.decided.sum()))
        if live and (~predictions.decided).any():
            served.add(repo, predictions.served("http"))
        return predictions.records()

    def predict_request(request: PredictRequest, current: Champion, events: EventStore, scoring_us: int) -> dict:
        items = request.items()
        if request.issue is not None:
            _check_items(items, scoring_us, single=True)
        records = answer(current, events, items, request.repository, scoring_us, request.top_k,
                         request.include_features, live=request.scoring_time is None)
        return {"model_version": current.version, "scoring_time": _EPOCH + scoring_us * _ONE_US,
                "count": len(records), "predictions": records}

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict_route(request: PredictRequest) -> dict:
        """Score one issue (`issue`) or several (`issues`) in GitHub's JSON shape at the scoring time."""
        # async: a few issues cost about a millisecond of CPU, answered on the event loop without thread-pool
        # hops; a snapshot (re)load or a large batch runs in the thread pool.
        items = request.items()
        if len(items) > max_batch:
            raise HTTPException(413, f"batch of {len(items)} issues exceeds max_batch={max_batch}")
        current = champion()
        scoring_us = to_us(request.scoring_time or datetime.now(UTC))
        events = snapshots.peek(request.repository)
        if events is None or len(items) > 16:
            if events is None:
                events = await run_in_threadpool(history, request.repository)
            return await run_in_threadpool(predict_request, request, current, events, scoring_us)
        return predict_request(request, current, events, scoring_us)

    def fetch(client, full: str, number: int) -> GitHubIssue | None:
        """The issue as the repository's source has it; None when it has none (404)."""
        try:
            item = client.get_issue(full, number)
        except NotFoundError:
            return None
        except GitHubError as exc:
            raise HTTPException(502, f"GitHub request for {full}#{number} failed: {exc}") from None
        if not isinstance(item, dict):
            raise HTTPException(502, f"GitHub returned a non-object for {full}#{number}")
        try:
            return GitHubIssue.model_validate(item)
        except ValueError as exc:
            raise HTTPException(502, f"GitHub's answer for {full}#{number} is not a usable issue: {exc}") from None

    @app.get("/repos/{owner}/{repo}/issues/{number}/prediction", response_model=IssuePrediction, responses=ERRORS)
    def fetched_issue_prediction(owner: str, repo: str,
                                 number: int = PathParam(ge=1, lt=ISSUE_KEY_LIMIT, description="1 <= number < 2**40"),
                                 top_k: int = Query(5, ge=0, le=50), include_features: bool = False) -> dict:
        """Fetch the issue from the repository's source (its API binding), then score it now (or report it
        decided)."""
        full = f"{owner}/{repo}"
        current = champion()
        events = history(full)
        client = client_factory(full)
        try:
            parsed = fetch(client, full, number)
        finally:
            client.close()
        if parsed is None:
            raise HTTPException(404, f"GitHub has no issue #{number} in {full} (or the token cannot see it)")
        if parsed.pull_request is not None:
            raise HTTPException(422, f"{full}#{number} is a pull request; the model scores issues")
        scoring_us = max(to_us(datetime.now(UTC)), to_us(parsed.created_at))  # GitHub's clock may run ahead
        return answer(current, events, [parsed], full, scoring_us, top_k, include_features)[0]

    def by_numbers(full: str, numbers: list[int], top_k: int) -> tuple[Predictions | None, dict]:
        """The named issues scored now (or reported decided): the lake's current rows, the rest fetched from the
        repository's source. Also the numbers that are pull requests or that neither has."""
        current = champion()
        events = history(full)
        table = current_issues.get(full)
        stored = table.loc[table["number"].isin(numbers)].drop_duplicates("number", keep="last")
        pulls = stored.loc[stored["is_pull_request"].fillna(False).astype(bool), "number"].astype(int).tolist()
        stored = stored.loc[~stored["number"].isin(pulls)]
        missing = [n for n in numbers if n not in set(stored["number"].astype(int)) and n not in pulls]
        fetched, not_found = [], []
        if missing:
            client = client_factory(full)
            try:
                for number in missing:
                    item = fetch(client, full, number)
                    if item is None:
                        not_found.append(number)
                    elif item.pull_request is not None:
                        pulls.append(number)
                    else:
                        fetched.append(item)
            finally:
                client.close()
        now_us = to_us(datetime.now(UTC))
        scoring_us = max([now_us, *(to_us(i.created_at) for i in fetched)])
        raw = [raw_columns(normalize_issues(stored))] if len(stored) else []
        if fetched:
            raw.append(request_columns(fetched, full))
        extra = {"not_found": not_found, "pull_requests": sorted(pulls)}
        if not raw:
            return None, extra
        columns = {k: np.concatenate([r[k] for r in raw]) for k in raw[0]}
        predictions = predict(current.model, current.version, events, columns, scoring_us, top_k, observed_us=now_us,
                              nthread=1)
        metrics.count_predictions(len(predictions), int(predictions.decided.sum()))
        if (~predictions.decided).any():
            served.add(full, predictions.served("http"))
        position = {n: k for k, n in enumerate(numbers)}
        return predictions.take(np.argsort([position[int(n)] for n in predictions.number], kind="stable")), extra

    def latest_batch(owner: str, repo: str, days: float | None) -> tuple[str, pd.DataFrame]:
        full = f"{owner}/{repo}"
        try:
            keys.check_repo(full)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        frame = read_latest_predictions(lake_store, full)
        if frame is None:
            raise HTTPException(404, f"no prediction batch for {full} yet "
                                     f"({keys.prediction_keys(full, 'latest')['parquet_latest']})")
        if days is not None and len(frame):
            since = frame["scoring_time"].max() - pd.Timedelta(days=days)
            frame = frame.loc[frame["created_at"] >= since].reset_index(drop=True)
        return full, frame

    days_query = Query(None, gt=0, le=3650, description="only issues created in the N days before the batch's "
                                                        "scoring time")
    numbers_query = Query(None, max_length=2000, description=f"comma-separated issue numbers (at most {MAX_NUMBERS}): "
                          "those issues scored now instead of the latest batch; the lake's rows, the others fetched "
                          "from the repository's source")

    @app.get("/repos/{owner}/{repo}/predictions", response_model=BatchPredictionsResponse, responses=ERRORS)
    def batch_predictions(owner: str, repo: str, days: float | None = days_query, numbers: str | None = numbers_query,
                          top_k: int = Query(5, ge=0, le=50)) -> dict:
        """The latest batch written by the open_issue_predictions job (scored issues by rank, then decided ones),
        or, with `numbers`, those issues scored now."""
        if numbers is not None:
            full = f"{owner}/{repo}"
            predictions, extra = by_numbers(full, parse_numbers(numbers), top_k)
            records = predictions.records() if predictions is not None else []
            return {"repository": full, "scoring_time": records[0]["scoring_time"] if records else None,
                    "model_versions": [predictions.version] if predictions is not None else [],
                    "days": None, "count": len(records), "predictions": records, **extra}
        full, frame = latest_batch(owner, repo, days)
        return {
            "repository": full,
            "scoring_time": frame["scoring_time"].max().to_pydatetime() if len(frame) else None,
            "model_versions": sorted(frame["model_version"].dropna().unique().tolist()),
            "days": days, "count": len(frame), "predictions": records_of(frame),
        }

    @app.get("/repos/{owner}/{repo}/predictions.csv", response_class=PlainTextResponse,
             responses={200: {"content": {"text/csv": {}}}, **ERRORS})
    def batch_predictions_csv(owner: str, repo: str, days: float | None = days_query,
                              numbers: str | None = numbers_query, top_k: int = Query(5, ge=0, le=50)) -> Response:
        """The latest batch as CSV (the stored latest.csv when no filter is given), or, with `numbers`, those
        issues scored now; a number that is a pull request or that neither the lake nor the source has is a
        row with that status."""
        full = f"{owner}/{repo}"
        if numbers is not None:
            predictions, extra = by_numbers(full, parse_numbers(numbers), top_k)
            frame = predictions.frame() if predictions is not None else None
            others = [(n, "not_found") for n in extra["not_found"]] + [(n, "pull_request") for n in extra["pull_requests"]]
            if others:
                rest = pd.DataFrame({"repo": full, "number": [n for n, _ in others], "status": [s for _, s in others]})
                frame = rest if frame is None else pd.concat([frame, rest], ignore_index=True)
            return Response(to_csv_bytes(frame if frame is not None else pd.DataFrame()),
                            media_type="text/csv; charset=utf-8")
        if days is None:
            try:
                keys.check_repo(full)
                data = lake_store.get_bytes(keys.prediction_keys(full, "latest")["csv_latest"])
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            except KeyNotFound:
                raise HTTPException(404, f"no prediction batch for {full} yet") from None
        else:
            _, frame = latest_batch(owner, repo, days)
            data = to_csv_bytes(frame)
        return Response(data, media_type="text/csv; charset=utf-8")

    def report(version: str) -> HTMLResponse:
        try:
            return HTMLResponse(report_html(registry, version))
        except RegistryError as exc:
            raise HTTPException(404, f"no report for {version}: {exc}") from None

    @app.get("/models/champion", response_class=HTMLResponse, responses=ERRORS)
    def champion_report() -> HTMLResponse:
        """The champion's model report (HTML): metrics against the references, plots, features, decisions."""
        return report(champion().version)

    @app.get("/models/{version}", response_class=HTMLResponse, responses=ERRORS)
    def version_report(version: str) -> HTMLResponse:
        """A registered version's model report (HTML), as the registry holds it now."""
        if not VERSION_RE.match(version):
            raise HTTPException(422, f"version: {version!r} is not a registry version (vNNNN-YYYYMMDDTHHMMSSZ)")
        if version not in registry.list_versions():
            raise HTTPException(404, f"version {version} is not registered in {registry.store.uri}")
        return report(version)

    @app.get("/model", response_model=ModelResponse, responses=ERRORS)
    def model_info() -> dict:
        """The champion the service answers with, and a summary of its registry metadata."""
        current = champion()
        meta = current.metadata
        metrics_ = meta.get("metrics") or {}
        return {
            "version": current.version,
            "loaded_at": datetime.fromtimestamp(current.loaded_at, UTC),
            "as_of": meta.get("as_of"), "created_at": meta.get("created_at"),
            "feature_count": len(current.model.feature_names),
            "calibration": (meta.get("calibration") or {}).get("method"),
            "metrics": {k: v for k, v in metrics_.items() if isinstance(v, int | float | str | None)},
            "row_counts": meta.get("row_counts") or {},
        }

    @app.get("/healthz", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    def healthz():
        current = holder.current
        if current is None:
            return JSONResponse({"status": "no_model", "model_version": None,
                                 "detail": holder.last_error or "no model has been promoted yet"}, status_code=503)
        return {"status": "ok", "model_version": current.version, "detail": holder.last_error}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def run_server(host: str = "127.0.0.1", port: int = 8000, *, registry: ModelRegistry | None = None,
               lake_store: ObjectStore | None = None, log_level: str = "info", **app_kwargs) -> None:
    """Serve until interrupted (uvicorn). Registry and lake default to the environment's (MODEL_STORE,
    LAKE_STORE / ISSUE_ASSETS_HOME); `app_kwargs` go to create_app."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    # One request is a few small numpy/BLAS calls: pools of spinning BLAS/OpenMP threads only fight the
    # request threads for the cores (a 2-core host went from ~7 to hundreds of requests/s).
    threadpool_limits(1)
    app = create_app(registry or default_registry(), lake_store or open_store(config.lake_uri()), **app_kwargs)
    fast = {"loop": "uvloop", "http": "httptools"} if _installed("uvloop", "httptools") else {}
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, workers=1, **fast)


def _installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)
