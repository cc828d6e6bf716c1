"""The Dagster layer of ingestion: raw log assets per repository against the replay server, the daily
reconciliation schedule, and the repositories sensor (sources, partitions, history runs)."""

import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from issue_assets.assets import ingestion
from issue_assets.definitions import defs
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest import sources
from issue_assets.ingest.current import load_current
from issue_assets.ingest.layout import raw_manifest_key
from issue_assets.ingest.sync import cursor
from issue_assets.lake.documents import read_json
from issue_assets.lake.store import LocalStore
from issue_assets.resources import GitHubResource, LakeResource
from issue_assets.schedules import LOOKBACK_HOURS, daily_reconcile_schedule
from issue_assets.sensors import repositories_sensor

REPO = "demo-org/demo-project"


@pytest.fixture(scope="module")
def history():
    return simulate_repository(REPO, n_issues=400, seed=3, start="2025-09-01T00:00:00Z", days=120)


@pytest.fixture()
def server(history):
    issues, comments = history
    with ReplayServer(issues, comments) as srv:
        yield srv


@pytest.fixture()
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("repos", [REPO])
        yield inst


def _resources(tmp_path, server=None):
    """The repository is bound to the replay server in the lake; the resource follows the binding."""
    if server is not None:
        sources.add(REPO, server.url, store=LocalStore(tmp_path / "lake"))
    return {"lake": LakeResource(uri=str(tmp_path / "lake")),
            "github": GitHubResource(cache_dir=str(tmp_path / "http_cache"))}


def _config(**cfg):
    return {"ops": {"raw_issues": {"config": cfg}, "raw_comments": {"config": cfg}}}


def test_definitions_load_with_jobs_schedule_and_sensors():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw_issues", "raw_comments", "issues", "issue_comments"} <= keys
    for job in ("ingest_job", "refresh_job", "training_job", "predictions_job"):
        assert defs.resolve_job_def(job).partitions_def is not None
    assert defs.resolve_assets_def("raw_issues").partitions_def == defs.resolve_assets_def("issues").partitions_def
    assert defs.resolve_schedule_def("daily_reconcile_schedule").cron_schedule == "0 5 * * *"
    assert defs.resolve_sensor_def("repositories_sensor") and defs.resolve_sensor_def("new_activity_sensor")
    # The as-of assets explain why most of their partitions are missing.
    for key in ("training_set", "tuned_params", "candidate_model"):
        assert "only the days a training ran are materialized" in defs.resolve_assets_def(key).specs_by_key[
            dg.AssetKey(key)].description


def test_history_is_one_run_one_sweep_one_materialization_with_its_own_numbers(tmp_path, server, instance,
                                                                               history):
    issues, comments = history
    result = dg.materialize([ingestion.raw_issues, ingestion.raw_comments], instance=instance,
                            resources=_resources(tmp_path, server), partition_key=REPO)
    assert result.success
    (mat,) = result.asset_materializations_for_node("raw_issues")
    stats = server.stats()
    # One paged sweep per endpoint: ceil(N / 100) requests, not a request stream per day.
    assert stats["by_endpoint"]["issues"] == -(-len(issues) // 100)
    assert stats["by_endpoint"]["comments"] == -(-len(comments) // 100)
    meta = {k: v.value for k, v in mat.metadata.items()}
    # The metadata is this partition's sweep: true for it, not a run total spread over many partitions.
    assert meta["new_versions"] == meta["items_fetched"] == meta["rows_in_log"] == len(issues)
    assert meta["requests"] == stats["by_endpoint"]["issues"] and meta["pages"] == meta["requests"]
    assert meta["source"] == server.url and meta["window_start"] == "the beginning" and meta["cursor_before"] == ""
    store = LocalStore(tmp_path / "lake")
    assert meta["cursor_after"] == cursor(store, REPO, "issues").strftime("%Y-%m-%dT%H:%M:%SZ")

    current = dg.materialize([ingestion.issues, ingestion.issue_comments], instance=instance,
                             resources=_resources(tmp_path), partition_key=REPO)
    assert current.success
    table = load_current(store, "issues", REPO)
    assert sorted(table["id"]) == sorted(i["id"] for i in issues)
    assert len(load_current(store, "comments", REPO)) == len(comments)
    assert current.asset_materializations_for_node("issues")[0].metadata["rows"].value == len(issues)


def test_next_run_sweeps_only_since_the_cursor_and_a_rerun_is_idempotent(tmp_path, server, instance, history):
    issues, _ = history
    resources = _resources(tmp_path, server)
    assert dg.materialize([ingestion.raw_issues], instance=instance, resources=resources, partition_key=REPO).success
    store = LocalStore(tmp_path / "lake")
    manifest = read_json(store, raw_manifest_key("issues", REPO))
    # Nothing changed: one conditional request, answered 304; no part written and the cursor where it was,
    # only the time of the sweep recorded (what `issue-assets status` shows as the last ingest).
    server.reset_stats()
    time.sleep(1.1)  # the sweep's time has whole seconds
    again = dg.materialize([ingestion.raw_issues], instance=instance, resources=resources, partition_key=REPO)
    meta = again.asset_materializations_for_node("raw_issues")[0].metadata
    assert meta["new_versions"].value == 0 and meta["requests"].value == 1 and meta["not_modified_304"].value == 1
    after = read_json(store, raw_manifest_key("issues", REPO))
    assert after.pop("swept_at") > manifest.pop("swept_at")
    assert after == manifest
    # The reconciliation look-back sweeps again behind the cursor: versions already stored are kept once.
    back = dg.materialize([ingestion.raw_issues], instance=instance, resources=resources, partition_key=REPO,
                          run_config={"ops": {"raw_issues": {"config": {"lookback_hours": 24 * 30}}}})
    meta = back.asset_materializations_for_node("raw_issues")[0].metadata
    assert meta["items_fetched"].value > 0 and meta["new_versions"].value == 0
    assert sum(m["rows"] for m in read_json(store, raw_manifest_key("issues", REPO))["months"].values()) == len(issues)


def test_daily_reconciliation_resweeps_two_days_of_every_repository():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", [REPO, "other/repo"])
        context = dg.build_schedule_context(instance=instance,
                                            scheduled_execution_time=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
        requests = daily_reconcile_schedule(context)
    assert sorted(r.partition_key for r in requests) == sorted([REPO, "other/repo"])
    assert sorted(r.run_key for r in requests) == ["reconcile:demo-org/demo-project:2026-03-02",
                                                   "reconcile:other/repo:2026-03-02"]
    assert requests[0].run_config == _config(lookback_hours=LOOKBACK_HOURS) and LOOKBACK_HOURS == 48
    assert all(r.tags["issue_assets/ingest"] == r.partition_key for r in requests)


def test_daily_reconciliation_skips_without_repositories():
    with dg.instance_for_test() as empty:
        assert isinstance(daily_reconcile_schedule(dg.build_schedule_context(instance=empty)), dg.SkipReason)


def _repos_tick(instance, tmp_path, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"lake": LakeResource(uri=str(tmp_path / "lake"))}) as context:
        return repositories_sensor(context)


def test_repositories_sensor_binds_registers_and_requests_each_history_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ISSUE_ASSETS_REPOS", "a/one, b/two")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    store = LocalStore(tmp_path / "lake")
    sources.add("c/three", "http://127.0.0.1:8765", simulated=True, store=store)  # `repos add` with a replay server
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("repos", ["a/one", "d/ui"])  # a/one from the env earlier, d/ui from the UI
        result = _repos_tick(inst, tmp_path)
        bound = sources.all_sources(store)
        assert sorted(bound) == ["a/one", "b/two", "c/three", "d/ui"]
        assert bound["c/three"].api_url == "http://127.0.0.1:8765"  # an existing binding is never replaced
        assert bound["d/ui"].api_url == bound["b/two"].api_url == "https://api.github.com"
        assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["b/two", "c/three"]
        keys = {r.partition_key: r.run_key for r in result.run_requests}
        assert sorted(keys) == ["a/one", "b/two", "c/three", "d/ui"]
        assert keys["c/three"] == f"history:c/three:{bound['c/three'].added_at}"
        assert all(r.tags["issue_assets/ingest"] == r.partition_key for r in result.run_requests)
        # Launched runs are in progress: nothing is requested twice.
        inst.add_dynamic_partitions("repos", ["b/two", "c/three"])
        for request in result.run_requests:
            run = inst.create_run_for_job(defs.resolve_job_def("ingest_job"), tags=request.tags)
            inst.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, run.job_name))
        again = _repos_tick(inst, tmp_path)
        assert isinstance(again, dg.SkipReason) and "history runs in progress" in again.skip_message


def test_repositories_sensor_retries_a_failed_history_with_a_new_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ISSUE_ASSETS_REPOS", raising=False)
    store = LocalStore(tmp_path / "lake")
    source = sources.add(REPO, "http://127.0.0.1:8765", store=store)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("repos", [REPO])
        (first,) = _repos_tick(inst, tmp_path).run_requests
        run = inst.create_run_for_job(defs.resolve_job_def("ingest_job"), tags=first.tags)
        inst.report_run_failed(run)
        (retry,) = _repos_tick(inst, tmp_path).run_requests
        assert retry.run_key == f"history:{REPO}:{source.added_at}:1" != first.run_key


def test_repositories_sensor_skips_repositories_that_have_their_history(tmp_path, server, instance):
    resources = _resources(tmp_path, server)
    assert dg.materialize([ingestion.raw_issues, ingestion.raw_comments], instance=instance, resources=resources,
                          partition_key=REPO).success
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("repos", [REPO])
        result = _repos_tick(inst, tmp_path)
        assert isinstance(result, dg.SkipReason) and "every one has its history" in result.skip_message


def test_recent_activity_lands_in_the_current_state(tmp_path, server, instance, history):
    issues, _ = history
    resources = _resources(tmp_path, server)
    assert dg.materialize([ingestion.raw_issues], instance=instance, resources=resources, partition_key=REPO).success
    new = dict(issues[0], id=990_000_001, number=9999, state="open", closed_at=None,
               created_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
               updated_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))
    server.add_issues([new])
    fetched = dg.materialize([ingestion.raw_issues], instance=instance, resources=resources, partition_key=REPO)
    assert fetched.asset_materializations_for_node("raw_issues")[0].metadata["new_versions"].value == 1
    assert dg.materialize([ingestion.issues], instance=instance, resources=resources, partition_key=REPO).success
    assert 9999 in set(load_current(LocalStore(tmp_path / "lake"), "issues", REPO)["number"])
