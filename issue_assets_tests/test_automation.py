"""Automation around the assets: every sensor and schedule on by default (as the instance reports them), the
polling sensor, the retraining sensor, the run-failure alert, freshness policies, and the asset jobs executed
with `dagster job execute` as CI runs them (real subprocesses against the replay server)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from issue_assets.definitions import defs
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import sources
from issue_assets.ingest.sync import sync_incremental
from issue_assets.lake import keys
from issue_assets.lake.store import LocalStore, write_parquet
from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.training import TrainedModel
from issue_assets.registry import POINTER, ModelRegistry
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.sensors import new_activity_sensor, new_labelled_issues_sensor, run_failure_alert_sensor

REPO = "demo-org/demo-project"
HORIZON = pd.Timedelta(days=7)


# ---- new_labelled_issues_sensor ----------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    issues, _ = simulate_repository(REPO, n_issues=300, seed=11, start="2025-03-01T00:00:00Z", days=200)
    return [i for i in issues if "pull_request" not in i], [i for i in issues if "pull_request" in i]


def _labels(items: list[dict]) -> pd.DataFrame:
    """What issue_features stores for the sensor: id and the moment the 7-day label became known."""
    created = pd.to_datetime(pd.Series([i["created_at"] for i in items]), utc=True)
    closed = pd.to_datetime(pd.Series([i.get("closed_at") for i in items]), utc=True)
    deadline = created + HORIZON
    known = closed.where(closed.notna() & (closed <= deadline), deadline)
    return pd.DataFrame({"id": pd.Series([i["id"] for i in items], dtype="int64"),
                         "label_known_at": known.astype("datetime64[us, UTC]")})


@pytest.fixture()
def sensor_env(tmp_path, simulated, monkeypatch):
    """An instance with the repository registered, an empty lake and registry, and the replay server."""
    issues, prs = simulated
    monkeypatch.delenv("RETRAIN_POLL_GITHUB", raising=False)
    with ReplayServer(issues + prs) as server, dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", [REPO])
        sources.add(REPO, server.url, store=LocalStore(tmp_path / "lake"))
        yield {"instance": instance, "server": server, "lake": tmp_path / "lake", "registry": tmp_path / "registry",
               "cache": tmp_path / "http_cache", "issues": issues, "monkeypatch": monkeypatch,
               "simulated": simulated}


def _resources(env, lake_uri: str | None = None, registry_uri: str | None = None, api_url: str | None = None) -> dict:
    """The repository's API comes from its binding in the lake unless `api_url` overrides it."""
    return {"lake": LakeResource(uri=lake_uri or str(env["lake"])),
            "model_store": ModelStoreResource(uri=registry_uri or str(env["registry"])),
            "github": GitHubResource(api_url=api_url, cache_dir=str(env["cache"]))}


def _tick(env, cursor: str | None = None, **uris):
    # S3Resource (nested in the lake and model store) is a context-managed resource: open the context.
    with dg.build_sensor_context(instance=env["instance"], cursor=cursor, resources=_resources(env, **uris)) as context:
        return new_labelled_issues_sensor(context)


def _write_features(env, items: list[dict]) -> pd.DataFrame:
    frame = _labels(items)
    write_parquet(LocalStore(env["lake"]), keys.features_key(REPO), frame)
    return frame


def _skip_message(result) -> str:
    skip = result if isinstance(result, dg.SkipReason) else getattr(result, "skip_reason", None)
    assert skip is not None, f"expected a SkipReason, got {result!r}"
    return skip.skip_message


def _requests(result) -> list[dg.RunRequest]:
    assert isinstance(result, dg.SensorResult), f"expected a SensorResult, got {result!r}"
    return list(result.run_requests or [])


def _tiny_model() -> TrainedModel:
    data = make_training_set(300, seed=1)
    dtrain = xgb.DMatrix(data[FEATURES].to_numpy(np.float32), label=data["closed_within_7d"],
                         feature_names=FEATURES)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": 0}, dtrain,
                        num_boost_round=3)
    return TrainedModel(booster, FEATURES, None)


def test_below_threshold_skips_saying_how_many_of_how_many(sensor_env):
    frame = _write_features(sensor_env, sensor_env["issues"])
    total = len(frame)  # every label of the simulated history is known by now; all ids stored, none pending
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(total + 1))
    message = _skip_message(_tick(sensor_env))
    assert f"{total} of {total + 1} newly labelled issues" in message
    assert "with no champion yet" in message and "not ingested yet 0" in message


def test_at_threshold_requests_one_training_run_for_today_then_never_again(sensor_env):
    frame = _write_features(sensor_env, sensor_env["issues"])
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(len(frame)))
    first = _tick(sensor_env)
    (request,) = _requests(first)
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert request.partition_key == today
    assert request.run_key == f"retrain:{today}:first"
    assert request.tags["issue_assets/new_labels"] == str(len(frame))
    assert defs.resolve_job_def("training_job").partitions_def.has_partition_key(today)
    assert new_labelled_issues_sensor.job_name == "training_job"
    cursor = json.loads(first.cursor)
    assert cursor["run_key"] == request.run_key and cursor["count"] == len(frame)

    # The key is stable: an evaluation without the cursor asks for the same run (Dagster dedupes on it) ...
    assert _requests(_tick(sensor_env))[0].run_key == request.run_key
    # ... and the next tick with the advanced cursor requests nothing.
    again = _tick(sensor_env, cursor=first.cursor)
    assert "already requested" in _skip_message(again) and request.run_key in _skip_message(again)


def test_issues_on_github_not_ingested_yet_count_as_pending(sensor_env):
    issues = sensor_env["issues"]
    stored, pending = issues[:200], issues[200:]
    _write_features(sensor_env, stored)
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", "100000")
    message = _skip_message(_tick(sensor_env))
    assert f"{len(issues)} of 100000" in message
    assert f"(stored {len(stored)}, not ingested yet {len(pending)})" in message
    assert sensor_env["server"].stats()["by_endpoint"].get("issues", 0) >= 1
    # The poll never writes validators into the ingest's cache (that would make the ingest's own request of
    # the page answer 304 and skip what was never stored), so the next tick counts the same pending issues.
    assert not list(sensor_env["cache"].glob("*.json"))
    assert f"not ingested yet {len(pending)})" in _skip_message(_tick(sensor_env))

    # With the poll off, only what is stored counts.
    sensor_env["monkeypatch"].setenv("RETRAIN_POLL_GITHUB", "0")
    assert f"{len(stored)} of 100000" in _skip_message(_tick(sensor_env))

    # Pending issues alone reach the threshold.
    sensor_env["monkeypatch"].setenv("RETRAIN_POLL_GITHUB", "1")
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(len(issues)))
    assert len(_requests(_tick(sensor_env))) == 1


def test_labels_of_a_repository_without_features_yet_wait_for_them_instead_of_starting_a_failing_run(sensor_env):
    """On a fresh instance the source already has every label while the history is still being ingested: a
    training run then would find no issue_features, fail, and spend today's run key."""
    issues = sensor_env["issues"]
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(len(issues)))
    message = _skip_message(_tick(sensor_env))
    assert f"{len(issues)} of {len(issues)} newly labelled issues" in message
    assert f"{REPO} has no issue_features yet" in message and "training waits for them" in message
    _write_features(sensor_env, issues[:10])  # the first features exist: the rest is pending at the source
    (request,) = _requests(_tick(sensor_env))
    assert request.tags["issue_assets/new_labels"] == str(len(issues))


def test_with_a_champion_only_labels_known_after_its_cutoff_count(sensor_env):
    frame = _write_features(sensor_env, sensor_env["issues"])
    cutoff = frame["label_known_at"].sort_values().iloc[len(frame) // 2]
    after = int((frame["label_known_at"] > cutoff).sum())
    assert 0 < after < len(frame)
    registry = ModelRegistry(LocalStore(sensor_env["registry"]))
    version = registry.register(_tiny_model(), {"as_of": cutoff.strftime("%Y-%m-%d"), "cutoff": cutoff.isoformat()})
    registry.promote(version, {"reason": "test"})

    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(after + 1))
    message = _skip_message(_tick(sensor_env))
    assert f"{after} of {after + 1}" in message and cutoff.isoformat() in message

    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(after))
    (request,) = _requests(_tick(sensor_env))
    assert request.run_key.endswith(f":{version}")


def test_degraded_live_quality_of_the_champion_requests_training_and_says_why(sensor_env):
    """Below the label threshold, prediction_outcomes' summary of the champion's served predictions decides."""
    from issue_assets.lake.documents import write_json

    frame = _write_features(sensor_env, sensor_env["issues"])
    cutoff = frame["label_known_at"].max()
    registry = ModelRegistry(LocalStore(sensor_env["registry"]))
    version = registry.register(_tiny_model(), {"as_of": cutoff.strftime("%Y-%m-%d"), "cutoff": cutoff.isoformat()})
    registry.promote(version, {"reason": "test"})
    mp = sensor_env["monkeypatch"]
    mp.setenv("RETRAIN_POLL_GITHUB", "0")
    mp.setenv("LIVE_MIN_OUTCOMES", "100")
    lake = LocalStore(sensor_env["lake"])

    def summary(champion, n, auc, ece=0.02):
        write_json(lake, keys.outcomes_summary_key(REPO), {
            "repo": REPO, "champion": champion, "champion_live": {"n": n, "roc_auc": auc, "ece": ece}})

    assert "live quality holds" in _skip_message(_tick(sensor_env))  # no summary yet
    summary(version, 500, 0.71)
    assert "live quality holds" in _skip_message(_tick(sensor_env))
    summary(version, 50, 0.41)  # too few outcomes to judge
    assert "live quality holds" in _skip_message(_tick(sensor_env))
    summary("v0099-20200101T000000Z", 500, 0.41)  # another model's predictions: not the champion's quality
    assert "live quality holds" in _skip_message(_tick(sensor_env))
    summary(version, 500, 0.41)
    first = _tick(sensor_env)
    (request,) = _requests(first)
    assert request.run_key.endswith(f":{version}:live")
    reason = request.tags["issue_assets/retrain_reason"]
    assert reason.startswith("the champion's live quality degraded: live ROC AUC 0.4100 < alert threshold")
    assert REPO in reason and json.loads(first.cursor)["reason"] == reason
    assert "already requested" in _skip_message(_tick(sensor_env, cursor=first.cursor))
    summary(version, 500, 0.71, ece=0.3)
    (request,) = _requests(_tick(sensor_env))
    assert "live calibration error 0.3000 > bound 0.1000" in request.tags["issue_assets/retrain_reason"]


def test_unreachable_lake_skips_with_a_clear_reason(sensor_env):
    mp = sensor_env["monkeypatch"]
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name, value in {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        mp.setenv(name, value)
    message = _skip_message(_tick(sensor_env, lake_uri="s3://no-such-bucket/x"))
    assert message.startswith("could not count new labels: StoreError")
    assert "s3://no-such-bucket/x" in message and "testing" not in message


def test_corrupt_registry_skips_with_a_clear_reason(sensor_env):
    _write_features(sensor_env, sensor_env["issues"])
    store = LocalStore(sensor_env["registry"])
    store.put_bytes(POINTER, b"{not json")
    message = _skip_message(_tick(sensor_env))
    assert message.startswith("could not count new labels: RegistryError") and "corrupt" in message


def test_unreachable_source_still_counts_the_lake_and_names_what_it_could_not_reach(sensor_env):
    frame = _write_features(sensor_env, sensor_env["issues"])
    url = sensor_env["server"].url
    sensor_env["server"].stop()
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", "100000")
    message = _skip_message(_tick(sensor_env))
    assert message.startswith(f"{len(frame)} of 100000 newly labelled issues")
    assert f"could not reach {REPO}'s source: GitHubError" in message and "Connection" in message and url in message
    # What the lake holds reaches the threshold without the source.
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(len(frame)))
    assert len(_requests(_tick(sensor_env))) == 1


def test_exhausted_rate_limit_skips_the_source_instead_of_waiting_for_the_reset(sensor_env):
    frame = _write_features(sensor_env, sensor_env["issues"])
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", "100000")
    issues, prs = sensor_env["simulated"]
    with ReplayServer(issues + prs, rate_limit=0) as limited:  # every request: 403, reset an hour away
        sources.add(REPO, limited.url, store=LocalStore(sensor_env["lake"]))
        started = time.monotonic()
        message = _skip_message(_tick(sensor_env))
        elapsed = time.monotonic() - started
    assert message.startswith(f"{len(frame)} of 100000")
    assert f"could not reach {REPO}'s source: RateLimitedError" in message and "max_wait" in message
    assert elapsed < 60, f"the tick waited {elapsed:.0f} s"


def test_no_repositories_skips():
    with dg.instance_for_test() as empty:
        with dg.build_sensor_context(instance=empty, resources={
                "lake": LakeResource(uri="unused"), "model_store": ModelStoreResource(uri="unused"),
                "github": GitHubResource(api_url="http://127.0.0.1:9", cache_dir="unused")}) as context:
            assert "no repositories" in _skip_message(new_labelled_issues_sensor(context))


# ---- run_failure_alert_sensor ------------------------------------------------------------------

@dg.op
def explode():
    raise RuntimeError("boom: the op failed on purpose")


@dg.job
def failing_job():
    explode()


@pytest.fixture(scope="module")
def failed_run():
    with dg.instance_for_test() as instance:
        result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        yield instance, run, failure.dagster_event


class _Listener:
    """A webhook on 127.0.0.1: records POSTs, or accepts connections and never answers."""

    def __init__(self, answer: bool = True):
        received = self.received = []
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "type": self.headers.get("Content-Type"), "body": body})
                if not answer:
                    release.wait(30)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


SECRET_PATH = "/hooks/T000/B111/s3cr3t-path"
SECRET_QUERY = "token=s3cr3t-query"


def _evaluate_failure_sensor(failed_run):
    instance, run, event = failed_run
    context = dg.build_run_status_sensor_context(sensor_name="run_failure_alert_sensor", dagster_instance=instance,
                                                 dagster_run=run, dagster_event=event).for_run_failure()
    return run_failure_alert_sensor(context)


def _all_logged(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)


def test_failure_alert_posts_one_json_message_and_logs_no_webhook_secret(failed_run, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with _Listener() as hook:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", f"{hook.base}{SECRET_PATH}?{SECRET_QUERY}")
        _evaluate_failure_sensor(failed_run)
    (post,) = hook.received
    assert post["path"] == f"{SECRET_PATH}?{SECRET_QUERY}" and post["type"] == "application/json"
    payload = json.loads(post["body"])
    _, run, _ = failed_run
    assert payload["text"].startswith("[ALERT] issue_assets run of failing_job failed")
    assert payload["run_id"] == run.run_id and payload["job"] == "failing_job"
    logged = _all_logged(caplog)
    assert "[ALERT] issue_assets run of failing_job failed" in logged
    assert "s3cr3t" not in logged and "hooks/T000" not in logged


def test_failure_alert_to_a_silent_webhook_returns_after_the_bounded_timeout(failed_run, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with _Listener(answer=False) as hook:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", f"{hook.base}{SECRET_PATH}?{SECRET_QUERY}")
        _evaluate_failure_sensor(failed_run)  # returns (requests' read timeout), never raises
        assert len(hook.received) == 1
    logged = _all_logged(caplog)
    assert f"alert webhook at 127.0.0.1:{hook.server.server_address[1]} unreachable: ReadTimeout" in logged
    assert "s3cr3t" not in logged and "hooks/T000" not in logged


def test_failure_alert_without_webhook_only_logs(failed_run, monkeypatch, caplog):
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    caplog.set_level(logging.INFO)
    _evaluate_failure_sensor(failed_run)
    assert any(r.getMessage().startswith("[ALERT] issue_assets run of failing_job failed") and "explode" in r.getMessage()
               for r in caplog.records)


# ---- schedule, freshness, sensors in the definitions -------------------------------------------

def test_freshness_policies_on_what_users_read():
    for key, fail_hours in {"issues": 48, "production_model": 14 * 24, "open_issue_predictions": 48}.items():
        (spec,) = defs.resolve_assets_def(key).specs
        policy = spec.freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), key
        assert policy.fail_window.to_timedelta() == pd.Timedelta(hours=fail_hours)
        assert policy.warn_window.to_timedelta() < policy.fail_window.to_timedelta()



def test_prediction_outcomes_judges_at_every_cron_tick_even_when_nothing_upstream_changed():
    """Its input (the served log, outcomes becoming known with time) changes outside Dagster's view: once its
    dependencies exist it is requested after each tick of its cron, not only after they update (on_cron's rule,
    which never judged again once ingestion went quiet), and once per tick."""
    from datetime import UTC, datetime

    from issue_assets.partitions import repo_partitions

    key = dg.AssetKey("prediction_outcomes")
    selection = dg.AssetSelection.assets(key)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(repo_partitions.name, [REPO])

        def evaluate(hour: int, minute: int, cursor):
            at = datetime(2026, 12, 1, hour, minute, tzinfo=UTC)
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                       evaluation_time=at, cursor=cursor)
            return result.get_requested_partitions(key), result.cursor

        requested, cursor = evaluate(9, 0, None)  # first evaluation; dependencies never materialized
        requested, cursor = evaluate(10, 20, cursor)
        assert requested == set(), "no judging before open_issue_predictions and issues exist"
        for dep in ("issues", "open_issue_predictions"):
            instance.report_runless_asset_event(dg.AssetMaterialization(dep, partition=REPO))
        requested, cursor = evaluate(10, 30, cursor)
        assert requested == {REPO}, "the tick of 10:15 passed while a dependency was missing: judged once they exist"
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=REPO))
        requested, cursor = evaluate(10, 50, cursor)
        assert requested == set(), "handled: nothing more until the next tick"
        requested, cursor = evaluate(11, 16, cursor)
        assert requested == {REPO}, "the tick of 11:15 passed; nothing upstream changed, it judges again"
        requested, cursor = evaluate(11, 20, cursor)
        assert requested == set(), "requested once per tick"


WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
AUTOMATIONS = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        location { name }
        sensors { name sensorType sensorState { status } }
        schedules { name scheduleState { status } }
      }
    }
  }
}
"""


def test_every_sensor_and_schedule_the_instance_reports_runs_by_default():
    """What the UI and the daemon see for the code location on a fresh instance: each automation, Dagster's
    own automation-condition sensor included, is RUNNING without anybody switching it on."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    with dg.instance_for_test() as instance, define_out_of_process_context(str(WORKSPACE), None, instance) as ctx:
        result = execute_dagster_graphql(ctx, AUTOMATIONS)
    (repo,) = result.data["repositoriesOrError"]["nodes"]
    sensors = {s["name"]: (s["sensorType"], s["sensorState"]["status"]) for s in repo["sensors"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    assert sensors == {
        "repositories_sensor": ("STANDARD", "RUNNING"),
        "new_activity_sensor": ("STANDARD", "RUNNING"),
        "new_labelled_issues_sensor": ("STANDARD", "RUNNING"),
        "automation_condition_sensor": ("AUTO_MATERIALIZE", "RUNNING"),  # Dagster's own kind
        "run_failure_alert_sensor": ("RUN_STATUS", "RUNNING"),
    }
    assert schedules == {"daily_reconcile_schedule": "RUNNING"}
    assert defs.resolve_job_def("training_job").tags["issue_assets/kind"] == "training"


def test_runs_on_the_local_instance_print_info_to_the_console_and_store_every_event(tmp_path, capfd):
    """A run the daemon launches names no logger in its run config: on the instance issue-assets writes, its
    console shows the assets' INFO lines but not Dagster's DEBUG lifecycle lines, which stay in the event log."""
    from issue_assets.application import LOCAL_INSTANCE_YAML

    (tmp_path / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)

    @dg.asset
    def console_probe(context) -> int:
        context.log.info("probe made")
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize([console_probe], instance=instance)
        kinds = {e.dagster_event.event_type_value for e in instance.all_logs(result.run_id) if e.dagster_event}
    console = capfd.readouterr().err
    assert "probe made" in console and " - INFO - " in console
    assert " - DEBUG - " not in console and "STEP_START" not in console
    assert {"STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS"} <= kinds


# ---- new_activity_sensor (the poll) --------------------------------------------------------------

@pytest.fixture()
def polled(tmp_path, monkeypatch):
    """An ingested repository bound to a replay server that requires a token meant for it."""
    token = "ghp_AutomationPollToken_0123456789"
    issues, comments = simulate_repository(REPO, n_issues=120, seed=3, start="2026-01-01T00:00:00Z", days=60)
    with ReplayServer(issues, comments, token=token) as server, dg.instance_for_test() as instance:
        monkeypatch.setenv("GITHUB_API_URL", server.url)
        monkeypatch.setenv("GITHUB_TOKEN", token)
        store = LocalStore(tmp_path / "lake")
        instance.add_dynamic_partitions("repos", [REPO])
        sources.add(REPO, server.url, store=store)
        with sources.client_for(REPO, store, cache_dir=tmp_path / "http_cache") as client:
            for kind in ("issues", "comments"):
                sync_incremental(client, store, REPO, kind)
        resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                     "github": GitHubResource(token=token, cache_dir=str(tmp_path / "http_cache"))}
        server.reset_stats()
        yield {"server": server, "instance": instance, "resources": resources, "issues": issues, "token": token}


def _poll_tick(env, cursor=None):
    with dg.build_sensor_context(instance=env["instance"], cursor=cursor, resources=env["resources"]) as context:
        return new_activity_sensor(context)


def test_poll_with_nothing_new_costs_two_free_304s_and_requests_nothing(polled):
    used = polled["server"].rate_limit_status()["used"]
    result = _poll_tick(polled)
    assert not result.run_requests
    assert result.skip_reason.skip_message.startswith("1 repositories polled in")
    assert "2 unchanged; 2 requests, 0 rate-limit points" in result.skip_reason.skip_message
    assert polled["server"].stats()["by_status"] == {"304": 2}
    assert polled["server"].rate_limit_status()["used"] == used
    state = json.loads(result.cursor)
    assert state["budgets"][polled["server"].url]["spent"] == 0 and polled["token"] not in result.cursor


def test_poll_requests_one_idempotent_ingest_run_per_change(polled):
    new = dict(next(i for i in polled["issues"] if "pull_request" not in i), id=880_000_001, number=9001,
               state="open", closed_at=None, created_at="2026-03-05T08:00:00Z", updated_at="2026-03-05T08:00:00Z")
    polled["server"].add_issues([new])
    first = _poll_tick(polled)
    (request,) = first.run_requests
    assert request.partition_key == REPO and request.tags["issue_assets/ingest"] == REPO
    assert request.run_key.startswith(f"poll:{REPO}:2026-03-05T08:00:00Z|")
    assert new_activity_sensor.job_name == "ingest_job"
    # The same change seen again (the run has not happened yet): the same key, so Dagster launches it once.
    again = _poll_tick(polled, cursor=first.cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]


def test_poll_skips_repositories_whose_ingest_is_in_progress(polled):
    instance = polled["instance"]
    run = instance.create_run_for_job(defs.resolve_job_def("ingest_job"), tags={"issue_assets/ingest": REPO,
                                                                                "issue_assets/kind": "ingest"})
    instance.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, run.job_name))
    result = _poll_tick(polled)
    assert f"ingest in progress for {REPO}" in result.skip_reason.skip_message
    assert polled["server"].stats()["requests"] == 0


def test_poll_of_an_unreachable_source_names_it_and_keeps_the_cursor(polled):
    first = _poll_tick(polled)
    polled["server"].stop()
    second = _poll_tick(polled, cursor=first.cursor)
    message = second.skip_reason.skip_message
    assert f"could not check: {REPO} issues: unreachable:" in message and "ConnectionError" in message
    assert json.loads(second.cursor)["budgets"] == json.loads(first.cursor)["budgets"]


def test_poll_failure_of_the_lake_keeps_the_cursor(polled, tmp_path):
    first = _poll_tick(polled)
    polled["resources"]["lake"] = LakeResource(uri=str(tmp_path / "not-a-dir"))
    (tmp_path / "not-a-dir").write_text("a file where the lake should be")
    broken = _poll_tick(polled, cursor=first.cursor)
    assert broken.skip_reason.skip_message.startswith("poll failed: ")
    assert broken.cursor == first.cursor


# ---- the asset jobs, as CI executes them ---------------------------------------------------------

def _dagster(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("dagster")), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_dagster_job_execute_runs_the_asset_jobs_to_a_champion_and_predictions(tmp_path):
    """CI's smoke test: `dagster job execute` of ingest_job, refresh_job, training_job and predictions_job,
    each a slice of the asset graph, on a SQLite instance (no op that starts other runs)."""
    issues, comments = simulate_repository(REPO, n_issues=600, seed=7, start="2025-01-01T00:00:00Z", days=500)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                "GITHUB_", "ALERT_WEBHOOK_URL", "RETRAIN_"))}
    env.update(DAGSTER_HOME=str(dagster_home), ISSUE_ASSETS_HOME=str(home), PYTHONUNBUFFERED="1")
    as_of = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    with ReplayServer(issues, comments) as server:
        cli = Path(sys.executable).with_name("issue-assets")
        added = subprocess.run([str(cli), "repos", "add", REPO, "--api-url", server.url], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        steps = [("ingest_job", REPO, None), ("refresh_job", REPO, None),
                 ("training_job", as_of, {"ops": {"tuned_params": {"config": {"n_trials": 4}}}}),
                 ("predictions_job", REPO, None)]
        for job, partition, run_config in steps:
            args = ["job", "execute", "-m", "issue_assets.definitions", "-j", job,
                    "--tags", json.dumps({"dagster/partition": partition})]
            if run_config:
                (tmp_path / f"{job}.json").write_text(json.dumps(run_config))
                args += ["-c", str(tmp_path / f"{job}.json")]
            proc = _dagster(*args, env=env, cwd=tmp_path)
            assert proc.returncode == 0, f"{job}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        requests = server.stats()["by_endpoint"]
    assert requests["issues"] == -(-len(issues) // 100) and requests["comments"] == -(-len(comments) // 100)
    registry = ModelRegistry(LocalStore(home / "registry"))
    champion = registry.champion()
    assert champion is not None and registry.list_versions() == [champion]
    assert any((home / "lake" / "predict_outputs").rglob("*.csv"))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = {r.job_name: r for r in instance.get_runs()}
        assert set(runs) == {"ingest_job", "refresh_job", "training_job", "predictions_job"}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs.values())
        raw = instance.fetch_materializations(dg.AssetKey("raw_issues"), limit=10).records
        assert len(raw) == 1 and raw[0].partition_key == REPO  # the history is one materialization
