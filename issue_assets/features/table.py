"""The stored feature table of a repository and the service's snapshot, refreshed incrementally.

`refresh_features` is the one incremental refresher: it compares the inputs the table was computed from
(`changes.input_snapshot`) with the current tables, recomputes the rows whose prediction time is at or
after the earliest change and the rows the table lacks (a new issue, an age newly reached), carries the
rest, and settles every label at the as-of time. It also writes the event store the prediction service
loads (`lake.keys.feature_snapshot_key`), so the service always answers from the history the table was
computed from.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.compute import feature_table, target_rows, update_features
from issue_assets.features.store import EventStore
from issue_assets.ingest.current import load_current
from issue_assets.lake import keys
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet


@dataclass
class FeatureRefresh:
    repo: str
    mode: str  # "full", "incremental" or "unchanged"
    rows: int
    issues: int
    recomputed: int
    changed_since: str | None
    label_rate: float | None
    labels_known: int
    snapshot_bytes: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _read_or_none(store: ObjectStore, key: str) -> pd.DataFrame | None:
    try:
        return read_parquet(store, key)
    except KeyNotFound:
        return None


def load_features(store: ObjectStore, repo: str) -> pd.DataFrame:
    return read_parquet(store, keys.features_key(repo))


def load_snapshot(store: ObjectStore, repo: str) -> EventStore:
    """The repository's event store as the last refresh wrote it (KeyNotFound before the first)."""
    return EventStore.from_bytes(store.get_bytes(keys.feature_snapshot_key(repo)))


def refresh_features(store: ObjectStore, repo: str, *, full: bool = False) -> FeatureRefresh:
    """Recompute only the rows the changes since the last refresh can affect; labels follow the as-of time."""
    began = time.perf_counter()
    issues = load_current(store, "issues", repo)
    comments = load_current(store, "comments", repo)
    current = input_snapshot(issues, comments)
    previous = None if full else _read_or_none(store, keys.features_key(repo))
    snaps = (_read_or_none(store, keys.features_inputs_key(repo, "issues")),
             _read_or_none(store, keys.features_inputs_key(repo, "comments")))
    events = EventStore.build(issues, comments)
    changed_since = None
    if previous is None or snaps[0] is None or snaps[1] is None or "age_hours" not in previous:
        mode = "full"
        table = feature_table(events, *target_rows(events))
        recomputed = len(table)
    else:
        changed_since = earliest_change(snaps, current)
        table, recomputed = update_features(previous, issues, comments, changed_since=changed_since, store=events)
        # Unchanged: the same rows and labels (the snapshot's documents are the issues with a known label).
        same = changed_since is None and recomputed == 0 and len(table) == len(previous) and \
            table[["closed_within_7d", "label_known_at"]].equals(previous[["closed_within_7d", "label_known_at"]])
        mode = "unchanged" if same else "incremental"
    snapshot_key = keys.feature_snapshot_key(repo)
    snapshot = b""
    if mode != "unchanged" or not store.exists(snapshot_key):
        snapshot = events.to_bytes()
        store.put_bytes(snapshot_key, snapshot)
    write_parquet(store, keys.features_key(repo), table)
    write_parquet(store, keys.features_inputs_key(repo, "issues"), current[0])
    write_parquet(store, keys.features_inputs_key(repo, "comments"), current[1])
    first = table.loc[table["age_hours"] == 0, "closed_within_7d"]
    known = first.dropna()
    return FeatureRefresh(repo, mode, len(table), len(first), recomputed,
                          changed_since.isoformat() if changed_since is not None else None,
                          float(known.astype(float).mean()) if len(known) else None, len(known), len(snapshot),
                          time.perf_counter() - began)
