"""Merge the raw log into the current state of a repository: the latest version of each id.

Only log files whose manifest sequence is newer than the last merge are read, so the work grows with
the new versions, not with the history. `first_seen_at` (the first time the platform observed an
item) is carried across merges; it is what point-in-time features may use of observed versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.github.normalize import COMMENT_COLUMNS, ISSUE_COLUMNS, TS, issues_from_versions
from issue_assets.ingest import layout
from issue_assets.lake.documents import read_json, write_json
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet

COLUMNS = {"issues": ISSUE_COLUMNS, "comments": COMMENT_COLUMNS}


@dataclass
class MergeResult:
    repo: str
    kind: str
    rows: int
    new_versions_read: int
    inserted: int
    updated: int
    files_read: int
    merged_through_seq: int

    def as_dict(self) -> dict:
        return asdict(self)


def load_current(store: ObjectStore, kind: str, repo: str) -> pd.DataFrame:
    """The current table of a repository (empty, typed, if nothing was merged yet)."""
    try:
        return read_parquet(store, layout.current_key(kind, repo))
    except KeyNotFound:
        return empty(kind)


def empty(kind: str) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS[kind]})
    for col in ("created_at", "updated_at", "closed_at", "fetched_at", "first_seen_at"):
        if col in df:
            df[col] = df[col].astype(TS)
    for col in ("id", "number", "issue_number"):
        if col in df:
            df[col] = df[col].astype("int64")
    return df


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    ordered = frame.sort_values(["id", "updated_at", "fetched_at"], kind="stable")
    return ordered.drop_duplicates("id", keep="last")


def merge_current(store: ObjectStore, repo: str, kind: str, *, full: bool = False) -> MergeResult:
    """Fold the day files written since the last merge into the current table (atomically)."""
    layout.check_repo(repo)
    manifest = read_json(store, layout.raw_manifest_key(kind, repo), default={}) or {}
    state_key = layout.merge_state_key(kind, repo)
    state = {} if full else (read_json(store, state_key, default={}) or {})
    merged_seq = int(state.get("merged_through_seq", 0))
    months = sorted(m for m, e in manifest.get("months", {}).items() if int(e["seq"]) > merged_seq)
    current = empty(kind) if full else load_current(store, kind, repo)
    frames = [read_parquet(store, layout.raw_month_key(kind, repo, d)) for d in months]
    frames = [f for f in frames if len(f)]
    new_versions = sum(len(f) for f in frames)
    top_seq = int(manifest.get("seq", merged_seq))
    if not frames:
        if full or not store.exists(layout.current_key(kind, repo)):
            write_parquet(store, layout.current_key(kind, repo), current)
        write_json(store, state_key, {"merged_through_seq": top_seq})
        return MergeResult(repo, kind, len(current), 0, 0, 0, 0, top_seq)
    versions = pd.concat(frames, ignore_index=True)
    first_seen = versions.groupby("id")["fetched_at"].min()
    latest = _latest(versions)
    existing_ids = set(current["id"].tolist()) if len(current) else set()
    if kind == "issues":
        if len(current):
            carried = current.set_index("id")["first_seen_at"]
            first_seen = pd.concat([first_seen, carried]).groupby(level=0).min()
            # A log file may hold a version older than the one already current: keep the newer.
            keep = latest.set_index("id")["updated_at"] >= current.set_index("id")["updated_at"].reindex(latest["id"]).fillna(
                pd.Timestamp.min.tz_localize("UTC"))
            latest = latest.loc[keep.to_numpy()]
        latest = latest.reset_index(drop=True)
        fresh = issues_from_versions(latest, first_seen.reindex(latest["id"]).set_axis(latest.index))
    else:
        if len(current):
            newer = latest.set_index("id")["updated_at"] >= current.set_index("id")["updated_at"].reindex(
                latest["id"]).fillna(pd.Timestamp.min.tz_localize("UTC"))
            latest = latest.loc[newer.to_numpy()]
        fresh = latest[COMMENT_COLUMNS].reset_index(drop=True)
    inserted = int((~fresh["id"].isin(existing_ids)).sum())
    updated = len(fresh) - inserted
    keep_old = current.loc[~current["id"].isin(fresh["id"])] if len(current) else current
    table = pd.concat([keep_old, fresh], ignore_index=True) if len(keep_old) else fresh
    sort_cols = ["created_at", "id"]
    table = table.sort_values(sort_cols, kind="stable").reset_index(drop=True)[COLUMNS[kind]]
    write_parquet(store, layout.current_key(kind, repo), table)
    write_json(store, state_key, {"merged_through_seq": top_seq})
    return MergeResult(repo, kind, len(table), new_versions, inserted, updated, len(months), top_seq)
