"""Sensors: repositories become partitions, enough new evidence starts training, failures raise alerts."""

import json
import logging
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from issue_assets import config
from issue_assets.alerts import failure_payload, post_alert
from issue_assets.jobs import ingest_job, training_job
from issue_assets.partitions import repo_partitions
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.retraining import count_new_labels

log = logging.getLogger("issue_assets.sensors")


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
           description="Adds ISSUE_ASSETS_REPOS as repository partitions and backfills the history of every "
                       "repository partition that has none yet (added here, by the CLI or in the UI), once.")
def repositories_sensor(context: dg.SensorEvaluationContext):
    wanted = config.repos()
    known = list(repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    new = [r for r in wanted if r not in known]
    requested = set(json.loads(context.cursor)) if context.cursor else set()
    ingested = {str(k).split("|")[-1] for k in context.instance.get_materialized_partitions(dg.AssetKey("raw_issues"))}
    backfill = [r for r in dict.fromkeys(known + new) if r not in requested and r not in ingested]
    if not backfill:
        return dg.SkipReason(f"{len(known)} repositories registered, every one has its history "
                             f"({len(wanted)} named in ISSUE_ASSETS_REPOS)")
    return dg.SensorResult(
        run_requests=[history_backfill_request(r) for r in backfill],
        dynamic_partitions_requests=[repo_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(sorted(requested | set(backfill))),
    )


@dg.sensor(job=training_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests the training chain for today's as-of partition once enough issues got their "
                       "label since the champion's cutoff (RETRAIN_THRESHOLD, default 200).")
def new_labelled_issues_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                               model_store: ModelStoreResource, github: GitHubResource):
    threshold = config.retrain_threshold()
    now = pd.Timestamp.now(tz="UTC")
    repos = repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not repos:
        return dg.SkipReason("no repositories registered yet")
    try:
        registry = model_store.registry()
        champion = registry.champion()
        cutoff = registry.get_metadata(champion).get("cutoff") if champion else None
        since = pd.Timestamp(cutoff) if cutoff else None
        # Validators stay read-only: a 304 against the ingest's own (cursor = Last-Modified) means nothing is
        # pending; one against this poll's previous answer would hide what is still not ingested. One quick
        # retry only: a tick must finish well within the daemon's sensor timeout when GitHub is down.
        client = github.client(save_validators=False, max_retries=1, backoff_max=2.0, timeout=10.0, max_wait=5.0) \
            if config.retrain_poll_github() else None
        try:
            count = count_new_labels(lake.store(), repos, since, now, client=client)
        finally:
            if client is not None:
                client.close()
    except Exception as exc:  # the store or GitHub being down must skip the tick, not crash the daemon
        return dg.SkipReason(f"could not count new labels: {type(exc).__name__}: {exc}")
    where = f"since the champion's cutoff {since.isoformat()}" if since is not None else "with no champion yet"
    if count.total < threshold:
        return dg.SkipReason(f"{count.total} of {threshold} newly labelled issues {where} "
                             f"(stored {sum(count.by_repo.values())}, not ingested yet "
                             f"{sum(count.pending_by_repo.values())})")
    as_of = now.strftime("%Y-%m-%d")
    run_key = f"retrain:{as_of}:{champion or 'first'}"
    previous = json.loads(context.cursor) if context.cursor else {}
    if previous.get("run_key") == run_key:
        return dg.SkipReason(f"training for {as_of} already requested ({run_key})")
    cursor = json.dumps({"run_key": run_key, "count": count.total, "champion": champion, "at": now.isoformat()})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, partition_key=as_of,
                                    tags={"issue_assets/new_labels": str(count.total)})],
        cursor=cursor,
    )


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Logs an [ALERT] line for every failed run and posts it to ALERT_WEBHOOK_URL.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    payload = failure_payload(run.job_name, run.run_id, message, partition=run.tags.get("dagster/partition"))
    log.error(payload["text"])
    context.log.error(payload["text"])
    post_alert(config.alert_webhook_url(), payload, timeout=5.0)
