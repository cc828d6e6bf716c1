"""Prediction assets: every open issue of a repository scored by the champion."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from issue_assets.assets import follows_updates
from issue_assets.ingest.current import load_current
from issue_assets.partitions import repo_partitions
from issue_assets.resources import LakeResource, ModelStoreResource
from issue_assets.serving.scoring import batch_open_issue_predictions, write_predictions


@dg.asset(
    partitions_def=repo_partitions,
    deps=["issue_features", "production_model"],
    group_name="serving", kinds={"xgboost", "csv", "parquet"},
    automation_condition=follows_updates(),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)),
    description="Every open issue scored by the champion with features as of scoring time: probability, rank, "
                "model version and top contributions; parquet under predictions/, CSV under predict_outputs/.",
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
    predictions = batch_open_issue_predictions(registry.load_model(version), version,
                                               load_current(store, "issues", repo),
                                               load_current(store, "comments", repo), scoring_time)
    keys = write_predictions(store, repo, predictions, scoring_time)
    top = predictions.head(15)[["number", "title", "probability", "rank", "contrib_1_feature"]].copy()
    top["title"] = top["title"].astype(str).str.slice(0, 70)
    return dg.MaterializeResult(metadata={
        "open_issues": len(predictions), "model_version": version, "scoring_time": scoring_time.isoformat(),
        "mean_probability": float(predictions["probability"].mean()) if len(predictions) else float("nan"),
        "top_issues": dg.MetadataValue.md(top.round(4).to_markdown(index=False)),
        "csv": f"{store.uri}/{keys['csv']}", "parquet": f"{store.uri}/{keys['parquet']}",
    })
