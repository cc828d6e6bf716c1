"""How much new evidence has arrived since the champion was trained: what the retraining sensor counts.

An issue counts once its label is known (closed, or open past the horizon) after the champion's as-of
cutoff. The store is read for what is ingested; an optional conditional poll of each repository's source
(one request answered 304 when nothing changed) adds what is not ingested yet. A source that cannot be
reached is named in `unreachable`; what the store holds for it still counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from issue_assets.features.labels import DEFAULT_HORIZON_DAYS, horizon_us, known_by, us
from issue_assets.github.client import GitHubError
from issue_assets.ingest.sources import SourceError
from issue_assets.ingest.sync import cursor, iso
from issue_assets.lake import keys
from issue_assets.lake.store import KeyNotFound, ObjectStore, read_parquet


@dataclass
class EvidenceCount:
    since: pd.Timestamp | None
    now: pd.Timestamp
    by_repo: dict[str, int] = field(default_factory=dict)
    pending_by_repo: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_repo.values()) + sum(self.pending_by_repo.values())


def count_new_labels(store: ObjectStore, repos: list[str], since: pd.Timestamp | None, now: pd.Timestamp,
                     *, client_for: Callable[[str], object] | None = None,
                     horizon_days: float = DEFAULT_HORIZON_DAYS) -> EvidenceCount:
    """Labels that became known in (since, now] per repository (all known labels when since is None).

    `client_for(repo)` gives a GitHub client for the repository's source (closed after use) to count what
    is not ingested yet; a source that fails is recorded in `unreachable` and counts what the store has."""
    count = EvidenceCount(since, now)
    for repo in repos:
        try:
            frame = read_parquet(store, keys.features_key(repo), columns=["id", "label_known_at"])
            frame = frame.drop_duplicates("id")  # one row per issue (the table has one per age)
        except KeyNotFound:
            count.missing.append(repo)
            frame = pd.DataFrame({"id": pd.Series(dtype="int64"),
                                  "label_known_at": pd.Series(dtype="datetime64[us, UTC]")})
        known = frame["label_known_at"]
        mask = known.notna() & (known <= now)
        if since is not None:
            mask &= known > since
        count.by_repo[repo] = int(mask.sum())
        if client_for is not None:
            try:
                with client_for(repo) as client:
                    count.pending_by_repo[repo] = _pending(client, store, repo, set(frame["id"]), since, now,
                                                           horizon_days)
            except (GitHubError, SourceError) as exc:
                count.unreachable[repo] = f"{type(exc).__name__}: {exc}"
    return count


def _pending(client, store: ObjectStore, repo: str, stored_ids: set, since, now, horizon_days: float) -> int:
    """Issues GitHub has updated since the ingest cursor whose label became known, not yet in the store."""
    n = 0
    for page in client.iter_issue_pages(repo, since=iso(cursor(store, repo, "issues"))):
        if page.not_modified or not page.items:
            continue
        frame = pd.DataFrame([{"id": i.get("id"), "created_at": i.get("created_at"), "closed_at": i.get("closed_at")}
                              for i in page.items if isinstance(i, dict) and "pull_request" not in i])
        if frame.empty:
            continue
        created = pd.to_datetime(frame["created_at"], utc=True, errors="coerce")
        closed = pd.to_datetime(frame["closed_at"], utc=True, errors="coerce")
        decided, _, known_us = known_by(us(created), us(closed), float(now.value // 1000), horizon_us(horizon_days))
        mask = decided & ~frame["id"].isin(stored_ids).to_numpy()
        if since is not None:
            mask &= known_us > since.value // 1000
        n += int(mask.sum())
    return n
