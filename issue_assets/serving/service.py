"""The HTTP prediction service: FastAPI over the shared scoring path.

Routes: POST /predict; GET /repos/{owner}/{repo}/issues/{number}/prediction (fetched through the
GitHub client); GET /repos/{owner}/{repo}/predictions[.csv]?days=N (the latest batch); GET /model;
GET /healthz; GET /metrics (Prometheus text).

Context: the repository's current issues/comments tables in the lake, prepared once per table
version (re-checked at most every `reload_interval_s`) so a request for new issues only computes
their rows. Model: the registry champion, hot-swapped by a watcher (see `champion.py`).
POST /predict for up to 16 new issues is answered on the event loop by `fast.predict_fast` (arrays
only, a few ms of CPU, the same bytes as the general path); anything else (batches, issues already in
the lake, pull requests, errors) takes the general DataFrame path in the thread pool.
Errors are JSON `{"detail": ...}`: 400 malformed JSON, 413 body or batch too large, 422 invalid
fields, 404 unknown repository/issue/batch, 502 GitHub failure, 503 no champion yet.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from issue_assets import config
from issue_assets.github.client import GitHubClient, GitHubError, NotFoundError
from issue_assets.github.normalize import issue_versions, issues_from_versions
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current
from issue_assets.lake.store import KeyNotFound, ObjectStore, open_store
from issue_assets.registry import ModelRegistry, default_registry
from issue_assets.serving import text_rows
from issue_assets.serving.champion import Champion, ChampionHolder
from issue_assets.serving.fast import predict_fast, warm
from issue_assets.serving.features import PreparedHistory, utc
from issue_assets.serving.metrics import Metrics
from issue_assets.serving.schemas import (
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
    contributions_of,
    prediction_keys,
    read_latest_predictions,
    score_prepared,
    to_csv_bytes,
)

log = logging.getLogger(__name__)
ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 502, 503)}


class RepositoryHistory:
    """A repository's lake tables and their PreparedHistory, rebuilt when a current table changes."""

    def __init__(self, store: ObjectStore, interval: float):
        self.store = store
        self.interval = interval
        self._entries: dict[str, tuple[tuple, float, PreparedHistory | None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _token(self, repo: str) -> tuple:
        return tuple(self.store.version(layout.current_key(kind, repo)) for kind in ("issues", "comments"))

    def peek(self, repo: str) -> PreparedHistory | None:
        """The prepared history if it was checked within the interval (no I/O, never blocks); else None."""
        entry = self._entries.get(repo)
        if entry is not None and time.monotonic() - entry[1] < self.interval:
            return entry[2]
        return None

    def get(self, repo: str) -> PreparedHistory | None:
        entry = self._entries.get(repo)
        now = time.monotonic()
        if entry is not None and now - entry[1] < self.interval:
            return entry[2]
        with self._guard:
            lock = self._locks.setdefault(repo, threading.Lock())
        with lock:
            entry = self._entries.get(repo)
            if entry is not None and time.monotonic() - entry[1] < self.interval:
                return entry[2]
            token = self._token(repo)
            if entry is not None and entry[0] == token:
                self._entries[repo] = (token, time.monotonic(), entry[2])
                return entry[2]
            issues = load_current(self.store, "issues", repo)
            comments = load_current(self.store, "comments", repo)
            prepared = PreparedHistory(issues, comments) if len(issues) else None
            self._entries[repo] = (token, time.monotonic(), prepared)
            return prepared


def _issue_rows(items: list[dict], repo: str, scoring_time: pd.Timestamp) -> pd.DataFrame:
    versions, rejects = issue_versions(items, repo, scoring_time)
    if len(rejects):
        reasons = "; ".join(f"issue {r['number'] or r['id']}: {r['reason']}" for _, r in rejects.iterrows())
        raise HTTPException(422, f"issues that cannot be read: {reasons}")
    return issues_from_versions(versions)


def _predictions(frame: pd.DataFrame, top_k: int) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({
            "repository": row["repo"], "id": int(row["id"]), "number": int(row["number"]),
            "title": None if pd.isna(row.get("title")) else row.get("title"),
            "created_at": row["created_at"].to_pydatetime(),
            "prediction_time": row["prediction_time"].to_pydatetime(),
            "hours_observed": None if pd.isna(row.get("hours_observed")) else float(row["hours_observed"]),
            "probability": float(row["probability"]), "rank": int(row["rank"]),
            "model_version": str(row["model_version"]), "scoring_time": row["scoring_time"].to_pydatetime(),
            "top_contributions": contributions_of(row, top_k),
        })
    return out


def _validation_message(errors: list[dict]) -> tuple[int, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return 400, f"request body is not valid JSON: {ctx.get('error', 'decode error')}"
    parts = []
    for e in errors[:20]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return 422, "invalid request: " + "; ".join(parts)


class _BodyLimitAndMetrics:
    """ASGI middleware: refuse bodies over the limit (413) before parsing; count and time every request.

    A body with a valid Content-Length within the limit (and no Transfer-Encoding) passes through untouched:
    the HTTP parser delivers no more than the declared length. Any other body is read here first and
    refused once it passes the limit."""

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

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
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
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status[0], time.perf_counter() - start)

    async def _too_large(self, send, size: int) -> None:
        response = JSONResponse(
            {"detail": f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"},
            status_code=413)
        await response({"type": "http"}, None, send)


def _default_client_factory():
    return GitHubClient(config.api_url(), os.environ.get("GITHUB_TOKEN") or None, max_retries=2, timeout=10.0)


def create_app(registry: ModelRegistry, lake_store: ObjectStore, *, github_client_factory=None,
               max_body_bytes: int = 1_000_000, max_batch: int = 1000, reload_interval_s: float = 2.0,
               fast_path: bool = True) -> FastAPI:
    """The prediction service over a registry (champion) and a lake (history, latest batches).

    fast_path: answer POST /predict for a few new issues with `fast.predict_fast` (the same numbers;
    False only to compare with the general path)."""
    metrics = Metrics()
    client_factory = github_client_factory or _default_client_factory

    def on_swap(champion: Champion) -> None:
        if metrics.model_version is not None:
            metrics.model_swaps += 1
        metrics.model_version = champion.version
        log.info("serving model %s", champion.version)
        if fast_path:  # in the watcher thread (at start: before serving); until then the general path answers
            warm(champion.model)

    holder = ChampionHolder(registry, interval=reload_interval_s, on_swap=on_swap)
    histories = RepositoryHistory(lake_store, reload_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if fast_path:
            await run_in_threadpool(text_rows.ready)  # its one-time self-check, before the first request
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="issue-assets prediction service",
        description="Probability that a newly opened GitHub issue is closed within 7 days.",
        version="1",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.histories = histories
    app.add_middleware(_BodyLimitAndMetrics, metrics=metrics, max_body_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        code, message = _validation_message(exc.errors())
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")}
                  for e in exc.errors()[:20]]
        return JSONResponse({"detail": message, "errors": errors}, status_code=code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the service log has the details"},
                            status_code=500)

    def champion() -> Champion:
        current = holder.current
        if current is None:
            reason = holder.last_error or "no model has been promoted in the registry yet"
            raise HTTPException(503, f"no champion model to predict with: {reason}")
        return current

    def history(repo: str) -> PreparedHistory:
        try:
            layout.check_repo(repo)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        prepared = histories.get(repo)
        if prepared is None:
            raise HTTPException(404, f"repository {repo} has no issues in the lake "
                                     f"({layout.current_key('issues', repo)}); ingest it first")
        return prepared

    def score(current: Champion, prepared: PreparedHistory, targets: pd.DataFrame, scoring_time, top_k: int):
        try:
            frame = score_prepared(current.model, current.version, prepared, targets, scoring_time, top_k, nthread=1)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        metrics.count_predictions(len(frame))
        return frame

    def predict_general(request: PredictRequest, current: Champion, prepared: PreparedHistory) -> dict:
        items = request.items()
        newest = max(utc(i.created_at) for i in items)
        if request.scoring_time is not None:
            scoring_time = utc(request.scoring_time)
        else:
            scoring_time = max(pd.Timestamp.now(tz="UTC"), newest)
        dump = [i.model_dump(mode="json") for i in items]
        targets = _issue_rows(dump, request.repository, scoring_time)
        if targets.duplicated(["id"]).any():
            raise HTTPException(422, "the same issue id appears more than once in `issues`")
        frame = score(current, prepared, targets, scoring_time, request.top_k)
        return {"model_version": current.version, "scoring_time": scoring_time.to_pydatetime(),
                "count": len(frame), "predictions": _predictions(frame, request.top_k)}

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(request: PredictRequest) -> dict:
        """Score one issue (`issue`) or several (`issues`) in GitHub's JSON shape."""
        # async: a few new issues are answered on the event loop in a few ms of CPU (fast.predict_fast),
        # without two thread-pool hops; anything that may block (a history reload, a batch, the general
        # path) runs in the thread pool.
        items = request.items()
        if len(items) > max_batch:
            raise HTTPException(413, f"batch of {len(items)} issues exceeds max_batch={max_batch}")
        current = champion()
        prepared = histories.peek(request.repository)
        if prepared is None:
            prepared = await run_in_threadpool(history, request.repository)
        if fast_path:
            try:
                answer = predict_fast(current.model, current.version, prepared, request.repository, items,
                                      request.scoring_time, request.top_k)
            except Exception:  # a bug here must not fail a request the general path can answer
                log.exception("fast path failed; answering with the general path")
                answer = None
            if answer is not None:
                metrics.count_predictions(answer["count"])
                metrics.fast_path += 1
                return answer
        metrics.general_path += 1
        return await run_in_threadpool(predict_general, request, current, prepared)

    @app.get("/repos/{owner}/{repo}/issues/{number}/prediction", response_model=IssuePrediction, responses=ERRORS)
    def fetched_issue_prediction(owner: str, repo: str, number: int, top_k: int = Query(5, ge=0, le=50)) -> dict:
        """Fetch the issue through the GitHub API (GITHUB_API_URL), then score it now."""
        full = f"{owner}/{repo}"
        if number <= 0:
            raise HTTPException(422, f"issue number must be positive, got {number}")
        current = champion()
        prepared = history(full)
        try:
            client = client_factory()
            try:
                item = client.get_issue(full, number)
            finally:
                client.close()
        except NotFoundError:
            raise HTTPException(404, f"GitHub has no issue #{number} in {full} (or the token cannot see it)") from None
        except GitHubError as exc:
            raise HTTPException(502, f"GitHub request for {full}#{number} failed: {exc}") from None
        if not isinstance(item, dict):
            raise HTTPException(502, f"GitHub returned a non-object for {full}#{number}")
        if item.get("pull_request") is not None:
            raise HTTPException(422, f"{full}#{number} is a pull request; the model scores issues")
        try:
            parsed = GitHubIssue.model_validate(item)
        except ValueError as exc:
            raise HTTPException(502, f"GitHub's answer for {full}#{number} is not a usable issue: {exc}") from None
        scoring_time = max(pd.Timestamp.now(tz="UTC"), utc(parsed.created_at))
        targets = _issue_rows([item], full, scoring_time)
        known = prepared.history_issues
        if len(known):
            seen = known.loc[known["id"] == int(item["id"]), "first_seen_at"]
            if len(seen) and pd.notna(seen.iloc[0]):
                targets["first_seen_at"] = min(utc(seen.iloc[0]), scoring_time)
        frame = score(current, prepared, targets, scoring_time, top_k)
        return _predictions(frame, top_k)[0]

    def latest_batch(owner: str, repo: str, days: float | None) -> tuple[str, pd.DataFrame]:
        full = f"{owner}/{repo}"
        try:
            layout.check_repo(full)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        frame = read_latest_predictions(lake_store, full)
        if frame is None:
            raise HTTPException(404, f"no prediction batch for {full} yet "
                                     f"({prediction_keys(full, datetime.now(UTC))['parquet_latest']})")
        if days is not None and len(frame):
            since = frame["scoring_time"].max() - pd.Timedelta(days=days)
            frame = frame.loc[frame["created_at"] >= since].reset_index(drop=True)
        return full, frame

    def top_k_of(frame: pd.DataFrame) -> int:
        return sum(1 for c in frame.columns if c.startswith("contrib_") and c.endswith("_feature"))

    days_query = Query(None, gt=0, le=3650, description="only issues created in the N days before the batch's "
                                                        "scoring time")

    @app.get("/repos/{owner}/{repo}/predictions", response_model=BatchPredictionsResponse, responses=ERRORS)
    def batch_predictions(owner: str, repo: str, days: float | None = days_query) -> dict:
        """The latest batch written by the open_issue_predictions job, ranked."""
        full, frame = latest_batch(owner, repo, days)
        return {
            "repository": full,
            "scoring_time": frame["scoring_time"].max().to_pydatetime() if len(frame) else None,
            "model_versions": sorted(frame["model_version"].dropna().unique().tolist()),
            "days": days, "count": len(frame), "predictions": _predictions(frame, top_k_of(frame)),
        }

    @app.get("/repos/{owner}/{repo}/predictions.csv", response_class=PlainTextResponse,
             responses={200: {"content": {"text/csv": {}}}, **ERRORS})
    def batch_predictions_csv(owner: str, repo: str, days: float | None = days_query) -> Response:
        """The latest batch as CSV (the stored latest.csv when no filter is given)."""
        full = f"{owner}/{repo}"
        if days is None:
            try:
                layout.check_repo(full)
                data = lake_store.get_bytes(prediction_keys(full, datetime.now(UTC))["csv_latest"])
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            except KeyNotFound:
                raise HTTPException(404, f"no prediction batch for {full} yet") from None
        else:
            _, frame = latest_batch(owner, repo, days)
            data = to_csv_bytes(frame)
        return Response(data, media_type="text/csv; charset=utf-8")

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
