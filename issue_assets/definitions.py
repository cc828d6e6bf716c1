"""The code location: every asset, job, schedule, sensor and resource, configured from the environment."""

import os

import dagster as dg

from issue_assets.assets import ingestion
from issue_assets.jobs import current_state_job, ingest_job
from issue_assets.resources import GitHubResource, LakeResource
from issue_assets.schedules import daily_ingest_schedule
from issue_assets.sensors import repositories_sensor


def resources() -> dict:
    token = dg.EnvVar("GITHUB_TOKEN") if os.environ.get("GITHUB_TOKEN") else None
    return {
        "lake": LakeResource(s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None),
        "github": GitHubResource(token=token),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingestion]),
    jobs=[ingest_job, current_state_job],
    schedules=[daily_ingest_schedule],
    sensors=[repositories_sensor],
    resources=resources(),
)
