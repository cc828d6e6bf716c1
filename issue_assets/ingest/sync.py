"""One paged sweep over a time window, split into the append-only raw log.

A window [start, end) costs one stream of pages sorted by `updated_at` ascending from `since=start`,
stopped at the first item updated at or after `end`; a full history is the window [None, None).
Dagster partitions the log by repository (one sweep since the cursor per materialization); in the store a
repository's log is one immutable
parquet part per month named by a manifest (see `issue_assets.ingest.rawlog`). A month is committed as
soon as the sweep has passed it: its versions merged into the month's part (deduplicated on id +
updated_at, the earliest observation kept), written as a new part, and the manifest swapped by
compare-and-put together with the window's checkpoint and any rejects. A re-run is idempotent, a
killed sweep resumes from its checkpoint with no gap and no duplicate, and concurrent sweeps of one
repository merge instead of overwriting each other.
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
from issue_assets.ingest.rawlog import RawLog
from issue_assets.lake.documents import update_json
from issue_assets.lake.store import ObjectStore

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


def _pages(client, kind: str, repo: str, since: str | None, conditional: bool = True):
    if kind == "issues":
        return client.iter_issue_pages(repo, since=since, conditional=conditional)
    return client.iter_comment_pages(repo, since=since, conditional=conditional)


def merge_versions(old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame | None, int]:
    """(month part holding both, or None if `old` already holds everything; versions added). A version
    seen twice keeps its earliest observation, whichever writer stored it first, so the log is the same
    whatever order concurrent writers commit in."""
    if old is None or not len(old):
        merged = new.sort_values("fetched_at", kind="stable").drop_duplicates(["id", "updated_at"], keep="first")
        return merged.sort_values(["updated_at", "id"], kind="stable").reset_index(drop=True), len(merged)
    both = pd.concat([old, new], ignore_index=True).sort_values("fetched_at", kind="stable")
    merged = both.drop_duplicates(["id", "updated_at"], keep="first")
    merged = merged.sort_values(["updated_at", "id"], kind="stable").reset_index(drop=True)
    added = len(merged) - len(old)
    if not added:
        same_order = old.sort_values(["updated_at", "id"], kind="stable")
        if (same_order["fetched_at"].to_numpy() == merged["fetched_at"].to_numpy()).all():
            return None, 0
    return merged, added


def _window_id(start: datetime | None, end: datetime | None) -> str:
    return f"{iso(start) or 'beginning'}..{iso(end) or 'now'}"


def sync_window(client, store: ObjectStore, repo: str, kind: str, start: datetime | None = None,
                end: datetime | None = None, *, now: Callable[[], datetime] | None = None,
                on_progress: Callable[[str], None] | None = None, resume: bool = True,
                full: bool = False) -> SyncResult:
    """Fetch every `kind` ("issues" or "comments") item of `repo` updated in [start, end) into the raw log.

    `full` re-reads the window from its start without sending any cached validator (so no page is
    answered 304 from what earlier runs stored) and without resuming from a checkpoint.
    """
    layout.check_repo(repo)
    if kind not in _NORMALIZE:
        raise ValueError(f"kind must be one of {sorted(_NORMALIZE)}, got {kind!r}")
    now = now or (lambda: datetime.now(UTC))
    began = time.perf_counter()
    stats_before = client.stats.as_dict()
    result = SyncResult(repo, kind, iso(start), iso(end))
    rawlog = RawLog(store, kind, repo)
    window = _window_id(start, end)
    manifest = rawlog.check()
    checkpoint = manifest["checkpoints"].get(window)
    since = start
    if resume and not full and checkpoint:
        since = parse_time(checkpoint)
        result.resumed_from = checkpoint
        log.info("%s %s: resuming window %s from checkpoint %s", repo, kind, window, checkpoint)

    buffers: dict[str, list] = defaultdict(list)
    rejects: list[pd.DataFrame] = []
    max_seen: datetime | None = None

    def flush(months: list[str], through: datetime | None) -> None:
        batches = {}
        for month in months:
            frames = buffers.pop(month)
            batches[month] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        outcome: dict = {}

        def change(doc: dict, work) -> bool:
            outcome.clear()
            added, written = 0, []
            for month, versions in batches.items():
                merged, fresh = merge_versions(rawlog.read_month(doc, month), versions)
                if merged is None:
                    continue
                rawlog.put_month(doc, work, month, merged)
                added += fresh
                if fresh:
                    written.append(month)
            rawlog.add_rejects(doc, work, rejects)
            rawlog.bump(doc)
            moved = False
            if through is not None:
                # A resume starts after the checkpoint: the data and rejects before it are in this commit.
                held = parse_time(doc["checkpoints"].get(window))
                if held is None or through > held:
                    doc["checkpoints"][window] = iso(through)
                    moved = True
            outcome.update(added=added, months=written)
            return moved

        rawlog.commit(change)
        rejects.clear()
        result.new_versions += outcome.get("added", 0)
        result.months_written.extend(outcome.get("months", []))

    stop = False
    pages = _pages(client, kind, repo, iso(since), conditional=not full)
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
            if not page.has_next and (buffers or rejects):
                # Before asking for the end of the iteration: that is when the client commits the
                # pages' validators, and a later 304 must never stand for versions not yet stored.
                flush(sorted(buffers), None)
    finally:
        close = getattr(pages, "close", None)
        if close:
            close()
    if buffers or rejects:
        flush(sorted(buffers), None)
    _finish(rawlog, window, start, end, max_seen, full)
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


def _finish(rawlog: RawLog, window: str, start: datetime | None, end: datetime | None,
            max_seen: datetime | None, full: bool) -> None:
    """Drop the window's checkpoint; advance the cursor when the window joins what is already stored;
    clear a repair's refetch mark once an unconditional sweep from at or before it has finished."""
    cursor_moved = {}

    def change(doc: dict, work) -> bool:
        doc["checkpoints"].pop(window, None)
        doc["swept_at"] = iso(datetime.now(UTC))  # when the repository was last swept (`issue-assets status`)
        changed = True
        prev = parse_time(doc.get("cursor"))
        contiguous = start is None or (prev is not None and start <= prev)
        if max_seen is not None and contiguous and (prev is None or max_seen > prev):
            doc["cursor"] = iso(max_seen)
            changed = True
        refetch = doc.get("refetch")
        if refetch is not None and full and end is None and (
                start is None or (refetch != "beginning" and start <= parse_time(refetch))):
            doc["refetch"] = None
            changed = True
        cursor_moved["to"] = doc.get("cursor") if doc.get("cursor") != iso(prev) else None
        return changed

    rawlog.commit(change)
    if cursor_moved.get("to"):
        # A copy for rebuilding a damaged manifest; written after the manifest, so never ahead of it.
        def mirror(doc):
            doc.setdefault("cursors", {})[rawlog.kind] = cursor_moved["to"]
            return doc

        update_json(rawlog.store, layout.sync_state_key(rawlog.repo), mirror, default=dict, remedy=rawlog.remedy)


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
    return parse_time(RawLog(store, kind, repo).manifest().get("cursor"))


def sync_incremental(client, store: ObjectStore, repo: str, kind: str, *, lookback: timedelta = timedelta(0),
                     **kwargs) -> SyncResult:
    """Everything updated since the stored cursor (less `lookback`: items GitHub listed late), the whole
    history on the first call. After a repair dropped a damaged part, from where it marked, without
    validators."""
    doc = RawLog(store, kind, repo).manifest()
    refetch = doc.get("refetch")
    if refetch is not None:
        start = None if refetch == "beginning" else parse_time(refetch)
        log.warning("%s %s: re-reading from %s without cached validators (marked by repair)", repo, kind, refetch)
        return sync_window(client, store, repo, kind, start, None, **{**kwargs, "full": True})
    start = parse_time(doc.get("cursor"))
    return sync_window(client, store, repo, kind, start - lookback if start else None, None, **kwargs)

