"""Where the ingestion's tables live in the store. Keys only; every reader and writer goes through these
(derived tables: features, training sets, predictions, ... are in `issue_assets.lake.keys`).

    raw/<kind>/<owner>__<name>/_manifest.json             the raw log's commit point (parts, cursor, ...)
    raw/<kind>/<owner>__<name>/<YYYY-MM>.<unique>.parquet  one immutable part per month
    raw/<kind>/<owner>__<name>/<YYYY-MM>.parquet           a month file of a lake written before parts
    raw/<kind>/<owner>__<name>/rejects.<unique>.parquet    items that could not be normalised
    current/<kind>/<owner>__<name>.parquet                 current state; its footer holds the merge state
    state/<owner>__<name>/sync.json                        a copy of the cursors (for rebuilding a manifest)
"""

from __future__ import annotations

from issue_assets.lake.keys import check_repo, repo_slug

KINDS = ("issues", "comments")


def slug_repo(slug: str) -> str:
    """The inverse of repo_slug (GitHub owners have no underscores, so the first "__" separates)."""
    owner, sep, name = slug.partition("__")
    return check_repo(f"{owner}/{name}") if sep else check_repo(slug)


def repair_command(repo: str) -> str:
    """The way out named by every error about a damaged file of this repository."""
    return f"issue-assets repair --repo {repo}"


def raw_prefix(kind: str, repo: str) -> str:
    return f"raw/{kind}/{repo_slug(repo)}/"


def raw_month_key(kind: str, repo: str, month: str) -> str:
    """A month file of a lake written before immutable parts (adopted by the manifest as it is)."""
    return f"{raw_prefix(kind, repo)}{month}.parquet"


def raw_part_key(kind: str, repo: str, month: str, unique: str) -> str:
    return f"{raw_prefix(kind, repo)}{month}.{unique}.parquet"


def raw_rejects_part_key(kind: str, repo: str, unique: str) -> str:
    return f"{raw_prefix(kind, repo)}rejects.{unique}.parquet"


def raw_manifest_key(kind: str, repo: str) -> str:
    return f"{raw_prefix(kind, repo)}_manifest.json"


def legacy_rejects_prefix(repo: str, kind: str) -> str:
    """Rejects of a lake written before they moved into the raw log's manifest."""
    return f"rejects/{repo_slug(repo)}/{kind}/"


def current_key(kind: str, repo: str) -> str:
    return f"current/{kind}/{repo_slug(repo)}.parquet"


def legacy_merge_state_key(kind: str, repo: str) -> str:
    """Merge state of a lake written before it moved into the current table's footer."""
    return f"current/{kind}/{repo_slug(repo)}.state.json"


def sync_state_key(repo: str) -> str:
    return f"state/{repo_slug(repo)}/sync.json"
