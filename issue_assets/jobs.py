"""Asset jobs: what the sensors, the schedule, the CLI and CI launch. Each is a slice of the asset graph;
no job starts another one."""

import dagster as dg

INGEST_TAG = "issue_assets/ingest"
"""Carries the repository on every ingest run; the instance runs one at a time per repository."""

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_issues", "raw_comments"),
    description="Sweep one repository's issues and comments since the stored cursor into the raw log (the whole "
                "history the first time).",
    tags={"issue_assets/kind": "ingest"},
)

refresh_job = dg.define_asset_job(
    "refresh_job",
    selection=dg.AssetSelection.assets("issues", "issue_comments", "issue_features"),
    description="Merge the raw log into the current state and refresh the features of one repository.",
    tags={"issue_assets/kind": "refresh"},
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_set", "tuned_params", "candidate_model", "production_model"),
    description="Training set as of a day, tuning, candidate, promotion decision.",
    tags={"issue_assets/kind": "training"},
)

predictions_job = dg.define_asset_job(
    "predictions_job",
    selection=dg.AssetSelection.assets("open_issue_predictions", "prediction_outcomes"),
    description="Score the open issues of one repository with the champion, then judge the predictions served so "
                "far against their outcomes (prediction_outcomes).",
    tags={"issue_assets/kind": "predictions"},
)

ALL = [ingest_job, refresh_job, training_job, predictions_job]
