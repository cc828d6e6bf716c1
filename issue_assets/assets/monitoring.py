"""Monitoring assets: how good the served predictions turned out, per repository."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from issue_assets import config
from issue_assets.assets import judges_on_cron, png_metadata, rounded
from issue_assets.features.catalog import FEATURE_NAMES
from issue_assets.ingest.current import load_current
from issue_assets.lake.keys import outcomes_joined_key, outcomes_summary_key
from issue_assets.monitoring.drift import PSI_WARN
from issue_assets.monitoring.live import evaluate_repository, verdict
from issue_assets.partitions import repo_partitions
from issue_assets.resources import LakeResource, ModelStoreResource

CHECKS = {
    "live_roc_auc_above_threshold": "The champion's served predictions, judged by their outcomes, have a ROC AUC "
                                    "at least the alert threshold (ALERT_AUC_THRESHOLD)",
    "live_calibration_within_bound": "The champion's served probabilities are calibrated within "
                                     "LIVE_CALIBRATION_BOUND (expected calibration error)",
    "feature_drift": "No feature's served values drifted from the champion's training window (PSI <= 0.25)",
}


def _table(records: list[dict], columns: list[str]) -> dg.MetadataValue:
    frame = pd.DataFrame(records, columns=columns)
    return dg.MetadataValue.md(frame.round(4).astype(str).to_markdown(index=False) if len(frame) else "(none yet)")


@dg.asset(
    partitions_def=repo_partitions,
    deps=["open_issue_predictions", "issues"],
    group_name="monitoring", kinds={"pandas", "parquet"},
    automation_condition=judges_on_cron(config.outcomes_cron()),
    check_specs=[dg.AssetCheckSpec(name, asset="prediction_outcomes", description=desc) for name, desc in CHECKS.items()],
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=6)),
    description="Every prediction served (batch and HTTP) joined to its outcome once known: live ROC AUC, Brier "
                "and calibration by week, model version and age bucket beside the champion's test metrics, and "
                "feature drift against the champion's training window.",
)
def prediction_outcomes(context: dg.AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource):
    store = lake.store()
    repo = context.partition_key
    registry = model_store.registry()
    pointer = registry.champion_pointer()
    champion = pointer["version"] if pointer else None
    meta = registry.get_metadata(champion) if champion else None
    now = pd.Timestamp.now(tz="UTC")
    live = evaluate_repository(store, repo, load_current(store, "issues", repo), now, champion=champion,
                               champion_metadata=meta, feature_names=FEATURE_NAMES, drift_days=config.drift_days())
    s = live.summary
    champ = s["champion_live"]
    metrics_cols = ["n", "issues", "positives", "roc_auc", "brier", "ece", "mean_probability", "observed_rate"]
    metadata = {
        "served_predictions": s["served"], "with_known_outcome": s["with_outcome"], "champion": champion or "",
        "champion_test_roc_auc": rounded(s["champion_test_roc_auc"]), "champion_live_roc_auc": rounded(champ["roc_auc"]),
        "champion_live_brier": rounded(champ["brier"]), "champion_live_calibration_error": rounded(champ["ece"]),
        "champion_live_n": champ["n"],
        "by_week": _table(s["by_week"], ["week", *metrics_cols]),
        "by_model_version": _table(s["by_model_version"], ["model_version", *metrics_cols]),
        "by_age": _table(s["by_age"], ["age", *metrics_cols]),
        "drift": _table(s["drift"].get("top", []), ["feature", "psi", "ks_statistic", "ks_pvalue", "n_recent"])
        if s["drift"]["computed"] else dg.MetadataValue.text(s["drift"]["reason"]),
        "summary": f"{store.uri}/{outcomes_summary_key(repo)}", "joined": f"{store.uri}/{outcomes_joined_key(repo)}",
    }
    metadata.update({name.removesuffix(".png"): png_metadata(data) for name, data in live.plots.items()})
    yield dg.MaterializeResult(metadata=metadata)

    threshold, bound = config.alert_auc_threshold(), config.live_calibration_bound()
    v = verdict(champ, auc_threshold=threshold, calibration_bound=bound, min_outcomes=config.live_min_outcomes())
    wait = f"{champ['n']} of {config.live_min_outcomes()} outcomes of the champion's predictions known so far"
    yield dg.AssetCheckResult(check_name="live_roc_auc_above_threshold", passed=v.auc_ok, metadata={
        "live_roc_auc": rounded(champ["roc_auc"]), "threshold": threshold, "n": champ["n"],
        "note": wait if not v.enough else ("" if v.auc_ok else f"[ALERT] live ROC AUC below {threshold:.4f}")})
    yield dg.AssetCheckResult(check_name="live_calibration_within_bound", passed=v.calibration_ok, metadata={
        "calibration_error": rounded(champ["ece"]), "bound": bound, "n": champ["n"], "note": wait if not v.enough else ""})
    drifted = s["drift"].get("drifted", []) if s["drift"]["computed"] else []
    yield dg.AssetCheckResult(check_name="feature_drift", passed=not drifted, severity=dg.AssetCheckSeverity.WARN,
                              metadata={"drifted_features": ", ".join(drifted) or "none", "psi_warn": PSI_WARN,
                                        "note": "" if s["drift"]["computed"] else s["drift"]["reason"]})
