"""The Dagster layer of ingestion: assets materialized against the replay server, schedule, sensor."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from issue_assets import config
from issue_assets.assets import ingestion
from issue_assets.definitions import defs
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.ingest.current import load_current
from issue_assets.ingest.layout import raw_manifest_key
from issue_assets.lake.documents import read_json
from issue_assets.lake.store import LocalStore
from issue_assets.resources import GitHubResource, LakeResource
from issue_assets.schedules import daily_ingest_schedule
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


def _resources(tmp_path, server):
    return {"lake": LakeResource(uri=str(tmp_path / "lake")),
            "github": GitHubResource(api_url=server.url, cache_path=str(tmp_path / "http_cache.json"))}


def test_definitions_load_with_jobs_schedule_and_sensor():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw_issues", "raw_comments", "issues", "issue_comments"} <= keys
    assert defs.resolve_job_def("ingest_job").partitions_def is not None
    assert defs.resolve_job_def("repository_refresh_job") and defs.resolve_job_def("training_job")
    assert defs.resolve_schedule_def("daily_ingest_schedule").cron_schedule == "0 5 * * *"
    assert defs.resolve_sensor_def("repositories_sensor")


def test_history_backfill_is_one_run_one_sweep_and_current_state_matches(tmp_path, server, instance, history):
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    result = dg.materialize(
        [ingestion.raw_issues, ingestion.raw_comments], instance=instance, resources=_resources(tmp_path, server),
        tags={"dagster/asset_partition_range_start": f"{config.start_date()}|{REPO}",
              "dagster/asset_partition_range_end": f"{today}|{REPO}"},
    )
    assert result.success
    mats = result.asset_materializations_for_node("raw_issues")
    assert len(mats) > 300  # every day partition of the range is materialized by the one run
    stats = server.stats()
    issues, comments = history
    # One paged sweep per endpoint: ceil(N / 100) requests, not one stream per day.
    assert stats["by_endpoint"]["issues"] == -(-len(issues) // 100)
    assert stats["by_endpoint"]["comments"] == -(-len(comments) // 100)
    meta = mats[0].metadata
    assert meta["new_versions"].value == len(issues) and meta["requests"].value == stats["by_endpoint"]["issues"]

    current = dg.materialize([ingestion.issues, ingestion.issue_comments], instance=instance,
                             resources=_resources(tmp_path, server), partition_key=REPO)
    assert current.success
    store = LocalStore(tmp_path / "lake")
    table = load_current(store, "issues", REPO)
    assert sorted(table["id"]) == sorted(i["id"] for i in issues)
    by_id = {i["id"]: i for i in issues}
    assert all(table["is_pull_request"] == [("pull_request" in by_id[i]) for i in table["id"]])
    assert len(load_current(store, "comments", REPO)) == len(comments)
    assert current.asset_materializations_for_node("issues")[0].metadata["rows"].value == len(issues)


def test_daily_partition_stores_only_that_days_versions(tmp_path, server, instance, history):
    issues, _ = history
    day = pd.Series([i["updated_at"][:10] for i in issues]).value_counts().index[0]
    key = dg.MultiPartitionKey({"repo": REPO, "day": day})
    result = dg.materialize([ingestion.raw_issues], instance=instance, resources=_resources(tmp_path, server),
                            partition_key=key)
    assert result.success
    store = LocalStore(tmp_path / "lake")
    manifest = read_json(store, raw_manifest_key("issues", REPO))
    stored = sum(m["rows"] for m in manifest["months"].values())
    assert stored == sum(1 for i in issues if i["updated_at"][:10] == day)
    # A re-run of the same partition is idempotent and, with nothing changed, costs a 304.
    server.reset_stats()
    again = dg.materialize([ingestion.raw_issues], instance=instance, resources=_resources(tmp_path, server),
                           partition_key=key)
    assert again.asset_materializations_for_node("raw_issues")[0].metadata["new_versions"].value == 0
    assert read_json(store, raw_manifest_key("issues", REPO)) == manifest


def test_daily_schedule_requests_yesterday_for_every_repository():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", [REPO, "other/repo"])
        context = dg.build_schedule_context(instance=instance,
                                            scheduled_execution_time=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
        requests = daily_ingest_schedule(context)
    keys = sorted(str(r.partition_key) for r in requests)
    assert keys == [f"2026-03-01|{REPO}", "2026-03-01|other/repo"]
    assert len({r.run_key for r in requests}) == 2


def test_daily_schedule_skips_without_repositories():
    with dg.instance_for_test() as empty:
        context = dg.build_schedule_context(instance=empty)
        assert isinstance(daily_ingest_schedule(context), dg.SkipReason)


def test_repositories_sensor_registers_and_backfills_new_repositories_once(monkeypatch):
    monkeypatch.setenv("ISSUE_ASSETS_REPOS", "a/one, b/two")
    with dg.instance_for_test() as inst:
        # a/one was added by the CLI or the UI and has no history yet; b/two is only named in the env.
        inst.add_dynamic_partitions("repos", ["a/one"])
        result = repositories_sensor(dg.build_sensor_context(instance=inst))
        assert sorted(r.run_key for r in result.run_requests) == ["history:a/one", "history:b/two"]
        tags = {r.run_key: r.tags for r in result.run_requests}["history:b/two"]
        assert tags["dagster/asset_partition_range_start"] == f"{config.start_date()}|b/two"
        assert result.dynamic_partitions_requests[0].partition_keys == ["b/two"]
        inst.add_dynamic_partitions("repos", ["b/two"])
        again = repositories_sensor(dg.build_sensor_context(instance=inst, cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)
        # A repository added later through the CLI gets its own single-run backfill, once.
        inst.add_dynamic_partitions("repos", ["c/three"])
        later = repositories_sensor(dg.build_sensor_context(instance=inst, cursor=result.cursor))
        assert [r.run_key for r in later.run_requests] == ["history:c/three"]
        assert not later.dynamic_partitions_requests


def test_repositories_sensor_skips_repositories_that_already_have_history(tmp_path, server):
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("repos", [REPO])
        key = dg.MultiPartitionKey({"repo": REPO, "day": "2025-10-01"})
        assert dg.materialize([ingestion.raw_issues], instance=inst, resources=_resources(tmp_path, server),
                              partition_key=key).success
        assert isinstance(repositories_sensor(dg.build_sensor_context(instance=inst)), dg.SkipReason)
