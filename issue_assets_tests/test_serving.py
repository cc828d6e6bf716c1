"""The scoring path and the prediction service, over a real small pipeline and loopback HTTP."""

from __future__ import annotations

import copy
import csv
import io
import json
import random
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import uvicorn

from issue_assets.features import FEATURE_NAMES, compute_features
from issue_assets.features.training import build_training_set
from issue_assets.github.client import GitHubClient
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest.layout import current_key
from issue_assets.lake.store import LocalStore, write_parquet
from issue_assets.modeling.training import TrainingConfig, train_and_evaluate
from issue_assets.registry import ModelRegistry
from issue_assets.serving import (
    PreparedHistory,
    batch_open_issue_predictions,
    score_issues,
    target_features,
    write_predictions,
)
from issue_assets.serving.scoring import contribution_columns, top_contributions
from issue_assets.serving.service import create_app

REPO = "acme/widgets"
SNAPSHOT = pd.Timestamp("2023-12-27", tz="UTC")
HELD_OUT = 25


class Pipeline:
    def __init__(self, tmp):
        items, comments = simulate_repository(REPO, n_issues=1500, seed=3, start="2023-01-01T00:00:00Z", days=360)
        items.sort(key=lambda i: i["created_at"])
        self.items = items
        self.comment_items = comments
        self.new_items = [i for i in items[-HELD_OUT * 2:] if "pull_request" not in i][-HELD_OUT:]
        new_ids = {i["id"] for i in self.new_items}
        new_numbers = {i["number"] for i in self.new_items}
        versions, _ = issue_versions([i for i in items if i["id"] not in new_ids], REPO, SNAPSHOT)
        self.issues = issues_from_versions(versions)
        kept = [c for c in comments if int(c["issue_url"].rsplit("/", 1)[1]) not in new_numbers]
        self.comments, _ = comment_versions(kept, REPO, SNAPSHOT)
        self.lake = LocalStore(tmp / "lake")
        write_parquet(self.lake, current_key("issues", REPO), self.issues)
        write_parquet(self.lake, current_key("comments", REPO), self.comments)
        features = compute_features(self.issues, self.comments)
        training, _ = build_training_set(features, SNAPSHOT)
        config = TrainingConfig(nthread=1, max_boost_round=120, early_stopping_rounds=20)
        self.registry = ModelRegistry(LocalStore(tmp / "registry"))
        first = train_and_evaluate(training, FEATURE_NAMES, {"max_depth": 4}, config)
        self.model = first.model
        self.version = self.registry.register(first.model, first.metadata(as_of=SNAPSHOT.isoformat()))
        self.registry.promote(self.version)
        second = train_and_evaluate(training, FEATURE_NAMES, {"max_depth": 2, "eta": 0.3}, config)
        self.second_model = second.model
        self.second_version = self.registry.register(second.model, second.metadata(as_of=SNAPSHOT.isoformat()))

    def new_targets(self, items, scoring_time) -> pd.DataFrame:
        versions, rejects = issue_versions(items, REPO, scoring_time)
        assert len(rejects) == 0
        return issues_from_versions(versions)


def as_new(item: dict) -> dict:
    """The issue as the API shows it right after it was opened."""
    out = copy.deepcopy(item)
    out.update({"state": "open", "closed_at": None, "state_reason": None, "comments": 0,
                "labels": [], "updated_at": item["created_at"]})
    return out


class Service:
    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return Pipeline(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def replay(pipeline):
    server = ReplayServer(pipeline.items, pipeline.comment_items).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(pipeline, replay):
    app = create_app(pipeline.registry, pipeline.lake, github_client_factory=lambda: GitHubClient(replay.url),
                     max_body_bytes=200_000, max_batch=40, reload_interval_s=0.2)
    svc = Service(app)
    yield svc
    svc.stop()


def post(svc, body, **kw):
    return requests.post(f"{svc.url}/predict", json=body, timeout=30, **kw)


# ---- the scoring path --------------------------------------------------------------------------

def test_prepared_history_equals_reference_path(pipeline):
    scoring_time = pd.Timestamp(pipeline.new_items[-1]["created_at"]) + pd.Timedelta(hours=3)
    items = [as_new(i) for i in pipeline.new_items]
    items[0]["closed_at"] = items[0]["created_at"]  # closed at once: scored as of creation
    targets = pipeline.new_targets(items, scoring_time)
    reference = target_features(pipeline.issues, pipeline.comments, targets, scoring_time)
    prepared = PreparedHistory(pipeline.issues, pipeline.comments)
    pd.testing.assert_frame_equal(prepared.features(targets, scoring_time), reference)
    assert (prepared.fast, prepared.fallbacks) == (1, 0)
    for i in (3, 7):  # one at a time: the cached text-score model and merged event logs give the same row
        alone = targets.iloc[[i]]
        pd.testing.assert_frame_equal(prepared.features(alone, scoring_time),
                                      target_features(pipeline.issues, pipeline.comments, alone, scoring_time))
    assert (prepared.fast, prepared.fallbacks) == (3, 0)
    old = pipeline.issues.iloc[[-1]]  # already in the history: the reference path, same numbers
    pd.testing.assert_frame_equal(prepared.features(old, scoring_time),
                                  target_features(pipeline.issues, pipeline.comments, old, scoring_time))
    assert prepared.fallbacks == 1
    assert (reference["prediction_time"].iloc[1:] == scoring_time).all()
    assert reference["prediction_time"].iloc[0] == reference["created_at"].iloc[0]
    hours = (scoring_time - reference["created_at"].iloc[1:]).dt.total_seconds() / 3600
    np.testing.assert_allclose(reference["hours_observed"].iloc[1:], hours)


def test_point_in_time_features_ignore_later_history(pipeline):
    """A target's features at T use nothing after T: truncating the history at T changes nothing."""
    scoring_time = pd.Timestamp("2023-09-01", tz="UTC")
    targets = pipeline.issues.loc[pipeline.issues["created_at"] <= scoring_time].tail(15)
    full = target_features(pipeline.issues, pipeline.comments, targets, scoring_time)
    early = pipeline.issues.loc[pipeline.issues["created_at"] <= scoring_time].copy()
    late = early["closed_at"] > scoring_time
    early.loc[late, "closed_at"] = pd.NaT
    comments = pipeline.comments.loc[pipeline.comments["created_at"] <= scoring_time]
    truncated = target_features(early, comments, early.loc[early["id"].isin(targets["id"])], scoring_time)
    pd.testing.assert_frame_equal(full, truncated)


def test_scores_match_trained_model(pipeline):
    scoring_time = SNAPSHOT
    batch = batch_open_issue_predictions(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments,
                                         scoring_time)
    open_now = pipeline.issues.loc[(pipeline.issues["closed_at"].isna()) & ~pipeline.issues["is_pull_request"]]
    assert sorted(batch["id"]) == sorted(open_now["id"])
    assert batch["rank"].tolist() == list(range(1, len(batch) + 1))
    assert batch["probability"].is_monotonic_decreasing
    assert (batch["model_version"] == pipeline.version).all()
    features = target_features(pipeline.issues, pipeline.comments, open_now, scoring_time)
    by_id = batch.set_index("id").loc[features["id"]]
    np.testing.assert_array_equal(by_id["probability"].to_numpy(), pipeline.model.predict_proba(features))
    expected = pipeline.model.contributions(features.iloc[:30], top_k=5)
    flat = top_contributions(pipeline.model, features.iloc[:30], 5)
    for row, contribs in enumerate(expected):
        for k, c in enumerate(contribs, start=1):
            assert flat[f"contrib_{k}_feature"][row] == c["feature"]
            assert flat[f"contrib_{k}_contribution"][row] == c["contribution"]
            v = flat[f"contrib_{k}_value"][row]
            assert (c["value"] is None and np.isnan(v)) or v == c["value"]


def test_score_issues_rejects_issues_from_the_future(pipeline):
    targets = pipeline.new_targets([as_new(pipeline.new_items[-1])], SNAPSHOT)
    early = pd.Timestamp(pipeline.new_items[-1]["created_at"]) - pd.Timedelta(days=1)
    with pytest.raises(ValueError, match="created after the scoring time"):
        score_issues(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments, targets, early)


# ---- the service -------------------------------------------------------------------------------

def test_predict_equals_batch_function(pipeline, service):
    items = [as_new(i) for i in pipeline.new_items[:12]]
    scoring_time = pd.Timestamp(items[-1]["created_at"]) + pd.Timedelta(minutes=30)
    r = post(service, {"repository": REPO, "issues": items, "scoring_time": scoring_time.isoformat()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == pipeline.version and body["count"] == len(items)
    expected = score_issues(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments,
                            pipeline.new_targets(items, scoring_time), scoring_time)
    for got, (_, want) in zip(body["predictions"], expected.iterrows(), strict=True):
        assert got["number"] == want["number"]
        assert abs(got["probability"] - want["probability"]) <= 1e-12
        assert got["rank"] == want["rank"]
        assert got["model_version"] == pipeline.version
        assert [c["feature"] for c in got["top_contributions"]] == [want[f"contrib_{k}_feature"] for k in range(1, 6)]
        assert all(abs(c["contribution"] - want[f"contrib_{k}_contribution"]) <= 1e-12
                   for k, c in enumerate(got["top_contributions"], start=1))
    # one issue, default scoring time (now): the service reports the time it used
    single = post(service, {"repository": REPO, "issue": items[0]})
    assert single.status_code == 200, single.text
    used = pd.Timestamp(single.json()["scoring_time"])
    again = score_issues(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments,
                         pipeline.new_targets(items[:1], used), used)
    assert abs(single.json()["predictions"][0]["probability"] - again["probability"].iloc[0]) <= 1e-12


def test_issue_prediction_through_github_api(pipeline, service):
    open_issue = pipeline.issues.loc[pipeline.issues["closed_at"].isna() & ~pipeline.issues["is_pull_request"]].iloc[-1]
    number = int(open_issue["number"])
    r = requests.get(f"{service.url}/repos/{REPO}/issues/{number}/prediction", timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["number"] == number and got["model_version"] == pipeline.version
    used = pd.Timestamp(got["scoring_time"])
    item = next(i for i in pipeline.items if i["number"] == number)
    target = pipeline.new_targets([item], used)
    target["first_seen_at"] = open_issue["first_seen_at"]
    want = score_issues(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments, target, used)
    assert abs(got["probability"] - want["probability"].iloc[0]) <= 1e-12
    missing = requests.get(f"{service.url}/repos/{REPO}/issues/999999/prediction", timeout=30)
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    pr = next(i for i in pipeline.items if "pull_request" in i)
    r = requests.get(f"{service.url}/repos/{REPO}/issues/{pr['number']}/prediction", timeout=30)
    assert r.status_code == 422 and "pull request" in r.json()["detail"]


def test_latest_batch_endpoints(pipeline, service):
    r = requests.get(f"{service.url}/repos/{REPO}/predictions", timeout=30)
    assert r.status_code == 404 and "no prediction batch" in r.json()["detail"]
    batch = batch_open_issue_predictions(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments,
                                         SNAPSHOT)
    keys = write_predictions(pipeline.lake, REPO, batch, SNAPSHOT)
    assert keys["csv_latest"] == "predict_outputs/acme__widgets/latest.csv"
    assert keys["csv"] == "predict_outputs/acme__widgets/20231227T000000Z.csv"
    assert keys["parquet"].startswith("predictions/acme__widgets/")
    assert all(pipeline.lake.exists(k) for k in keys.values())
    body = requests.get(f"{service.url}/repos/{REPO}/predictions", timeout=30).json()
    assert body["count"] == len(batch) and body["model_versions"] == [pipeline.version]
    assert [p["number"] for p in body["predictions"]] == batch["number"].tolist()
    assert body["predictions"][0]["probability"] == batch["probability"].iloc[0]
    days = float(np.ceil((SNAPSHOT - batch["created_at"].median()).total_seconds() / 86400))
    week = requests.get(f"{service.url}/repos/{REPO}/predictions", params={"days": days}, timeout=30).json()
    recent = batch.loc[batch["created_at"] >= SNAPSHOT - pd.Timedelta(days=days)]
    assert week["count"] == len(recent) and 0 < len(recent) < len(batch)
    text = requests.get(f"{service.url}/repos/{REPO}/predictions.csv", timeout=30)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/csv")
    assert text.content == pipeline.lake.get_bytes(keys["csv_latest"])
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert len(rows) == len(batch)
    assert [int(r["number"]) for r in rows] == batch["number"].tolist()
    assert float(rows[0]["probability"]) == batch["probability"].iloc[0]
    assert set(contribution_columns(5)) <= set(rows[0])
    filtered = requests.get(f"{service.url}/repos/{REPO}/predictions.csv", params={"days": days}, timeout=30)
    assert len(list(csv.DictReader(io.StringIO(filtered.text)))) == len(recent)


@pytest.mark.parametrize("case", [
    "malformed_json", "missing_repository", "missing_id", "wrong_type_id", "wrong_type_title", "both_forms",
    "empty_list", "bad_repository", "unknown_repository", "too_many", "too_large", "future_scoring_time",
    "extra_field", "bad_top_k",
])
def test_bad_input_gets_a_4xx_with_a_reason(pipeline, service, case):
    good = as_new(pipeline.new_items[0])
    body = {"repository": REPO, "issue": good}
    kwargs = {}
    expect, words = 422, []
    if case == "malformed_json":
        kwargs = {"data": b'{"repository": "acme/widgets", "issue": {', "headers": {"content-type": "application/json"}}
        expect, words = 400, ["not valid JSON"]
    elif case == "missing_repository":
        body.pop("repository")
        words = ["repository", "Field required"]
    elif case == "missing_id":
        body["issue"] = {k: v for k, v in good.items() if k != "id"}
        words = ["issue.id", "Field required"]
    elif case == "wrong_type_id":
        body["issue"] = {**good, "id": "abc"}
        words = ["issue.id", "integer"]
    elif case == "wrong_type_title":
        body["issue"] = {**good, "title": 12}
        words = ["issue.title", "string"]
    elif case == "both_forms":
        body["issues"] = [good]
        words = ["exactly one of"]
    elif case == "empty_list":
        body = {"repository": REPO, "issues": []}
        words = ["empty"]
    elif case == "bad_repository":
        body["repository"] = "not a repo"
        words = ["repository", "pattern"]
    elif case == "unknown_repository":
        body["repository"] = "nobody/nothing"
        expect, words = 404, ["nobody/nothing", "ingest it first"]
    elif case == "too_many":
        body = {"repository": REPO, "issues": [{**good, "id": good["id"] + k, "number": 90000 + k} for k in range(41)]}
        expect, words = 413, ["41 issues", "max_batch=40"]
    elif case == "too_large":
        body["issue"] = {**good, "body": "x" * 250_000}
        expect, words = 413, ["exceeds the limit of 200000 bytes"]
    elif case == "future_scoring_time":
        body["scoring_time"] = "2020-01-01T00:00:00Z"
        words = ["created after the scoring time"]
    elif case == "extra_field":
        body["colour"] = "red"
        words = ["colour", "Extra inputs"]
    elif case == "bad_top_k":
        body["top_k"] = -1
        words = ["top_k"]
    r = requests.post(f"{service.url}/predict", timeout=30, **(kwargs or {"json": body}))
    assert r.status_code == expect, r.text
    detail = r.json()["detail"]
    for word in words:
        assert word in detail, detail


def test_bad_query_parameters(service):
    assert requests.get(f"{service.url}/repos/{REPO}/predictions", params={"days": -1}, timeout=30).status_code == 422
    r = requests.get(f"{service.url}/repos/{REPO}/predictions", params={"days": "soon"}, timeout=30)
    assert r.status_code == 422 and "days" in r.json()["detail"]
    r = requests.get(f"{service.url}/repos/{REPO}/issues/abc/prediction", timeout=30)
    assert r.status_code == 422 and "number" in r.json()["detail"]
    assert requests.get(f"{service.url}/nowhere", timeout=30).status_code == 404


def test_model_health_openapi(pipeline, service):
    model = requests.get(f"{service.url}/model", timeout=30).json()
    assert model["feature_count"] == len(FEATURE_NAMES) and model["as_of"] == SNAPSHOT.isoformat()
    assert "roc_auc" in model["metrics"]
    assert requests.get(f"{service.url}/healthz", timeout=30).json()["status"] == "ok"
    schema = requests.get(f"{service.url}/openapi.json", timeout=30).json()
    for path in ("/predict", "/repos/{owner}/{repo}/issues/{number}/prediction", "/repos/{owner}/{repo}/predictions",
                 "/repos/{owner}/{repo}/predictions.csv", "/model", "/healthz", "/metrics"):
        assert path in schema["paths"], path
    components = schema["components"]["schemas"]
    assert {"PredictRequest", "PredictResponse", "GitHubIssue", "IssuePrediction", "Contribution",
            "ErrorResponse"} <= set(components)
    assert "repository" in components["PredictRequest"]["required"]
    ok = schema["paths"]["/predict"]["post"]["responses"]
    assert ok["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictResponse")
    assert {"413", "422", "503"} <= set(ok)


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    out: dict[str, list] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line.startswith("# HELP ") or line.startswith("# TYPE ") or not line, line
            continue
        m = LINE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def test_metrics_count_requests(pipeline, service):
    def count(metrics, route, status):
        return sum(v for labels, v in metrics.get("issue_assets_http_requests_total", [])
                   if labels["route"] == route and labels["status"] == status)

    before = parse_metrics(requests.get(f"{service.url}/metrics", timeout=30).text)
    for _ in range(3):
        assert post(service, {"repository": REPO, "issue": as_new(pipeline.new_items[1])}).status_code == 200
    post(service, {"repository": REPO})
    after = parse_metrics(requests.get(f"{service.url}/metrics", timeout=30).text)
    assert count(after, "/predict", "200") - count(before, "/predict", "200") == 3
    assert count(after, "/predict", "422") - count(before, "/predict", "422") == 1
    buckets = [(float(lab["le"]), v) for lab, v in after["issue_assets_http_request_duration_seconds_bucket"]
               if lab["route"] == "/predict" and lab["method"] == "POST"]
    values = [v for _, v in sorted(buckets)]
    assert values == sorted(values) and values[-1] == count(after, "/predict", "200") + count(after, "/predict", "422") \
        + sum(count(after, "/predict", s) for s in ("400", "404", "413", "503"))
    versions = [lab["version"] for lab, v in after["issue_assets_model_info"] if v == 1]
    assert versions == [service.app.state.holder.current.version]


def test_hot_swap_during_traffic(pipeline, service):
    """Promote the second model while four threads keep predicting: no request fails, the version changes."""
    item = as_new(pipeline.new_items[2])
    seen: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(f"{service.url}/predict", json={"repository": REPO, "issue": item}, timeout=30)
                version = r.json().get("model_version") if r.status_code == 200 else None
                seen.append((time.monotonic(), r.status_code, version))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    while len(seen) < 20:
        time.sleep(0.01)
    pipeline.registry.promote(pipeline.second_version)
    promoted_at = time.monotonic()
    deadline = promoted_at + 30
    while time.monotonic() < deadline:
        recent = [v for _, _, v in seen[-8:]]
        if len(seen) > 20 and recent and all(v == pipeline.second_version for v in recent):
            break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    statuses = {s for _, s, _ in seen}
    assert statuses == {200}, statuses
    versions = [v for _, _, v in seen]
    assert versions[0] == pipeline.version and versions[-1] == pipeline.second_version
    first_new = versions.index(pipeline.second_version)
    assert all(v == pipeline.second_version for v in versions[first_new + 4:])  # in-flight stragglers at most
    probabilities = requests.post(f"{service.url}/predict", json={"repository": REPO, "issue": item},
                                  timeout=30).json()["predictions"][0]
    targets = pipeline.new_targets([item], pd.Timestamp(probabilities["scoring_time"]))
    want = score_issues(pipeline.second_model, pipeline.second_version, pipeline.issues, pipeline.comments, targets,
                        pd.Timestamp(probabilities["scoring_time"]))
    assert abs(probabilities["probability"] - want["probability"].iloc[0]) <= 1e-12
    metrics = parse_metrics(requests.get(f"{service.url}/metrics", timeout=30).text)
    assert metrics["issue_assets_model_swaps_total"][0][1] >= 1
    assert [lab["version"] for lab, _ in metrics["issue_assets_model_info"]] == [pipeline.second_version]
    pipeline.registry.rollback("test over")


def test_no_champion_is_503(pipeline, tmp_path):
    app = create_app(ModelRegistry(LocalStore(tmp_path / "empty")), pipeline.lake, reload_interval_s=0.2)
    svc = Service(app)
    try:
        r = post(svc, {"repository": REPO, "issue": as_new(pipeline.new_items[0])})
        assert r.status_code == 503 and "no model has been promoted" in r.json()["detail"]
        assert requests.get(f"{svc.url}/model", timeout=30).status_code == 503
        health = requests.get(f"{svc.url}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["status"] == "no_model"
    finally:
        svc.stop()


class BrokenLake(LocalStore):
    def version(self, key):
        raise RuntimeError("disk on fire")


def test_unexpected_errors_are_json_and_the_service_survives(pipeline, tmp_path):
    app = create_app(pipeline.registry, BrokenLake(tmp_path / "broken"), reload_interval_s=0.2)
    svc = Service(app)
    try:
        r = post(svc, {"repository": REPO, "issue": as_new(pipeline.new_items[0])})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error (RuntimeError); the service log has the details"}
        assert "disk on fire" not in r.text
        assert requests.get(f"{svc.url}/healthz", timeout=30).status_code == 200
        metrics = parse_metrics(requests.get(f"{svc.url}/metrics", timeout=30).text)
        assert any(lab["route"] == "/predict" and lab["status"] == "500"
                   for lab, _ in metrics["issue_assets_http_requests_total"])
    finally:
        svc.stop()


def test_lake_change_refreshes_history(pipeline, tmp_path):
    lake = LocalStore(tmp_path / "lake")
    half = pipeline.issues.iloc[: len(pipeline.issues) // 2]
    write_parquet(lake, current_key("issues", REPO), half)
    write_parquet(lake, current_key("comments", REPO), pipeline.comments)
    app = create_app(pipeline.registry, lake, reload_interval_s=0.1)
    svc = Service(app)
    try:
        item = as_new(pipeline.new_items[0])
        scoring_time = pd.Timestamp(item["created_at"]) + pd.Timedelta(hours=1)
        body = {"repository": REPO, "issue": item, "scoring_time": scoring_time.isoformat()}
        first = post(svc, body).json()["predictions"][0]["probability"]
        write_parquet(lake, current_key("issues", REPO), pipeline.issues)
        time.sleep(0.25)
        second = post(svc, body).json()
        targets = pipeline.new_targets([item], scoring_time)
        version = second["model_version"]
        model = pipeline.registry.load_model(version)
        want = score_issues(model, version, pipeline.issues, pipeline.comments, targets, scoring_time)
        assert abs(second["predictions"][0]["probability"] - want["probability"].iloc[0]) <= 1e-12
        assert second["predictions"][0]["probability"] != first
    finally:
        svc.stop()


def test_predictions_roundtrip_json(pipeline, service):
    r = post(service, {"repository": REPO, "issue": as_new(pipeline.new_items[5]), "top_k": 3})
    got = r.json()["predictions"][0]
    assert len(got["top_contributions"]) == 3
    assert set(got) >= {"probability", "rank", "model_version", "scoring_time", "prediction_time", "top_contributions"}
    json.dumps(got)


def test_fast_path_features_equal_reference_for_many_new_issues(pipeline):
    """The prepared fast path (numpy event logs, no table rebuild) gives the reference path's features."""
    rng = np.random.default_rng(11)
    hist = pipeline.issues
    known_authors = hist.dropna(subset=["user_id"]).drop_duplicates("user_id").head(40)
    prepared = PreparedHistory(pipeline.issues, pipeline.comments)
    base = pd.Timestamp(pipeline.new_items[-1]["created_at"])
    rows = []
    for k in range(60):
        a = known_authors.iloc[k % len(known_authors)]
        kind = k % 8
        row = {"repo": REPO if k % 7 else "other/repo", "id": 9_000_000 + k, "number": 80_000 + k,
               "title": f"Crash in widget {k}? [bug] v1.{k}.2", "body": "Steps to reproduce\n```x```\n@bob #12",
               "user_login": a["user_login"], "user_id": a["user_id"], "user_type": "User",
               "author_association": "NONE", "labels": "[]", "comments": 0, "is_pull_request": False,
               "created_at": base - pd.Timedelta(minutes=int(rng.integers(0, 600))), "closed_at": pd.NaT}
        if kind == 1:
            row.update(user_login=f"newbie{k}", user_id=77_000_000 + k)
        elif kind == 2:
            row.update(user_login="dependabot[bot]", user_id=49699333, user_type="Bot")
        elif kind == 3:
            row.update(author_association="MEMBER")
        elif kind == 4:
            row.update(body=None, title="")
        elif kind == 5:
            row.update(body="trace\n  at foo.bar()\n" * 20_000)
        elif kind == 6:
            row.update(user_id=pd.NA, user_login=None)
        elif kind == 7:
            row.update(user_id=pd.NA, user_login=f"loginonly{k % 3}")
        rows.append(row)
    targets = pd.DataFrame(rows)
    targets["user_id"] = targets["user_id"].astype("Int64")
    for T in (base + pd.Timedelta(hours=1), base + pd.Timedelta(days=2)):
        for chunk in (targets, targets.iloc[[0]], targets.iloc[[5]], targets.iloc[[33]], targets.iloc[10:25]):
            want = target_features(pipeline.issues, pipeline.comments, chunk, T)
            before = prepared.fast
            got = prepared.features(chunk, T)
            assert prepared.fast == before + 1  # the fast path answered
            assert list(got.columns) == list(want.columns)
            numeric = [c for c in want.columns if want[c].dtype.kind == "f"]
            np.testing.assert_allclose(got[numeric].to_numpy(), want[numeric].to_numpy(), rtol=1e-12, atol=1e-12)
            pd.testing.assert_frame_equal(got.drop(columns=numeric), want.drop(columns=numeric))


# ---- the array-only fast path of POST /predict ---------------------------------------------------

TEXT_FRAGMENTS = [
    "@", "#", "1.2.3", "1.2", "v10.20", "`", "```", "````", "\n", " ", "\t", "\x0b", "\x0c", "\r", "\u00a0", "\u2028",
    "> ", "- [ ]", "* [x]", "+ [X]", "# ", "### ", "    ####", "####### ", "at foo.bar", "12: 0xdeadBEEF", "#3 0xAB",
    'File "a.py", line 9', "panicked at", "stack backtrace", "Traceback (most recent", "Stack trace:", "PHP Fatal",
    "#4 foo(", "https://", "HTTP://", "http:/", "![alt](", "![", "](", "<img ", "<IMG\t", "steps to reproduce",
    "Expected behavior", "expected behaviour", "actual result", "ACTUAL OUTPUT", "version info", "versions used",
    "environment", "to reproduce", "meta", "metadata", "error", "ERRORS", "panic", "exception", "fatal", "segfault",
    "segmentation fault", "crash", "crashes", "crashed", "ICE", "ice", "abort", "aborted", "how", "why", "what", "when",
    "where", "is", "are", "can", "could", "does", "do", "is it possible", "question", "help", "?", "feature", "support",
    "allow", "implement", "proposal", "rfc", "enhancement", "request", "add", "would be nice", "should", "bug", "fail",
    "fails", "failed", "failure", "broken", "wrong", "incorrect", "regression", "unexpected", "doesn't work",
    "doesnt work", "does not work", "not working", "\u017f", "\u212a", "\u0130", "\u0131", "é", "É", "日本", "😀",
    "\u01c5", "\u24b6", "\U0003134a", "_", "&", "/", "a", "Z", "9", "[", "]", "(", ")", ":", "x", "\x00", "[tag]",
    "comp/a.b-c: ", "@user", "a@b", "`@x`", "/@y", "&#1", "x#2", "#12a", "#12_", "0x", "\\", '"', "'", "\ud800",
    "https://github.com/o/r/issues/1", "```python\nraise ValueError('x')\n```", "\u017fteps to reproduce", "ERR\u212a",
]


def random_text(rng: random.Random, parts: int) -> str:
    out = []
    for _ in range(parts):
        fragment = rng.choice(TEXT_FRAGMENTS)
        roll = rng.random()
        out.append(fragment.upper() if roll < 0.15 else fragment.title() if roll < 0.25 else fragment)
        if rng.random() < 0.5:
            out.append(rng.choice([" ", "\n", "", "", ".", ",", "-", "\t", "\n\n", "  "]))
    return "".join(out)


def tricky_texts() -> list[tuple[object, object]]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    trace = "Traceback (most recent call last):\n" + '  File "x.py", line 3, in f\n    g()\n' * 400
    return [
        ("", ""), ("", None), (None, None), (np.nan, "x"), (pd.NA, pd.NA), ("  ", " \t\n\f\r "), ("\x0b", "\x0b"),
        ("How do I configure the parser?", "Steps to reproduce\n```\ncode\n```\nExpected behaviour: works"),
        ("[bug] crash: panic at 1.2.3", "@a@b #1#2 - [ ]- [x] > q\n# H\n  at foo.bar(Baz.java:1)\n#12 0xFF\n"),
        ("ſteps K \u0130\u0131 ÉCOLE ǅ Ⓐ 日本語?", "\u0130ssue \u0131s \u017fegfault ER\u212aOR https://a.b ![i](u) <img src=x>"),
        ("a\x00b", "x" * 70_000), ("x", "\ud800 lone \udfff"), ("q", "```` ````` ``` ``"), ("tail?  \n", "\n\n"),
        ("Why", "why?how?what?"), ("fix: thing", "# a\n## b\n####### c\n   ### d\n    #### e"), ("plain", readme),
        ("long", readme * 4), ("trace", trace), ("quotes", "> a\n>b\n  > c\nd > e"), ("1.2.3.4", "v1.2 1.2a 1.2.3b"),
        ("mentions", "@x @y `@z` /@w a@b\n@c"), ("refs", "#1 &#2 x#3 (#4) #5a #6_ ##7"),
        ("\U0003134a title", "body"), ("Ⅻ Ⓐ", "numbers ² ½ ①"), ("é" * 20_000, "é" * 70_000),
    ]


def test_text_rows_equal_text_columns():
    """The plain-`re` text features equal the features module's pyarrow (RE2) ones, text by text."""
    from issue_assets.features.text import text_columns
    from issue_assets.serving import text_rows

    assert text_rows.ready()
    assert text_rows._patterns().arrow_only == []  # every pattern of the features module translates
    rng = random.Random(5)
    pairs = tricky_texts()
    for k in range(3000):
        pairs.append((random_text(rng, rng.randint(0, 14)) if k % 40 else None,
                      random_text(rng, rng.randint(0, 120)) if k % 33 else None))
    titles = [t for t, _ in pairs]
    bodies = [b for _, b in pairs]
    want = text_columns(pd.Series(titles, dtype=object), pd.Series(bodies, dtype=object))
    python, to_arrow = text_rows._python_rows(titles, bodies)
    assert len(to_arrow) <= 10, to_arrow  # the Python path answered nearly every text itself
    assert list(python) == list(want)
    for name, values in want.items():
        ok = np.isclose(python[name], values, rtol=0, atol=0, equal_nan=True)
        ok[to_arrow] = True
        bad = np.nonzero(~ok)[0]
        assert len(bad) == 0, (name, [(titles[i], bodies[i], python[name][i], values[i]) for i in bad[:3]])
    got = text_rows.text_rows(titles, bodies)
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    for i in range(0, len(pairs), 97):  # one row at a time, as the service calls it
        one = text_rows.text_rows(titles[i:i + 1], bodies[i:i + 1])
        assert all(np.array_equal(one[k], want[k][i:i + 1], equal_nan=True) for k in want), pairs[i]


def test_text_pattern_semantics_match_re2():
    """What the translation relies on, checked against RE2 itself over every code point: letters and
    capitals (where Python's Unicode tables know the code point), ASCII \\s \\d \\w, and case folding."""
    import unicodedata

    import pyarrow as pa
    import pyarrow.compute as pc

    from issue_assets.serving import text_rows

    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    chars = [chr(c) for c in points]
    arr = pa.array(chars, type=pa.large_string())

    def re2(pattern):
        return np.asarray(pc.match_substring_regex(arr, pattern))

    category = [unicodedata.category(ch) for ch in chars]
    known = np.array([cat != "Cn" for cat in category])
    assert np.array_equal(re2(r"\pL")[known], np.array([cat[0] == "L" for cat in category])[known])
    assert np.array_equal(re2(r"\p{Lu}")[known], np.array([cat == "Lu" for cat in category])[known])
    assert np.array_equal(np.array([ch.isalpha() for ch in chars])[known], re2(r"\pL")[known])
    for pattern in (r"\s", r"\S", r"\d", r"\w", r"(?i)\w", r"(?i)[a-z]", r"(?i)[^\]]", r"(?i)[0-9a-f]", r"(?mi)^\s*at"):
        python = re.compile(text_rows.translate(pattern), re.ASCII)
        assert np.array_equal(re2(pattern), np.array([python.search(ch) is not None for ch in chars])), pattern
    with pytest.raises(text_rows.Unsupported):
        text_rows.translate(r"(?i)é")
    with pytest.raises(text_rows.Unsupported):
        text_rows.translate(r"(?<=a)b")


def test_hashed_row_and_decision_equal_sklearn(pipeline):
    """The one-row text score: the hashed vector and the SGD decision equal hash_texts / decision_function."""
    from issue_assets.features.text_score import TextScoreConfig, hash_texts, period_start
    from issue_assets.serving.text_rows import decision, hashed_row

    config = TextScoreConfig()
    prepared = PreparedHistory(pipeline.issues, pipeline.comments)
    p0 = int(period_start(np.array([SNAPSHOT.value // 1000]), config)[0])
    model = prepared._period_model(p0, prepared._builder)
    assert model is not None
    rng = random.Random(9)
    pairs = tricky_texts()[:-3] + list(zip(pipeline.issues["title"], pipeline.issues["body"], strict=True))[:300]
    pairs += [(random_text(rng, 8), random_text(rng, 60)) for _ in range(200)] + [("ab " * 9000, "")]
    for title, body in pairs:
        if isinstance(title, str) and "\ud800" in (title + (body if isinstance(body, str) else "")):
            continue  # not valid UTF-8: the vectorizer refuses it (the service stores '?' instead)
        X = hash_texts(pd.Series([title], dtype=object), pd.Series([body], dtype=object), config)
        cols, data = hashed_row(title, body, config)
        np.testing.assert_array_equal(cols, X.indices)
        np.testing.assert_array_equal(data, X.data)
        assert data.dtype == X.data.dtype
        assert decision(model, (cols, data)) == model.decision_function(X)[0]


def test_model_arrays_equal_fast_arrays(pipeline):
    """PreparedHistory.model_arrays (the fast path's features) equals fast_arrays bit for bit, row by row."""
    from issue_assets.features.frames import normalize_issues
    from issue_assets.serving.features import _us, prepare_targets, utc

    prepared = PreparedHistory(pipeline.issues, pipeline.comments)
    targets = generated_targets(pipeline, 48)
    base = targets["created_at"].max()
    for T in (base + pd.Timedelta(hours=1), base + pd.Timedelta(days=3)):
        for i in range(len(targets)):
            raw = prepared._rows_of(normalize_issues(prepare_targets(targets.iloc[[i]], T)))
            want = prepared.fast_arrays(raw, _us(utc(T)))
            got = prepared.model_arrays(raw, _us(utc(T)))
            assert want is not None and got is not None
            for name in FEATURE_NAMES + ["prediction_time"]:
                assert np.array_equal(np.asarray(got[name], float), np.asarray(want[name], float), equal_nan=True), \
                    (i, name, got[name], want[name])


def generated_targets(pipeline, count: int) -> pd.DataFrame:
    rng = random.Random(21)
    hist = pipeline.issues
    authors = hist.dropna(subset=["user_id"]).drop_duplicates("user_id").head(30)
    base = pd.Timestamp(pipeline.new_items[-1]["created_at"])
    rows = []
    for k in range(count):
        a = authors.iloc[k % len(authors)]
        row = {"repo": REPO, "id": 8_000_000 + k, "number": 81_000 + k, "title": random_text(rng, 6),
               "body": random_text(rng, rng.randint(0, 60)).replace("\ud800", "?"), "user_login": a["user_login"],
               "user_id": a["user_id"], "user_type": a["user_type"], "author_association": a["author_association"],
               "labels": "[]", "comments": 0, "is_pull_request": False,
               "created_at": base - pd.Timedelta(minutes=rng.randint(0, 900)), "closed_at": pd.NaT}
        kind = k % 6
        if kind == 1:
            row.update(user_login=f"fresh{k}", user_id=66_000_000 + k)
        elif kind == 2:
            row.update(user_id=pd.NA, user_login=None)
        elif kind == 3:
            row.update(user_id=pd.NA, user_login="loginonly")
        elif kind == 4:
            row.update(closed_at=row["created_at"] + pd.Timedelta(minutes=30))
        elif kind == 5:
            row.update(user_login="dependabot[bot]", user_type="Bot", author_association="MEMBER")
        rows.append(row)
    out = pd.DataFrame(rows)
    out["user_id"] = out["user_id"].astype("Int64")
    return out


def varied_items(pipeline, count: int, seed: int) -> list[dict]:
    """New issues in GitHub's JSON shape with the fields the service reads varied (and a few it ignores)."""
    rng = random.Random(seed)
    base = pd.Timestamp(pipeline.new_items[-1]["created_at"])
    known = [i["user"] for i in pipeline.items if isinstance(i.get("user"), dict)]
    out = []
    for k in range(count):
        item = as_new(pipeline.new_items[k % len(pipeline.new_items)])
        item["id"] = 950_000_000 + seed * 10_000 + k
        item["number"] = 95_000 + seed * 1_000 + k
        created = base - pd.Timedelta(seconds=rng.randint(0, 200_000), microseconds=rng.choice([0, 0, 123_456]))
        form = k % 4
        if form == 0:
            item["created_at"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif form == 1:
            item["created_at"] = created.tz_convert("Europe/Paris").isoformat()
        elif form == 2:
            item["created_at"] = created.tz_localize(None).isoformat()  # naive: UTC
        else:
            item["created_at"] = created.isoformat()
        kind = k % 13
        if kind == 1:
            item["user"] = {"login": f"newcomer{k}", "id": 91_000_000 + k, "type": "User"}
            item["author_association"] = "NONE"
        elif kind == 2:
            item["user"] = {"login": "renovate[bot]", "id": 29139614, "type": "Bot"}
        elif kind == 3:
            item["user"] = dict(rng.choice(known))
            item["author_association"] = rng.choice(["OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR"])
        elif kind == 4:
            item["body"], item["title"] = None, ""
        elif kind == 5:
            item["body"] = "thread 'main' panicked at src/lib.rs:1\n  at foo.bar()\n" * 6_000
        elif kind == 6:
            item["user"] = None
        elif kind == 7:
            item["user"] = {"login": f"ghost{k % 2}"}
        elif kind == 8:
            item["title"] = "Ошибка ⚠ 日本語 \u017fteps K \u0130\u0131 😀 \ud83d?"
            item["body"] = "```js\nx()\n```\nhttps://example.com/a?b=1 ![img](u) @dev #12 v1.2.3 \ud800 é" * 3
            item["user"] = {"login": "us\udce9r", "id": 92_000_000 + k, "type": "User"}
        elif kind == 9:
            item["closed_at"] = (created + pd.Timedelta(hours=rng.choice([1, 30]))).isoformat()
            item["state"] = "closed"
        elif kind == 10:
            item["closed_at"] = (created - pd.Timedelta(hours=1)).isoformat()  # closed before created
            item["labels"] = [{"name": "bug"}, "question", {"name": None}]
            item["comments"] = 7
        elif kind == 11:
            item["title"] = random_text(rng, 8).replace("\ud800", "")
            item["body"] = random_text(rng, 100)
        elif kind == 12:
            item["title"] = "  [parser] Why does `x` fail?  "
            item["body"] = "```\n```` \n> quote\n- [ ] a\n- [x] b\n#12 #34x @user a@b 1.2.3.4\n### Environment\n"
        out.append(item)
    return out


def assert_same_json(got, want, path="") -> None:
    """Equal JSON values; floats to 1e-12 (the fast path is expected to give the very same ones)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for key in want:
            assert_same_json(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_json(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, int | float) and abs(got - want) <= 1e-12, (path, got, want)
    else:
        assert got == want, (path, got, want)


@pytest.fixture(scope="module")
def fast_and_general(pipeline):
    apps = [create_app(pipeline.registry, pipeline.lake, max_body_bytes=5_000_000, max_batch=40,
                       reload_interval_s=0.2, fast_path=flag) for flag in (True, False)]
    services = [Service(app) for app in apps]
    yield services
    for svc in services:
        svc.stop()


def test_fast_path_over_http_equals_general_path(pipeline, fast_and_general):
    """POST /predict answered by the fast path gives the general path's response, field for field, for
    many varied new issues (one at a time and in small batches, several top_k, scoring times)."""
    fast, general = fast_and_general
    items = varied_items(pipeline, 78, seed=1)
    newest = max(pd.Timestamp(i["created_at"]).tz_localize("UTC") if pd.Timestamp(i["created_at"]).tzinfo is None
                 else pd.Timestamp(i["created_at"]) for i in items)
    warm = {"repository": REPO, "issue": items[0], "scoring_time": (newest + pd.Timedelta(hours=2)).isoformat()}
    assert post(fast, warm).status_code == 200  # fits the period's text-score model (general path, once)
    before = fast.app.state.metrics.fast_path
    bodies = []
    for k, item in enumerate(items):
        when = newest + pd.Timedelta(minutes=[5, 120, 3000][k % 3])
        bodies.append({"repository": REPO, "issue": item, "scoring_time": when.isoformat(), "top_k": [5, 0, 1, 50][k % 4]})
    for start in range(0, len(items), 13):  # small batches: ranks among them
        bodies.append({"repository": REPO, "issues": items[start:start + 13],
                       "scoring_time": (newest + pd.Timedelta(hours=6)).isoformat()})
    for body in bodies:
        r_fast, r_general = post(fast, body), post(general, body)
        assert r_fast.status_code == r_general.status_code == 200, (r_fast.text[:300], r_general.text[:300])
        assert_same_json(r_fast.json(), r_general.json())
        assert r_fast.content == r_general.content  # in fact the very same bytes
    assert fast.app.state.metrics.fast_path - before == len(bodies)  # every one answered by the fast path
    assert general.app.state.metrics.fast_path == 0


def test_fast_path_default_scoring_time_and_batch_function(pipeline, fast_and_general):
    """Scored at 'now': the response's scoring time reproduces it on the general path and score_issues."""
    fast, general = fast_and_general
    items = varied_items(pipeline, 13, seed=2)
    for item in items:
        got = post(fast, {"repository": REPO, "issue": item})
        assert got.status_code == 200, got.text
        used = got.json()["scoring_time"]
        want = post(general, {"repository": REPO, "issue": item, "scoring_time": used})
        assert_same_json(got.json(), want.json())
    used = pd.Timestamp(used)
    expected = score_issues(pipeline.model, pipeline.version, pipeline.issues, pipeline.comments,
                            pipeline.new_targets([items[-1]], used), used)
    prediction = got.json()["predictions"][0]
    assert abs(prediction["probability"] - expected["probability"].iloc[0]) <= 1e-12
    assert [c["feature"] for c in prediction["top_contributions"]] == \
        [expected[f"contrib_{k}_feature"].iloc[0] for k in range(1, 6)]


def test_fast_path_defers_to_the_general_path(pipeline, fast_and_general):
    """What the fast path cannot answer exactly goes to the general path: same answers and errors."""
    fast, general = fast_and_general
    item = varied_items(pipeline, 1, seed=3)[0]
    when = (pd.Timestamp(pipeline.new_items[-1]["created_at"]) + pd.Timedelta(days=1)).isoformat()
    old = next(i for i in pipeline.items if "pull_request" not in i and i["id"] in set(pipeline.issues["id"]))
    pr = {**item, "id": item["id"] + 1, "pull_request": {"url": "x"}}
    cases = [
        ({"issue": old}, 200),  # already in the lake history
        ({"issues": [item, item]}, 422),  # the same id twice
        ({"issues": [item] + varied_items(pipeline, 17, seed=4)}, 200),  # more than FAST_MAX_ISSUES
        ({"issue": {**item, "created_at": "1999-12-31T23:00:00Z"}}, 200),  # outside the fast path's years
        ({"issue": item, "scoring_time": "2020-01-01T00:00:00Z"}, 422),  # created after the scoring time
        ({"issue": {**item, "id": 2**63}}, None),  # beyond the lake's int64: whatever the general path says
    ]
    for extra, status in cases:
        body = {"repository": REPO, "scoring_time": when, **extra}
        before = (fast.app.state.metrics.fast_path, fast.app.state.metrics.general_path)
        r_fast, r_general = post(fast, body), post(general, body)
        assert r_fast.status_code == r_general.status_code, (extra.keys(), r_fast.text[:300], r_general.text[:300])
        assert status is None or r_fast.status_code == status, r_fast.text[:300]
        assert_same_json(r_fast.json(), r_general.json())
        assert (fast.app.state.metrics.fast_path, fast.app.state.metrics.general_path) == (before[0], before[1] + 1)
    r = post(fast, {"repository": REPO, "issue": pr, "scoring_time": when})
    assert r.status_code == post(general, {"repository": REPO, "issue": pr, "scoring_time": when}).status_code


def test_one_query_event_answers_equal_vectorized(pipeline):
    """_WithBatch's one-row answers (bisection of one key's segment, a one-event batch answered directly)
    equal the vectorized EventIndex answers (asked with the query twice), exactly."""
    from issue_assets.serving.features import _WithBatch

    prepared = PreparedHistory(pipeline.issues, pipeline.comments)
    rng = np.random.default_rng(3)
    for name, index in prepared._indexes.items():
        keys = index.keys
        times = index.times
        width = index._base._cum.shape[1]
        for batch_key in (-1, int(keys[len(keys) // 2]), int(keys.max()) + 5):
            batch_time = int(times[len(times) // 3])
            for n_events in (0, 1, 2):
                weights = rng.random((n_events, width))
                wb = _WithBatch(index, [batch_key] * n_events, [batch_time + 10**6 * k for k in range(n_events)],
                                weights)
                for _ in range(40):
                    qk = int(rng.choice([batch_key, -1, int(rng.choice(keys)), int(keys.max()) + 1]))
                    qt = int(rng.choice([batch_time, batch_time - 1, batch_time + 1, int(rng.choice(times)),
                                         int(rng.choice(times)) + 1, int(times.min()) - 5, int(times.max()) + 5]))
                    for inclusive in (True, False):
                        one = wb.sums(np.array([qk]), np.array([qt]), inclusive)
                        two = wb.sums(np.array([qk, qk]), np.array([qt, qt]), inclusive)
                        assert np.array_equal(one[0], two[0]), (name, qk, qt, inclusive, one, two)
                        a = wb.last_time(np.array([qk]), np.array([qt]), inclusive)
                        b = wb.last_time(np.array([qk, qk]), np.array([qt, qt]), inclusive)
                        assert np.array_equal(a, b[:1], equal_nan=True), (name, qk, qt, a, b)
                    a, b = wb.first_time(np.array([qk])), wb.first_time(np.array([qk, qk]))
                    assert np.array_equal(a, b[:1], equal_nan=True), (name, qk, a, b)


def test_probabilities_of_equal_scoring_probabilities(pipeline):
    """The fast path's direct prediction call gives scoring.probabilities' (and booster.predict's) numbers."""
    import xgboost as xgb

    from issue_assets.serving import fast
    from issue_assets.serving.scoring import probabilities

    model = pipeline.model
    assert fast._C_API and fast.warm(model) and fast._direct_ok[model]
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(300, len(model.feature_names))) * 20).astype(np.float32)
    X[rng.random(X.shape) < 0.25] = np.nan
    for rows in [slice(i, i + 1) for i in range(0, 300, 7)] + [slice(0, 13), slice(0, 300)]:
        got = fast.probabilities_of(model, X[rows])
        np.testing.assert_array_equal(got, probabilities(model, X[rows]))
        matrix = xgb.DMatrix(X[rows], feature_names=model.feature_names, nthread=1)
        np.testing.assert_array_equal(got, model.booster.predict(matrix).astype(float))


def test_chunked_bodies_are_limited_too(pipeline, service):
    """Without a Content-Length (chunked transfer) the body is counted as it arrives: 413 past the limit."""
    good = json.dumps({"repository": REPO, "issue": as_new(pipeline.new_items[0])}).encode()

    def chunks(data: bytes, size: int = 8192):
        for i in range(0, len(data), size):
            yield data[i:i + size]

    headers = {"content-type": "application/json"}
    ok = requests.post(f"{service.url}/predict", data=chunks(good), headers=headers, timeout=30)
    assert ok.status_code == 200, ok.text
    big = json.dumps({"repository": REPO, "issue": {**as_new(pipeline.new_items[0]), "body": "x" * 250_000}}).encode()
    r = requests.post(f"{service.url}/predict", data=chunks(big), headers=headers, timeout=30)
    assert r.status_code == 413 and "exceeds the limit of 200000 bytes" in r.json()["detail"]
