"""Scoring for the batch job and the HTTP prediction service. No Dagster import here."""

from issue_assets.serving.features import PreparedHistory, target_features
from issue_assets.serving.scoring import (
    batch_open_issue_predictions,
    open_issues,
    read_latest_predictions,
    score_features,
    score_issues,
    score_prepared,
    write_predictions,
)

__all__ = [
    "PreparedHistory", "batch_open_issue_predictions", "open_issues", "read_latest_predictions",
    "score_features", "score_issues", "score_prepared", "target_features", "write_predictions",
]
