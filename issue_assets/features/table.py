"""The stored feature table of a repository and the service's snapshot, refreshed incrementally.

`refresh_features` is the one incremental refresher: it compares the inputs the table was computed from
(`changes.input_snapshot`) with the current tables, recomputes the rows whose prediction time is at or
after the earliest change and the rows the table lacks (a new issue, an age newly reached), carries the
rest, and settles every label at the as-of time. It also writes the event store the prediction service
loads (`lake.keys.feature_snapshot_key`), so the service answers from the history the table was computed
from.

Concurrency: the table is one parquet object whose footer names its two input snapshots (immutable
parts, each with its sha256) and the sha256 of the event-store snapshot computed with it. A refresh
replaces the table by compare-and-put against the version it read, after reading the current tables: of
two refreshes racing, the loser starts again from the winner's table, and the inputs a committed table
records are never older than the ones it replaced. Only the winner writes the snapshot; a snapshot that
does not match its table's footer (a racing winner wrote it late) is rewritten by the next refresh. A
damaged table is recomputed with `full=True`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass

import pandas as pd

from issue_assets.features.changes import earliest_change, input_snapshot
from issue_assets.features.compute import feature_table, target_rows, update_features
from issue_assets.features.store import EventStore
from issue_assets.ingest.current import load_current
from issue_assets.ingest.layout import repair_command
from issue_assets.lake import keys
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
    issues: int
    recomputed: int
    changed_since: str | None
    label_rate: float | None
    labels_known: int
    snapshot_bytes: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def load_features(store: ObjectStore, repo: str, columns: list[str] | None = None) -> pd.DataFrame:
    return read_parquet(store, keys.features_key(repo), columns, remedy=repair_command(repo))


def load_snapshot(store: ObjectStore, repo: str) -> EventStore:
    """The repository's event store as the last refresh wrote it (KeyNotFound before the first; DamagedFile,
    naming it and the way out, when it cannot be read back)."""
    key = keys.feature_snapshot_key(repo)
    data = store.get_bytes(key)
    try:
        return EventStore.from_bytes(data)
    except Exception as exc:  # zip, npz, json or shape errors: all mean the bytes are not what was written
        raise DamagedFile(f"{store.uri}/{key}", f"not a readable event-store snapshot: {type(exc).__name__}: {exc}",
                          repair_command(repo)) from None


def read_stored(store: ObjectStore, repo: str) -> tuple[pd.DataFrame | None, dict, str | None, tuple | None]:
    """(table, footer, version, input snapshots) as stored; Nones where there is nothing usable."""
    key, remedy = keys.features_key(repo), repair_command(repo)
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
            snaps = tuple(read_parquet(store, keys.features_inputs_key(repo, k), remedy=remedy)
                          for k in ("issues", "comments"))
    except KeyNotFound:
        snaps = None  # a refresh replaced them after we read the table; the compare-and-put will tell
    return table, meta, version, snaps


def _refresh(previous, snaps, issues, comments, current, events):
    """(table, mode, recomputed rows, changed_since) from the previous table and its input snapshots."""
    if previous is None or snaps is None or "age_hours" not in previous:
        table = feature_table(events, *target_rows(events))
        return table, "full", len(table), None
    changed_since = earliest_change(snaps, current)
    table, recomputed = update_features(previous, issues, comments, changed_since=changed_since, store=events)
    # Unchanged: the same rows and labels (the snapshot's documents are the issues with a known label).
    same = changed_since is None and recomputed == 0 and len(table) == len(previous) and \
        table[["closed_within_7d", "label_known_at"]].equals(previous[["closed_within_7d", "label_known_at"]])
    return table, "unchanged" if same else "incremental", recomputed, changed_since


def _stored_sha(store: ObjectStore, key: str) -> str | None:
    try:
        return hashlib.sha256(store.get_bytes(key)).hexdigest()
    except KeyNotFound:
        return None


def refresh_features(store: ObjectStore, repo: str, *, full: bool = False) -> FeatureRefresh:
    """Recompute only the rows the changes since the last refresh can affect; labels follow the as-of time.
    `full` recomputes every row (and replaces a damaged table)."""
    began = time.perf_counter()
    key, snapshot_key = keys.features_key(repo), keys.feature_snapshot_key(repo)
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
        events = EventStore.build(issues, comments)
        table, mode, recomputed, changed_since = _refresh(None if full else previous, snaps, issues, comments,
                                                          current, events)
        snapshot = b""
        if mode == "unchanged" and meta.get("snapshot_sha256") and _stored_sha(store, snapshot_key) == \
                meta["snapshot_sha256"]:
            break  # nothing to write: the table, its inputs and the service's snapshot are all current
        snapshot = events.to_bytes()
        written = [write_part(store, keys.features_inputs_key(repo, kind, unique_suffix()), frame)
                   for kind, frame in zip(("issues", "comments"), current, strict=True)]
        footer = {"inputs": {kind: r.as_dict() for kind, r in zip(("issues", "comments"), written, strict=True)},
                  "snapshot_sha256": hashlib.sha256(snapshot).hexdigest()}
        if store.compare_and_put(key, parquet_bytes(table, footer), version):
            store.put_bytes(snapshot_key, snapshot)
            _drop(store, [FileRecord.from_dict(e).key for e in (meta.get("inputs") or {}).values()]
                  or ([keys.features_inputs_key(repo, k) for k in ("issues", "comments")] if version else []))
            break
        _drop(store, [r.key for r in written])
        backoff(attempt)
    else:
        raise StoreError(f"{store.uri}/{key}: gave up after {REFRESH_ATTEMPTS} conflicting refreshes")
    first = table.loc[table["age_hours"] == 0, "closed_within_7d"]
    known = first.dropna()
    return FeatureRefresh(repo, mode, len(table), len(first), recomputed,
                          changed_since.isoformat() if changed_since is not None else None,
                          float(known.astype(float).mean()) if len(known) else None, len(known), len(snapshot),
                          time.perf_counter() - began)


def _drop(store: ObjectStore, keys_: list[str]) -> None:
    for k in keys_:
        try:
            store.delete(k)
        except StoreError:  # an unreferenced snapshot costs space only; repair sweeps it
            pass
