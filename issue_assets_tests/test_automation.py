"""Automation around the assets: the retraining sensor, the run-failure alert, freshness policies, and
`dagster job execute` of the whole pipeline as CI runs it (a real subprocess against the replay server)."""

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

from issue_assets import sensors
from issue_assets.definitions import defs
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.lake import keys
from issue_assets.lake.store import LocalStore, write_parquet
from issue_assets.modeling.synthetic import FEATURES, make_training_set
from issue_assets.modeling.training import TrainedModel
from issue_assets.registry import POINTER, ModelRegistry
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.sensors import new_labelled_issues_sensor, run_failure_alert_sensor

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
        yield {"instance": instance, "server": server, "lake": tmp_path / "lake", "registry": tmp_path / "registry",
               "cache": tmp_path / "http_cache.json", "issues": issues, "monkeypatch": monkeypatch,
               "simulated": simulated}


def _resources(env, lake_uri: str | None = None, registry_uri: str | None = None, api_url: str | None = None) -> dict:
    return {"lake": LakeResource(uri=lake_uri or str(env["lake"])),
            "model_store": ModelStoreResource(uri=registry_uri or str(env["registry"])),
            "github": GitHubResource(api_url=api_url or env["server"].url, cache_path=str(env["cache"]))}


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
    assert not sensor_env["cache"].exists()
    assert f"not ingested yet {len(pending)})" in _skip_message(_tick(sensor_env))

    # With the poll off, only what is stored counts.
    sensor_env["monkeypatch"].setenv("RETRAIN_POLL_GITHUB", "0")
    assert f"{len(stored)} of 100000" in _skip_message(_tick(sensor_env))

    # Pending issues alone reach the threshold.
    sensor_env["monkeypatch"].setenv("RETRAIN_POLL_GITHUB", "1")
    sensor_env["monkeypatch"].setenv("RETRAIN_THRESHOLD", str(len(issues)))
    assert len(_requests(_tick(sensor_env))) == 1


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


def test_unreachable_github_skips_with_a_clear_reason(sensor_env):
    _write_features(sensor_env, sensor_env["issues"])
    url = sensor_env["server"].url
    sensor_env["server"].stop()
    message = _skip_message(_tick(sensor_env, api_url=url))
    assert message.startswith("could not count new labels: GitHubError") and "Connection" in message


def test_exhausted_rate_limit_skips_the_tick_instead_of_waiting_for_the_reset(sensor_env):
    _write_features(sensor_env, sensor_env["issues"])
    issues, prs = sensor_env["simulated"]
    with ReplayServer(issues + prs, rate_limit=0) as limited:  # every request: 403, reset an hour away
        started = time.monotonic()
        message = _skip_message(_tick(sensor_env, api_url=limited.url))
        elapsed = time.monotonic() - started
    assert message.startswith("could not count new labels: RateLimitedError") and "max_wait" in message
    assert elapsed < 60, f"the tick waited {elapsed:.0f} s"


def test_no_repositories_skips():
    with dg.instance_for_test() as empty:
        with dg.build_sensor_context(instance=empty, resources={
                "lake": LakeResource(uri="unused"), "model_store": ModelStoreResource(uri="unused"),
                "github": GitHubResource(api_url="http://127.0.0.1:9", cache_path="unused")}) as context:
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


def test_automation_is_registered_and_on_by_default():
    names = {s.name: s for s in defs.sensors}
    assert set(names) == {"repositories_sensor", "new_labelled_issues_sensor", "run_failure_alert_sensor"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in names.values())
    assert defs.resolve_schedule_def("daily_ingest_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_job_def("training_job").tags["issue_assets/kind"] == "training"


def test_history_backfill_covers_start_date_to_today():
    request = sensors.history_backfill_request("a/one", today="2026-01-02")
    assert request.run_key == "history:a/one"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-01-02|a/one"
    start, end = (request.tags[f"dagster/asset_partition_range_{k}"].split("|")[0] for k in ("start", "end"))
    days = defs.resolve_job_def("ingest_job").partitions_def.get_partitions_def_for_dimension("day")
    assert days.has_partition_key(start) and days.has_partition_key(end)


# ---- `dagster job execute` of the full pipeline (the CI smoke test) ------------------------------

def test_dagster_job_execute_full_pipeline_job_promotes_a_champion(tmp_path):
    issues, comments = simulate_repository(REPO, n_issues=600, seed=7, start="2025-01-01T00:00:00Z", days=500)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    with ReplayServer(issues, comments) as server:
        run_config = tmp_path / "run.yaml"
        run_config.write_text(json.dumps({"ops": {"run_full_pipeline": {"config": {"trials": 4,
                                                                                    "api_url": server.url}}}}))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ISSUE_ASSETS_", "DAGSTER_", "LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE",
                                    "GITHUB_", "ALERT_WEBHOOK_URL", "RETRAIN_"))}
        # A later first day partition (it holds all history before it) keeps the single-run history backfill to
        # ~330 day partitions: each is a planned + a materialization event in SQLite, most of this test's time.
        env.update(DAGSTER_HOME=str(dagster_home), ISSUE_ASSETS_HOME=str(home), ISSUE_ASSETS_REPOS=REPO,
                   ISSUE_ASSETS_START_DATE="2026-01-01", GITHUB_API_URL=server.url, PYTHONUNBUFFERED="1")
        proc = subprocess.run([str(dagster), "job", "execute", "-m", "issue_assets.definitions",
                               "-j", "full_pipeline_job", "-c", str(run_config)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        requests = server.stats()["requests"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert requests > 0
    registry = ModelRegistry(LocalStore(home / "registry"))
    champion = registry.champion()
    assert champion is not None and registry.list_versions() == [champion]
    assert (home / "lake" / "predict_outputs").exists() or any((home / "lake").rglob("*.csv"))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey("production_model")) is not None
        runs = instance.get_runs()
        assert any(r.job_name == "full_pipeline_job" and r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
