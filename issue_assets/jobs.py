"""Jobs: what the CLI, schedules and sensors launch."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_issues", "raw_comments"),
    description="Fetch one repository x day of issues and comments into the raw log.",
)

repository_refresh_job = dg.define_asset_job(
    "repository_refresh_job",
    selection=dg.AssetSelection.assets("issues", "issue_comments", "issue_features"),
    description="Merge the raw log into the current state and refresh the features of one repository.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_set", "tuned_params", "candidate_model", "production_model"),
    description="Training set as of a day, tuning, candidate, promotion decision.",
    tags={"issue_assets/kind": "training"},
)


class FullPipelineConfig(dg.Config):
    repos: list[str] = []
    trials: int = 20
    api_url: str | None = None
    as_of: str | None = None


@dg.op(description="Ingest, features, training set as of today, tuning, candidate and promotion, each "
                   "materialized as its own run in this instance.")
def run_full_pipeline(context: dg.OpExecutionContext, config: FullPipelineConfig) -> dict:
    from issue_assets import config as settings
    from issue_assets.pipeline import format_summary, run_pipeline

    repos = config.repos or settings.repos()
    if not repos:
        raise dg.Failure("no repositories: set ISSUE_ASSETS_REPOS or the op config `repos`")
    summary = run_pipeline(repos, api_url=config.api_url, trials=config.trials, as_of=config.as_of,
                           instance=context.instance, echo=context.log.info)
    for line in format_summary(summary):
        context.log.info(line)
    return {"candidate": summary["candidate"].get("version"), "promoted": summary["production"].get("promoted")}


@dg.job(description="The whole pipeline for ISSUE_ASSETS_REPOS (what `dagster job execute` runs in CI).")
def full_pipeline_job():
    run_full_pipeline()
