"""Where the ingestion's tables live in the store: raw log, rejects, current state, sync state. Keys only;
every reader and writer goes through these (derived tables: `issue_assets.lake.keys`)."""

from __future__ import annotations

from issue_assets.lake.keys import check_repo, repo_slug

__all__ = ["KINDS", "check_repo", "current_key", "merge_state_key", "raw_manifest_key", "raw_month_key",
           "rejects_key", "repo_slug", "sync_state_key"]

KINDS = ("issues", "comments")


def raw_month_key(kind: str, repo: str, month: str) -> str:
    return f"raw/{kind}/{repo_slug(repo)}/{month}.parquet"


def raw_manifest_key(kind: str, repo: str) -> str:
    return f"raw/{kind}/{repo_slug(repo)}/_manifest.json"


def rejects_key(repo: str, kind: str, window: str) -> str:
    return f"rejects/{repo_slug(repo)}/{kind}/{window}.parquet"


def current_key(kind: str, repo: str) -> str:
    return f"current/{kind}/{repo_slug(repo)}.parquet"


def merge_state_key(kind: str, repo: str) -> str:
    return f"current/{kind}/{repo_slug(repo)}.state.json"


def sync_state_key(repo: str) -> str:
    return f"state/{repo_slug(repo)}/sync.json"
