"""The code location: every asset, job, schedule, sensor and resource, configured from the environment."""


import dagster as dg

from issue_assets import config
from issue_assets.assets import ingestion, model, prediction, training
from issue_assets.jobs import full_pipeline_job, ingest_job, repository_refresh_job, training_job
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.schedules import daily_ingest_schedule
from issue_assets.sensors import new_labelled_issues_sensor, repositories_sensor, run_failure_alert_sensor


def resources() -> dict:
    token = dg.EnvVar("GITHUB_TOKEN") if config.github_token() else None
    return {
        "lake": LakeResource(),
        "github": GitHubResource(token=token),
        "model_store": ModelStoreResource(),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingestion, training, model, prediction]),
    asset_checks=dg.load_asset_checks_from_modules([ingestion, training, model, prediction]),
    jobs=[ingest_job, repository_refresh_job, training_job, full_pipeline_job],
    schedules=[daily_ingest_schedule],
    sensors=[repositories_sensor, new_labelled_issues_sensor, run_failure_alert_sensor],
    resources=resources(),
)
