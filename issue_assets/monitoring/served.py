"""Every prediction that was served, kept: an append-only log in the lake, per repository.

Each write adds one immutable parquet part (`served/<owner>__<name>/<day>/<stamp>-<source>-<id>.parquet`)
and never reads or rewrites another, so the batch asset, any number of service processes and a
backfill can append at once without losing a row. A row is one probability served: the issue, its
creation and prediction times, its age, the model version, the probability, where it was served
(`batch` or `http`) and the feature values it was computed from (for drift).

Public API:
    SERVED_COLUMNS                                   the identifying columns of a log row
    Served(...)                                      what one model served at one moment, as arrays;
        Served.from_frame(scored, features, source)  the scored rows of a predictions table
    log_frame(entries: list[Served]) -> DataFrame    their log rows (SERVED_COLUMNS + f_<feature>)
    append_served(store, repo, rows) -> str | None   one part; None when there is nothing to write
    read_served(store, repo, since=None) -> DataFrame    every row (of parts from days >= since)
    ServedBuffer(store, flush_interval_s=5.0, max_rows=2000, max_pending=200_000)
        .add(repo, served)  a Served: the request pays neither a frame nor I/O; a background thread
                            builds one frame per repository and writes it as one part
        .flush(), .close(), .stats -> dict (written, dropped, errors, pending)
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from issue_assets.ingest.layout import repair_command
from issue_assets.lake.keys import served_prefix
from issue_assets.lake.store import ObjectStore, StoreError, read_parquet, write_parquet

log = logging.getLogger(__name__)

SERVED_COLUMNS = ["repo", "id", "number", "created_at", "prediction_time", "hours_observed", "scoring_time",
                  "model_version", "probability", "source", "served_at"]
SOURCES = ("batch", "http")
_TS = "datetime64[us, UTC]"
_HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Served:
    """Probabilities one model served at one moment, as arrays: what the log keeps, cheap enough to make on
    the request path (the frame is built by the writer). `values`: the model's feature values, rows x
    `feature_names` (None: not kept). Times in microseconds since the epoch."""

    repo: str
    ids: np.ndarray
    numbers: np.ndarray
    created_us: np.ndarray
    prediction_us: np.ndarray
    model_version: str
    probability: np.ndarray
    values: np.ndarray | None
    feature_names: tuple[str, ...]
    source: str
    served_us: int

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frame(cls, scored: pd.DataFrame, features: pd.DataFrame | None, source: str,
                   served_at: pd.Timestamp | None = None) -> Served:
        """The scored rows (status "scored", a probability) of a predictions table, with their features."""
        keep = scored["probability"].notna().to_numpy()
        if "status" in scored:
            keep &= (scored["status"] == "scored").to_numpy()
        versions = scored.loc[keep, "model_version"].unique()
        if len(versions) > 1:
            raise ValueError(f"one model per Served, got {list(versions)}")

        def us(col):
            return pd.to_datetime(scored[col], utc=True).astype(_TS).array.asi8[keep]

        return cls(str(scored["repo"].iloc[0]) if len(scored) else "", scored["id"].to_numpy("int64")[keep],
                   scored["number"].to_numpy("int64")[keep], us("created_at"), us("prediction_time"),
                   str(versions[0]) if len(versions) else "", scored["probability"].to_numpy("float64")[keep],
                   None if features is None else features.to_numpy("float64")[keep],
                   tuple(features.columns) if features is not None else (), source,
                   (served_at or pd.Timestamp.now(tz="UTC")).value // 1000)


def log_frame(entries: list[Served]) -> pd.DataFrame:
    """Log rows of many `Served` at once (one frame per write, not per request): SERVED_COLUMNS plus the
    feature values as `f_<name>` columns."""
    entries = [e for e in entries if len(e)]
    if not entries:
        return pd.DataFrame(columns=SERVED_COLUMNS)
    parts = []
    by_names: dict[tuple, list[Served]] = {}
    for e in entries:
        by_names.setdefault(e.feature_names if e.values is not None else (), []).append(e)
    for names, group in by_names.items():
        lengths = [len(e) for e in group]

        def cat(attr, group=group):
            return np.concatenate([np.asarray(getattr(e, attr)) for e in group])

        def rep(attr, group=group, lengths=lengths):
            return np.repeat(np.array([getattr(e, attr) for e in group], dtype=object), lengths)

        def ts(values):
            return pd.array(np.asarray(values, dtype="int64").view("M8[us]"), dtype="datetime64[us]") \
                .tz_localize("UTC")

        created, predicted = cat("created_us").astype("int64"), cat("prediction_us").astype("int64")
        part = pd.DataFrame({
            "repo": pd.array(rep("repo"), dtype="string"), "id": cat("ids").astype("int64"),
            "number": cat("numbers").astype("int64"), "created_at": ts(created), "prediction_time": ts(predicted),
            "hours_observed": (predicted - created) / _HOUR_US, "scoring_time": ts(predicted),
            "model_version": pd.array(rep("model_version"), dtype="string"),
            "probability": cat("probability").astype("float64"),
            "source": pd.array(rep("source"), dtype="string"), "served_at": ts(rep("served_us").astype("int64")),
        })
        if names:
            values = pd.DataFrame(np.concatenate([e.values for e in group]), columns=[f"f_{n}" for n in names])
            part = pd.concat([part, values], axis=1)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


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
    frames = [read_parquet(store, k, remedy=repair_command(repo)) for k in keys]
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
    beyond `max_pending` pending rows the oldest entries are dropped whole and counted (memory stays bounded when the lake
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

    def add(self, repo: str, rows: Served) -> None:
        """Queue what was served (its frame is built by the writer thread, once per write)."""
        if rows is None or not len(rows):
            return
        with self._lock:
            self._pending.setdefault(repo, []).append(rows)
            self._count += len(rows)
            while self._count > self.max_pending:
                oldest = next(iter(self._pending))
                dropped = self._pending[oldest].pop(0)
                self._count -= len(dropped)
                self.stats["dropped"] += len(dropped)
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
                built = [f for f in frames if isinstance(f, pd.DataFrame)]  # kept from a failed write
                served = [f for f in frames if not isinstance(f, pd.DataFrame)]
                try:
                    rows = pd.concat([*built, log_frame(served)] if served else built, ignore_index=True)
                except Exception:  # rows that cannot be framed are lost (counted), never the writer
                    log.exception("served-prediction rows for %s could not be built", repo)
                    self.stats["errors"] += 1
                    continue
                if not len(rows):
                    continue
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

