"""The stored feature table of a repository, refreshed incrementally from its current tables."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.compute import compute_features, update_features
from issue_assets.features.labels import closed_within_horizon
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet


@dataclass
class FeatureRefresh:
    repo: str
    mode: str  # "full", "incremental" or "unchanged"
    rows: int
    recomputed: int
    changed_since: str | None
    label_rate: float | None
    labels_known: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _read_or_none(store: ObjectStore, key: str) -> pd.DataFrame | None:
    try:
        return read_parquet(store, key)
    except KeyNotFound:
        return None


def load_features(store: ObjectStore, repo: str) -> pd.DataFrame:
    return read_parquet(store, layout.features_key(repo))


def refresh_features(store: ObjectStore, repo: str, *, full: bool = False) -> FeatureRefresh:
    """Recompute only the rows the changes since the last refresh can affect; labels follow the as-of time."""
    began = time.perf_counter()
    issues = load_current(store, "issues", repo)
    comments = load_current(store, "comments", repo)
    current = input_snapshot(issues, comments)
    previous = None if full else _read_or_none(store, layout.features_key(repo))
    snaps = (_read_or_none(store, layout.features_inputs_key(repo, "issues")),
             _read_or_none(store, layout.features_inputs_key(repo, "comments")))
    changed_since = None
    if previous is None or snaps[0] is None or snaps[1] is None:
        mode = "full"
        table = compute_features(issues, comments)
        recomputed = len(table)
    else:
        changed_since = earliest_change(snaps, current)
        if changed_since is None:
            mode, table, recomputed = "unchanged", previous, 0
        else:
            mode = "incremental"
            table = update_features(previous, issues, comments, changed_since=changed_since)
            carried = previous.set_index(["repo", "id"])["prediction_time"] < changed_since
            recomputed = len(table) - int(carried.sum())
        # Labels mature with the as-of time even when no item changed: settle them on every refresh.
        labels = closed_within_horizon(issues).set_index(["repo", "id"])
        keys = pd.MultiIndex.from_frame(table[["repo", "id"]])
        table = table.copy()
        table["closed_within_7d"] = pd.Series(labels["closed_within_7d"].reindex(keys).array,
                                              index=table.index, dtype="boolean")
        table["label_known_at"] = pd.Series(labels["label_known_at"].reindex(keys).array,
                                            index=table.index).astype(previous["label_known_at"].dtype)
    write_parquet(store, layout.features_key(repo), table)
    write_parquet(store, layout.features_inputs_key(repo, "issues"), current[0])
    write_parquet(store, layout.features_inputs_key(repo, "comments"), current[1])
    known = table["closed_within_7d"].notna()
    rate = float(table.loc[known, "closed_within_7d"].astype(float).mean()) if known.any() else None
    return FeatureRefresh(repo, mode, len(table), recomputed,
                          changed_since.isoformat() if changed_since is not None else None,
                          rate, int(known.sum()), time.perf_counter() - began)
