"""Jobs: what the CLI, schedules and sensors launch."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_issues", "raw_comments"),
    description="Fetch one repository x day of issues and comments into the raw log.",
    tags={"pool": "github_api"},
)

current_state_job = dg.define_asset_job(
    "current_state_job",
    selection=dg.AssetSelection.assets("issues", "issue_comments"),
    description="Merge the raw log into the current state of one repository.",
)
