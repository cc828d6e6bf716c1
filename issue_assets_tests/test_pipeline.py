"""The whole pipeline through the application layer (named asset jobs on an instance) against the replay
server: features, training set, tuning, candidate, promotion, predictions, and the guards around them
(blocking check, ties, the champion kept, a failed step named)."""

import dagster as dg
import pandas as pd
import pytest

from issue_assets import application
from issue_assets.assets import model, training
from issue_assets.features.table import load_features
from issue_assets.github.replay import ReplayServer
from issue_assets.github.simulate import simulate_repository
from issue_assets.lake import keys
from issue_assets.lake.store import LocalStore, read_parquet
from issue_assets.registry import ModelRegistry
from issue_assets.resources import LakeResource, ModelStoreResource

REPO = "demo-org/demo-project"


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory):
    """One full pipeline run shared by the tests of this module (it is the expensive part)."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ISSUE_ASSETS_HOME", str(home))
    mp.delenv("LAKE_STORE", raising=False)
    mp.delenv("MODEL_STORE", raising=False)
    mp.delenv("OPTUNA_STORAGE", raising=False)
    issues, comments = simulate_repository(REPO, n_issues=1200, seed=5, start="2025-01-01T00:00:00Z", days=600)
    with ReplayServer(issues, comments) as server, dg.DagsterInstance.ephemeral() as instance:
        session = application.Session(instance, home / "runs.log")
        application.register(instance, REPO, server.url)
        summary = application.run_all(session, [REPO], trials=6)
        yield {"home": home, "summary": summary, "instance": instance, "server": server, "issues": issues,
               "session": session}
    mp.undo()


def _resources(home):
    return {"lake": LakeResource(uri=str(home / "lake")), "model_store": ModelStoreResource(uri=str(home / "registry"))}


def test_pipeline_trains_registers_and_promotes_the_first_model(pipeline_home):
    summary, home = pipeline_home["summary"], pipeline_home["home"]
    registry = ModelRegistry(LocalStore(home / "registry"))
    candidate = summary["training"].meta("candidate_model")
    version = candidate["version"]
    assert registry.list_versions() == [version]
    assert registry.champion() == version
    assert summary["training"].meta("production_model")["promoted"] is True
    assert 0.6 <= candidate["test_auc"] <= 1.0
    # Every step was a run of a named asset job, with its partition, in the instance.
    runs = pipeline_home["instance"].get_runs()
    assert sorted((r.job_name, r.tags.get("dagster/partition")) for r in runs) == sorted([
        ("ingest_job", REPO), ("refresh_job", REPO), ("training_job", summary["as_of"]),
        ("predictions_job", REPO)])
    assert pipeline_home["session"].log_path.read_text().count("STEP_SUCCESS") >= 8  # the event log, in the file
    # latest_model.json is the champion's model itself, loadable by plain XGBoost.
    store = LocalStore(home / "registry")
    assert store.get_bytes("models/latest_model.json") == store.get_bytes(f"models/{version}/model.json")


def test_features_cover_every_issue_and_training_set_holds_only_known_labels(pipeline_home):
    home, summary = pipeline_home["home"], pipeline_home["summary"]
    store = LocalStore(home / "lake")
    features = load_features(store, REPO)
    n_issues = sum(1 for i in pipeline_home["issues"] if "pull_request" not in i)
    first = features.loc[features["age_hours"] == 0]
    assert len(first) == n_issues and first["id"].is_unique and len(features) > n_issues
    assert not features.duplicated(["id", "age_hours"]).any()
    as_of = summary["as_of"]
    rows = read_parquet(store, keys.training_set_key(as_of))
    cutoff = training.cutoff_of(as_of)
    assert (rows["label_known_at"] <= cutoff).all() and rows["closed_within_7d"].notna().all()
    assert rows.groupby("id")["split"].nunique().max() == 1  # every row of an issue in one split
    order = rows.groupby("split")["created_at"].agg(["min", "max"])
    assert order.loc["train", "max"] <= order.loc["validation", "min"]
    assert order.loc["validation", "max"] <= order.loc["test", "min"]


def test_second_run_is_incremental_and_a_tie_keeps_the_champion(pipeline_home):
    home = pipeline_home["home"]
    registry = ModelRegistry(LocalStore(home / "registry"))
    champion = registry.champion()
    summary = application.run_all(pipeline_home["session"], [REPO], trials=6)
    features = summary["repos"][REPO]["refresh"].meta("issue_features")
    assert features["mode"] in ("unchanged", "incremental")
    assert summary["repos"][REPO]["ingest"].meta("raw_issues")["not_modified_304"] == 1
    # Same data, same seed, resumed study: the new candidate is no better, so the champion stays.
    assert summary["training"].meta("production_model")["promoted"] is False
    assert registry.champion() == champion
    assert len(registry.list_versions()) == 2
    events = [e for e in registry.history() if e.get("event") == "decision"]
    assert events and events[-1]["decision"]["promote"] is False


def test_blocking_check_fails_the_run_with_an_alert_and_nothing_is_promoted(pipeline_home):
    home, instance = pipeline_home["home"], pipeline_home["instance"]
    registry = ModelRegistry(LocalStore(home / "registry"))
    champion = registry.champion()
    as_of = pipeline_home["summary"]["as_of"]
    result = dg.materialize(
        [model.candidate_model, model.production_model], instance=instance, resources=_resources(home),
        partition_key=as_of, raise_on_error=False,
        run_config={"ops": {"candidate_model": {"config": {"alert_threshold": 0.999}}}},
    )
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["test_auc_above_alert_threshold"].passed is False
    alerts = [e.user_message for e in instance.all_logs(result.run_id) if "[ALERT]" in (e.user_message or "")]
    assert alerts and "alert threshold 0.9990" in alerts[0]
    assert not result.asset_materializations_for_node("production_model")
    assert registry.champion() == champion


def test_training_set_checks_all_pass(pipeline_home):
    home, instance = pipeline_home["home"], pipeline_home["instance"]
    as_of = pipeline_home["summary"]["as_of"]
    result = dg.materialize([training.training_set], instance=instance, resources=_resources(home),
                            partition_key=as_of)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {name: True for name in training.CHECKS}


def test_unknown_repository_fails_the_step_naming_job_partition_and_repository(pipeline_home):
    application.register(pipeline_home["instance"], "nobody/nothing", pipeline_home["server"].url)
    with pytest.raises(application.StepFailed, match=r"ingest_job \[nobody/nothing\] failed: raw_\w+: .*"
                                                     r"repository nobody/nothing not found"):
        application.run_all(pipeline_home["session"], ["nobody/nothing"], trials=2)


def test_cutoff_is_end_of_day_or_now():
    assert training.cutoff_of("2020-05-01") == pd.Timestamp("2020-05-02", tz="UTC")
    assert training.cutoff_of("2199-01-01") <= pd.Timestamp.now(tz="UTC")


def test_status_reports_what_the_lake_registry_and_instance_hold(pipeline_home):
    from issue_assets import status
    from issue_assets.ingest.current import load_current

    home, instance = pipeline_home["home"], pipeline_home["instance"]
    now = pd.Timestamp.now(tz="UTC")
    result = status.collect(instance, now=now)
    repo = result["repositories"][REPO]
    assert repo["source"]["api_url"] == pipeline_home["server"].url and repo["source"]["kind"] == "local"
    table = load_current(LocalStore(home / "lake"), "issues", REPO)
    opened = table.loc[table["state"] == "open"]
    assert repo["open"] == len(opened) == repo["pull_requests"] + repo["in_window"] + repo["decided"]
    assert repo["pull_requests"] == int(opened["is_pull_request"].sum())
    inside = ((now - opened["created_at"]) < pd.Timedelta(days=7)) & ~opened["is_pull_request"]
    assert repo["in_window"] == int(inside.sum())
    assert repo["last_ingest"] is not None and repo["predictions"]["rows"] > 0
    registry = ModelRegistry(LocalStore(home / "registry"))
    model_status = result["model"]
    assert model_status["champion"] == registry.champion()
    assert model_status["test_roc_auc"] == registry.get_metadata(registry.champion())["metrics"]["test_auc"]  # age 0
    assert model_status["new_labels"]["threshold"] == 200
    assert model_status["last_decisions"] and model_status["last_decisions"][0]["event"] == "promoted"
    assert set(result["freshness"]) == set(status.WATCHED)
    assert result["freshness"]["raw_issues"]["last_materialization"] is not None
    assert result["daemon"]["running"] is False
    lines = status.format_text(result)
    assert any(line.startswith("champion       " + registry.champion()) for line in lines)


def test_window_split_counts_pull_requests_window_and_decided():
    from issue_assets.status import window_split

    now = pd.Timestamp("2026-03-10", tz="UTC")
    table = pd.DataFrame({
        "state": ["open", "open", "open", "open", "closed"],
        "is_pull_request": [True, False, False, False, False],
        "created_at": pd.to_datetime(["2026-03-09T00:00:00", "2026-03-09T00:00:00", "2026-03-03T00:00:01", "2026-03-02T00:00:00",
                                      "2026-03-09T00:00:00"],
                                     utc=True)})
    assert window_split(table, now) == {"open": 4, "pull_requests": 1, "in_window": 2, "decided": 1}
    assert window_split(table.iloc[:0], now)["open"] == 0
