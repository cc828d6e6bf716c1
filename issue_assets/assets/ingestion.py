"""Ingestion assets: the raw log of item versions and the current state of each repository."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from issue_assets import config
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current, merge_current
from issue_assets.ingest.sync import iso, sync_window
from issue_assets.ingest.windows import plan_windows
from issue_assets.lake.documents import read_json
from issue_assets.partitions import REPO_FROM_RAW, raw_partitions, repo_partitions
from issue_assets.resources import GitHubResource, LakeResource


def _partition_pairs(context: dg.AssetExecutionContext) -> list[tuple[str, str]]:
    pairs = []
    for key in context.partition_keys:
        dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else \
            dict(zip(("day", "repo"), key.split("|"), strict=True))
        pairs.append((dims["repo"], dims["day"]))
    return pairs


def _results_table(results) -> str:
    rows = ["| repo | window | pages | fetched | new versions | rejected | requests | 304 |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.repo} | {r.window_start or 'beginning'} .. {r.window_end or 'now'} | {r.pages} | "
                    f"{r.items_fetched} | {r.new_versions} | {r.rejected} | {r.requests} | {r.not_modified} |")
    return "\n".join(rows)


def _ingest(context: dg.AssetExecutionContext, lake: LakeResource, github: GitHubResource,
            kind: str) -> dg.MaterializeResult:
    store = lake.store()
    windows = plan_windows(_partition_pairs(context), config.start_date())
    results = []
    with github.client() as client:
        for repo, start, end in windows:
            context.log.info(f"{repo} {kind}: sweeping {iso(start) or 'the beginning'} .. {iso(end)}")
            results.append(sync_window(client, store, repo, kind, start, end,
                                       on_progress=lambda msg: context.log.debug(msg)))
    log_rows = {}
    for repo in {r.repo for r in results}:
        manifest = read_json(store, layout.raw_manifest_key(kind, repo), default={}) or {}
        log_rows[repo] = sum(int(m["rows"]) for m in manifest.get("months", {}).values())
    total = {name: sum(getattr(r, name) for r in results)
             for name in ("pages", "items_fetched", "new_versions", "rejected", "requests", "not_modified",
                          "rate_limit_waits", "retries")}
    return dg.MaterializeResult(metadata={
        "new_versions": total["new_versions"],
        "items_fetched": total["items_fetched"],
        "rejected": total["rejected"],
        "requests": total["requests"],
        "not_modified_304": total["not_modified"],
        "rate_limit_waits": total["rate_limit_waits"],
        "retries": total["retries"],
        "wait_seconds": float(sum(r.wait_seconds for r in results)),
        "windows": dg.MetadataValue.md(_results_table(results)),
        "rows_in_log": sum(log_rows.values()),
        "months_written": ", ".join(sorted({m for r in results for m in r.months_written})[-24:]),
        "partitions": len(context.partition_keys),
    })


_RAW = dict(
    partitions_def=raw_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"github", "parquet"},
    pool="github_api",
)


@dg.asset(description="Append-only log of issue versions as fetched, by repository x day of updated_at.", **_RAW)
def raw_issues(context: dg.AssetExecutionContext, lake: LakeResource, github: GitHubResource):
    return _ingest(context, lake, github, "issues")


@dg.asset(description="Append-only log of comment versions as fetched, by repository x day of updated_at.", **_RAW)
def raw_comments(context: dg.AssetExecutionContext, lake: LakeResource, github: GitHubResource):
    return _ingest(context, lake, github, "comments")


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
    deps=[dg.AssetDep("raw_issues", partition_mapping=REPO_FROM_RAW)],
    group_name="ingestion", kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)),
    description="Current state of each issue (latest version per id) for one repository, merged incrementally.",
)
def issues(context: dg.AssetExecutionContext, lake: LakeResource):
    return _current(context, lake, "issues", ["number", "title", "state", "created_at", "updated_at"])


@dg.asset(
    partitions_def=repo_partitions,
    deps=[dg.AssetDep("raw_comments", partition_mapping=REPO_FROM_RAW)],
    group_name="ingestion", kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Current state of each comment (latest version per id) for one repository.",
)
def issue_comments(context: dg.AssetExecutionContext, lake: LakeResource):
    return _current(context, lake, "comments", ["issue_number", "user_login", "created_at", "updated_at"])
