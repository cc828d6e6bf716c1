"""deploy/dagster.yaml against the PostgreSQL server at 127.0.0.1:5432 (user postgres): the instance loads
with PostgreSQL storage, the run queue limits and the pool limits, and the whole pipeline run through it
stores its runs and materializations in PostgreSQL. A fresh database per test session, dropped at the end."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest
from conftest import postgres_unavailable

from issue_assets import application
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.lake.store import LocalStore
from issue_assets.registry import ModelRegistry

DEPLOY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REPO = "demo-org/demo-project"


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(postgres_unavailable() is not None, reason=postgres_unavailable() or ""),
]


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="test", connect_timeout=5, **PG)
    conn.autocommit = True  # CREATE / DROP DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _query(db: str, sql: str, *args) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(dbname=db, connect_timeout=5, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pg_instance(tmp_path_factory):
    """A DAGSTER_HOME holding deploy/dagster.yaml, its connection read from DAGSTER_PG_* in a new database."""
    db = f"dagster_test_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {db}")
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    mp = pytest.MonkeyPatch()
    for name, value in {"DAGSTER_PG_HOST": PG["host"], "DAGSTER_PG_PORT": str(PG["port"]),
                        "DAGSTER_PG_USERNAME": PG["user"], "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": db,
                        "DAGSTER_HOME": str(home)}.items():
        mp.setenv(name, value)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance, db
    finally:
        mp.undo()
        _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_deploy_yaml_configures_postgres_storage_queue_and_pools(pg_instance):
    instance, _ = pg_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    concurrency = instance.get_concurrency_config()
    limits = concurrency.run_queue_config.tag_concurrency_limits
    assert {"key": "issue_assets/kind", "value": "training", "limit": 1} in limits
    assert concurrency.pool_config.default_pool_limit == 1
    # The pools the assets declare get that limit without any `dagster instance concurrency set`.
    for pool in ("github_api", "training"):
        info = instance.event_log_storage.get_concurrency_info(pool)
        assert info.limit == 1 and info.using_default_limit
    # The limit on training runs matches a tag the training job really carries.
    from issue_assets.definitions import defs

    assert defs.resolve_job_def("training_job").tags["issue_assets/kind"] == "training"
    pools = {key: defs.resolve_assets_def(key).op.pool
             for key in ("raw_issues", "raw_comments", "tuned_params", "candidate_model")}
    assert pools == {"raw_issues": "github_api", "raw_comments": "github_api", "tuned_params": "training",
                     "candidate_model": "training"}


def test_full_pipeline_stores_runs_and_materializations_in_postgres(pg_instance, tmp_path, monkeypatch):
    instance, db = pg_instance
    monkeypatch.setenv("ISSUE_ASSETS_HOME", str(tmp_path / "home"))
    for name in ("LAKE_STORE", "MODEL_STORE", "OPTUNA_STORAGE", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    issues, comments = simulate_repository(REPO, n_issues=500, seed=4, start="2025-01-01T00:00:00Z", days=450)
    with ReplayServer(issues, comments) as server:
        application.register(instance, REPO, server.url)
        summary = application.run_all(application.Session(instance, tmp_path / "runs.log"), [REPO], trials=3)

    registry = ModelRegistry(LocalStore(tmp_path / "home" / "registry"))
    assert registry.champion() == summary["training"].meta("candidate_model")["version"]

    event = instance.get_latest_materialization_event(dg.AssetKey("production_model"))
    assert event is not None and event.asset_materialization.metadata["champion"].value == registry.champion()
    assert instance.get_materialized_partitions(dg.AssetKey("raw_issues")) == {REPO}
    assert REPO in instance.get_dynamic_partitions("repos")

    # Read back from PostgreSQL itself, not through the instance's caches.
    stored = dict(_query(db, "SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = "
                             "'ASSET_MATERIALIZATION' GROUP BY asset_key"))
    assert stored['["production_model"]'] == 1 and stored['["raw_issues"]'] == 1  # the history: one sweep
    assert stored['["raw_comments"]'] == 1 and stored['["open_issue_predictions"]'] == 1
    ((runs, succeeded),) = _query(db, "SELECT count(*), count(*) FILTER (WHERE status = 'SUCCESS') FROM runs")
    assert runs == succeeded == 4  # ingest_job, refresh_job, training_job (with the promotion), predictions_job
    # Every slot of the pools the steps ran in was given back.
    for pool in ("github_api", "training"):
        assert instance.event_log_storage.get_concurrency_info(pool).claimed_slots == []
