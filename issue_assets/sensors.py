"""Sensors: repositories become partitions and get their history, a poll ingests what changed within minutes,
Dagster's automation conditions carry it through features to predictions, enough new evidence starts
training, failures raise alerts. Every one is on by default."""

from __future__ import annotations

import json
import logging

import dagster as dg
import pandas as pd

from issue_assets import config
from issue_assets.alerts import failure_payload, post_alert
from issue_assets.ingest import poll, sources
from issue_assets.jobs import INGEST_TAG, ingest_job, training_job
from issue_assets.partitions import repo_partitions
from issue_assets.resources import GitHubResource, LakeResource, ModelStoreResource
from issue_assets.retraining import count_new_labels

log = logging.getLogger("issue_assets.sensors")

BACKFILL_TAG = "issue_assets/backfill"
MAX_HISTORY_ATTEMPTS = 5
_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]


def history_request(repo: str, source: sources.Source, attempt: int = 0) -> dg.RunRequest:
    """The repository's first ingest run: one sweep of its whole history (one event per asset)."""
    key = f"history:{repo}:{source.added_at or 'default'}" + (f":{attempt}" if attempt else "")
    return dg.RunRequest(run_key=key, partition_key=repo,
                         tags={INGEST_TAG: repo, BACKFILL_TAG: repo, "dagster/max_runtime": str(6 * 3600)})


def _ingest_runs(instance: dg.DagsterInstance, tags: dict, statuses=None) -> list:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags, statuses=statuses), limit=50))


@dg.sensor(job=ingest_job, minimum_interval_seconds=config.poll_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Keeps repository partitions and repository sources in step (ISSUE_ASSETS_REPOS, "
                       "`issue-assets repos add`, the UI) and requests each new repository's history: one run, "
                       "one sweep; retried with a new run key if it failed.")
def repositories_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    store = lake.store()
    bound = sources.all_sources(store)
    for repo in config.repos():
        if repo not in bound:
            bound[repo] = sources.add(repo, store=store)
            context.log.info(f"{repo} (ISSUE_ASSETS_REPOS) bound to {bound[repo].api_url}")
    known = list(repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    for repo in known:
        if repo not in bound:
            bound[repo] = sources.add(repo, store=store)
            context.log.info(f"{repo} (a partition without a source) bound to {bound[repo].api_url}")
    new_partitions = [r for r in bound if r not in known]
    requests, waiting = [], []
    for repo, source in bound.items():
        if all(poll.has_history(store, repo, kind) for kind in poll.KINDS):
            continue
        runs = _ingest_runs(context.instance, {BACKFILL_TAG: repo})
        if any(r.status in _IN_PROGRESS for r in runs):
            waiting.append(repo)
            continue
        failed = sum(1 for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED))
        if failed >= MAX_HISTORY_ATTEMPTS:
            context.log.warning(f"{repo}: its history run failed {failed} times; see the runs tagged "
                                f"{BACKFILL_TAG}={repo}")
            continue
        requests.append(history_request(repo, source, failed))
    partition_requests = [repo_partitions.build_add_request(new_partitions)] if new_partitions else []
    if not requests and not partition_requests:
        busy = f"; history runs in progress: {', '.join(waiting)}" if waiting else ""
        return dg.SkipReason(f"{len(bound)} repositories bound to their sources, every one has its history{busy}")
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)


@dg.sensor(job=ingest_job, minimum_interval_seconds=config.poll_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="One conditional request per repository and endpoint (issues, comments) at its source; "
                       "a 304 costs nothing and requests nothing, a change requests one ingest run of that "
                       "repository (idempotent run key). Spends at most ISSUE_ASSETS_POLL_BUDGET_SHARE of each "
                       "API's rate limit.")
def new_activity_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, github: GitHubResource):
    state = json.loads(context.cursor) if context.cursor else {}
    try:
        store = lake.store()
        repos = list(repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
        if not repos:
            return dg.SensorResult(skip_reason="no repositories registered yet", cursor=context.cursor)
        busy = {r.tags.get(INGEST_TAG) for r in _ingest_runs(context.instance, {"issue_assets/kind": "ingest"},
                                                             _IN_PROGRESS)}
        polled = [r for r in repos if r not in busy]
        bound = sources.all_sources(store)
        if github.api_url:
            bound = {r: github.source(r, store) for r in polled}
        report = poll.poll(polled, store, budgets=state.get("budgets"), sources=bound,
                           share=config.poll_budget_share(), concurrency=config.poll_concurrency(),
                           token=github.token, cache_dir=github.cache_dir)
    except Exception as exc:  # the lake or the instance being down must skip the tick and keep the cursor
        return dg.SensorResult(skip_reason=f"poll failed: {type(exc).__name__}: {exc}", cursor=context.cursor)
    state["budgets"] = {**state.get("budgets", {}), **report.budgets}
    state["last"] = report.counts()
    for line in report.problems():
        context.log.warning(line)
    context.log.info(report.summary())
    requests = [dg.RunRequest(run_key=f"poll:{repo}:{fingerprint}", partition_key=repo,
                              tags={INGEST_TAG: repo, "issue_assets/poll": fingerprint})
                for repo, fingerprint in sorted(report.changed().items())]
    skip = None
    if not requests:
        problems = report.problems()
        in_progress = f"; ingest in progress for {', '.join(sorted(busy & set(repos)))}" if busy & set(repos) else ""
        skip = report.summary() + in_progress + ("; could not check: " + "; ".join(problems[:5]) if problems else "")
        if len(problems) > 5:
            skip += f"; and {len(problems) - 5} more (see the tick's log)"
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True), skip_reason=skip)


def _training_request(as_of: str, run_key: str, count: int, reason: str) -> dg.RunRequest:
    trials = config.trials()
    run_config = {"ops": {"tuned_params": {"config": {"n_trials": trials}}}} if trials else {}
    # A candidate that fails its blocking check fails the run; retrying would train the same model again.
    return dg.RunRequest(run_key=run_key, partition_key=as_of, run_config=run_config,
                         tags={"issue_assets/new_labels": str(count), "issue_assets/retrain_reason": reason[:200],
                               "dagster/retry_on_asset_or_op_failure": "false", "dagster/max_runtime": str(4 * 3600)})


def _live_degradation(store, repos: list[str], champion: str | None) -> str | None:
    """Why the champion's served predictions, judged by their outcomes (prediction_outcomes), call for
    retraining in some repository; None when none does (or too few outcomes are known yet)."""
    from issue_assets.monitoring.live import degradation, read_summary

    for repo in repos:
        summary = read_summary(store, repo)
        if champion is None or not summary or summary.get("champion") != champion:
            continue
        reason = degradation(summary, auc_threshold=config.alert_auc_threshold(),
                             calibration_bound=config.live_calibration_bound(), min_outcomes=config.live_min_outcomes())
        if reason:
            return reason
    return None


@dg.sensor(job=training_job, minimum_interval_seconds=config.retrain_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests the training chain for today's as-of partition once enough issues got their "
                       "label since the champion's cutoff (RETRAIN_THRESHOLD, default 200), or once the champion's "
                       "live quality degrades (prediction_outcomes: live ROC AUC below ALERT_AUC_THRESHOLD or "
                       "calibration error above LIVE_CALIBRATION_BOUND). Counts what the lake holds and, unless "
                       "RETRAIN_POLL_GITHUB=0, what each source has that is not ingested yet.")
def new_labelled_issues_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                               model_store: ModelStoreResource, github: GitHubResource):
    threshold = config.retrain_threshold()
    now = pd.Timestamp.now(tz="UTC")
    repos = repo_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not repos:
        return dg.SkipReason("no repositories registered yet")
    try:
        store = lake.store()
        registry = model_store.registry()
        champion = registry.champion()
        cutoff = registry.get_metadata(champion).get("cutoff") if champion else None
        since = pd.Timestamp(cutoff) if cutoff else None

        def client_for(repo: str):
            # Validators stay read-only: a 304 against the ingest's own (cursor = Last-Modified) means nothing
            # is pending; one against this poll's previous answer would hide what is still not ingested. One
            # quick retry only: a tick must finish well within the daemon's sensor timeout.
            return github.client(repo, store, save_validators=False, max_retries=1, backoff_max=2.0, timeout=10.0,
                                 max_wait=5.0)

        count = count_new_labels(store, repos, since, now,
                                 client_for=client_for if config.retrain_poll_github() else None)
    except Exception as exc:  # the store or the registry being down must skip the tick, not crash the daemon
        return dg.SkipReason(f"could not count new labels: {type(exc).__name__}: {exc}")
    where = f"since the champion's cutoff {since.isoformat()}" if since is not None else "with no champion yet"
    unreachable = "".join(f"; could not reach {repo}'s source: {why}" for repo, why in count.unreachable.items())
    for repo, why in count.unreachable.items():
        context.log.warning(f"{repo}: source unreachable, counted what the lake holds: {why}")
    as_of = now.strftime("%Y-%m-%d")
    # Training reads issue_features: labels of a repository that has none yet (its history is still being
    # ingested) count toward the threshold but cannot start a run that would not see them (a run requested
    # then fails, and today's run key would be spent).
    trainable = count.total - sum(count.by_repo.get(r, 0) + count.pending_by_repo.get(r, 0) for r in count.missing)
    if count.total >= threshold > trainable:
        waiting = ", ".join(count.missing)
        return dg.SkipReason(f"{count.total} of {threshold} newly labelled issues {where}, but {waiting} "
                             f"{'has' if len(count.missing) == 1 else 'have'} no issue_features yet (the history is "
                             f"still being ingested): training waits for them{unreachable}")
    if count.total >= threshold:
        reason = f"{count.total} newly labelled issues {where} (threshold {threshold})"
        run_key = f"retrain:{as_of}:{champion or 'first'}"
    else:
        try:
            degraded = _live_degradation(store, repos, champion)
        except Exception as exc:  # an unreadable summary skips this trigger, not the tick
            degraded = None
            context.log.warning(f"could not read the live-quality summaries: {type(exc).__name__}: {exc}")
        if degraded is None:
            return dg.SkipReason(f"{count.total} of {threshold} newly labelled issues {where} "
                                 f"(stored {sum(count.by_repo.values())}, not ingested yet "
                                 f"{sum(count.pending_by_repo.values())}); live quality holds{unreachable}")
        reason = f"the champion's live quality degraded: {degraded}"
        run_key = f"retrain:{as_of}:{champion}:live"
        context.log.warning(reason)
    previous = json.loads(context.cursor) if context.cursor else {}
    if previous.get("run_key") == run_key:
        return dg.SkipReason(f"training for {as_of} already requested ({run_key}){unreachable}")
    cursor = json.dumps({"run_key": run_key, "count": count.total, "champion": champion, "at": now.isoformat(),
                         "reason": reason})
    return dg.SensorResult(run_requests=[_training_request(as_of, run_key, count.total, reason)], cursor=cursor)


automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=config.automation_seconds(),
    emit_backfills=False,
    description="Dagster's declarative automation, on by default: after an ingest, issues, issue_comments, "
                "issue_features and open_issue_predictions follow their inputs (follows_updates), and new "
                "predictions follow a new champion.",
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


ALL = [repositories_sensor, new_activity_sensor, new_labelled_issues_sensor, automation_condition_sensor,
       run_failure_alert_sensor]
