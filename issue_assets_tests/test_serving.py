"""The scoring path and the prediction service, over a real small pipeline and loopback HTTP."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import socket
import threading
import time

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
