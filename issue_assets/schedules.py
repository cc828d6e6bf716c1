"""Schedules: the daily ingest of yesterday's partitions of every repository."""

from datetime import UTC, timedelta

import dagster as dg

from issue_assets.jobs import ingest_job
from issue_assets.partitions import repo_partitions


@dg.schedule(job=ingest_job, cron_schedule="0 5 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="05:00 UTC: ingest yesterday's updates of every repository.")
def daily_ingest_schedule(context: dg.ScheduleEvaluationContext):
    repos = repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not repos:
        return dg.SkipReason("no repositories registered (set ISSUE_ASSETS_REPOS or run `issue-assets repos add`)")
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"{repo}|{day}", partition_key=dg.MultiPartitionKey({"repo": repo, "day": day}))
            for repo in repos]
