"""Model lifecycle assets: tuned parameters and a candidate per as-of day, the production champion."""

import json
from datetime import timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from issue_assets import config
from issue_assets.assets import png_metadata, rounded
from issue_assets.features.catalog import FEATURE_NAMES, feature_registry_version
from issue_assets.lake import keys
from issue_assets.lake.documents import read_json, write_json
from issue_assets.lake.store import KeyNotFound, read_parquet
from issue_assets.modeling.evaluation import check_alert
from issue_assets.modeling.training import TrainingConfig, train_and_evaluate
from issue_assets.modeling.tuning import TuningConfig, tune
from issue_assets.partitions import as_of_partitions
from issue_assets.registry import PromotionConflict, decide, score_on_window
from issue_assets.registry.reports import write_reports
from issue_assets.resources import LakeResource, ModelStoreResource


class TuningRunConfig(dg.Config):
    n_trials: int = Field(default=30, description="Trials the as-of study should have (a re-run resumes it)")
    timeout_s: float | None = Field(default=None, description="Stop starting trials after this many seconds")
    workers: int = Field(default=1, description="Worker processes sharing the study (1 = deterministic)")
    seed: int = 0
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default OPTUNA_STORAGE or SQLite")


class CandidateConfig(dg.Config):
    alert_threshold: float = Field(default_factory=config.alert_auc_threshold,
                                   description="Blocking floor of the test ROC AUC")
    seed: int = 0


class PromotionConfig(dg.Config):
    margin: float = Field(default=0.0, description="ROC AUC the candidate must gain over the champion")
    alert_threshold: float = Field(default_factory=config.alert_auc_threshold)


def _previous_best(store, as_of: str) -> dict | None:
    earlier = sorted(k for k in store.list("tuning/") if k.endswith(".json") and k < keys.tuning_key(as_of))
    return read_json(store, earlier[-1]).get("best_params") if earlier else None


@dg.asset(
    partitions_def=as_of_partitions, deps=["training_set"], group_name="training", kinds={"optuna", "xgboost"},
    pool="training",
    description="XGBoost hyper-parameters tuned by Optuna on forward-chaining validation of the training set.",
)
def tuned_params(context: dg.AssetExecutionContext, config: TuningRunConfig, lake: LakeResource):
    store = lake.store()
    as_of = context.partition_key
    frame = read_parquet(store, keys.training_set_key(as_of))
    result = tune(frame, FEATURE_NAMES, as_of,
                  TuningConfig(n_trials=config.n_trials, timeout=config.timeout_s, workers=config.workers,
                               seed=config.seed),
                  storage=config.storage or config_storage(), warm_start_params=_previous_best(store, as_of))
    summary = result.summary()
    write_json(store, keys.tuning_key(as_of), summary)
    store.put_bytes(keys.tuning_history_key(as_of), result.history_png)
    return dg.MaterializeResult(metadata={
        "best_value": rounded(result.best_value), "best_params": dg.MetadataValue.json(result.best_params),
        "trials_completed": result.n_complete, "trials_pruned": result.n_pruned, "trials_failed": result.n_failed,
        "trials_run_now": result.n_run, "study": result.study_name, "storage": result.storage,
        "warm_started_from": result.warm_started_from or "", "history": png_metadata(result.history_png),
    })


def config_storage() -> str:
    return config.optuna_storage()


@dg.asset(
    partitions_def=as_of_partitions, deps=["tuned_params", "training_set"], group_name="training",
    kinds={"xgboost"}, pool="training",
    check_specs=[dg.AssetCheckSpec("test_auc_above_alert_threshold", asset="candidate_model", blocking=True,
                                   description="Test ROC AUC at age 0 (issues as they are opened, comparable with "
                                               "earlier models) at least the alert threshold (default 0.6)")],
    description="XGBoost trained on train, early-stopped and calibrated on validation, evaluated once on the "
                "most recent test window against two reference models; registered as a new model version.",
)
def candidate_model(context: dg.AssetExecutionContext, config: CandidateConfig, lake: LakeResource,
                    model_store: ModelStoreResource):
    store = lake.store()
    as_of = context.partition_key
    frame = read_parquet(store, keys.training_set_key(as_of))
    params = read_json(store, keys.tuning_key(as_of))["best_params"]
    result = train_and_evaluate(frame, FEATURE_NAMES, params, TrainingConfig(seed=config.seed))
    metadata = result.metadata(as_of=as_of, feature_registry_version=feature_registry_version())
    age0 = result.age0_metrics
    metadata["metrics"]["test_auc"] = age0.get("roc_auc")
    metadata["cutoff"] = read_json(store, keys.training_info_key(as_of))["cutoff"]
    metadata["tuning"] = read_json(store, keys.tuning_key(as_of))
    artifacts = dict(result.plots)
    try:  # the tuning history travels with the version, so its report shows how it was tuned
        artifacts["tuning_history.png"] = store.get_bytes(keys.tuning_history_key(as_of))
    except KeyNotFound:
        pass
    registry = model_store.registry()
    version = registry.register(result.model, metadata, artifacts=artifacts)
    write_json(store, keys.candidate_key(as_of), {"version": version, "as_of": as_of})
    write_json(store, keys.LATEST_CANDIDATE_KEY, {"version": version, "as_of": as_of})
    passed, details = check_alert(age0, config.alert_threshold)
    if not passed:
        context.log.error(f"[ALERT] candidate {version} as of {as_of}: {details['message']}")
        # recorded, so the registry says which versions failed their check (`issue-assets model list`)
        registry.record_decision(version, {"promote": False, "check_passed": False,
                                           "reason": f"failed the blocking check: {details['message']}"})
    report = write_reports(registry, [version])[0]
    refs = result.reference_metrics
    comparison = pd.DataFrame({
        "candidate": result.metrics, "base_rate": refs.get("base_rate", {}),
        "older_projects": refs.get("older_projects", {})}).loc[["roc_auc", "pr_auc", "log_loss", "brier", "base_rate"]]
    by_age = pd.DataFrame({f"{age} h": {m: v.get(m) for m in ("n", "base_rate", "roc_auc", "pr_auc", "brier")}
                           for age, v in result.metrics_by_age.items()})
    meta = {
        "version": version, "report": dg.MetadataValue.path(f"{registry.store.uri}/{report}"),
        "test_auc": rounded(age0.get("roc_auc")), "test_auc_all_ages": rounded(result.metrics.get("roc_auc")),
        "pr_auc": rounded(result.metrics.get("pr_auc")), "log_loss": rounded(result.metrics.get("log_loss")),
        "brier": rounded(result.metrics.get("brier")),
        "metrics_by_age": dg.MetadataValue.md(by_age.T.round(4).astype(str).to_markdown() if len(by_age) else ""),
        "vs_references": dg.MetadataValue.md(comparison.round(4).astype(str).to_markdown()),
        "calibration": dg.MetadataValue.json(result.calibration),
        "windows": dg.MetadataValue.json(result.windows),
        "feature_importance": dg.MetadataValue.md(
            result.feature_importance.head(20).round(4).astype(str).to_markdown(index=False)),
        "model_store": f"{registry.store.uri}/models/{version}",
    }
    meta.update({name.removesuffix(".png"): png_metadata(data) for name, data in result.plots.items()})
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(check_name="test_auc_above_alert_threshold", passed=bool(passed),
                              metadata={"message": details["message"], "threshold": config.alert_threshold,
                                        "test_auc": rounded(details["value"])})


@dg.asset(
    deps=[dg.AssetDep("candidate_model", partition_mapping=dg.LastPartitionMapping())],
    group_name="deployment", kinds={"xgboost", "s3"},
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=14), warn_window=timedelta(days=8)),
    description="The champion: the newest candidate replaces it only if it passes the blocking check and beats "
                "it by the margin in ROC AUC at age 0 on the same most recent labelled window.",
)
def production_model(context: dg.AssetExecutionContext, config: PromotionConfig, lake: LakeResource,
                     model_store: ModelStoreResource) -> dg.MaterializeResult:
    store = lake.store()
    registry = model_store.registry()
    latest = read_json(store, keys.LATEST_CANDIDATE_KEY)
    if not latest:
        raise dg.Failure("no candidate_model has been materialized yet")
    version, as_of = latest["version"], latest["as_of"]
    window = read_parquet(store, keys.training_set_key(as_of))
    # Age 0 of the test window: the setting every model, earlier single-age ones included, is judged in.
    window = window.loc[(window["split"] == "test") & (window["age_hours"] == 0 if "age_hours" in window else True)]
    for _ in range(5):
        champion = registry.champion()
        candidate_metrics = score_on_window(registry.load_model(version), window)
        champion_metrics = score_on_window(registry.load_model(champion), window) if champion else None
        passed, _details = check_alert(candidate_metrics, config.alert_threshold)
        decision = decide(candidate_metrics, champion_metrics, passed, margin=config.margin,
                          champion_version=champion)
        record = decision.to_dict() | {"window": {"as_of": as_of, "rows": len(window),
                                                  "first_created_at": str(window["created_at"].min()),
                                                  "last_created_at": str(window["created_at"].max())}}
        if champion == version:
            record |= {"promote": False, "reason": f"{version} is already the champion"}
            registry.record_decision(version, record)
            break
        try:
            if decision.promote:
                registry.promote(version, record)
            else:
                registry.record_decision(version, record)
            break
        except PromotionConflict:
            context.log.warning("the champion changed while deciding; deciding again")
    else:
        raise dg.Failure("the champion kept changing during five promotion attempts")
    now = registry.champion()
    # the candidate's and the replaced champion's reports say what they are now
    report = write_reports(registry, [version, champion])[0]
    context.log.info(f"promotion decision for {version}: {'PROMOTED' if decision.promote else 'kept'} "
                     f"{champion or 'no champion'} ({record['reason']})")
    return dg.MaterializeResult(metadata={
        "champion": now or "", "candidate": version, "promoted": bool(record["promote"]),
        "reason": record["reason"], "candidate_auc": rounded(decision.candidate_value),
        "champion_auc": rounded(decision.champion_value), "candidate_report": dg.MetadataValue.path(f"{registry.store.uri}/{report}"),
        "margin": config.margin, "window": dg.MetadataValue.json(record["window"]),
        "decision": dg.MetadataValue.json(json.loads(json.dumps(record, default=str))),
        "model_store": registry.store.uri,
    })
