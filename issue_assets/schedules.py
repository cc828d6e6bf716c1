"""The daily safety net: re-sweep the last two days of every repository.

The polling sensor ingests what changed within minutes, but it only sees items updated after the stored
cursor. GitHub's listings are eventually consistent: an item updated just before the cursor can show up
in `since` listings after a later item has already moved the cursor past it, and the poll never asks for
that time again. This sweep asks again for the 48 hours behind the cursor (versions already stored are
kept once), which also covers days on which the polling sensor was stopped. It costs about one page per
endpoint and repository a day.
"""

from datetime import UTC

import dagster as dg

from issue_assets.jobs import INGEST_TAG, ingest_job
from issue_assets.partitions import repo_partitions

LOOKBACK_HOURS = 48.0


def reconcile_request(repo: str, day: str) -> dg.RunRequest:
    config = {"lookback_hours": LOOKBACK_HOURS}
    return dg.RunRequest(run_key=f"reconcile:{repo}:{day}", partition_key=repo, tags={INGEST_TAG: repo},
                         run_config={"ops": {"raw_issues": {"config": config}, "raw_comments": {"config": config}}})


@dg.schedule(job=ingest_job, cron_schedule="0 5 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="05:00 UTC: re-sweep the last 48 hours of every repository (items GitHub listed late).")
def daily_reconcile_schedule(context: dg.ScheduleEvaluationContext):
    repos = repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not repos:
        return dg.SkipReason("no repositories registered (set ISSUE_ASSETS_REPOS or run `issue-assets repos add`)")
    day = context.scheduled_execution_time.astimezone(UTC).strftime("%Y-%m-%d")
    return [reconcile_request(repo, day) for repo in repos]
