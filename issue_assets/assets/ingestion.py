"""Ingestion assets: the raw log of item versions and the current state of each repository.

The raw log is partitioned by repository: a materialization is one paged sweep from the stored cursor
(the whole history the first time, then only what changed), so its metadata is that sweep's own.
"""

from datetime import timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from issue_assets import progress
from issue_assets.assets import follows_updates
from issue_assets.ingest.current import load_current, merge_current
from issue_assets.ingest.rawlog import RawLog
from issue_assets.ingest.sync import cursor, iso, sync_incremental, sync_window
from issue_assets.partitions import repo_partitions
from issue_assets.resources import GitHubResource, LakeResource


class IngestConfig(dg.Config):
    lookback_hours: float = Field(default=0.0, ge=0, description="Sweep from this many hours before the cursor "
                                  "(the daily reconciliation uses 48: items GitHub listed late)")
    full: bool = Field(default=False, description="Sweep the whole history again (idempotent: versions already "
                                                  "in the log are kept once)")


def _ingest(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource, github: GitHubResource,
            kind: str) -> dg.MaterializeResult:
    store = lake.store()
    repo = context.partition_key
    before = cursor(store, repo, kind)
    source = github.source(repo, store)
    where = "the whole history" if config.full or before is None else \
        f"{iso(before - timedelta(hours=config.lookback_hours))} .. now"
    context.log.info(f"{repo} {kind}: sweeping {where} from {source.api_url}")

    def on_event(event: str, info: dict) -> None:
        # Pages go to the progress lines of an in-process run, not to the event log: an event per page
        # would be stored in the instance (a history of 1,500 pages = 1,500 events).
        if event == "page":
            progress.report("page", repo=repo, kind=kind, items=info.get("items", 0))

    with github.client(repo, store, on_event=on_event) as client:
        if config.full:  # no cached validator: a damaged or missing version is fetched again, not answered 304
            result = sync_window(client, store, repo, kind, None, None, full=True)
        else:
            result = sync_incremental(client, store, repo, kind, lookback=timedelta(hours=config.lookback_hours))
    after = cursor(store, repo, kind)
    return dg.MaterializeResult(metadata={
        "source": source.api_url,
        "window_start": result.window_start or "the beginning",
        "cursor_before": iso(before) or "",
        "cursor_after": iso(after) or "",
        "pages": result.pages,
        "items_fetched": result.items_fetched,
        "new_versions": result.new_versions,
        "rejected": result.rejected,
        "requests": result.requests,
        "not_modified_304": result.not_modified,
        "rate_limit_waits": result.rate_limit_waits,
        "retries": result.retries,
        "wait_seconds": float(result.wait_seconds),
        "seconds": round(result.seconds, 3),
        "rows_in_log": RawLog(store, kind, repo).rows(),
        "months_written": ", ".join(sorted(set(result.months_written))[-24:]),
    })


_RAW = dict(partitions_def=repo_partitions, group_name="ingestion", kinds={"github", "parquet"}, pool="github_api")


@dg.asset(description="Append-only log of issue versions as fetched, per repository: each materialization is one "
                      "sweep since the stored cursor (the whole history the first time).", **_RAW)
def raw_issues(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource, github: GitHubResource):
    return _ingest(context, config, lake, github, "issues")


@dg.asset(description="Append-only log of comment versions as fetched, per repository: each materialization is "
                      "one sweep since the stored cursor (the whole history the first time).", **_RAW)
def raw_comments(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource,
                 github: GitHubResource):
    return _ingest(context, config, lake, github, "comments")


def _preview(df: pd.DataFrame, columns: list[str], n: int = 10) -> dg.MetadataValue:
    tail = df.sort_values("updated_at").tail(n)[columns] if len(df) else df[columns]
    return dg.MetadataValue.md(tail.astype(str).to_markdown(index=False))


def _current(context: dg.AssetExecutionContext, lake: LakeResource, kind: str, preview_cols: list[str]):
    store = lake.store()
    repo = context.partition_key
    result = merge_current(store, repo, kind)
    table = load_current(store, kind, repo)
    meta = {
        "rows": result.rows, "inserted": result.inserted, "updated": result.updated,
        "versions_read": result.new_versions_read, "log_files_read": result.files_read,
        "preview": _preview(table, preview_cols),
    }
    if len(table):
        meta["oldest_created_at"] = str(table["created_at"].min())
        meta["newest_updated_at"] = str(table["updated_at"].max())
    if kind == "issues" and len(table):
        meta["pull_requests"] = int(table["is_pull_request"].sum())
        meta["open"] = int((table["state"] == "open").sum())
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    partitions_def=repo_partitions,
    deps=["raw_issues"],
    group_name="ingestion", kinds={"parquet"},
    automation_condition=follows_updates(),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)),
    description="Current state of each issue (latest version per id) for one repository, merged incrementally.",
)
def issues(context: dg.AssetExecutionContext, lake: LakeResource):
    return _current(context, lake, "issues", ["number", "title", "state", "created_at", "updated_at"])


@dg.asset(
    partitions_def=repo_partitions,
    deps=["raw_comments"],
    group_name="ingestion", kinds={"parquet"},
    automation_condition=follows_updates(),
    description="Current state of each comment (latest version per id) for one repository.",
)
def issue_comments(context: dg.AssetExecutionContext, lake: LakeResource):
    return _current(context, lake, "comments", ["issue_number", "user_login", "created_at", "updated_at"])
