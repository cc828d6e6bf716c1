"""Prediction assets: every open issue of a repository scored by the champion."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from issue_assets.assets import follows_updates
from issue_assets.features.table import load_snapshot
from issue_assets.ingest.current import load_current
from issue_assets.monitoring.served import append_served, log_frame
from issue_assets.partitions import repo_partitions
from issue_assets.resources import LakeResource, ModelStoreResource
from issue_assets.serving.scoring import SCORED, batch_predict, write_predictions


@dg.asset(
    partitions_def=repo_partitions,
    deps=["issue_features", "production_model"],
    group_name="serving", kinds={"xgboost", "csv", "parquet"},
    automation_condition=follows_updates(),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)),
    description="The repository's open and recent issues at the scoring time: those still inside their 7-day "
                "window scored by the champion at their current age (probability, rank, top contributions), the "
                "others reported as decided with their known outcome (status column); parquet under predictions/, "
                "CSV under predict_outputs/; every probability also goes to the served-prediction log (served/).",
)
def open_issue_predictions(context: dg.AssetExecutionContext, lake: LakeResource,
                           model_store: ModelStoreResource) -> dg.MaterializeResult:
    store = lake.store()
    repo = context.partition_key
    registry = model_store.registry()
    version = registry.champion()
    if version is None:
        raise dg.Failure("no champion model yet: materialize production_model first")
    scoring_time = pd.Timestamp.now(tz="UTC")
    batch = batch_predict(registry.load_model(version), version, load_snapshot(store, repo),
                          load_current(store, "issues", repo), scoring_time)
    predictions = batch.frame()
    keys = write_predictions(store, repo, predictions, scoring_time)
    # every probability published is kept, with its features, for prediction_outcomes
    served = append_served(store, repo, log_frame([batch.served("batch")]))
    scored = predictions.loc[predictions["status"] == SCORED]
    top = scored.head(15)[["number", "title", "hours_observed", "probability", "rank", "contrib_1_feature"]].copy()
    top["title"] = top["title"].astype(str).str.slice(0, 70)
    return dg.MaterializeResult(metadata={
        "issues": len(predictions), "open_issues": len(scored), "decided": len(predictions) - len(scored),
        "model_version": version, "scoring_time": scoring_time.isoformat(),
        "mean_probability": float(scored["probability"].mean()) if len(scored) else float("nan"),
        "top_issues": dg.MetadataValue.md(top.round(4).to_markdown(index=False)),
        "csv": f"{store.uri}/{keys['csv']}", "parquet": f"{store.uri}/{keys['parquet']}",
        "served_log_part": f"{store.uri}/{served}" if served else "",
    })
