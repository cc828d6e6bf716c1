"""The served-prediction log loses nothing under concurrent writers, live quality follows the training label
rule, and drift separates a shifted feature from a stable one."""

from __future__ import annotations

import multiprocessing
import threading

import boto3
import numpy as np
import pandas as pd
import pytest
from moto import mock_aws
from sklearn.metrics import brier_score_loss, roc_auc_score

from issue_assets.lake.store import LocalStore, S3Store, StoreError
from issue_assets.monitoring.drift import PSI_WARN, drift_table, psi
from issue_assets.monitoring.outcomes import calibration_table, join_outcomes, quality, quality_by
from issue_assets.monitoring.served import Served, ServedBuffer, append_served, log_frame, read_served

REPO = "acme/widgets"
T0 = pd.Timestamp("2025-03-03T00:00:00Z")
H = pd.Timedelta(hours=1)


def _scored(n: int, *, start_id: int = 1, status=None, version="v0001-x", hours=0.0) -> pd.DataFrame:
    ids = np.arange(start_id, start_id + n)
    created = T0 + pd.to_timedelta(ids, unit="h")
    frame = pd.DataFrame({
        "repo": REPO, "id": ids, "number": ids + 1000, "created_at": created,
        "prediction_time": created + hours * H, "hours_observed": float(hours), "scoring_time": created + hours * H,
        "model_version": version, "probability": np.linspace(0.1, 0.9, n),
    })
    if status is not None:
        frame["status"] = status
        frame.loc[frame["status"] == "decided", "probability"] = np.nan
    return frame


def served_rows(scored: pd.DataFrame, features: pd.DataFrame | None, source: str) -> pd.DataFrame:
    """Log rows of a predictions table, as the batch asset and the service make them."""
    return log_frame([Served.from_frame(scored, features, source)])


def _features(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"body_length": rng.lognormal(5, 1, n), "comments_so_far": rng.poisson(1, n).astype(float)})


# ------------------------------------------------------------------------------------------- the log
def test_log_rows_are_the_scored_ones_with_their_feature_values():
    scored = _scored(6, status=["scored", "decided", "scored", "scored", "decided", "scored"])
    rows = served_rows(scored, _features(6), "http")
    assert rows["id"].tolist() == [1, 3, 4, 6]
    assert set(rows["source"]) == {"http"} and rows["probability"].notna().all()
    assert rows["f_body_length"].tolist() == _features(6)["body_length"].iloc[[0, 2, 3, 5]].tolist()
    with pytest.raises(ValueError, match="source"):
        served_rows(scored, None, "email")


def _writer(root: str, k: int) -> None:
    store = LocalStore(root)
    for j in range(5):
        append_served(store, REPO, served_rows(_scored(7, start_id=1000 * k + 10 * j), None, "batch"))


def test_concurrent_writer_processes_lose_no_row(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "lake"), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = read_served(LocalStore(tmp_path / "lake"), REPO)
    expected = sorted(1000 * k + 10 * j + i for k in range(4) for j in range(5) for i in range(7))
    assert sorted(got["id"].tolist()) == expected


def test_concurrent_writers_on_s3_lose_no_row(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        store = S3Store(client, "lake", "p")
        threads = [threading.Thread(target=lambda k=k: [append_served(store, REPO, served_rows(
            _scored(3, start_id=100 * k + 10 * j), None, "http")) for j in range(4)]) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(read_served(store, REPO)) == 5 * 4 * 3


class _FlakyStore(LocalStore):
    """A real local store whose first `failures` writes fail, as an unreachable S3 would."""

    def __init__(self, root, failures: int):
        super().__init__(root)
        self.failures = failures

    def put_bytes(self, key, data):
        if self.failures > 0:
            self.failures -= 1
            raise StoreError(f"S3 ServiceUnavailable for {key}")
        super().put_bytes(key, data)


def test_buffer_writes_off_the_caller_keeps_rows_through_store_errors_and_bounds_memory(tmp_path):
    store = _FlakyStore(tmp_path / "lake", failures=2)
    buffer = ServedBuffer(store, flush_interval_s=3600, max_rows=10_000, max_pending=25)
    for j in range(3):
        buffer.add(REPO, Served.from_frame(_scored(10, start_id=100 * j), None, "http"))
    assert buffer.stats["dropped"] == 10 and buffer.pending == 20  # the oldest batch went, whole
    assert buffer.flush() == 0 and buffer.flush() == 0 and buffer.stats["errors"] == 2
    buffer.close()
    ids = sorted(read_served(store, REPO)["id"].tolist())
    assert ids == list(range(100, 110)) + list(range(200, 210))


def test_buffer_flushes_by_itself(tmp_path):
    store = LocalStore(tmp_path / "lake")
    buffer = ServedBuffer(store, flush_interval_s=0.05)
    buffer.add(REPO, Served.from_frame(_scored(4), None, "http"))
    for _ in range(100):
        if buffer.stats["written"] == 4:
            break
        threading.Event().wait(0.05)
    assert buffer.stats["written"] == 4 and len(read_served(store, REPO)) == 4
    buffer.close()


# ------------------------------------------------------------------------------------------- outcomes
def test_outcomes_follow_the_training_label_rule_and_only_known_ones_count():
    now = T0 + pd.Timedelta(days=20)
    issues = pd.DataFrame({
        "id": [1, 2, 3, 4, 5],
        "created_at": [T0, T0, T0, now - pd.Timedelta(days=2), T0],
        "closed_at": [T0 + 30 * H, T0 + pd.Timedelta(days=9), pd.NaT, pd.NaT, now + H],
    })
    served = pd.DataFrame({
        "id": [1, 1, 2, 3, 4, 5, 1], "probability": [0.8, 0.7, 0.3, 0.2, 0.5, 0.4, 0.8],
        "prediction_time": [T0, T0 + 6 * H, T0, T0 + 24 * H, now - H, T0, T0],
        "hours_observed": [0.0, 6.0, 0.0, 24.0, 47.0, 0.0, 0.0], "model_version": "v1",
    })
    joined = join_outcomes(served, issues, now)
    # 1: closed after 30 h (positive, twice: ages 0 and 6, the exact repeat once); 2: closed after 9 days and
    # 3: never closed (negative); 4: still inside its window (unknown); 5: closed after `now` -> negative at now
    assert joined[["id", "outcome"]].values.tolist() == [[1, True], [2, False], [5, False], [1, True], [3, False]]
    assert joined.loc[joined["id"] == 1, "outcome_known_at"].iloc[0] == T0 + 30 * H
    q = quality(joined)
    y, p = joined["outcome"].astype(int), joined["probability"]
    assert q["n"] == 5 and q["issues"] == 4 and q["positives"] == 2
    w = 1.0 / joined.groupby("id")["id"].transform("size")  # issue 1 twice (ages 0 and 6): each half
    assert q["roc_auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    assert q["brier"] == pytest.approx(brier_score_loss(y, p, sample_weight=w))
    assert q["observed_rate"] == pytest.approx(np.average(y, weights=w))


def test_quality_by_week_model_and_age():
    rng = np.random.default_rng(3)
    n = 400
    created = T0 + pd.to_timedelta(rng.uniform(0, 21 * 24, n), unit="h")
    closed = created + pd.to_timedelta(rng.exponential(150, n), unit="h")
    issues = pd.DataFrame({"id": np.arange(n), "created_at": created, "closed_at": closed})
    hours = rng.choice([0.0, 10.0, 30.0, 100.0], n)
    served = pd.DataFrame({"id": np.arange(n), "prediction_time": created + pd.to_timedelta(hours, unit="h"),
                           "hours_observed": hours, "probability": rng.random(n),
                           "model_version": np.where(np.arange(n) % 2, "v2", "v1")})
    joined = join_outcomes(served, issues, T0 + pd.Timedelta(days=60))
    assert len(joined) == n
    by_age = quality_by(joined, "age")
    assert by_age["age"].tolist() == ["0-6h", "6-24h", "24-72h", "72-168h"]
    assert by_age["n"].sum() == n
    for _, row in by_age.iterrows():
        part = joined[joined["hours_observed"] == {"0-6h": 0, "6-24h": 10, "24-72h": 30, "72-168h": 100}[row["age"]]]
        assert row["roc_auc"] == pytest.approx(roc_auc_score(part["outcome"], part["probability"]))
    weeks = quality_by(joined, "week")
    assert weeks["n"].sum() == n and all(pd.Timestamp(w).dayofweek == 0 for w in weeks["week"])
    assert quality_by(joined, "model_version")["model_version"].tolist() == ["v1", "v2"]
    cal = calibration_table(joined)
    assert cal["n"].sum() == n and cal["mean_probability"].is_monotonic_increasing


# ------------------------------------------------------------------------------------------- drift
def test_drift_flags_a_shifted_feature_and_a_new_share_of_missing_values_not_a_stable_one():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"stable": rng.normal(0, 1, 5000), "shifted": rng.normal(0, 1, 5000),
                        "missing": rng.normal(0, 1, 5000)})
    recent = pd.DataFrame({"stable": rng.normal(0, 1, 2000), "shifted": rng.normal(1.0, 1, 2000),
                           "missing": np.where(rng.random(2000) < 0.4, np.nan, rng.normal(0, 1, 2000))})
    table = drift_table(ref, recent, ["stable", "shifted", "missing"]).set_index("feature")
    assert table.loc["stable", "psi"] < 0.02 and table.loc["stable", "ks_pvalue"] > 0.01
    assert table.loc["shifted", "psi"] > PSI_WARN and table.loc["shifted", "ks_pvalue"] < 1e-6
    assert table.loc["missing", "psi"] > PSI_WARN and table.loc["missing", "missing_recent"] == pytest.approx(0.4, abs=0.05)
    assert psi([], [1.0]) is None


# ------------------------------------------------------------------------------------------- one repository
def test_evaluate_repository_summarises_live_quality_drift_and_says_when_to_retrain(tmp_path):
    from issue_assets.lake.keys import training_set_key
    from issue_assets.lake.store import write_parquet
    from issue_assets.modeling.plots import png_text
    from issue_assets.monitoring.live import degradation, evaluate_repository, read_summary

    store = LocalStore(tmp_path / "lake")
    rng = np.random.default_rng(7)
    n = 600
    created = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 28 * 24, n)), unit="h")
    fast = rng.random(n) < 0.4
    closed = created + pd.to_timedelta(np.where(fast, rng.uniform(1, 100, n), rng.uniform(200, 900, n)), unit="h")
    issues = pd.DataFrame({"id": np.arange(n), "created_at": created, "closed_at": closed})
    good = np.clip(np.where(fast, 0.7, 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)  # informative
    for version, proba in (("v0001-a", good), ("v0002-b", rng.random(n))):  # the champion is v0002: noise
        scored = pd.DataFrame({"repo": REPO, "id": np.arange(n), "number": np.arange(n), "created_at": created,
                               "prediction_time": created, "hours_observed": 0.0, "scoring_time": created,
                               "model_version": version, "probability": proba})
        features = pd.DataFrame({"body_length": rng.lognormal(6.0 if version == "v0002-b" else 5.0, 1, n)})
        append_served(store, REPO, served_rows(scored, features, "batch"))
    write_parquet(store, training_set_key("2025-03-01"), pd.DataFrame({
        "repo": REPO, "id": np.arange(2000), "split": "train", "body_length": rng.lognormal(5.0, 1, 2000)}))
    live = evaluate_repository(store, REPO, issues, T0 + pd.Timedelta(days=70), champion="v0002-b",
                               champion_metadata={"as_of": "2025-03-01", "metrics": {"roc_auc": 0.71}},
                               feature_names=["body_length", "comments_so_far", "repo_age_days"], drift_days=90)
    s = read_summary(store, REPO)
    assert s == live.summary and s["served"] == 2 * n and s["with_outcome"] == 2 * n
    by_model = {r["model_version"]: r["roc_auc"] for r in s["by_model_version"]}
    assert by_model["v0001-a"] > 0.85 and abs(by_model["v0002-b"] - 0.5) < 0.1
    assert s["champion_live"]["n"] == n and s["champion_test_roc_auc"] == 0.71
    assert s["drift"]["computed"] and s["drift"]["drifted"] == ["body_length"]
    assert "repo_age_days" not in {r["feature"] for r in s["drift"]["top"]}  # grows with time by definition
    few = evaluate_repository(store, REPO, issues, T0 + pd.Timedelta(days=70), champion="v0002-b",
                              champion_metadata={"as_of": "2025-03-01"}, feature_names=["body_length"], drift_days=1)
    assert not few.summary["drift"]["computed"] and "(drift is judged from 100)" in few.summary["drift"]["reason"]
    assert png_text(live.plots["live_quality.png"])["Description"].startswith("live ROC AUC; live Brier score")
    assert "live_calibration.png" in live.plots
    reason = degradation(s, auc_threshold=0.6, calibration_bound=0.5, min_outcomes=100)
    assert reason.startswith("live ROC AUC 0.") and "< alert threshold 0.6000" in reason and REPO in reason
    assert degradation(s, auc_threshold=0.6, calibration_bound=0.5, min_outcomes=n + 1) is None
    assert degradation(s, auc_threshold=0.3, calibration_bound=0.5, min_outcomes=100) is None
    assert degradation(s, auc_threshold=0.3, calibration_bound=0.01, min_outcomes=100).startswith("live calibration")


# ------------------------------------------------------------------------------------------- the asset
def test_prediction_outcomes_asset_reports_live_quality_and_flags_it(tmp_path, monkeypatch):
    import dagster as dg
    import xgboost as xgb

    from issue_assets.assets.monitoring import prediction_outcomes
    from issue_assets.ingest.layout import current_key
    from issue_assets.lake.store import write_parquet
    from issue_assets.modeling.synthetic import FEATURES, make_training_set
    from issue_assets.modeling.training import TrainedModel
    from issue_assets.registry import ModelRegistry
    from issue_assets.resources import LakeResource, ModelStoreResource

    monkeypatch.setenv("LIVE_MIN_OUTCOMES", "100")
    lake = LocalStore(tmp_path / "lake")
    registry = ModelRegistry(LocalStore(tmp_path / "registry"))
    data = make_training_set(300, seed=1)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(
        data[FEATURES].to_numpy(np.float32), label=data["closed_within_7d"], feature_names=FEATURES), 3)
    version = registry.register(TrainedModel(booster, FEATURES), {"as_of": "2025-03-01", "metrics": {"roc_auc": 0.7}})
    registry.promote(version, {"reason": "test"})
    rng = np.random.default_rng(5)
    n = 400
    created = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 30 * 24, n)), unit="h")
    closed = created + pd.to_timedelta(rng.exponential(150, n), unit="h")
    write_parquet(lake, current_key("issues", REPO), pd.DataFrame({
        "id": np.arange(n), "created_at": created.astype("datetime64[us, UTC]"),
        "closed_at": closed.astype("datetime64[us, UTC]")}))
    scored = pd.DataFrame({"repo": REPO, "id": np.arange(n), "number": np.arange(n), "created_at": created,
                           "prediction_time": created, "hours_observed": 0.0, "scoring_time": created,
                           "model_version": version, "probability": rng.random(n)})  # noise: AUC ~ 0.5
    append_served(lake, REPO, served_rows(scored, None, "batch"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("repos", [REPO])
        result = dg.materialize([prediction_outcomes], instance=instance, partition_key=REPO, resources={
            "lake": LakeResource(uri=str(tmp_path / "lake")),
            "model_store": ModelStoreResource(uri=str(tmp_path / "registry"))})
        assert result.success
        meta = result.asset_materializations_for_node("prediction_outcomes")[0].metadata
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert meta["champion"].value == version and meta["served_predictions"].value == n
    assert meta["champion_live_n"].value == n and meta["champion_test_roc_auc"].value == 0.7
    live_auc = meta["champion_live_roc_auc"].value
    assert abs(live_auc - 0.5) < 0.1 and live_auc == round(live_auc, 4)
    assert "live_quality" in meta and "by_age" in meta and "0-6h" in meta["by_age"].value
    assert not checks["live_roc_auc_above_threshold"].passed  # 0.5 < the default alert threshold 0.6
    assert checks["feature_drift"].passed and checks["feature_drift"].severity == dg.AssetCheckSeverity.WARN


def test_drift_compares_each_served_age_with_the_training_rows_of_that_age(tmp_path):
    """comments_so_far grows with an issue's age: served rows late in their window against a training set
    of ages 0..72 h are not drift, once the reference is drawn at the served ages."""
    from issue_assets.lake.keys import training_set_key
    from issue_assets.lake.store import write_parquet
    from issue_assets.monitoring.live import evaluate_repository

    store = LocalStore(tmp_path / "lake")
    rng = np.random.default_rng(2)
    ages = np.repeat([0, 6, 24, 72], 500)
    write_parquet(store, training_set_key("2025-03-01"), pd.DataFrame({
        "repo": REPO, "id": np.arange(2000), "split": "train", "age_hours": ages.astype(float),
        "comments_so_far": rng.poisson(ages / 12.0).astype(float)}))
    n = 400
    hours = rng.uniform(72, 160, n)  # served late in the window: the 72 h bucket
    scored = pd.DataFrame({"repo": REPO, "id": np.arange(n), "number": np.arange(n),
                           "created_at": T0, "prediction_time": T0 + pd.to_timedelta(hours, unit="h"),
                           "hours_observed": hours, "scoring_time": T0 + pd.to_timedelta(hours, unit="h"),
                           "model_version": "v1", "probability": 0.5})
    append_served(store, REPO, served_rows(scored, pd.DataFrame({"comments_so_far": rng.poisson(6.0, n)}), "http"))
    live = evaluate_repository(store, REPO, pd.DataFrame({"id": [], "created_at": [], "closed_at": []}),
                               T0 + pd.Timedelta(days=10), champion="v1", champion_metadata={"as_of": "2025-03-01"},
                               feature_names=["comments_so_far"], drift_days=30)
    assert live.summary["drift"]["computed"] and live.summary["drift"]["drifted"] == []
    assert live.summary["drift"]["top"][0]["psi"] < 0.1
