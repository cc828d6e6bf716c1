"""Every prediction that was served, kept: an append-only log in the lake, per repository.

Each write adds one immutable parquet part (`served/<owner>__<name>/<day>/<stamp>-<source>-<id>.parquet`)
and never reads or rewrites another, so the batch asset, any number of service processes and a
backfill can append at once without losing a row. A row is one probability served: the issue, its
creation and prediction times, its age, the model version, the probability, where it was served
(`batch` or `http`) and the feature values it was computed from (for drift).

Public API:
    SERVED_COLUMNS                                   the identifying columns of a log row
    served_rows(scored, features, source) -> DataFrame   log rows of a scored frame (status "scored" only)
    append_served(store, repo, rows) -> str | None   one part; None when there is nothing to write
    read_served(store, repo, since=None) -> DataFrame    every row (of parts from days >= since)
    ServedBuffer(store, flush_interval_s=5.0, max_rows=2000, max_pending=200_000)
        .add(repo, rows)   rows: a DataFrame, or a callable making it (built in the writer thread, so a
                           request pays neither the frame nor the I/O); a background thread writes a part
                           per repository
        .flush(), .close(), .stats -> dict (written, dropped, errors, pending)
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime

import pandas as pd

from issue_assets.lake.keys import served_prefix
from issue_assets.lake.store import ObjectStore, StoreError, read_parquet, write_parquet

log = logging.getLogger(__name__)

SERVED_COLUMNS = ["repo", "id", "number", "created_at", "prediction_time", "hours_observed", "scoring_time",
                  "model_version", "probability", "source", "served_at"]
SOURCES = ("batch", "http")
_TS = "datetime64[us, UTC]"


def served_rows(scored: pd.DataFrame, features: pd.DataFrame | None, source: str,
                served_at: pd.Timestamp | None = None) -> pd.DataFrame:
    """Log rows of scored predictions: the identifying columns plus the feature values (aligned by row)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    keep = scored["probability"].notna().to_numpy()
    if "status" in scored:
        keep &= (scored["status"] == "scored").to_numpy()
    out = pd.DataFrame({
        "repo": scored["repo"].astype("string").to_numpy(), "id": scored["id"].to_numpy(dtype="int64"),
        "number": scored["number"].to_numpy(dtype="int64"),
        "created_at": pd.to_datetime(scored["created_at"], utc=True).astype(_TS).to_numpy(),
        "prediction_time": pd.to_datetime(scored["prediction_time"], utc=True).astype(_TS).to_numpy(),
        "hours_observed": scored["hours_observed"].to_numpy(dtype="float64"),
        "scoring_time": pd.to_datetime(scored["scoring_time"], utc=True).astype(_TS).to_numpy(),
        "model_version": scored["model_version"].astype("string").to_numpy(),
        "probability": scored["probability"].to_numpy(dtype="float64"),
    })
    out["repo"] = out["repo"].astype("string")
    out["model_version"] = out["model_version"].astype("string")
    for col in ("created_at", "prediction_time", "scoring_time"):
        out[col] = pd.to_datetime(out[col], utc=True).astype(_TS)
    out["source"] = pd.Series(source, index=out.index, dtype="string")
    out["served_at"] = pd.Series(served_at or pd.Timestamp.now(tz="UTC"), index=out.index).astype(_TS)
    if features is not None and len(features.columns):
        values = features.reset_index(drop=True).astype("float64")
        values.columns = [f"f_{c}" for c in values.columns]
        out = pd.concat([out, values], axis=1)
    return out.loc[keep].reset_index(drop=True)


def append_served(store: ObjectStore, repo: str, rows: pd.DataFrame) -> str | None:
    """Write the rows as one new part; parts are never rewritten, so concurrent writers lose nothing."""
    if rows is None or not len(rows):
        return None
    now = datetime.now(UTC)
    source = str(rows["source"].iloc[0]) if "source" in rows else "batch"
    key = (f"{served_prefix(repo)}{now:%Y-%m-%d}/{now:%Y%m%dT%H%M%S%f}Z-{source}-{uuid.uuid4().hex[:12]}"
           ".parquet")
    write_parquet(store, key, rows.reset_index(drop=True))
    return key


def read_served(store: ObjectStore, repo: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """Every logged row of the repository (from parts written on or after `since`'s day)."""
    prefix = served_prefix(repo)
    day = None if since is None else pd.Timestamp(since).tz_convert("UTC").strftime("%Y-%m-%d")
    keys = [k for k in store.list(prefix) if k.endswith(".parquet")
            and (day is None or k[len(prefix):len(prefix) + 10] >= day)]
    frames = [read_parquet(store, k) for k in keys]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=_TS if c in ("created_at", "prediction_time", "scoring_time",
                                                                 "served_at")
                                          else "float64" if c in ("hours_observed", "probability")
                                          else "int64" if c in ("id", "number") else "string")
                             for c in SERVED_COLUMNS})
    return pd.concat(frames, ignore_index=True)


class ServedBuffer:
    """Served predictions collected in memory and written by a background thread, off the request path.

    `add` only appends to a list under a lock. Every `flush_interval_s` (or at `max_rows` pending) the
    writer thread writes one part per repository. A store that fails keeps the rows for the next try;
    beyond `max_pending` pending rows (a queued callable counts as one) the oldest batches are dropped
    whole and counted (memory stays bounded when the lake
    is down for long). `close()` writes what is left."""

    def __init__(self, store: ObjectStore, *, flush_interval_s: float = 5.0, max_rows: int = 2000,
                 max_pending: int = 200_000):
        self.store = store
        self.flush_interval_s = float(flush_interval_s)
        self.max_rows = int(max_rows)
        self.max_pending = int(max_pending)
        self._pending: dict[str, list[pd.DataFrame]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.stats = {"written": 0, "dropped": 0, "errors": 0, "parts": 0}
        self._thread = threading.Thread(target=self._run, name="served-log-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._count

    def add(self, repo: str, rows) -> None:
        """Queue rows (a DataFrame, or a zero-argument callable returning one, called by the writer)."""
        if rows is None or (isinstance(rows, pd.DataFrame) and not len(rows)):
            return
        with self._lock:
            self._pending.setdefault(repo, []).append(rows)
            self._count += _size(rows)
            while self._count > self.max_pending:
                oldest = next(iter(self._pending))
                dropped = self._pending[oldest].pop(0)
                self._count -= _size(dropped)
                self.stats["dropped"] += _size(dropped)
                if not self._pending[oldest]:
                    del self._pending[oldest]
            full = self._count >= self.max_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything pending now; returns the rows written."""
        with self._write_lock:
            with self._lock:
                batches, self._pending, self._count = self._pending, {}, 0
            written = 0
            for repo, frames in batches.items():
                try:
                    built = [f() if callable(f) else f for f in frames]
                except Exception:  # a row builder that fails loses its rows only, never the writer
                    log.exception("served-prediction rows for %s could not be built", repo)
                    self.stats["errors"] += 1
                    continue
                built = [f for f in built if f is not None and len(f)]
                if not built:
                    continue
                rows = pd.concat(built, ignore_index=True)
                try:
                    append_served(self.store, repo, rows)
                except (StoreError, OSError) as exc:
                    self.stats["errors"] += 1
                    log.warning("served-prediction log for %s not written yet (%s); retrying", repo, exc)
                    with self._lock:  # keep them, ahead of newer rows
                        self._pending[repo] = [rows, *self._pending.get(repo, [])]
                        self._count += len(rows)
                    continue
                written += len(rows)
                self.stats["written"] += len(rows)
                self.stats["parts"] += 1
            return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._count:
                self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def _size(rows) -> int:
    """Rows a queued entry holds (a callable counts as the one prediction batch it stands for)."""
    return len(rows) if isinstance(rows, pd.DataFrame) else 1
