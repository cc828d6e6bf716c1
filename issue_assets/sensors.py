"""Sensors: repositories named in ISSUE_ASSETS_REPOS become partitions and get their history backfilled."""

from datetime import UTC, datetime

import dagster as dg

from issue_assets import config
from issue_assets.jobs import ingest_job
from issue_assets.partitions import repo_partitions


def history_backfill_request(repo: str, today: str | None = None) -> dg.RunRequest:
    """One single run over every day partition of a repository: one paged sweep of its whole history."""
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    return dg.RunRequest(
        run_key=f"history:{repo}",
        tags={
            "dagster/asset_partition_range_start": f"{config.start_date()}|{repo}",
            "dagster/asset_partition_range_end": f"{today}|{repo}",
            "issue_assets/backfill": repo,
        },
    )


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds ISSUE_ASSETS_REPOS as repository partitions and backfills each new one once.")
def repositories_sensor(context: dg.SensorEvaluationContext):
    wanted = config.repos()
    known = set(repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    new = [r for r in wanted if r not in known]
    if not new:
        return dg.SkipReason(f"{len(wanted)} configured repositories, all registered")
    return dg.SensorResult(
        run_requests=[history_backfill_request(r) for r in new],
        dynamic_partitions_requests=[repo_partitions.build_add_request(new)],
    )
