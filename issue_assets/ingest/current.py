"""Merge the raw log into the current state of a repository: the latest version of each id.

Only log parts whose manifest sequence is newer than the last merge are read, so the work grows with
the new versions, not with the history. `first_seen_at` (the first time the platform observed an
item) is carried across merges; it is what point-in-time features may use of observed versions.

The current table is one parquet object whose footer holds its merge state (the manifest sequence and
epoch it has merged through), so table and state are one atomic record. It is replaced only by
compare-and-put against the version the merge read: of two merges racing, the loser reads the
winner's table and merges again. Every read verifies the file (page checksums, row count); a damaged
table is rebuilt from the raw log by `merge_current(..., full=True)` (what `issue-assets repair` does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.github.normalize import COMMENT_COLUMNS, ISSUE_COLUMNS, TS, issues_from_versions
from issue_assets.ingest import layout
from issue_assets.ingest.rawlog import PartMoved, RawLog
from issue_assets.lake.documents import backoff, read_json
from issue_assets.lake.store import (
    DamagedFile,
    KeyNotFound,
    ObjectStore,
    StoreError,
    parquet_bytes,
    parse_parquet,
)

COLUMNS = {"issues": ISSUE_COLUMNS, "comments": COMMENT_COLUMNS}
MERGE_ATTEMPTS = 60


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


def read_current(store: ObjectStore, kind: str, repo: str) -> tuple[pd.DataFrame | None, dict, str | None]:
    """(table, footer state, version) of the current table; (None, {}, None) when there is none."""
    key = layout.current_key(kind, repo)
    try:
        data, version = store.get_versioned(key)
    except KeyNotFound:
        return None, {}, None
    frame, meta = parse_parquet(data, f"{store.uri}/{key}", remedy=layout.repair_command(repo))
    if "merged_through_seq" not in meta:  # written before the state moved into the footer
        state = read_json(store, layout.legacy_merge_state_key(kind, repo), default={},
                          remedy=layout.repair_command(repo)) or {}
        meta = {**meta, "merged_through_seq": int(state.get("merged_through_seq", 0)), "epoch": None,
                "legacy_state": bool(state)}
    return frame, meta, version


def load_current(store: ObjectStore, kind: str, repo: str) -> pd.DataFrame:
    """The current table of a repository (empty, typed, if nothing was merged yet); verified on read."""
    layout.check_repo(repo)
    frame = read_current(store, kind, repo)[0]
    return empty(kind) if frame is None else frame


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
    """Fold the log parts committed since the last merge into the current table (atomically).

    `full` rebuilds the table from the whole log (keeping any earlier `first_seen_at` a readable old
    table holds); it also replaces a damaged table.
    """
    layout.check_repo(repo)
    rawlog = RawLog(store, kind, repo)
    key = layout.current_key(kind, repo)
    for attempt in range(MERGE_ATTEMPTS):
        manifest = rawlog.manifest()
        top_seq, epoch = int(manifest["seq"]), manifest.get("epoch")
        try:
            current, meta, version = read_current(store, kind, repo)
        except DamagedFile:
            if not full:
                raise
            current, meta, version = None, {}, store.version(key)
        rebuild = full or current is None or meta.get("epoch") != epoch
        merged_seq = 0 if rebuild else int(meta.get("merged_through_seq", 0))
        months = sorted(m for m, e in manifest["months"].items() if int(e["seq"]) > merged_seq)
        try:
            frames = [rawlog.read_month(manifest, m) for m in months]
        except PartMoved:
            backoff(attempt)
            continue
        frames = [f for f in frames if f is not None and len(f)]
        if not rebuild and not frames and merged_seq == top_seq:
            return MergeResult(repo, kind, len(current), 0, 0, 0, 0, top_seq)
        carried = current if current is not None else None
        base = empty(kind) if rebuild else current
        table, new_versions, inserted, updated = _fold(kind, base, carried if rebuild else None, frames)
        data = parquet_bytes(table, {"kind": kind, "merged_through_seq": top_seq, "epoch": epoch})
        if store.compare_and_put(key, data, version):
            if meta.get("legacy_state"):  # the state now rides in the table's footer
                store.delete(layout.legacy_merge_state_key(kind, repo))
            return MergeResult(repo, kind, len(table), new_versions, inserted, updated, len(months), top_seq)
        backoff(attempt)
    raise StoreError(f"{store.uri}/{key}: gave up after {MERGE_ATTEMPTS} conflicting merges")


def _fold(kind: str, current: pd.DataFrame, earlier: pd.DataFrame | None,
          frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, int, int, int]:
    """(table, versions read, inserted, updated): `frames` of log versions folded into `current`.
    `earlier` (a rebuild's old table) only contributes first_seen_at."""
    if not frames:
        return current[COLUMNS[kind]].reset_index(drop=True), 0, 0, 0
    versions = pd.concat(frames, ignore_index=True)
    first_seen = versions.groupby("id")["fetched_at"].min()
    latest = _latest(versions)
    existing_ids = set(current["id"].tolist()) if len(current) else set()
    if kind == "issues":
        for known in (current, earlier):
            if known is not None and len(known) and "first_seen_at" in known:
                first_seen = pd.concat([first_seen, known.set_index("id")["first_seen_at"]]).groupby(level=0).min()
        if len(current):
            # A log part may hold a version older than the one already current: keep the newer.
            keep = latest.set_index("id")["updated_at"] >= current.set_index("id")["updated_at"].reindex(
                latest["id"]).fillna(pd.Timestamp.min.tz_localize("UTC"))
            latest = latest.loc[keep.to_numpy()]
        latest = latest.reset_index(drop=True)
        fresh = current.iloc[0:0] if latest.empty else \
            issues_from_versions(latest, first_seen.reindex(latest["id"]).set_axis(latest.index))
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
    table = table.sort_values(["created_at", "id"], kind="stable").reset_index(drop=True)[COLUMNS[kind]]
    if kind == "issues" and len(keep_old):
        # An older version read now (another writer's, or a backfilled window) can hold an earlier first
        # observation of an item whose newer version is current: first_seen_at is the minimum either way.
        earlier = first_seen.reindex(table["id"]).set_axis(table.index)
        table["first_seen_at"] = table["first_seen_at"].where(
            earlier.isna() | (table["first_seen_at"] <= earlier), earlier)
    return table, len(versions), inserted, updated
