"""The label "closed within the horizon" and the time it becomes known.

Public API:
    DEFAULT_HORIZON_DAYS = 7
    label_times(created_at: Series, closed_at: Series, *, horizon_days: float = 7)
        -> tuple[Series[bool], Series[datetime]]
        Raw outcome and the moment it is settled, ignoring any as-of time:
        positive = closed_at - created_at <= horizon, settled at min(closed_at, created_at + horizon).
    closed_within_horizon(issues: DataFrame, *, horizon_days: float = 7, as_of: Timestamp | None = None,
                          include_pull_requests: bool = False) -> DataFrame
        Columns repo, id, number, created_at, closed_within_7d (boolean, NA when unknown), label_known_at.
        A label is known when its settling time is <= as_of (default: the latest fetched_at, i.e. the
        snapshot time); otherwise closed_within_7d is NA and label_known_at NaT. Issues still open after
        the horizon are negatives. Pull requests are dropped unless include_pull_requests.
"""

from __future__ import annotations

import pandas as pd

from issue_assets.features.frames import normalize_issues

DEFAULT_HORIZON_DAYS = 7


def label_times(created_at: pd.Series, closed_at: pd.Series, *, horizon_days: float = DEFAULT_HORIZON_DAYS):
    horizon = pd.Timedelta(days=horizon_days)
    deadline = created_at + horizon
    positive = closed_at.notna() & (closed_at - created_at <= horizon)
    known_at = closed_at.where(positive, deadline)
    return positive, known_at


def snapshot_time(issues: pd.DataFrame) -> pd.Timestamp:
    """The as-of time a table speaks for: its latest fetch (or latest event if never fetched)."""
    if "fetched_at" in issues and issues["fetched_at"].notna().any():
        return issues["fetched_at"].max()
    events = pd.concat([issues["created_at"], issues["closed_at"]]).dropna()
    return events.max() if len(events) else pd.Timestamp.max.tz_localize("UTC")


def apply_as_of(positive: pd.Series, known_at: pd.Series, as_of: pd.Timestamp):
    """-> (closed_within_7d as pandas boolean with NA, label_known_at with NaT) for labels known at as_of."""
    known = known_at.notna() & (known_at <= as_of)
    label = pd.Series(pd.array(positive.to_numpy(), dtype="boolean"), index=positive.index)
    label[~known] = pd.NA
    return label, known_at.where(known)


def closed_within_horizon(issues: pd.DataFrame, *, horizon_days: float = DEFAULT_HORIZON_DAYS,
                          as_of: pd.Timestamp | None = None,
                          include_pull_requests: bool = False) -> pd.DataFrame:
    issues = normalize_issues(issues)
    if not include_pull_requests:
        issues = issues.loc[~issues["is_pull_request"]]
    as_of = snapshot_time(issues) if as_of is None else _utc(as_of)
    closed_at_as_of = issues["closed_at"].where(issues["closed_at"] <= as_of)
    positive, known_at = label_times(issues["created_at"], closed_at_as_of, horizon_days=horizon_days)
    label, known = apply_as_of(positive, known_at, as_of)
    out = issues[["repo", "id", "number", "created_at"]].copy()
    out["closed_within_7d"] = label
    out["label_known_at"] = known
    return out.reset_index(drop=True)


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
