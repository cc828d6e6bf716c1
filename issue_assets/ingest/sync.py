"""One paged sweep over a time window, split into the append-only raw log.

A window [start, end) costs one stream of pages sorted by `updated_at` ascending from `since=start`,
stopped at the first item updated at or after `end`; a full history is the window [None, None).
Dagster partitions the log by day of `updated_at`; on disk a repository's log is one parquet file per
month (a full history is hundreds of files, not thousands). A month file is written as soon as the
sweep has passed its month, merged with what it already holds (deduplicated on id + updated_at, the
earliest observation kept), so a re-run is idempotent and a killed sweep resumes from its checkpoint
with no gap and no duplicate.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from issue_assets.github.normalize import comment_versions, issue_versions
from issue_assets.ingest import layout
from issue_assets.lake.documents import read_json, update_json
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet, write_parquet

log = logging.getLogger("issue_assets.ingest")

_NORMALIZE = {"issues": issue_versions, "comments": comment_versions}


@dataclass
class SyncResult:
    repo: str
    kind: str
    window_start: str | None
    window_end: str | None
    pages: int = 0
    items_fetched: int = 0
    new_versions: int = 0
    rejected: int = 0
    months_written: list[str] = field(default_factory=list)
    requests: int = 0
    not_modified: int = 0
    rate_limit_waits: int = 0
    retries: int = 0
    wait_seconds: float = 0.0
    resumed_from: str | None = None
    max_updated_at: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def parse_time(value) -> datetime | None:
    """An ISO-8601 timestamp in any offset (naive = UTC) -> aware UTC datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def _item_time(item) -> datetime | None:
    if not isinstance(item, dict):
        return None
    return parse_time(item.get("updated_at")) or parse_time(item.get("created_at"))


def _pages(client, kind: str, repo: str, since: str | None):
    if kind == "issues":
        return client.iter_issue_pages(repo, since=since)
    return client.iter_comment_pages(repo, since=since)


def write_month(store: ObjectStore, kind: str, repo: str, month: str, new: pd.DataFrame) -> int:
    """Merge new versions into one month file of the log; returns how many versions were new."""
    return _write_month(store, kind, repo, month, new)[0]


def _write_month(store: ObjectStore, kind: str, repo: str, month: str, new: pd.DataFrame) -> tuple[int, int]:
    """(versions added, rows the month file holds afterwards)."""
    key = layout.raw_month_key(kind, repo, month)
    old = None
    if store.exists(key):
        try:
            old = read_parquet(store, key)
        except KeyNotFound:
            old = None
    if old is not None and len(old):
        seen = pd.MultiIndex.from_frame(old[["id", "updated_at"]])
        fresh = new.loc[~pd.MultiIndex.from_frame(new[["id", "updated_at"]]).isin(seen)]
    else:
        fresh = new
    fresh = fresh.sort_values("fetched_at").drop_duplicates(["id", "updated_at"], keep="first")
    held = len(old) if old is not None else 0
    if fresh.empty:
        return 0, held
    merged = pd.concat([old, fresh], ignore_index=True) if old is not None and len(old) else fresh
    merged = merged.sort_values(["updated_at", "id"], kind="stable").reset_index(drop=True)
    write_parquet(store, key, merged)
    return len(fresh), len(merged)


def _record_months(store: ObjectStore, kind: str, repo: str, counts: dict[str, int]) -> None:
    """Bump the manifest sequence of every month file written, so merges read only what changed.

    `counts` maps a month to the rows its file now holds.
    """

    def change(doc):
        seq = int(doc.get("seq", 0)) + 1
        months = doc.setdefault("months", {})
        for month, rows in counts.items():
            months[month] = {"rows": int(rows), "seq": seq}
        doc["seq"] = seq
        return doc

    update_json(store, layout.raw_manifest_key(kind, repo), change, default=dict)


def _window_id(start: datetime | None, end: datetime | None) -> str:
    return f"{iso(start) or 'beginning'}..{iso(end) or 'now'}"


def sync_window(client, store: ObjectStore, repo: str, kind: str, start: datetime | None = None,
                end: datetime | None = None, *, now: Callable[[], datetime] | None = None,
                on_progress: Callable[[str], None] | None = None, resume: bool = True) -> SyncResult:
    """Fetch every `kind` ("issues" or "comments") item of `repo` updated in [start, end) into the raw log."""
    layout.check_repo(repo)
    if kind not in _NORMALIZE:
        raise ValueError(f"kind must be one of {sorted(_NORMALIZE)}, got {kind!r}")
    now = now or (lambda: datetime.now(UTC))
    began = time.perf_counter()
    stats_before = client.stats.as_dict()
    result = SyncResult(repo, kind, iso(start), iso(end))
    state_key = layout.sync_state_key(repo)
    window = _window_id(start, end)
    checkpoint = (read_json(store, state_key, default={}) or {}).get("checkpoints", {}).get(f"{kind}:{window}")
    since = start
    if resume and checkpoint:
        since = parse_time(checkpoint)
        result.resumed_from = checkpoint
        log.info("%s %s: resuming window %s from checkpoint %s", repo, kind, window, checkpoint)

    buffers: dict[str, list] = defaultdict(list)
    rejects: list[pd.DataFrame] = []
    rejects_key = layout.rejects_key(repo, kind, window.replace(":", "").replace("..", "_"))
    max_seen: datetime | None = None

    def flush(months: list[str], through: datetime | None) -> None:
        counts = {}
        recorded = None
        for month in months:
            frames = buffers.pop(month)
            versions = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            added, held = _write_month(store, kind, repo, month, versions)
            result.new_versions += added
            if added:
                counts[month] = held
                result.months_written.append(month)
            else:
                # A run killed between a month write and its manifest entry left rows no merge knows of.
                if recorded is None:
                    recorded = (read_json(store, layout.raw_manifest_key(kind, repo), default={}) or {}
                                ).get("months", {})
                if held and int(recorded.get(month, {}).get("rows", -1)) != held:
                    counts[month] = held
        if counts:
            _record_months(store, kind, repo, counts)
        if through is not None:
            # Rejects first: a resume starts after the checkpoint and would never see these items again.
            _save_rejects(store, rejects_key, rejects)
            _checkpoint(store, state_key, f"{kind}:{window}", iso(through))

    stop = False
    pages = _pages(client, kind, repo, iso(since))
    try:
        for page in pages:
            result.pages += 1
            fetched_at = now()
            kept = []
            for item in page.items:
                result.items_fetched += 1
                ts = _item_time(item)
                if ts is not None and end is not None and ts >= end:
                    stop = True
                    continue
                if ts is not None and since is not None and ts < since:
                    continue
                if ts is not None:
                    max_seen = ts if max_seen is None or ts > max_seen else max_seen
                kept.append(item)
            versions, rej = _NORMALIZE[kind](kept, repo, fetched_at)
            if len(rej):
                rejects.append(rej)
                result.rejected += len(rej)
            if len(versions):
                for month, part in _by_month(versions):
                    buffers[month].append(part)
            if on_progress:
                on_progress(f"{repo} {kind}: page {result.pages}, {result.items_fetched} items")
            if max_seen is not None:
                # Sorted ascending: every month before the newest one seen is complete.
                newest = max_seen.strftime("%Y-%m")
                done = sorted(m for m in buffers if m < newest)
                if done:
                    through = datetime.fromisoformat(newest + "-01").replace(tzinfo=UTC)
                    flush(done, through)
            if stop:
                break
            if not page.has_next and buffers:
                # Before asking for the end of the iteration: that is when the client commits the
                # pages' validators, and a later 304 must never stand for versions not yet stored.
                flush(sorted(buffers), None)
    finally:
        close = getattr(pages, "close", None)
        if close:
            close()
    if buffers:
        flush(sorted(buffers), None)
    _save_rejects(store, rejects_key, rejects)
    _finish(store, state_key, kind, window, start, max_seen)
    if end is None and max_seen is not None and max_seen <= now() - timedelta(seconds=1):
        _expect_unchanged(client, store, repo, kind, max_seen)
    after = client.stats.as_dict()
    for name in ("requests", "not_modified", "rate_limit_waits", "retries", "wait_seconds"):
        setattr(result, name, after.get(name, 0) - stats_before.get(name, 0))
    result.max_updated_at = iso(max_seen)
    result.seconds = time.perf_counter() - began
    log.info("%s %s window %s: %d pages, %d items, %d new versions, %d rejected, %d requests (%d x 304)",
             repo, kind, window, result.pages, result.items_fetched, result.new_versions, result.rejected,
             result.requests, result.not_modified)
    return result


def _by_month(versions: pd.DataFrame):
    """(YYYY-MM of updated_at, rows) in order of first appearance (a page spans one month or two)."""
    months = versions["updated_at"].to_numpy(dtype="datetime64[us]").astype("datetime64[M]")
    codes, uniques = pd.factorize(months)
    if len(uniques) == 1:
        yield np.datetime_as_string(uniques[0], unit="M"), versions
        return
    for code, month in enumerate(uniques):
        yield np.datetime_as_string(month, unit="M"), versions[codes == code]


def _save_rejects(store: ObjectStore, key: str, pending: list[pd.DataFrame]) -> None:
    """Add `pending` (emptied) to the window's rejects file: items seen again by a re-run are kept once."""
    if not pending:
        return
    frames = ([read_parquet(store, key)] if store.exists(key) else []) + pending
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(
        subset=["kind", "id", "number", "reason", "payload"], keep="first", ignore_index=True)
    write_parquet(store, key, frame)
    pending.clear()


def _checkpoint(store: ObjectStore, key: str, name: str, through: str | None) -> None:
    def change(doc):
        doc.setdefault("checkpoints", {})[name] = through
        return doc

    update_json(store, key, change, default=dict)


def _finish(store: ObjectStore, key: str, kind: str, window: str, start: datetime | None,
            max_seen: datetime | None) -> None:
    """Drop the window's checkpoint; advance the cursor when the window joins what is already stored."""

    def change(doc):
        doc.setdefault("checkpoints", {}).pop(f"{kind}:{window}", None)
        cursors = doc.setdefault("cursors", {})
        prev = parse_time(cursors.get(kind))
        contiguous = start is None or (prev is not None and start <= prev)
        if max_seen is not None and contiguous and (prev is None or max_seen > prev):
            cursors[kind] = iso(max_seen)
        doc.setdefault("windows_done", {})[f"{kind}:{window}"] = iso(datetime.now(UTC))
        return doc

    update_json(store, key, change, default=dict)


def _expect_unchanged(client, store: ObjectStore, repo: str, kind: str, max_seen: datetime) -> None:
    """Let the next incremental poll (since = the cursor) be one 304 when nothing changed.

    The poll's URL was never requested, so it has no ETag; its newest item is the cursor itself, which
    is what If-Modified-Since compares with. Only when the cursor advanced to what this sweep saw, and
    that is at least a second old (a same-second update could otherwise hide behind the date).
    """
    if cursor(store, repo, kind) != max_seen:
        return
    builder = getattr(client, "issue_pages_url" if kind == "issues" else "comment_pages_url", None)
    prime = getattr(client, "expect_unchanged_since", None)
    if builder is not None and prime is not None:
        prime(builder(repo, since=iso(max_seen)), max_seen.timestamp())


def cursor(store: ObjectStore, repo: str, kind: str) -> datetime | None:
    """The newest updated_at an open-ended sync has stored: where the next incremental sync starts."""
    doc = read_json(store, layout.sync_state_key(repo), default={}) or {}
    return parse_time(doc.get("cursors", {}).get(kind))


def sync_incremental(client, store: ObjectStore, repo: str, kind: str, **kwargs) -> SyncResult:
    """Everything updated since the stored cursor (the whole history on the first call)."""
    return sync_window(client, store, repo, kind, cursor(store, repo, kind), None, **kwargs)


def day_bounds(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)
