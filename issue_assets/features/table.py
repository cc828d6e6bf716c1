"""The stored feature table of a repository, refreshed incrementally from its current tables.

The table is one parquet object; its footer names the two input snapshots it was computed from
(immutable parts, each with its sha256), so table and snapshots change together. A refresh replaces
the table by compare-and-put against the version it read, after reading the current tables: of two
refreshes racing, the loser starts again from the winner's table, and the inputs a committed table
records are never older than the ones it replaced. A damaged table is recomputed with `full=True`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.compute import compute_features, update_features
from issue_assets.features.labels import closed_within_horizon
from issue_assets.ingest import layout
from issue_assets.ingest.current import load_current
from issue_assets.lake.documents import backoff
from issue_assets.lake.parts import FileRecord, read_part, unique_suffix, write_part
from issue_assets.lake.store import (
    DamagedFile,
    KeyNotFound,
    ObjectStore,
    StoreError,
    parquet_bytes,
    parse_parquet,
    read_parquet,
)

REFRESH_ATTEMPTS = 30


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


def load_features(store: ObjectStore, repo: str, columns: list[str] | None = None) -> pd.DataFrame:
    return read_parquet(store, layout.features_key(repo), columns, remedy=layout.repair_command(repo))


def read_stored(store: ObjectStore, repo: str) -> tuple[pd.DataFrame | None, dict, str | None, tuple | None]:
    """(table, footer, version, input snapshots) as stored; Nones where there is nothing usable."""
    key, remedy = layout.features_key(repo), layout.repair_command(repo)
    try:
        data, version = store.get_versioned(key)
    except KeyNotFound:
        return None, {}, None, None
    table, meta = parse_parquet(data, f"{store.uri}/{key}", remedy=remedy)
    inputs = meta.get("inputs")
    try:
        if inputs:
            snaps = tuple(read_part(store, FileRecord.from_dict(inputs[k]), remedy=remedy) for k in ("issues", "comments"))
        else:  # an older lake: snapshot files written beside the table
            snaps = tuple(read_parquet(store, layout.features_inputs_key(repo, k), remedy=remedy)
                          for k in ("issues", "comments"))
    except KeyNotFound:
        snaps = None  # a refresh replaced them after we read the table; the compare-and-put will tell
    return table, meta, version, snaps


def refresh_features(store: ObjectStore, repo: str, *, full: bool = False) -> FeatureRefresh:
    """Recompute only the rows the changes since the last refresh can affect; labels follow the as-of time.
    `full` recomputes every row (and replaces a damaged table)."""
    began = time.perf_counter()
    key = layout.features_key(repo)
    for attempt in range(REFRESH_ATTEMPTS):
        try:
            previous, meta, version, snaps = read_stored(store, repo)
        except DamagedFile:
            if not full:
                raise
            previous, meta, version, snaps = None, {}, store.version(key), None
        # Read after the table: the inputs are at least as new as the ones it was computed from.
        issues = load_current(store, "issues", repo)
        comments = load_current(store, "comments", repo)
        current = input_snapshot(issues, comments)
        table, mode, recomputed, changed_since = _refresh(previous if not full else None, snaps, issues, comments,
                                                          current)
        written = [write_part(store, layout.features_inputs_key(repo, kind, unique_suffix()), frame)
                   for kind, frame in zip(("issues", "comments"), current, strict=True)]
        footer = {"inputs": {kind: r.as_dict() for kind, r in zip(("issues", "comments"), written, strict=True)}}
        if store.compare_and_put(key, parquet_bytes(table, footer), version):
            _drop(store, [FileRecord.from_dict(e).key for e in (meta.get("inputs") or {}).values()]
                  or ([layout.features_inputs_key(repo, k) for k in ("issues", "comments")] if version else []))
            break
        _drop(store, [r.key for r in written])
        backoff(attempt)
    else:
        raise StoreError(f"{store.uri}/{key}: gave up after {REFRESH_ATTEMPTS} conflicting refreshes")
    known = table["closed_within_7d"].notna()
    rate = float(table.loc[known, "closed_within_7d"].astype(float).mean()) if known.any() else None
    return FeatureRefresh(repo, mode, len(table), recomputed,
                          changed_since.isoformat() if changed_since is not None else None,
                          rate, int(known.sum()), time.perf_counter() - began)


def _refresh(previous, snaps, issues, comments, current):
    changed_since = None
    if previous is None or snaps is None:
        table = compute_features(issues, comments)
        return table, "full", len(table), None
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
    return table, mode, recomputed, changed_since


def _drop(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except StoreError:  # an unreferenced snapshot costs space only; repair sweeps it
            pass
