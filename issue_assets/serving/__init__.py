"""Scoring for the batch job and the HTTP prediction service. No Dagster import here."""

from issue_assets.serving.scoring import (
    DECIDED,
    SCORED,
    batch_open_issue_predictions,
    predict,
    read_latest_predictions,
    score_features,
    write_predictions,
)

__all__ = ["DECIDED", "SCORED", "batch_open_issue_predictions", "predict", "read_latest_predictions",
           "score_features", "write_predictions"]
